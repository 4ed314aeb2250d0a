"""The sink and the warehouse service, on the real dev broker and embedded ClickHouse.

Each test uses its own topics and consumer groups. The "ClickHouse down" case uses
a wrapper around the real EmbeddedStore that raises StoreError on every call while
down: chDB runs inside this process, so the engine itself cannot be stopped and
started again underneath the sink.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

from alpr.core import kafka
from alpr.warehouse import sink
from alpr.core.errors import Unavailable
from alpr.core.store import Store, StoreError
from alpr.core.topics import DEADLETTER
from alpr.warehouse.service import Warehouse, embedded_lock, open_store_for_command, warehouse_running
from alpr.schemas import DeadLetter, EvidenceHold
from tests.conftest import make_topic
from tests.records import alert, audit, read

NOW = datetime.now(timezone.utc)


def wait_until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)  # polling an observable condition with a deadline, not a fixed wait
    raise AssertionError(f"timed out waiting for {what}")


def running(loop_or_run) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    target = loop_or_run.run if hasattr(loop_or_run, "run") else loop_or_run
    t = threading.Thread(target=target, args=(stop,), daemon=True)
    t.start()
    return t, stop


def committed(settings, group: str, topic: str, partitions: int) -> list[int]:
    c = Consumer(kafka.consumer_config(settings, group, "test-committed"))
    try:
        return [tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)]
    finally:
        c.close()


def count(store: Store, table: str = "reads") -> int:
    return int(store.scalar(f"SELECT count() FROM alpr.{table}"))  # no FINAL: duplicates would show


@pytest.fixture
def fast(settings):
    return settings.model_copy(update={"sink_batch_seconds": 0.2, "sink_retry_max_seconds": 0.4})


def _reads(unique: str, n: int) -> list:
    return [read(i).model_copy(update={"read_id": f"{unique}-{i}", "captured_at": NOW - timedelta(minutes=i)})
            for i in range(n)]


def test_redelivered_reads_are_stored_once(fast, codec, store, unique) -> None:
    topic = make_topic(fast, f"reads-{unique}", partitions=2)
    pub = kafka.Publisher(fast, codec, "test")
    reads = _reads(unique, 10)
    for r in reads + [reads[3], reads[5]]:  # two records delivered twice
        pub.publish(topic, r.plate, r)
    pub.flush()
    dl = kafka.Publisher(fast, codec, "test-dl")

    first = sink.table_loop(fast, codec, store, sink.READS_SPEC, dl, f"g1-{unique}", topic)
    t, stop = running(first)
    wait_until(lambda: first.consumed == 12, what="12 records consumed and committed")
    stop.set(), t.join(10)
    assert count(store) == 10 and first.written == 10
    assert sum(o for o in committed(fast, f"g1-{unique}", topic, 2) if o >= 0) == 12  # one plate: one partition

    again = sink.table_loop(fast, codec, store, sink.READS_SPEC, dl, f"g2-{unique}", topic)  # from offset 0
    t, stop = running(again)
    wait_until(lambda: again.consumed == 12, what="re-consumption from the start")
    stop.set(), t.join(10)
    assert count(store) == 10 and again.written == 0
    row = store.rows(f"SELECT plate, agency, box, frame_id, hex(crop_jpeg) AS crop FROM alpr.reads WHERE read_id = '{unique}-3'")[0]
    assert (row["plate"], row["agency"], row["box"], row["frame_id"], row["crop"]) == \
        ("7ABC123", "SPD", [10, 20, 110, 50], "f3", b"\xff\xd8crop".hex().upper())


class FlakyStore(Store):
    """The real store, but every call raises StoreError while `down` is set (ClickHouse unreachable)."""

    def __init__(self, real: Store) -> None:
        self.real, self.database = real, real.database
        self.down = threading.Event()
        self.refused_inserts: list[list[str]] = []
        self.refused_calls = 0

    def query_bytes(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        if self.down.is_set():
            self.refused_calls += 1
            raise StoreError("Code: 210. DB::NetException: Connection refused (simulated outage)")
        return self.real.query_bytes(sql, fmt)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        if self.down.is_set():
            self.refused_inserts.append(data.column("read_id").to_pylist())
            raise StoreError("Code: 210. DB::NetException: Connection refused (simulated outage)")
        self.real.insert_arrow(table, data)


def test_sink_survives_a_clickhouse_outage(fast, codec, store, unique) -> None:
    settings = fast.model_copy(update={"sink_batch_rows": 20})
    topic = make_topic(settings, f"reads-{unique}")
    flaky = FlakyStore(store)
    flaky.down.set()
    pub = kafka.Publisher(settings, codec, "test")
    for r in _reads(unique, 50):
        pub.publish(topic, r.plate, r)
    pub.flush()
    loop = sink.table_loop(settings, codec, flaky, sink.READS_SPEC, kafka.Publisher(settings, codec, "dl"),
                           f"g-{unique}", topic)
    t, stop = running(loop)
    wait_until(lambda: loop.paused.is_set() and flaky.refused_calls >= 4, what="the sink to pause and retry")
    assert loop.paused.is_set() and count(store) == 0
    assert committed(settings, f"g-{unique}", topic, 1) == [-1001]  # nothing committed while down
    flaky.down.clear()
    wait_until(lambda: loop.consumed == 50, what="catch-up after the outage")
    stop.set(), t.join(10)
    assert count(store) == 50
    assert committed(settings, f"g-{unique}", topic, 1) == [50]
    assert loop.outages >= 1 and not loop.paused.is_set()


def test_outage_holds_one_batch_only(fast, codec, store, unique) -> None:
    """While refused, the sink retries the same bounded batch and fetches nothing more."""
    settings = fast.model_copy(update={"sink_batch_rows": 20})
    topic = make_topic(settings, f"reads-{unique}")
    pub = kafka.Publisher(settings, codec, "test")
    for r in _reads(unique, 50):
        pub.publish(topic, r.plate, r)
    pub.flush()
    flaky = FlakyStore(store)
    real_rows = flaky.query_bytes

    def lookups_ok_inserts_refused(sql: str, fmt: str = "JSONEachRow") -> bytes:
        return store.query_bytes(sql, fmt) if "read_id IN" in sql else real_rows(sql, fmt)

    flaky.query_bytes = lookups_ok_inserts_refused  # the id lookup works, the insert is refused
    flaky.down.set()
    loop = sink.table_loop(settings, codec, flaky, sink.READS_SPEC, kafka.Publisher(settings, codec, "dl"),
                           f"g-{unique}", topic)
    t, stop = running(loop)
    wait_until(lambda: len(flaky.refused_inserts) >= 3, what="three refused inserts")
    flaky.down.clear()
    wait_until(lambda: loop.consumed == 50, what="catch-up")
    stop.set(), t.join(10)
    first = flaky.refused_inserts[0]
    assert len(first) <= 20 and all(attempt == first for attempt in flaky.refused_inserts)
    assert count(store) == 50


def test_row_refused_while_store_is_up_goes_to_dead_letters(fast, codec, store, unique) -> None:
    """A row ClickHouse keeps refusing (here: a wrapper that refuses one id) must not stall the rest."""
    topic = make_topic(fast, f"reads-{unique}")
    poison = f"{unique}-2"

    class RefusesOne(FlakyStore):
        def insert_arrow(self, table: str, data: pa.Table) -> None:
            if poison in data.column("read_id").to_pylist():
                raise StoreError("Code: 469. DB::Exception: Constraint violated (simulated)")
            self.real.insert_arrow(table, data)

    pub = kafka.Publisher(fast, codec, "test")
    for r in _reads(unique, 5):
        pub.publish(topic, r.plate, r)
    pub.flush()
    loop = sink.table_loop(fast, codec, RefusesOne(store), sink.READS_SPEC, kafka.Publisher(fast, codec, "dl"),
                           f"g-{unique}", topic)
    t, stop = running(loop)
    wait_until(lambda: loop.consumed == 5, what="the batch to be handled")
    stop.set(), t.join(10)
    assert count(store) == 4
    dead = [codec.decode(m.value(), DeadLetter) for m in kafka.read_to_end(fast, DEADLETTER, idle=0.5)]
    mine = [d for d in dead if d.source_topic == topic]
    assert len(mine) == 1 and "Constraint violated" in mine[0].reason and mine[0].error_class == "StoreError"


def test_alerts_audit_and_undecodable_records(fast, codec, store, unique) -> None:
    topics = {name: make_topic(fast, f"{name}-{unique}") for name in ("reads", "alerts", "audit_log")}
    pub = kafka.Publisher(fast, codec, "test")
    pub.publish(topics["alerts"], "7ABC123", alert().model_copy(update={"alert_id": f"a-{unique}"}))
    pub.publish(topics["audit_log"], "analyst1", audit().model_copy(update={"event_id": f"e-{unique}"}))
    pub.publish_raw(topics["reads"], b"k", b"\xc3\x01not avro at all")
    pub.publish(topics["reads"], "7ABC123", _reads(unique, 1)[0])
    pub.flush()
    dl = kafka.Publisher(fast, codec, "dl")
    loops = [sink.table_loop(fast, codec, store, spec, dl, f"g-{spec.table}-{unique}", topics[spec.table])
             for spec in sink.SPECS]
    threads = [running(lp) for lp in loops]
    wait_until(lambda: all(lp.consumed >= 1 for lp in loops) and loops[0].consumer.dead_lettered == 1,
               what="every table written and the bad record dead-lettered")
    for t, stop in threads:
        stop.set(), t.join(10)
    a = store.rows("SELECT * FROM alpr.alerts")[0]
    assert (a["alert_id"], a["kind"], a["match_key"], a["reason"], a["case_number"], a["notices"]) == \
        (f"a-{unique}", "EXACT", "CA:7ABC123", "STOLEN_VEHICLE", "24-001", ["tribal land"])
    e = store.rows("SELECT * FROM alpr.audit_log")[0]
    assert (e["event_id"], e["outcome"], e["details"], e["rows"]) == (f"e-{unique}", "ALLOWED", {"ip": "127.0.0.1"}, 1)
    assert count(store) == 1
    assert committed(fast, f"g-reads-{unique}", topics["reads"], 1) == [2]  # the dead letter counts as handled


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")


def test_warehouse_applies_holds_and_stops_within_its_deadline(fast, codec, store, unique) -> None:
    topics = {name: make_topic(fast, f"{name}-{unique}") for name in ("reads", "alerts", "audit_log", "holds")}
    wh = Warehouse(fast, store, codec, group_prefix=f"wh-{unique}", topics=topics)
    service = Recorder()
    stop = threading.Event()
    t = threading.Thread(target=wh.run, args=(stop, [service]), daemon=True)
    t.start()
    pub = kafka.Publisher(fast, codec, "test")
    reads = _reads(unique, 3)
    for r in reads:
        pub.publish(topics["reads"], r.plate, r)
    hold = EvidenceHold(hold_id=f"h-{unique}", case_number="C-9", reason="evidence", agency="RIC",
                        read_ids=[reads[0].read_id], placed_by="sgt1", placed_at=NOW, status="ACTIVE")
    pub.publish(topics["holds"], hold.hold_id, hold)
    pub.flush()
    wait_until(lambda: count(store) == 3 and wh.holds_loop.consumed == 1, what="reads stored and hold applied")
    assert store.scalar(f"SELECT dictHas('alpr.held_reads_dict', tuple('{reads[0].read_id}'))") == 1
    wh.retention.run_now()  # the daily run, due now
    wait_until(lambda: len(wh.retention.runs) == 1, what="the scheduled retention run")
    assert (wh.retention.runs[0]["purged"], count(store)) == (0, 3)
    assert wh.retention.next_at > datetime.now(timezone.utc) + timedelta(hours=1)
    started = time.monotonic()
    stop.set()
    t.join(fast.shutdown_deadline_s + 5)
    assert not t.is_alive() and time.monotonic() - started < fast.shutdown_deadline_s
    assert service.calls == ["start", "stop"]
    assert committed(fast, f"wh-{unique}-reads", topics["reads"], 1) == [3]


def test_commands_go_through_the_warehouse_that_holds_the_store(settings) -> None:
    """With the lock held, a command never opens chDB itself; without a control endpoint it says why."""
    with embedded_lock(settings):
        assert warehouse_running(settings)
        with pytest.raises(Unavailable, match="serves no control endpoint"):
            open_store_for_command(settings)
        with pytest.raises(Unavailable, match="already running"):
            with embedded_lock(settings):
                pass
    assert not warehouse_running(settings)


def test_alpr_warehouse_process_stops_on_sigterm(settings, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPR_")}
    env.update(ALPR_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, ALPR_DATA_DIR=str(tmp_path / "wh"),
               ALPR_SHUTDOWN_DEADLINE_S="10", ALPR_METRICS_PORT="0", ALPR_PROXY_PORT="0")
    root = Path(__file__).parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "alpr.cli", "warehouse"], env=env, cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        probe = settings.model_copy(update={"data_dir": tmp_path / "wh"})
        wait_until(lambda: warehouse_running(probe) or proc.poll() is not None, 60, "the warehouse to start")
        assert proc.poll() is None, "".join(lines)
        wait_until(lambda: any("warehouse.running" in x for x in lines), 60, "the warehouse to run")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
        reader.join(5)  # stderr ends with the process
        err = "".join(lines)
        assert rc == 0, err
        assert "proxy.started" in err and "proxy.stopped" in err and "warehouse.stopped" in err
        assert '"stopped": "warehouse"' in proc.stdout.read()  # the stop summary
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class _Letters:
    """Stands in for the consumer's dead-letter call in writer-level tests."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def dead_letter(self, message, reason: str, error_class: str) -> None:
        self.sent.append((reason, error_class))


