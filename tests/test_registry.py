"""Every contract in the Confluent wire format through the dev broker, against a schema registry.

No registry server runs here: confluent-kafka's own `mock://` SchemaRegistryClient
stands in (the same client class family the codec uses against a real one), with
confluent-kafka's own AvroSerializer/AvroDeserializer on the other side. Both
directions, through the real broker: the project's Publisher -> Confluent's
deserializer, and Confluent's serializer -> the project's Codec.decode.
"""

from __future__ import annotations

import json
import struct
from datetime import timedelta

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from alpr.core import kafka
from alpr.core.settings import load_settings
from alpr.schemas import Codec, UndecodableRecord
from alpr.schemas.codec import CONFLUENT_MAGIC, registry_schema
from alpr.schemas.models import Heartbeat, PlateRead
from tests import records
from tests.conftest import drain, make_topic


def _heartbeat() -> Heartbeat:
    return Heartbeat(instance_id="worker@host:1", role="worker", agency="SPD", host="host", pid=1, state="RUNNING",
                     started_at=records.NOW - timedelta(minutes=5), at=records.NOW, counters={"frames": 12.0},
                     metrics_url="http://10.0.0.5:9100")


CONTRACTS = [*records.ALL, _heartbeat()]


def _name(record) -> str:
    return type(record).__name__


def test_every_shipped_contract_is_covered() -> None:
    top_level = {name for name, s in Codec().schemas.items() if name != "alpr.v1.GeoPosition"}
    assert {type(r).avro_name for r in CONTRACTS} == top_level


@pytest.fixture(scope="module")
def registry() -> SchemaRegistryClient:
    client = SchemaRegistryClient.new_client({"url": "mock://alpr-registry-test"})
    assert type(client).__name__ == "MockSchemaRegistryClient"
    return client


@pytest.fixture(scope="module")
def topics(broker, registry) -> dict[str, str]:
    """One topic per contract (a registry's subject holds one evolving schema, not several records)."""
    import uuid

    settings = load_settings(kafka_bootstrap=broker.bootstrap)
    tag = uuid.uuid4().hex[:8]
    return {_name(r): make_topic(settings, f"test.registry.{tag}.{_name(r).lower()}") for r in CONTRACTS}


@pytest.fixture(scope="module")
def produced_by_project(broker, registry, topics):
    """Every contract published through the project's own Publisher with a registry-backed Codec."""
    settings = load_settings(kafka_bootstrap=broker.bootstrap)
    codec = Codec(registry=registry)
    pub = kafka.Publisher(settings, codec, "test-registry")
    for record in CONTRACTS:
        pub.publish(topics[_name(record)], b"k", record)
    pub.flush()
    return settings


@pytest.mark.parametrize("record", CONTRACTS, ids=_name)
def test_project_writes_what_confluents_deserializer_reads(produced_by_project, registry, topics, record) -> None:
    topic = topics[_name(record)]
    (msg,) = drain(produced_by_project, topic, 1)
    value = msg.value()
    assert value[:1] == CONFLUENT_MAGIC
    schema_id = struct.unpack(">I", value[1:5])[0]
    registered = registry.get_latest_version(f"{topic}-value")
    assert registered.schema_id == schema_id
    # Registered with defaults and logical types (not the parsing canonical form, which drops both).
    assert json.loads(registered.schema.schema_str) == json.loads(registry_schema(Codec().schema_for(type(record))))
    decoded = AvroDeserializer(registry)(value, SerializationContext(topic, MessageField.VALUE))
    assert type(record).model_validate(decoded) == record  # timestamps come back as datetimes, not raw longs


@pytest.fixture(scope="module")
def produced_by_confluent(broker, registry, topics):
    """Every contract written by Confluent's AvroSerializer (auto-registering), one producer for all."""
    settings = load_settings(kafka_bootstrap=broker.bootstrap)
    producer = Producer(kafka.producer_config(settings, "test-registry-confluent"))
    for record in CONTRACTS:
        topic = make_topic(settings, topics[_name(record)] + ".confluent")
        serialize = AvroSerializer(registry, registry_schema(Codec().schema_for(type(record))),
                                   conf={"auto.register.schemas": True})
        producer.produce(topic, value=serialize(record.to_avro(), SerializationContext(topic, MessageField.VALUE)))
    assert producer.flush(10) == 0
    return settings


@pytest.mark.parametrize("record", CONTRACTS, ids=_name)
def test_confluents_serializer_writes_what_the_project_reads(produced_by_confluent, registry, topics, record) -> None:
    (msg,) = drain(produced_by_confluent, topics[_name(record)] + ".confluent", 1)
    # A reader that only knows the registry (a fresh Codec sharing it, like another process would).
    assert Codec(registry=registry).decode(msg.value(), type(record)) == record


def test_unknown_schema_id_and_wrong_framing_are_undecodable(registry) -> None:
    codec = Codec(registry=registry)
    body = codec.encode(records.read(), "test.registry.framing")
    with pytest.raises(UndecodableRecord, match="not in the registry"):
        codec.decode(CONFLUENT_MAGIC + struct.pack(">I", 987654) + body[5:], PlateRead)
    with pytest.raises(UndecodableRecord, match="framing"):
        Codec().decode(body, PlateRead)  # a reader configured without a registry cannot resolve ids


def test_settings_url_mock_gives_a_working_codec() -> None:
    """ALPR_SCHEMA_REGISTRY_URL=mock://... builds an in-memory registry (private to that Codec)."""
    codec = Codec(load_settings(schema_registry_url="mock://alpr-settings").schema_registry_url)
    data = codec.encode(records.read(), "test.registry.settings")
    assert data[:1] == CONFLUENT_MAGIC and codec.decode(data, PlateRead) == records.read()
