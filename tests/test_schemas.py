"""The Avro contracts and their typed models agree, and decoding refuses what it cannot trust."""

from __future__ import annotations

import struct

import pytest

from alpr.schemas import Codec, PlateRead, UndecodableRecord
from alpr.schemas.models import RECORD_TYPES, Frame
from tests import records


def _avro_fields(schema: dict) -> set[str]:
    return {f["name"] for f in schema["fields"]}


@pytest.mark.parametrize("model", RECORD_TYPES, ids=lambda m: m.__name__)
def test_model_fields_match_avsc(codec: Codec, model) -> None:
    assert set(model.model_fields) == _avro_fields(codec.schema_for(model).parsed)


@pytest.mark.parametrize("record", records.ALL, ids=lambda r: type(r).__name__)
def test_roundtrip_single_object(codec: Codec, record) -> None:
    data = codec.encode(record, "t")
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.schema_for(type(record)).fingerprint
    assert codec.decode(data, type(record)) == record


def test_every_record_carries_agency() -> None:
    for model in RECORD_TYPES:
        if model.__name__ == "DeadLetter":
            continue
        assert any("agency" in f for f in model.model_fields), model.__name__


@pytest.mark.parametrize("mangle, reason", [
    (lambda b: b"", "empty"),
    (lambda b: b"garbage!", "framing"),
    (lambda b: b[:2] + b"\x00" * 8 + b[10:], "unknown schema fingerprint"),
    (lambda b: b[:-4], "does not decode"),
    (lambda b: b + b"\x00\x00", "trailing bytes"),
])
def test_undecodable_values_say_why(codec: Codec, mangle, reason) -> None:
    good = codec.encode(records.read(), "t")
    with pytest.raises(UndecodableRecord, match=reason):
        codec.decode(mangle(good), PlateRead)


def test_wrong_record_type_refused(codec: Codec) -> None:
    with pytest.raises(UndecodableRecord, match="expected alpr.v1.Frame"):
        codec.decode(codec.encode(records.read(), "t"), Frame)


def test_valid_avro_but_invalid_record_refused(codec: Codec) -> None:
    """Avro cannot express 'plate is capitals and digits'; the model can, and decoding enforces it."""
    import io

    import fastavro

    bad = records.read().to_avro() | {"plate": "ab c"}
    schema = codec.schema_for(PlateRead)
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + schema.fingerprint)
    fastavro.schemaless_writer(buf, schema.parsed, bad)
    with pytest.raises(UndecodableRecord, match="plate"):
        codec.decode(buf.getvalue(), PlateRead)


def test_confluent_framing_without_registry_refused(codec: Codec) -> None:
    with pytest.raises(UndecodableRecord, match="framing"):
        codec.decode(b"\x00" + struct.pack(">I", 1) + b"\x02", PlateRead)
