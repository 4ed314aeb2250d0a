"""Every contract through the real dev broker, and bad records to the dead-letter topic."""

from __future__ import annotations

import time

from alpr.core.kafka import Publisher, RecordConsumer
from alpr.core.topics import DEADLETTER
from alpr.schemas import Codec, DeadLetter, PlateRead
from tests import records
from tests.conftest import drain, drain_until, make_topic


def test_every_schema_round_trips_through_kafka(settings, codec: Codec, unique: str) -> None:
    topic = make_topic(settings, f"roundtrip-{unique}")
    pub = Publisher(settings, codec, "test")
    for i, record in enumerate(records.ALL):
        pub.publish(topic, f"k{i}", record)
    pub.flush()
    got = drain(settings, topic, len(records.ALL))
    assert len(got) == len(records.ALL)
    for msg, sent in zip(got, records.ALL):
        assert codec.decode(msg.value(), type(sent)) == sent


def test_malformed_record_goes_to_deadletter_and_consumer_keeps_going(settings, codec: Codec, unique: str) -> None:
    topic = make_topic(settings, f"reads-{unique}")
    pub = Publisher(settings, codec, "test")
    pub.publish(topic, "a", records.read(1))
    pub.publish_raw(topic, b"b", b"\xc3\x01not avro at all")
    pub.publish(topic, "c", records.read(2))
    pub.flush()

    consumer = RecordConsumer(settings, codec, f"g-{unique}", [topic], PlateRead, deadletters=pub)
    good: list[PlateRead] = []
    deadline = time.monotonic() + 30
    try:
        while len(good) < 2 and time.monotonic() < deadline:
            good += [r.record for r in consumer.poll_batch()]
        pub.flush()
        consumer.commit()
    finally:
        consumer.close()
    assert [r.read_id for r in good] == ["r1", "r2"]
    assert consumer.dead_lettered == 1

    def letters_for_topic(msgs):
        return [d for d in (codec.decode(m.value(), DeadLetter) for m in msgs) if d.source_topic == topic]

    mine = letters_for_topic(drain_until(settings, DEADLETTER, letters_for_topic, timeout=20))
    assert len(mine) == 1
    assert mine[0].source_offset == 1
    assert mine[0].value == b"\xc3\x01not avro at all"
    assert "fingerprint" in mine[0].reason


def test_tombstone_publishes_null_value(settings, codec: Codec, unique: str) -> None:
    topic = make_topic(settings, f"compact-{unique}")
    pub = Publisher(settings, codec, "test")
    pub.publish(topic, "CA:7ABC123", None)
    pub.flush()
    (msg,) = drain(settings, topic, 1)
    assert msg.value() is None and msg.key() == b"CA:7ABC123"
