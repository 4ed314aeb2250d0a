"""Avro bytes <-> typed records, in one of two framings.

- With a schema registry (Confluent wire format): magic byte 0, a 4-byte schema id,
  then the Avro body. Writers register `<topic>-value` subjects; readers fetch the
  writer's schema by id and resolve it against the schema they were built with.
- Without one (Avro single-object encoding): 0xC3 0x01, the 8-byte CRC-64-AVRO
  fingerprint of the writer schema's canonical form, then the body. Readers know
  every schema this package ships, so the fingerprint names the writer schema.

A consumer decodes with `Codec.decode`, which raises `UndecodableRecord` for
anything it cannot trust (bad framing, unknown schema, truncated body, a value
the typed model refuses); the caller sends that to the dead-letter topic.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
from pydantic import ValidationError

from alpr.schemas import models
from alpr.core.errors import AlprError

SCHEMA_DIR = Path(__file__).parent
# Files that define named types must come before the files that use them.
_SCHEMA_FILES = (
    "geo", "frame", "plate_read", "hotlist_entry", "partial_plate", "alert",
    "audit_event", "release_request", "evidence_hold", "dead_letter", "user", "login_lockout",
    "heartbeat",
)
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"

R = TypeVar("R", bound=models.Record)


class UndecodableRecord(AlprError, ValueError):
    """A value that cannot become a trusted record; `reason` says why, for the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AvroSchema:
    name: str
    parsed: dict
    canonical: str
    fingerprint: bytes
    standalone: str = ""  # JSON with every named type defined at its first use: what a registry can parse


def _standalone(node, named: dict, defined: set[str]):
    """The schema as plain Avro JSON: fastavro's own keys dropped, each named type defined where first used.

    fastavro's `expand=True` inlines one level only (a PlateRead inside an Alert still names
    GeoPosition without defining it) and keeps `__fastavro_*` keys; a registry needs neither.
    """
    if isinstance(node, str):
        if node in named and node not in defined:
            return _standalone(named[node], named, defined)
        return node
    if isinstance(node, list):
        return [_standalone(n, named, defined) for n in node]
    out = {k: v for k, v in node.items() if not k.startswith("__")}
    kind = out.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        defined.add(out["name"])  # before the fields: a record may refer to itself
        if kind != "enum" and "fields" in out:
            out["fields"] = [{**{k: v for k, v in f.items() if not k.startswith("__")},
                              "type": _standalone(f["type"], named, defined)} for f in out["fields"]]
    elif kind == "array":
        out["items"] = _standalone(out["items"], named, defined)
    elif kind == "map":
        out["values"] = _standalone(out["values"], named, defined)
    else:
        out["type"] = _standalone(kind, named, defined)
    return out


def load_schemas(directory: Path = SCHEMA_DIR) -> dict[str, AvroSchema]:
    """Every shipped schema by full name, with named types expanded inline (`directory`: another set, e.g. released/)."""
    named: dict = {}
    out: dict[str, AvroSchema] = {}
    for stem in _SCHEMA_FILES:
        if not (directory / f"{stem}.avsc").exists() and directory != SCHEMA_DIR:
            continue  # a contract added since that set was released
        raw = json.loads((directory / f"{stem}.avsc").read_text())
        fastavro.parse_schema(raw, named_schemas=named)
        expanded = fastavro.parse_schema(raw, named_schemas=dict(named), expand=True)
        canonical = to_parsing_canonical_form(expanded)
        name = expanded["name"]
        standalone = json.dumps(_standalone(expanded, named, set()), sort_keys=True)
        out[name] = AvroSchema(name, expanded, canonical, bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
                               standalone)
    return out


def registry_schema(schema: AvroSchema) -> str:
    """What is registered under `<topic>-value`: the whole schema with its defaults, docs and logical types."""
    return schema.standalone


class Codec:
    """Encodes and decodes the project's records; one instance per process is enough."""

    def __init__(self, registry_url: str | None = None, *, registry=None) -> None:
        """registry_url: ALPR_SCHEMA_REGISTRY_URL (`mock://NAME` gives confluent-kafka's in-memory registry,
        private to this Codec); registry: an existing SchemaRegistryClient to share instead."""
        self.schemas = load_schemas()
        self._by_fingerprint = {s.fingerprint: s for s in self.schemas.values()}
        self._registry = registry
        self._ids: dict[tuple[str, str], int] = {}
        self._writers: dict[int, dict] = {}
        if registry is None and registry_url:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            self._registry = SchemaRegistryClient.new_client({"url": registry_url})

    def schema_for(self, model: type[models.Record]) -> AvroSchema:
        return self.schemas[model.avro_name]

    def encode(self, record: models.Record, topic: str) -> bytes:
        schema = self.schema_for(type(record))
        buf = io.BytesIO()
        if self._registry is None:
            buf.write(SINGLE_OBJECT_MAGIC + schema.fingerprint)
        else:
            buf.write(CONFLUENT_MAGIC + struct.pack(">I", self._schema_id(topic, schema)))
        fastavro.schemaless_writer(buf, schema.parsed, record.to_avro())
        return buf.getvalue()

    def decode(self, data: bytes | None, model: type[R]) -> R:
        if not data:
            raise UndecodableRecord("empty value")
        reader = self.schema_for(model)
        if data[:2] == SINGLE_OBJECT_MAGIC:
            writer = self._by_fingerprint.get(data[2:10])
            if writer is None:
                raise UndecodableRecord(f"unknown schema fingerprint {data[2:10].hex()}")
            if writer.name != reader.name:
                raise UndecodableRecord(f"expected {reader.name}, got {writer.name}")
            writer_schema, body = writer.parsed, data[10:]
        elif data[:1] == CONFLUENT_MAGIC and len(data) >= 5 and self._registry is not None:
            writer_schema, body = self._writer(struct.unpack(">I", data[1:5])[0]), data[5:]
        else:
            raise UndecodableRecord("not Avro single-object or Confluent framing")
        stream = io.BytesIO(body)
        try:
            raw = fastavro.schemaless_reader(stream, writer_schema, reader.parsed)
        except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, ...
            raise UndecodableRecord(f"Avro body does not decode: {type(exc).__name__}: {exc}") from exc
        if stream.tell() != len(body):
            raise UndecodableRecord(f"{len(body) - stream.tell()} trailing bytes after the Avro body")
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            raise UndecodableRecord(f"{model.__name__} invalid: {problems}") from exc

    def _schema_id(self, topic: str, schema: AvroSchema) -> int:
        key = (topic, schema.name)
        if key not in self._ids:
            from confluent_kafka.schema_registry import Schema

            # The full schema, not its Parsing Canonical Form: that form drops defaults and logical types,
            # so the registry's BACKWARD check would refuse every added field and readers would get raw longs.
            self._ids[key] = self._registry.register_schema(f"{topic}-value", Schema(registry_schema(schema), "AVRO"))
        return self._ids[key]

    def _writer(self, schema_id: int) -> dict:
        if schema_id not in self._writers:
            try:
                registered = self._registry.get_schema(schema_id)
            except Exception as exc:
                raise UndecodableRecord(f"schema id {schema_id} not in the registry: {exc}") from exc
            self._writers[schema_id] = fastavro.parse_schema(json.loads(registered.schema_str))
        return self._writers[schema_id]
