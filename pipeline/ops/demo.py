"""`alpr demo`: the whole pipeline on the embedded stack, for a new user.

It starts its own dev broker on a free loopback port and its own chDB store in a
temporary directory (so it never collides with `alpr stack up`), then runs every
stage as production does: cameras and a recognition worker, the Faust alert
topology (a child process), the warehouse sink with the gated SQL proxy, and an
analyst who queries through the proxy. It prints what happens as it happens and
ends with one JSON line: frames, reads, alerts, stored_reads, audit_events, ...

The footage is generated (alpr.recognition.footage): the plates are known, so the demo
hotlist names some of them and a new user sees reads and alerts within a minute.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import click

from alpr.core import kafka
from alpr.audit.trail import AuditLog
from alpr.ops.broker import DevBroker, free_port
from alpr.recognition.camera import Camera, CameraConfig
from alpr.core.migrations import migrate
from alpr.core.settings import Settings
from alpr.core.store import open_store
from alpr.core.topics import ALERTS, AUDIT, READS, TOPICS, apply_topics
from alpr.schemas import Alert, AuditEvent, Codec, PlateRead

DEMO_CAMERAS = (
    # Inside the example geofence (infra/geofences.example.yaml): its alerts carry the tribal notice.
    CameraConfig(camera_id="demo-cam-1", agency="SPD", source="synthetic:0", lat=38.5816, lon=-121.4944,
                 heading_deg=90, max_fps=1.5, loop=True),
    CameraConfig(camera_id="demo-cam-2", agency="YCSO", source="synthetic:100", lat=38.7, lon=-122.1,
                 heading_deg=180, max_fps=1.5, loop=True),
)
ANALYST, ADMIN = "demo.analyst", "demo.admin"


def say(text: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {text}")


class Tail:
    """Follows reads, alerts and audit events from the start, printing and counting them."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.settings, self.codec, self.counts = settings, codec, Counter()
        self.partitions = [(t, p) for t in (READS, ALERTS, AUDIT) for p in range(TOPICS[t].partitions)]
        self.next_offset: dict[tuple[str, int], int] = {tp: 0 for tp in self.partitions}
        self._advanced = threading.Condition()
        self._consumer = Consumer(kafka.consumer_config(settings, "demo-tail", "demo-tail"))
        self._consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in self.partitions])

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                for msg in self._consumer.consume(100, 0.3):
                    if not msg.error():
                        self._show(msg.topic(), msg.value())
                        with self._advanced:
                            self.next_offset[(msg.topic(), msg.partition())] = msg.offset() + 1
                            self._advanced.notify_all()
        finally:
            self._consumer.close()

    def wait_caught_up(self, timeout: float) -> bool:
        """Wait until everything on the followed topics now has been shown (true ends, not watermarks)."""
        from confluent_kafka import Consumer

        from alpr.core.lag import true_end

        probe = Consumer(kafka.consumer_config(self.settings, "demo-tail-probe", "demo-tail-probe",
                                               logger=kafka._QUIET_LOG))
        try:
            ends = {(t, p): true_end(probe, t, p) for t, p in self.partitions}
        finally:
            probe.close()
        with self._advanced:
            return self._advanced.wait_for(lambda: all(self.next_offset[tp] >= end for tp, end in ends.items()),
                                           timeout)

    def _show(self, topic: str, value: bytes) -> None:
        if topic == READS:
            r = self.codec.decode(value, PlateRead)
            self.counts["reads"] += 1
            say(f"read   {r.plate:<8} camera {r.camera_id} ({r.agency}) confidence {r.confidence:.2f}")
        elif topic == ALERTS:
            from alpr.topologies.alerts import format_alert

            self.counts["alerts"] += 1
            click.echo(format_alert(self.codec.decode(value, Alert)))
        else:
            e = self.codec.decode(value, AuditEvent)
            if e.action != "CHAIN_START":  # chain bookkeeping, not an access: neither shown nor counted
                self.counts["audit_events"] += 1
                say(f"audit  {e.action} by {e.actor}: {e.outcome.value}"
                    + (f" (case {e.case_number})" if e.case_number else ""))


