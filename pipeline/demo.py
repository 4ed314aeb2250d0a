"""`alpr demo`: the whole pipeline on the embedded stack, for a new user.

It starts its own dev broker on a free loopback port and its own chDB store in a
temporary directory (so it never collides with `alpr stack up`), runs every stage
that exists, prints what happens as it happens, and ends with one JSON line:
{"frames", "reads", "alerts", "stored_reads", "audit_events", ...}.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import click

from pipeline import kafka
from pipeline.broker import DevBroker, free_port
from pipeline.migrations import migrate
from pipeline.settings import Settings
from pipeline.store import open_store
from pipeline.topics import apply_topics


def say(text: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {text}")


def run_demo(base: Settings, duration: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="alpr-demo-"))
    port = free_port()
    settings = base.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}", "data_dir": work,
                                       "broker_port": port, "clickhouse_url": None})
    summary = {"frames": 0, "reads": 0, "alerts": 0, "stored_reads": 0, "audit_events": 0}
    broker = DevBroker("127.0.0.1", port, work / "logs" / "broker.log")
    try:
        say(f"starting the dev broker on 127.0.0.1:{port} (data in {work})")
        broker.start()
        kafka.check_reachable(settings, timeout=10)
        created = apply_topics(kafka.admin(settings), replication_factor=1)
        say(f"created {len(created)} topics from infra/topics.yaml")
        store = open_store(settings)
        try:
            applied = migrate(store, settings)
            say(f"embedded ClickHouse ready: {len(applied)} migrations applied")
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            summary["stored_reads"] = int(store.scalar(f"SELECT count() FROM {settings.clickhouse_database}.reads"))
        finally:
            store.close()
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    click.echo(json.dumps(summary))
    return summary
