"""The reads sink's fast path: ClickHouse decodes the Avro, Python only moves bytes.

Consumes: `alpr.reads` records in Avro single-object framing whose writer schema is
the PlateRead schema this package ships (what every producer here writes).
Produces: rows in `reads`, inserted by the embedded ClickHouse from an Avro object
container file that this module assembles from the records' bodies.

Why: decoding each record with fastavro and validating it with pydantic costs about
45 us per read in Python, and building Arrow columns from the models another 35 us;
the sink stored 14,529 reads/s. Assembling a container file is a byte join, and the
engine's Avro reader (C++) decodes 5,000 reads in milliseconds.

Nothing is trusted more than on the slow path:
- each body's first field (read_id) is read here and must line up, row by row, with
  what ClickHouse decoded, or the whole batch takes the slow path;
- VALID below is at least as strict as the PlateRead model (every model constraint,
  plus UTF-8 strings and ClickHouse's DateTime64 range); a row it refuses is decoded
  by the model instead: written if the model accepts it, dead-lettered with the
  model's reason if not. So a record reaches the table through here only if both
  the model and this check would accept it (tests/test_sink.py checks each rule).
- duplicates (redelivery, or twice in one batch) are skipped by read_id, as on the
  slow path.
Other framings (a schema registry's, an older writer schema) take the slow path.
Only the embedded store reads a local file; a ClickHouse server gets the slow path.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from confluent_kafka import KafkaError, Message

from alpr.core.kafka import Publisher, Received, RecordConsumer
from alpr.core.logs import get_log
from alpr.core.metrics import SINK_INSERT_SECONDS, SINK_ROWS
from alpr.core.settings import Settings
from alpr.core.store import Store, StoreError
from alpr.schemas import Codec, PlateRead, UndecodableRecord
from alpr.schemas.codec import SINGLE_OBJECT_MAGIC
from alpr.core.sql import lit
from alpr.warehouse.sink import READS_SPEC, write_new

log = get_log(__name__)

_STRINGS = ("read_id", "camera_id", "agency", "model_version")  # NonEmpty: 1..256 characters
_US_1900, _US_2300 = -2_208_988_800_000_000, 10_413_792_000_000_000  # DateTime64(6) range, in microseconds
VALID = " AND ".join([
    *(f"lengthUTF8({c}) BETWEEN 1 AND 256 AND isValidUTF8({c})" for c in _STRINGS),
    "match(plate, '^[A-Z0-9]{1,10}$')",
    "(frame_id IS NULL OR isValidUTF8(frame_id))",
    "(plate_state IS NULL OR isValidUTF8(plate_state))",
    "confidence >= 0 AND confidence <= 1",
    "(empty(box) OR (length(box) = 4 AND box[1] <= box[3] AND box[2] <= box[4]))",
    "tupleElement(position, 'lat') BETWEEN -90 AND 90",
    "tupleElement(position, 'lon') BETWEEN -180 AND 180",
    "(tupleElement(position, 'heading_deg') IS NULL OR (tupleElement(position, 'heading_deg') >= 0 "
    "AND tupleElement(position, 'heading_deg') < 360))",
    "frames_seen BETWEEN 1 AND 65535",
    f"captured_at BETWEEN {_US_1900} AND {_US_2300}",
    f"read_at BETWEEN {_US_1900} AND {_US_2300}",
])
_ROW = ("read_id, frame_id, camera_id, agency, plate, plate_state, confidence, char_confidences, box, "
        "ifNull(crop_jpeg, ''), fromUnixTimestamp64Micro(captured_at, 'UTC'), fromUnixTimestamp64Micro(read_at, 'UTC'), "
        "tupleElement(position, 'lat'), tupleElement(position, 'lon'), tupleElement(position, 'heading_deg'), "
        "model_version, frames_seen")
_COLUMNS = ("read_id, frame_id, camera_id, agency, plate, plate_state, confidence, char_confidences, box, "
            "crop_jpeg, captured_at, read_at, lat, lon, heading_deg, model_version, frames_seen")


@dataclass
class RawRead:
    """A read still in its Avro body; `read_id` is its first field, read here."""

    message: Message
    body: bytes
    read_id: str
    dead: bool = False  # dead-lettered already (a retried batch must not send it twice)


@dataclass(frozen=True)
class Stored:
    """What the hold check needs of a stored read."""

    read_id: str
    plate: str
    captured_at: datetime


def first_string(body: bytes) -> str | None:
    """The first field of an Avro record body when it is a string: zigzag varint length, UTF-8 bytes."""
    shift = value = 0
    for i, b in enumerate(body[:10]):
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            n, start = (value >> 1) ^ -(value & 1), i + 1
            if n < 0 or start + n > len(body):
                return None
            try:
                return body[start:start + n].decode()
            except UnicodeDecodeError:
                return None
        shift += 7
    return None


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def container(schema_json: str, bodies: list[bytes]) -> bytes:
    """An Avro object container file (one uncompressed block) holding `bodies`."""
    sync = os.urandom(16)
    meta = {b"avro.schema": schema_json.encode(), b"avro.codec": b"null"}
    header = b"Obj\x01" + _zigzag(len(meta)) + b"".join(
        _zigzag(len(k)) + k + _zigzag(len(v)) + v for k, v in meta.items()) + _zigzag(0) + sync
    block = b"".join(bodies)
    return header + _zigzag(len(bodies)) + _zigzag(len(block)) + block + sync


class ReadsConsumer(RecordConsumer[PlateRead]):
    """Hands over reads in the shipped schema as RawRead (undecoded); anything else decoded as usual."""

    def __init__(self, settings: Settings, codec: Codec, group: str, topics: list[str], deadletters: Publisher,
                 client_id: str | None = None) -> None:
        super().__init__(settings, codec, group, topics, PlateRead, deadletters, client_id=client_id)
        self._prefix = SINGLE_OBJECT_MAGIC + codec.schema_for(PlateRead).fingerprint

    def poll_batch(self, max_records: int = 500, timeout: float = 0.5) -> list[Received]:
        out: list[Received] = []
        for msg in self._consumer.consume(max_records, timeout):
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume.error", group=self.group, error=msg.error().str())
                continue
            value = msg.value()
            if value is not None and value[:10] == self._prefix:
                body = value[10:]
                read_id = first_string(body)
                if read_id is not None:
                    out.append(Received(msg, RawRead(msg, body, read_id)))
                    continue
            try:
                out.append(Received(msg, self.codec.decode(value, PlateRead)))
            except UndecodableRecord as exc:
                self.dead_letter(msg, exc.reason, "UndecodableRecord")
        return out


class ReadsWriter:
    """`write(records)` for the reads loop: RawRead through ClickHouse, PlateRead as Arrow; returns rows inserted.

    `after_write(stored)` gets what was in the batch (read id, plate, capture time) once it is stored.
    """

    def __init__(self, store: Store, settings: Settings, codec: Codec, consumer: ReadsConsumer,
                 after_write=None) -> None:
        self.store, self.codec, self.consumer, self.after_write = store, codec, consumer, after_write
        self.db = settings.clickhouse_database
        self.schema = codec.schema_for(PlateRead)
        self.spool = settings.data_dir / "spool"
        self.fast_rows = 0  # reads that took the fast path (for tests and the benchmark)
        for stale in self.spool.glob("reads-*.avro"):  # left by a process that died mid-batch (one sink per data_dir)
            stale.unlink(missing_ok=True)

    def __call__(self, records: list) -> int:
        raw = [r for r in records if isinstance(r, RawRead) and not r.dead]
        typed: list[PlateRead] = [r for r in records if isinstance(r, PlateRead)]
        stored: list = []
        n = 0
        if raw:
            refused, n, stored = self._fast(raw)
            for r in refused:  # the model decides: written the slow way, or dead-lettered with its reason
                try:
                    typed.append(self.codec.decode(self._prefixed(r.body), PlateRead))
                except UndecodableRecord as exc:
                    self.consumer.dead_letter(r.message, exc.reason, "UndecodableRecord")
                    r.dead = True
        if typed:
            n += write_new(self.store, self.db, READS_SPEC, typed)
            stored += typed
        if self.after_write is not None and stored:
            self.after_write(stored)
        return n

    def _prefixed(self, body: bytes) -> bytes:
        return SINGLE_OBJECT_MAGIC + self.schema.fingerprint + body

    def _fast(self, raw: list[RawRead]) -> tuple[list[RawRead], int, list[Stored]]:
        """(refused by the check, rows inserted, stored reads). StoreError propagates (the loop retries)."""
        self.spool.mkdir(parents=True, exist_ok=True)
        path = self.spool / f"reads-{uuid.uuid4().hex}.avro"
        path.write_bytes(container(self.schema.canonical, [r.body for r in raw]))
        src = f"file({lit(str(path))}, 'Avro')"
        seen_sql = (f"read_id IN (SELECT read_id FROM {self.db}.reads WHERE plate IN (SELECT plate FROM {src}) "
                    f"AND read_id IN (SELECT read_id FROM {src}))")
        try:
            got = pa.ipc.open_stream(self.store.query_bytes(
                f"SELECT read_id, plate, fromUnixTimestamp64Micro(captured_at, 'UTC') AS captured_ts, "
                f"{VALID} AS valid, {seen_sql} AS seen FROM {src}", "ArrowStream")).read_all()
            ids = [_text(i) for i in got.column("read_id").to_pylist()]
            if ids != [r.read_id for r in raw]:
                log.warning("sink.fast_path_misaligned", records=len(raw))
                return raw, 0, []
            valid, seen = got.column("valid").to_pylist(), got.column("seen").to_pylist()
            fresh = {r.read_id for r, ok, old in zip(raw, valid, seen) if ok and not old}
            redelivered = any(seen)  # stored by an earlier batch
            if fresh:
                with SINK_INSERT_SECONDS.labels("reads").time():
                    # Each clause only when the batch needs it (checked above on this same file): the
                    # rule set alone doubles the insert's time.
                    where = ([VALID] if not all(valid) else []) + ([f"NOT {seen_sql}"] if redelivered else [])
                    twice = len(set(ids)) != len(ids)
                    self.store.command(
                        f"INSERT INTO {self.db}.reads ({_COLUMNS}) SELECT {_ROW} FROM {src}"
                        + (" WHERE " + " AND ".join(where) if where else "")
                        + (" LIMIT 1 BY read_id" if twice else ""))
                SINK_ROWS.labels("reads").inc(len(fresh))
            stored: list[Stored] = []
            if self.after_write is not None:
                plates, times = got.column("plate").to_pylist(), got.column("captured_ts").to_pylist()
                stored = [Stored(r.read_id, _text(p), at) for r, ok, p, at in zip(raw, valid, plates, times) if ok]
            self.fast_rows += sum(1 for ok in valid if ok)
            return [r for r, ok in zip(raw, valid) if not ok], len(fresh), stored
        except (pa.ArrowInvalid, StoreError) as exc:
            if isinstance(exc, StoreError) and not _is_decode_error(exc):
                raise  # the store is refusing: the loop pauses and retries the batch
            log.warning("sink.fast_path_refused", records=len(raw), error=str(exc)[:200])
            _drain(self.store)
            return raw, 0, []
        finally:
            path.unlink(missing_ok=True)


def _drain(store: Store) -> None:
    """chDB hands the partial output of a query that failed mid-stream to the session's next query
    (ENGINEERING-NOTES, seen here with ArrowStream): spend queries until one answers for itself."""
    for _ in range(3):
        if store.query_bytes("SELECT 1 AS alive", "JSONEachRow") == b'{"alive":1}\n':
            return
    raise StoreError("the embedded store keeps answering with another query's output")


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # Arrow output: String may come as binary


def _is_decode_error(exc: StoreError) -> bool:
    """ClickHouse could not read the container (a body it cannot parse): the slow path decides per record."""
    text = str(exc)
    return any(code in text for code in ("INCORRECT_DATA", "CANNOT_READ", "CANNOT_PARSE", "Avro", "avro"))