def test_fast_path_stores_only_what_the_model_accepts(settings, codec, store, unique) -> None:
    """Each PlateRead rule broken once in an Avro body the model never saw: ClickHouse's check refuses it,
    the model then names why, and it is dead-lettered; a valid read in the same batch is stored."""
    import io

    import fastavro

    from alpr.schemas import PlateRead
    from alpr.warehouse import fastreads

    schema = codec.schema_for(PlateRead)
    good = read(0).model_copy(update={"read_id": f"{unique}-ok", "captured_at": NOW}).to_avro()
    broken = {"plate": {"plate": "ab-12"}, "confidence": {"confidence": 1.5},
              "lat": {"position": {"lat": 91.0, "lon": 0.0, "heading_deg": None}},
              "heading": {"position": {"lat": 1.0, "lon": 0.0, "heading_deg": 360.0}},
              "box": {"box": [50, 0, 10, 0]}, "frames": {"frames_seen": 0}, "camera": {"camera_id": ""},
              "model": {"model_version": "m" * 257}}

    def body(fields: dict) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema.parsed, fields)
        return buf.getvalue()

    raws = [fastreads.RawRead(None, body(good), good["read_id"])]
    for name, change in broken.items():
        fields = {**good, **change, "read_id": f"{unique}-{name}"}
        raws.append(fastreads.RawRead(None, body(fields), fields["read_id"]))
    letters = _Letters()
    writer = fastreads.ReadsWriter(store, settings, codec, letters)
    assert writer(raws) == 1
    assert [r["read_id"] for r in store.rows("SELECT read_id FROM alpr.reads")] == [f"{unique}-ok"]
    assert writer.fast_rows == 1 and len(letters.sent) == len(broken)
    assert all(cls == "UndecodableRecord" and "PlateRead invalid" in reason for reason, cls in letters.sent)
    assert all(r.dead for r in raws[1:])
    assert writer(raws) == 0 and len(letters.sent) == len(broken)  # a retried batch: no second dead letter


def test_fast_path_falls_back_when_a_body_does_not_line_up(settings, codec, store, unique) -> None:
    """A body with trailing bytes shifts every later record in the container: the batch takes the slow path."""
    from alpr.schemas import PlateRead
    from alpr.warehouse import fastreads

    prefix = len(b"\xc3\x01") + len(codec.schema_for(PlateRead).fingerprint)
    reads = _reads(unique, 3)
    bodies = [codec.encode(r, "alpr.reads")[prefix:] for r in reads]
    bodies[1] += b"\x02\x41"  # trailing bytes: fastavro's reader sees them, the model path refuses the record
    raws = [fastreads.RawRead(None, b, fastreads.first_string(b)) for b in bodies]
    letters = _Letters()
    writer = fastreads.ReadsWriter(store, settings, codec, letters)
    assert writer(raws) == 2 and writer.fast_rows == 0
    assert {r["read_id"] for r in store.rows("SELECT read_id FROM alpr.reads")} == {reads[0].read_id, reads[2].read_id}
    assert len(letters.sent) == 1 and "trailing bytes" in letters.sent[0][0]
