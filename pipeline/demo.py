"""`alpr demo`: the whole pipeline on the embedded stack, for a new user.

It starts its own dev broker on a free loopback port and its own chDB store in a
temporary directory (so it never collides with `alpr stack up`), runs every stage
in this process (the alert topology as a child process, as in production), prints
what happens as it happens, and ends with one JSON line: frames, reads, alerts,
stored_reads, audit_events and a few more counters.

The footage is generated (pipeline.footage): the plates are known, so the demo
hotlist can name some of them and a new user sees reads and alerts within a minute.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import click

from pipeline import kafka
from pipeline.broker import DevBroker, free_port
from pipeline.camera import Camera, CameraConfig
from pipeline.errors import AlprError
from pipeline.migrations import migrate
from pipeline.settings import Settings
from pipeline.store import open_store
from pipeline.topics import ALERTS, AUDIT, READS, TOPICS, apply_topics
from schemas import Alert, AuditEvent, Codec, PlateRead

DEMO_CAMERAS = (
    CameraConfig(camera_id="demo-cam-1", agency="SPD", source="synthetic:0", lat=38.5816, lon=-121.4944,
                 heading_deg=90, max_fps=1.5, loop=True),
    CameraConfig(camera_id="demo-cam-2", agency="YCSO", source="synthetic:100", lat=38.7, lon=-122.1,
                 heading_deg=180, max_fps=1.5, loop=True),
)


def say(text: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {text}", nl=True)


class Tail:
    """Follows reads, alerts and audit events from the start, printing and counting them."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.codec, self.counts = codec, Counter()
        self._consumer = Consumer(kafka.consumer_config(settings, "demo-tail", "demo-tail"))
        self._consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING)
                               for t in (READS, ALERTS, AUDIT) for p in range(TOPICS[t].partitions)])

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                for msg in self._consumer.consume(100, 0.3):
                    if not msg.error():
                        self._show(msg.topic(), msg.value())
        finally:
            self._consumer.close()

    def _show(self, topic: str, value: bytes) -> None:
        if topic == READS:
            r = self.codec.decode(value, PlateRead)
            self.counts["reads"] += 1
            say(f"read   {r.plate:<8} camera {r.camera_id} ({r.agency}) confidence {r.confidence:.2f}")
        elif topic == ALERTS:
            a = self.codec.decode(value, Alert)
            self.counts["alerts"] += 1
            from topologies.alerts import format_alert

            click.echo(format_alert(a))
        else:
            e = self.codec.decode(value, AuditEvent)
            self.counts["audit_events"] += 1
            say(f"audit  {e.action} by {e.actor}: {e.outcome.value}")


def run_demo(base: Settings, duration: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="alpr-demo-"))
    port = free_port()
    settings = base.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}", "data_dir": work,
                                       "broker_port": port, "clickhouse_url": None,
                                       "schema_registry_url": None})
    codec = Codec()
    summary = {"frames": 0, "reads": 0, "alerts": 0, "stored_reads": 0, "audit_events": 0}
    broker = DevBroker("127.0.0.1", port, work / "logs" / "broker.log")
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def spawn(name: str, target, *args) -> None:
        t = threading.Thread(target=target, args=(*args, stop), name=name, daemon=True)
        t.start()
        threads.append(t)

    try:
        say(f"dev broker on 127.0.0.1:{port}; embedded ClickHouse in {work}")
        broker.start()
        kafka.check_reachable(settings, timeout=10)
        apply_topics(kafka.admin(settings), replication_factor=1)
        say(f"{len(TOPICS)} topics ready (infra/topics.yaml)")
        store = open_store(settings)
        migrate(store, settings)
        say("ClickHouse schema applied (infra/clickhouse/*.sql)")

        tail = Tail(settings, codec)
        spawn("tail", tail.run)

        from pipeline.commands.recognition import open_reader_or_fail
        from pipeline.worker import RecognitionWorker

        say("loading the plate reader (ONNX Runtime, CPU)")
        worker = RecognitionWorker(settings, open_reader_or_fail("onnxruntime", threads=2), batch_size=4)
        spawn("worker", worker.run)

        publisher = kafka.Publisher(settings, codec, "demo-camera")
        cameras = [Camera(c, publisher) for c in DEMO_CAMERAS]
        for cam in cameras:
            say(f"camera {cam.config.camera_id} ({cam.config.agency}) at "
                f"{cam.config.lat:.4f},{cam.config.lon:.4f} replaying generated footage")
            spawn(f"camera-{cam.config.camera_id}", cam.run)

        deadline = time.monotonic() + duration
        next_status = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            publisher.poll(0)
            if time.monotonic() >= next_status:
                next_status += 10
                say(f"status: {sum(c.stats.sent for c in cameras)} frames sent, {worker.stats.frames} read by the "
                    f"worker, {tail.counts['reads']} plate reads, {tail.counts['alerts']} alerts")
        say("stopping: cameras, then the worker finishes its batch and commits")
        stop.set()
        for t in threads:
            t.join(30)
        publisher.flush()
        summary.update(frames=sum(c.stats.sent for c in cameras), reads=tail.counts["reads"],
                       alerts=tail.counts["alerts"], audit_events=tail.counts["audit_events"],
                       frames_dropped=sum(c.stats.dropped for c in cameras), reads_folded=worker.stats.folded)
        summary["stored_reads"] = int(store.scalar(f"SELECT count() FROM {settings.clickhouse_database}.reads"))
        store.close()
    except AlprError:
        raise
    finally:
        stop.set()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    click.echo(json.dumps(summary))
    return summary
