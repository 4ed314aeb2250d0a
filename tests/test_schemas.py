"""The Avro contracts and their typed models agree, and decoding refuses what it cannot trust."""

from __future__ import annotations

import struct

import pytest

from alpr.schemas import Codec, PlateRead, UndecodableRecord
from alpr.schemas.models import RECORD_TYPES, Frame
from tests import records


def _avro_type(schema, named: dict) -> str:
    """A field's Avro type as one comparable string: 'string', 'long', 'null|string', 'array<double>',
    'timestamp-micros', 'enum{A,B}', 'record{field:type,...}' (named types resolved)."""
    if isinstance(schema, list):
        return "|".join(_avro_type(s, named) for s in schema)
    if isinstance(schema, str):
        if schema in named:
            return _avro_type(named[schema], named)
        return "integer" if schema in ("int", "long") else schema  # the model's int fits either
    if "logicalType" in schema:
        return schema["logicalType"]
    kind = schema["type"]
    if kind == "array":
        return f"array<{_avro_type(schema['items'], named)}>"
    if kind == "map":
        return f"map<{_avro_type(schema['values'], named)}>"
    if kind == "enum":
        return "enum{" + ",".join(schema["symbols"]) + "}"
    if kind == "record":
        named[schema["name"]] = schema
        named[schema["name"].rsplit(".", 1)[-1]] = schema
        return "record{" + ",".join(f"{f['name']}:{_avro_type(f['type'], named)}" for f in schema["fields"]) + "}"
    return _avro_type(kind, named)


def _model_type(annotation) -> str:
    """What the Avro type of a field with this pydantic annotation must be, in _avro_type's notation."""
    import types
    import typing
    from datetime import datetime
    from enum import Enum

    from pydantic import BaseModel

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _model_type(args[0])
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        assert len(inner) == 1, annotation
        return "null|" + _model_type(inner[0])
    if origin is list:
        return f"array<{_model_type(args[0])}>"
    if origin is dict:
        return f"map<{_model_type(args[1])}>"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "enum{" + ",".join(m.value for m in annotation) + "}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "record{" + ",".join(f"{n}:{_model_type(f.annotation)}" for n, f in annotation.model_fields.items()) + "}"
    simple = {str: "string", bytes: "bytes", bool: "boolean", float: "double", datetime: "timestamp-micros"}
    return "integer" if annotation is int else simple[annotation]


@pytest.mark.parametrize("model", RECORD_TYPES, ids=lambda m: m.__name__)
def test_model_fields_match_avsc_name_by_name_and_type_by_type(codec: Codec, model) -> None:
    schema = codec.schema_for(model).parsed
    named = dict(schema["__named_schemas"])  # types defined once and referenced by name after
    avro = {f["name"]: _avro_type(f["type"], named) for f in schema["fields"]}
    assert list(model.model_fields) == list(avro), "same fields in the same order"
    for name, field in model.model_fields.items():
        assert avro[name] == _model_type(field.annotation), f"{model.__name__}.{name}: {field.annotation}"


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


@pytest.mark.parametrize("plate", ["AB12\n", "AB12\r\n", "ab12", "AB 12", ""])
def test_a_plate_with_a_trailing_newline_or_other_junk_is_refused(plate) -> None:
    """Python's `$` matches before a final newline; every allow-list pattern ends at `\\Z` instead."""
    with pytest.raises(ValueError):
        PlateRead.model_validate({**records.read().model_dump(), "plate": plate})
