"""Running processes: metrics that move with traffic, a clean SIGTERM, and status that sees a stage die."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from alpr.core import kafka
from alpr.ops.broker import DevBroker, free_port
from alpr.core.settings import load_settings
from alpr.ops.status import StatusFollower
from alpr.core.topics import FRAMES, READS, STATUS, TOPICS, apply_topics
from alpr.recognition.worker import GROUP
from alpr.schemas import Codec, PlateRead
from alpr.schemas.models import Heartbeat
from tests.conftest import drain, wait_for


@pytest.fixture
def stack(tmp_path):
    b = DevBroker("127.0.0.1", free_port(), tmp_path / "broker.log").start()
    s = load_settings(kafka_bootstrap=b.bootstrap, data_dir=tmp_path, heartbeat_interval_s=1.0)
    apply_topics(kafka.admin(s), replication_factor=1)
    yield s
    b.stop()


def _spawn(settings, tmp_path: Path, name: str, *args: str, **env: str) -> subprocess.Popen:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ALPR_")}
    e.update(ALPR_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, ALPR_DATA_DIR=str(tmp_path), ALPR_METRICS_PORT="0",
             ALPR_HEARTBEAT_INTERVAL_S="1", ALPR_INSTANCE_ID=name, **env)
    return subprocess.Popen([sys.executable, "-m", "alpr.cli", *args], env=e, stdout=subprocess.PIPE,
                            stderr=open(tmp_path / f"{name}.log", "wb"), text=True)


def _metrics_url(settings, instance: str, timeout: float = 60) -> str:
    codec = Codec()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in drain(settings, STATUS, 10000, timeout=1):
            hb = codec.decode(m.value(), Heartbeat)
            if hb.instance_id == instance and hb.metrics_url:
                return hb.metrics_url
    raise AssertionError(f"{instance} never reported a metrics URL")


def _scrape(url: str, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url + path, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (ConnectionError, urllib.error.URLError) as exc:
        return 0, f"# {type(exc).__name__}"


def _value(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))




@pytest.mark.timeout(240)
def test_camera_and_worker_metrics_move_and_sigterm_commits_everything(stack, tmp_path) -> None:
    settings, codec = stack, Codec()
    camera = _spawn(settings, tmp_path, "cam-a", "camera", "--camera-id", "cam-a", "--agency", "SPD",
                    "--source", "synthetic:3", "--lat", "38.5", "--lon", "-121.5", "--max-fps", "4", "--loop")
    worker = _spawn(settings, tmp_path, "worker-a", "worker", "--batch-size", "2")
    try:
        cam_url, worker_url = _metrics_url(settings, "cam-a"), _metrics_url(settings, "worker-a")
        wait_for(lambda: _value(_scrape(cam_url)[1], "alpr_camera_frames_sent_total") >= 5, 60, "camera frames")
        wait_for(lambda: _scrape(worker_url, "/readyz")[0] == 200, 60, "worker ready")
        assert _scrape(worker_url, "/healthz")[0] == 200
        wait_for(lambda: _value(_scrape(worker_url)[1], "alpr_reads_total") >= 1, 120, "worker reads")
        text = _scrape(worker_url)[1]
        assert _value(text, "alpr_worker_frames_total") >= 1
        assert "alpr_inference_seconds_bucket" in text
        camera.send_signal(signal.SIGTERM)
        assert camera.wait(30) == 0
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, "worker did not exit cleanly within its deadline"
        summary = json.loads(worker.stdout.read().strip().splitlines()[-1])
    finally:
        for p in (camera, worker):
            if p.poll() is None:
                p.kill()
    # What the worker consumed is committed, and every committed frame's reads are on the topic.
    probe = Consumer(kafka.consumer_config(settings, GROUP, "probe"))
    committed = probe.committed([TopicPartition(FRAMES, p) for p in range(TOPICS[FRAMES].partitions)], timeout=10)
    probe.close()
    assert sum(max(tp.offset, 0) for tp in committed) == summary["frames"]
    reads = [codec.decode(m.value(), PlateRead) for m in drain(settings, READS, 10000, timeout=3, partitions=6)]
    assert len(reads) == summary["reads"] >= 1


@pytest.mark.timeout(180)
def test_status_shows_a_killed_worker_down_within_10_seconds(stack, tmp_path) -> None:
    settings = stack
    worker = _spawn(settings, tmp_path, "worker-k", "worker")
    follower = StatusFollower(settings)
    try:
        wait_for(lambda: (follower.poll(0.5) or True) and "worker     UP" in follower.board.render({}), 60,
               "worker up in status")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        killed = time.monotonic()
        wait_for(lambda: (follower.poll(0.5) or True) and "worker     DOWN" in follower.board.render({}), 15,
               "worker down in status")
        assert time.monotonic() - killed <= 10
    finally:
        follower.close()
        if worker.poll() is None:
            worker.kill()


@pytest.mark.timeout(240)
def test_alerts_warehouse_and_proxy_metrics_move_with_traffic(stack, tmp_path) -> None:
    """Hotlist entry + reads in; alerts raised, rows stored, an analyst query served: each process's counters move."""
    import clickhouse_connect

    from alpr.alerting import hotlist
    from tests.people import PASSWORD, publish_user
    from tests.records import hotlist as hotlist_entry
    from tests.records import read

    settings, codec = stack, Codec()
    proxy_port = free_port()
    publish_user(settings, codec, "analyst-ops")
    hotlist.add(settings, codec, hotlist_entry("7OPS123").model_copy(
        update={"expires_at": datetime.now(timezone.utc).replace(year=2099)}))
    alerts = _spawn(settings, tmp_path, "alerts-a", "alerts")
    warehouse = _spawn(settings, tmp_path, "warehouse-a", "warehouse", ALPR_PROXY_PORT=str(proxy_port))
    try:
        alerts_url, wh_url = _metrics_url(settings, "alerts-a", 90), _metrics_url(settings, "warehouse-a", 90)
        wait_for(lambda: _scrape(alerts_url, "/readyz")[0] == 200, 90, "alerts ready")
        pub = kafka.Publisher(settings, codec, "ops-test")
        now = datetime.now(timezone.utc)
        for i, plate in enumerate(("7OPS123", "7OPS999", "8ABC000")):
            pub.publish(READS, plate, read(i, plate).model_copy(update={"read_id": f"ops-{i}", "captured_at": now}))
        pub.flush()
        wait_for(lambda: _value(_scrape(alerts_url)[1], 'alpr_alerts_total{kind="EXACT"}') >= 1, 90, "an alert")
        wait_for(lambda: _value(_scrape(wh_url)[1], 'alpr_sink_rows_total{table="reads"}') >= 3, 90, "rows stored")
        client = clickhouse_connect.get_client(host="127.0.0.1", port=proxy_port, username="analyst-ops",
                                               password=PASSWORD)
        rows = client.query("SELECT count() FROM alpr.reads WHERE read_id LIKE 'ops-%'",
                            settings={"SQL_case": "24-OPS", "SQL_purpose": "operations test query"}).result_rows
        assert rows == [(3,)]
        text = _scrape(wh_url)[1]
        assert _value(text, 'alpr_proxy_queries_total{outcome="allowed"}') >= 1
        assert _value(text, "alpr_audit_write_seconds_count") >= 1
        assert _scrape(wh_url, "/readyz")[0] == 200
    finally:
        for p in (alerts, warehouse):
            p.send_signal(signal.SIGTERM)
        for p in (alerts, warehouse):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.timeout(180)