def _seed(settings: Settings, codec: Codec, password: str) -> None:
    """People, hotlist entries and a partial plate, entered the way staff would (audited)."""
    from alpr.alerting import hotlist
    from alpr.alerting import partials
    from alpr.access.users import UserDirectory, add_user
    from alpr.schemas.models import UserRole

    audit = AuditLog(settings, codec, "demo-setup")
    directory = UserDirectory(settings, codec).load()
    admin = add_user(settings, codec, directory, audit, None, name=ADMIN, role=UserRole.ADMINISTRATOR,
                     agency="RIC", password=secrets.token_urlsafe(16), trained_at=datetime.now(timezone.utc))
    add_user(settings, codec, directory, audit, admin, name=ANALYST, role=UserRole.ANALYST, agency="RIC",
             password=password, trained_at=datetime.now(timezone.utc) - timedelta(days=30))
    week = (datetime.now(timezone.utc) + timedelta(days=7)).date().isoformat()
    for plate, reason, case in (("BRA2E19", "STOLEN_VEHICLE", "26-11873"),
                                ("MN07PB9", "WARRANT", "26-10422")):  # a B where the camera sees an 8
        hotlist.add(settings, codec, hotlist.make_entry(plate=plate, state="CA", reason=reason, source="LOCAL",
                                                        case_number=case, expires=week, agency="RIC",
                                                        user="dispatch.demo"), audit=audit)
    partials.add(settings, codec, pattern="QRS?T*", case_number="26-09001", incident_type="ARMED ROBBERY",
                 user="det.demo", audit=audit)
    say("hotlist: BRA2E19 (stolen vehicle), MN07PB9 (warrant); partial plate QRS?T* (armed robbery)")


