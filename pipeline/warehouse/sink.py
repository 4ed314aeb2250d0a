"""The warehouse sink: `alpr.reads`, `alpr.alerts` and `alpr.audit` into ClickHouse.

Consumes each topic in its own consumer group (one thread per topic), inserts in
batches through `Store.insert_arrow`, and commits Kafka offsets only after ClickHouse
has the rows (at-least-once). Redelivered records do not become duplicate rows:
before each insert the batch's ids are looked up in the table (by primary-key
range, so the lookup stays cheap on a large table) and the ones present are
skipped; ReplacingMergeTree folds whatever slips past that at merge time.

When ClickHouse refuses an insert (StoreError) the loop pauses its partitions,
keeps the one batch it holds (memory stays bounded), retries with exponential
backoff and resumes when the insert succeeds: nothing is skipped or committed
past. If the store answers a health check but keeps refusing the same batch, the
batch is inserted row by row and the rows ClickHouse refuses on their own go to
the dead-letter topic with ClickHouse's message (a poison record must not stall
the pipeline forever). Undecodable records are dead-lettered by RecordConsumer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import pyarrow as pa
from confluent_kafka import KafkaException

from alpr.core.kafka import Publisher, Received, RecordConsumer
from alpr.core.logs import get_log
from alpr.core.metrics import SINK_INSERT_SECONDS, SINK_ROWS
from alpr.core.settings import Settings
from alpr.core.sql import in_list, ts_lit
from alpr.core.store import Store, StoreError
from alpr.core.topics import ALERTS, AUDIT, READS
from alpr.schemas import Alert, AuditEvent, Codec, PlateRead, Record, UndecodableRecord

log = get_log(__name__)
R = TypeVar("R", bound=Record)

REFUSALS_BEFORE_SPLIT = 3  # store healthy but the batch refused this often: look for the poison row
LOOKUP_CHUNK = 4000        # ids per duplicate lookup: 4,000 quoted ids stay well under ClickHouse's 256 KiB query limit
_UTC_US = pa.timestamp("us", tz="UTC")


# --- literals for the few statements built here (ids come from records: always escaped)

# --- record -> row conversion, one function per table

READS_SCHEMA = pa.schema([
    ("read_id", pa.string()), ("frame_id", pa.string()), ("camera_id", pa.string()), ("agency", pa.string()),
    ("plate", pa.string()), ("plate_state", pa.string()), ("confidence", pa.float32()),
    ("char_confidences", pa.list_(pa.float32())), ("box", pa.list_(pa.int32())), ("crop_jpeg", pa.binary()),
    ("captured_at", _UTC_US), ("read_at", _UTC_US), ("lat", pa.float64()), ("lon", pa.float64()),
    ("heading_deg", pa.float32()), ("model_version", pa.string()), ("frames_seen", pa.uint16()),
])


def reads_table(records: Sequence[PlateRead]) -> pa.Table:
    # Column by column: about three times faster than from_pylist on the sink's hot path.
    pos = [r.position for r in records]
    return pa.Table.from_arrays([
        pa.array([r.read_id for r in records], pa.string()),
        pa.array([r.frame_id for r in records], pa.string()),
        pa.array([r.camera_id for r in records], pa.string()),
        pa.array([r.agency for r in records], pa.string()),
        pa.array([r.plate for r in records], pa.string()),
        pa.array([r.plate_state for r in records], pa.string()),
        pa.array([r.confidence for r in records], pa.float32()),
        pa.array([r.char_confidences for r in records], pa.list_(pa.float32())),
        pa.array([r.box for r in records], pa.list_(pa.int32())),
        pa.array([r.crop_jpeg or b"" for r in records], pa.binary()),
        pa.array([r.captured_at for r in records], _UTC_US),
        pa.array([r.read_at for r in records], _UTC_US),
        pa.array([p.lat for p in pos], pa.float64()),
        pa.array([p.lon for p in pos], pa.float64()),
        pa.array([p.heading_deg for p in pos], pa.float32()),
        pa.array([r.model_version for r in records], pa.string()),
        pa.array([r.frames_seen for r in records], pa.uint16()),
    ], schema=READS_SCHEMA)


ALERTS_SCHEMA = pa.schema([
    ("alert_id", pa.string()), ("kind", pa.string()), ("agency", pa.string()), ("read_id", pa.string()),
    ("plate", pa.string()), ("camera_id", pa.string()), ("captured_at", _UTC_US), ("lat", pa.float64()),
    ("lon", pa.float64()), ("match_key", pa.string()), ("reason", pa.string()), ("case_number", pa.string()),
    ("notices", pa.list_(pa.string())), ("raised_at", _UTC_US),
])


def alerts_table(records: Sequence[Alert]) -> pa.Table:
    rows = []
    for a in records:
        if a.hotlist_entry is not None:
            key, reason, case = a.hotlist_entry.key, a.hotlist_entry.reason.value, a.hotlist_entry.case_number
        elif a.partial is not None:
            key, reason, case = a.partial.pattern_id, a.partial.incident_type, a.partial.case_number
        else:
            key, reason, case = "", "", ""
        rows.append({
            "alert_id": a.alert_id, "kind": a.kind.value, "agency": a.agency, "read_id": a.read.read_id,
            "plate": a.read.plate, "camera_id": a.read.camera_id, "captured_at": a.read.captured_at,
            "lat": a.read.position.lat, "lon": a.read.position.lon, "match_key": key, "reason": reason,
            "case_number": case, "notices": a.notices, "raised_at": a.raised_at,
        })
    return pa.Table.from_pylist(rows, schema=ALERTS_SCHEMA)


AUDIT_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("chain", pa.string()), ("seq", pa.uint64()), ("occurred_at", _UTC_US),
    ("actor", pa.string()), ("agency", pa.string()), ("action", pa.string()), ("outcome", pa.string()),
    ("case_number", pa.string()), ("purpose", pa.string()), ("subject", pa.string()), ("reason", pa.string()),
    ("rows", pa.int64()), ("details", pa.map_(pa.string(), pa.string())), ("prev_hash", pa.string()),
    ("hash", pa.string()),
])


def audit_table(records: Sequence[AuditEvent]) -> pa.Table:
    return pa.Table.from_pylist([{
        **e.model_dump(exclude={"outcome", "details"}), "outcome": e.outcome.value,
        "details": list(e.details.items()),
    } for e in records], schema=AUDIT_SCHEMA)


# --- which table each topic goes to, and how a batch's ids are found there

@dataclass(frozen=True)
class TableSpec(Generic[R]):
    """One topic -> one table: the record id, and a cheap query for ids already stored."""

    topic: str
    model: type[R]
    table: str
    record_id: Callable[[R], str]
    to_arrow: Callable[[Sequence[R]], pa.Table]
    existing_sql: Callable[[str, Sequence[R]], str]  # (db, records) -> SELECT of ids already present


def _reads_existing(db: str, recs: Sequence[PlateRead]) -> str:
    # plate leads the sorting key: the lookup reads only the granules of the batch's plates
    return (f"SELECT read_id AS id FROM {db}.reads WHERE plate IN {in_list(sorted({r.plate for r in recs}))} "
            f"AND read_id IN {in_list([r.read_id for r in recs])}")


def _alerts_existing(db: str, recs: Sequence[Alert]) -> str:
    lo, hi = min(a.raised_at for a in recs), max(a.raised_at for a in recs)
    return (f"SELECT alert_id AS id FROM {db}.alerts WHERE raised_at BETWEEN {ts_lit(lo)} AND {ts_lit(hi)} "
            f"AND alert_id IN {in_list([a.alert_id for a in recs])}")


def _audit_existing(db: str, recs: Sequence[AuditEvent]) -> str:
    lo, hi = min(e.occurred_at for e in recs), max(e.occurred_at for e in recs)
    return (f"SELECT event_id AS id FROM {db}.audit_log WHERE occurred_at BETWEEN {ts_lit(lo)} AND {ts_lit(hi)} "
            f"AND event_id IN {in_list([e.event_id for e in recs])}")


READS_SPEC = TableSpec(READS, PlateRead, "reads", lambda r: r.read_id, reads_table, _reads_existing)
ALERTS_SPEC = TableSpec(ALERTS, Alert, "alerts", lambda a: a.alert_id, alerts_table, _alerts_existing)
AUDIT_SPEC = TableSpec(AUDIT, AuditEvent, "audit_log", lambda e: e.event_id, audit_table, _audit_existing)
SPECS = (READS_SPEC, ALERTS_SPEC, AUDIT_SPEC)


def write_new(store: Store, db: str, spec: TableSpec[R], records: Sequence[R]) -> int:
    """Insert the records whose ids the table does not have yet; returns how many were inserted."""
    unique: dict[str, R] = {}
    for r in records:
        unique.setdefault(spec.record_id(r), r)
    if not unique:
        return 0
    present: set[str] = set()
    values = list(unique.values())
    for i in range(0, len(values), LOOKUP_CHUNK):  # an IN list per chunk stays under max_query_size
        present |= {row["id"] for row in store.rows(spec.existing_sql(db, values[i:i + LOOKUP_CHUNK]))}
    fresh = [r for i, r in unique.items() if i not in present]
    if fresh:
        with SINK_INSERT_SECONDS.labels(spec.table).time():
            store.insert_arrow(f"{db}.{spec.table}", spec.to_arrow(fresh))
        SINK_ROWS.labels(spec.table).inc(len(fresh))
    return len(fresh)


# --- the consume -> write -> commit loop, shared with the holds applier

class ConsumerLoop(Generic[R]):
    """Batches from one RecordConsumer, written by `write`, committed only after `write` returned.

    `write(records)` raises StoreError while ClickHouse is unavailable; the loop then
    pauses consumption and retries the same batch with backoff until it succeeds or
    `stop` is set (then nothing is committed and the batch is redelivered next start).
    `split`, when given, writes one record at a time and returns the records the store
    refused alone with its message; those are dead-lettered so they cannot stall the rest.
    """

    def __init__(self, name: str, consumer: RecordConsumer[R], deadletters: Publisher, store: Store,
                 write: Callable[[list[R]], int], settings: Settings,
                 split: Callable[[list[Received[R]]], list[tuple[Received[R], str]]] | None = None) -> None:
        self.name, self.consumer, self.deadletters, self.store = name, consumer, deadletters, store
        self.write, self.split = write, split
        self.batch_rows, self.batch_seconds = settings.sink_batch_rows, settings.sink_batch_seconds
        self.batch_bytes = settings.sink_batch_bytes
        self.retry_cap = settings.sink_retry_max_seconds
        self.written = 0          # rows inserted (after duplicate suppression)
        self.consumed = 0         # records consumed and committed
        self.outages = 0          # batches that needed at least one retry
        self.paused = threading.Event()  # set while ClickHouse refuses (for tests and health)
        self._dead_seen = 0       # consumer.dead_lettered already committed

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                batch = self._collect(stop)
                if batch or self.consumer.dead_lettered > self._dead_seen:
                    if not self._write(batch, stop):
                        return  # stopping mid-outage: nothing committed, the batch comes again
        finally:
            self.consumer.close()
            log.info("sink.closed", loop=self.name, consumed=self.consumed, written=self.written)

    def _collect(self, stop: threading.Event) -> list[Received[R]]:
        batch: list[Received[R]] = []
        first_at = None
        size = 0
        while not stop.is_set() and len(batch) < self.batch_rows and size < self.batch_bytes:
            left = 0.2 if first_at is None else self.batch_seconds - (time.monotonic() - first_at)
            if left <= 0:
                break
            got = self.consumer.poll_batch(self.batch_rows - len(batch), min(0.2, left))
            if got and first_at is None:
                first_at = time.monotonic()
            batch.extend(got)
            size += sum(len(r.message.value() or b"") for r in got)
            if first_at is None and self.consumer.dead_lettered > self._dead_seen:
                break  # only dead letters so far: commit them promptly
        return batch

    def _write(self, batch: list[Received[R]], stop: threading.Event) -> bool:
        records = [r.record for r in batch]
        attempt, refused_while_up = 0, 0
        while True:
            try:
                n = self.write(records) if records else 0
                break
            except StoreError as exc:
                attempt += 1
                if attempt == 1:
                    self.outages += 1
                    self.paused.set()
                    self.consumer.pause()
                refused_while_up = refused_while_up + 1 if self._store_answers() else 0
                if self.split is not None and refused_while_up >= REFUSALS_BEFORE_SPLIT:
                    try:
                        refused = self.split(batch)
                    except StoreError:
                        refused = None  # the store went away mid-split: back to retrying the batch
                    if refused is not None:
                        for received, reason in refused:
                            self.consumer.dead_letter(received.message, f"ClickHouse refused the row: {reason}",
                                                      "StoreError")
                        n = len(batch) - len(refused)
                        break
                delay = min(self.retry_cap, 0.1 * 2 ** min(attempt, 16))
                log.warning("sink.store_refused", loop=self.name, attempt=attempt, retry_in_s=round(delay, 2),
                            records=len(batch), error=str(exc)[:200])
                if not self._wait_paused(delay, stop, batch):
                    return False
                records = [r.record for r in batch]
        if self.paused.is_set():
            self.consumer.resume()
            self.paused.clear()
            log.info("sink.store_back", loop=self.name, attempts=attempt + 1, records=len(batch))
        self.deadletters.flush()   # dead letters acknowledged before their offsets are committed
        try:
            self.consumer.commit()  # ClickHouse has the rows: now the offsets may move
        except KafkaException as exc:
            # Safe to go on: the rows are stored, a later commit covers these offsets, and if
            # none comes the batch is redelivered and skipped as already present.
            log.warning("sink.commit_failed", loop=self.name, error=str(exc)[:200])
        self._dead_seen = self.consumer.dead_lettered
        self.written += n
        self.consumed += len(batch)
        return True

    def _store_answers(self) -> bool:
        try:
            self.store.scalar("SELECT 1")
            return True
        except StoreError:
            return False

    def _wait_paused(self, delay: float, stop: threading.Event, batch: list[Received[R]]) -> bool:
        """Sleep `delay` while serving the consumer (group membership); False if stopping."""
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if stop.is_set():
                return False
            got = self.consumer.poll_batch(self.batch_rows, min(0.2, max(0.0, deadline - time.monotonic())))
            if got:
                # A rebalance assigned a partition that was not paused: keep its records with the
                # held batch (they will be committed with it) and pause everything again.
                batch.extend(got)
                self.consumer.pause()
        return not stop.is_set()


def table_loop(settings: Settings, codec: Codec, store: Store, spec: TableSpec[R], deadletters: Publisher,
               group: str, topic: str | None = None,
               after_write: Callable[[list[R]], None] | None = None) -> ConsumerLoop[R]:
    """A ConsumerLoop that writes `spec.topic` (or `topic`) into `spec.table`.

    `after_write(records)` runs after each batch is stored and before its offsets are
    committed (the warehouse holds reads that arrive in a held plate range there)."""
    from alpr.core.store import EmbeddedStore
    from alpr.warehouse import fastreads

    db = settings.clickhouse_database
    fast = spec is READS_SPEC and isinstance(store, EmbeddedStore)  # ClickHouse decodes the Avro (fastreads)
    if fast:
        consumer: RecordConsumer = fastreads.ReadsConsumer(settings, codec, group, [topic or spec.topic],
                                                           deadletters, client_id=f"{group}-sink")
        write: Callable[[list], int] = fastreads.ReadsWriter(store, settings, codec, consumer, after_write)
    else:
        consumer = RecordConsumer(settings, codec, group, [topic or spec.topic], spec.model, deadletters,
                                  client_id=f"{group}-sink")

        def write(records: list[R]) -> int:
            n = write_new(store, db, spec, records)
            if after_write is not None:
                after_write(records)
            return n

    prefix = b"\xc3\x01" + codec.schema_for(spec.model).fingerprint

    def split(batch: list[Received[R]]) -> list[tuple[Received[R], str]]:
        refused = []
        for received in batch:
            record = received.record
            if isinstance(record, fastreads.RawRead):
                if record.dead:
                    continue
                try:
                    record = codec.decode(prefix + record.body, spec.model)
                except UndecodableRecord as exc:
                    refused.append((received, f"does not decode: {exc.reason}"[:500]))
                    continue
            try:
                write_new(store, db, spec, [record])
            except StoreError as exc:
                store.scalar("SELECT 1")  # raises StoreError if the store itself is down: not this row's fault
                refused.append((received, str(exc)[:500]))
        return refused

    return ConsumerLoop(f"sink-{spec.table}", consumer, deadletters, store, write, settings, split)