def test_standalone_proxy_serves_metrics_and_stops_on_sigterm(stack, tmp_path) -> None:
    """`alpr proxy` on its own (the server-mode shape): probes answer, counters move, SIGTERM exits 0."""
    import clickhouse_connect

    from tests.people import PASSWORD, publish_user

    settings, codec = stack, Codec()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPR_")}
    env.update(ALPR_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, ALPR_DATA_DIR=str(tmp_path))
    assert subprocess.run([sys.executable, "-m", "alpr.cli", "migrate"], env=env, capture_output=True,
                          timeout=60).returncode == 0
    publish_user(settings, codec, "analyst-px")
    port = free_port()
    proxy = _spawn(settings, tmp_path, "proxy-a", "proxy", ALPR_PROXY_PORT=str(port))
    try:
        url = _metrics_url(settings, "proxy-a")
        wait_for(lambda: _scrape(url, "/readyz")[0] == 200, 60, "proxy ready")
        client = clickhouse_connect.get_client(host="127.0.0.1", port=port, username="analyst-px", password=PASSWORD)
        assert client.query("SELECT count() FROM alpr.reads", settings={
            "SQL_case": "24-PX", "SQL_purpose": "standalone proxy check"}).result_rows == [(0,)]
        assert _value(_scrape(url)[1], 'alpr_proxy_queries_total{outcome="allowed"}') >= 1
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(30) == 0
    finally:
        if proxy.poll() is None:
            proxy.kill()