def _start_alerts(settings: Settings, work: Path) -> subprocess.Popen:
    geofences = resources.files("alpr.infra").joinpath("geofences.example.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPR_")}
    env.update(ALPR_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, ALPR_DATA_DIR=str(work), ALPR_METRICS_PORT="0",
               ALPR_GEOFENCES_FILE=str(geofences), ALPR_LOG_LEVEL="WARNING", ALPR_INSTANCE_ID="demo-alerts")
    return subprocess.Popen([sys.executable, "-m", "alpr.cli", "alerts"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(work / "alerts.log", "wb"))


def _analyst_queries(port: int, password: str) -> None:
    """What an analyst does: a query with a case and purpose, and one without (refused)."""
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import DatabaseError

    client = clickhouse_connect.get_client(host="127.0.0.1", port=port, username=ANALYST, password=password)
    sql = "SELECT plate, camera_id, captured_at FROM alpr.reads WHERE plate = 'BRA2E19' ORDER BY captured_at"
    rows = client.query(sql, settings={"SQL_case": "26-11873", "SQL_purpose": "stolen vehicle investigation"})
    say(f"analyst query through the proxy (case 26-11873): {len(rows.result_rows)} reads of BRA2E19")
    try:
        client.query("SELECT count() FROM alpr.reads")
    except DatabaseError as exc:
        reason = str(exc).split("DB::Exception: ")[-1].split(". (")[0].strip()
        say("analyst query without a case number: refused: " + textwrap.shorten(reason, 110, placeholder=" ..."))


def run_demo(base: Settings, duration: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="alpr-demo-"))
    port, proxy_port = free_port(), free_port()
    settings = base.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}", "data_dir": work,
                                       "broker_port": port, "clickhouse_url": None, "schema_registry_url": None,
                                       "proxy_port": proxy_port, "metrics_port": 0, "bind_host": "127.0.0.1"})
    codec = Codec()
    summary = {"frames": 0, "reads": 0, "alerts": 0, "stored_reads": 0, "audit_events": 0}
    broker = DevBroker("127.0.0.1", port, work / "logs" / "broker.log")
    stop_inputs, stop_rest = threading.Event(), threading.Event()
    threads: dict[str, threading.Thread] = {}
    alerts_proc: subprocess.Popen | None = None
    store = None

    def spawn(name: str, target, stop: threading.Event) -> None:
        threads[name] = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
        threads[name].start()

    try:
        say(f"dev broker on 127.0.0.1:{port}; embedded ClickHouse in {work}")
        broker.start()
        kafka.check_reachable(settings, timeout=10)
        apply_topics(kafka.admin(settings), replication_factor=1)
        store = open_store(settings)
        migrate(store, settings)
        say(f"{len(TOPICS)} topics (infra/topics.yaml) and the ClickHouse schema (infra/clickhouse) ready")
        tail = Tail(settings, codec)
        spawn("tail", tail.run, stop_rest)

        password = secrets.token_urlsafe(16)
        _seed(settings, codec, password)
        alerts_proc = _start_alerts(settings, work)
        say("alert topology starting (Faust worker, a child process)")

        from alpr.access.proxy import ProxyService
        from alpr.warehouse.service import Warehouse

        warehouse = Warehouse(settings, store, codec, daily_retention=False)
        proxy = ProxyService(settings, store, codec)
        spawn("warehouse", lambda stop: warehouse.run(stop, extra_services=[proxy]), stop_rest)
        say(f"warehouse sink and SQL proxy (http://127.0.0.1:{proxy_port}) running")

        from alpr.commands.recognition import open_reader_or_fail
        from alpr.recognition.worker import RecognitionWorker

        worker = RecognitionWorker(settings, open_reader_or_fail("onnxruntime", threads=2), batch_size=4)
        spawn("worker", worker.run, stop_inputs)
        publisher = kafka.Publisher(settings, codec, "demo-camera")
        cameras = [Camera(c, publisher) for c in DEMO_CAMERAS]
        for cam in cameras:
            say(f"camera {cam.config.camera_id} ({cam.config.agency}) at {cam.config.lat:.4f},"
                f"{cam.config.lon:.4f} replaying generated footage at {cam.config.max_fps} fps")
            spawn(f"camera-{cam.config.camera_id}", cam.run, stop_inputs)

        deadline = time.monotonic() + duration
        next_status, queried = time.monotonic() + 10, False
        while time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            publisher.poll(0)
            if not queried and warehouse.counters().get("sink-reads_written", 0) and tail.counts["reads"] >= 4:
                queried = True
                _analyst_queries(proxy_port, password)
            if time.monotonic() >= next_status:
                next_status += 10
                say(f"status: {sum(c.stats.sent for c in cameras)} frames sent, {worker.stats.frames} read, "
                    f"{tail.counts['reads']} plate reads, {tail.counts['alerts']} alerts, "
                    f"{warehouse.counters().get('sink-reads_written', 0):.0f} stored")
        say("stopping: cameras, then the worker finishes its batch and commits")
        stop_inputs.set()
        for name in [n for n in threads if n.startswith(("camera", "worker"))]:
            threads[name].join(30)
        publisher.flush()
        catch_up = time.monotonic() + 20
        while time.monotonic() < catch_up and warehouse.counters().get("sink-reads_written", 0) < tail.counts["reads"]:
            time.sleep(0.2)  # the sink commits in batches; give it the last one
        summary.update(frames=sum(c.stats.sent for c in cameras), reads=tail.counts["reads"],
                       frames_dropped=sum(c.stats.dropped for c in cameras), reads_folded=worker.stats.folded)
        summary["stored_reads"] = int(store.scalar(f"SELECT count() FROM {settings.clickhouse_database}.reads"))
        alerts_proc.send_signal(signal.SIGTERM)
        try:
            alerts_proc.wait(20)
        except subprocess.TimeoutExpired:
            alerts_proc.kill()
        tail.wait_caught_up(timeout=15)  # every read, alert and audit event published is shown and counted
        summary.update(alerts=tail.counts["alerts"], audit_events=tail.counts["audit_events"])
    finally:
        stop_inputs.set()
        stop_rest.set()
        for t in threads.values():
            t.join(30)
        if alerts_proc is not None and alerts_proc.poll() is None:
            alerts_proc.kill()
        if store is not None:
            store.close()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    click.echo(json.dumps(summary))
    return summary
