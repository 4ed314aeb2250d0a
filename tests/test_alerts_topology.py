"""The alert topology against a real dev broker, run as `alpr alerts` in a subprocess.

One fresh broker for this module (the topology uses the fixed topic names and group).
Entries are seeded before the worker starts (so start-up loading is exercised) and
changed while it runs (so following is exercised). A "no alert" is proven with a
sentinel read published after it under the same key: same partition, so once the
sentinel's alert is out, the read before it has been processed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from alpr.alerting import hotlist
from alpr.core import kafka
from alpr.ops.broker import DevBroker, free_port, pid_alive
from alpr.core.settings import load_settings
from alpr.core.topics import ALERTS, DEADLETTER, HOTLIST, PARTIALS, READS, apply_topics
from alpr.schemas import Alert, Codec, DeadLetter, GeoPosition, PartialPlate, PlateRead
from alpr.topologies.alerts import VERIFY_NOTICE, format_alert
from tests.conftest import alpr_env

NOW = datetime.now(timezone.utc)
INSIDE = GeoPosition(lat=38.58, lon=-121.50)    # inside the test reservation
OUTSIDE = GeoPosition(lat=38.70, lon=-121.30)
NOTICE = "Contact Test Tribe tribal law enforcement before entering reservation lands."
STOP_SECONDS = 8.0
SENTINEL = "9SENT99"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("alerts")
    broker = DevBroker("127.0.0.1", free_port(), work / "broker.log").start()
    geofences = work / "geofences.yaml"
    geofences.write_text(f"""geofences:
  - name: Test Reservation
    notice: "{NOTICE}"
    points: [[38.55, -121.55], [38.55, -121.45], [38.60, -121.45], [38.60, -121.55]]
""")
    s = load_settings(kafka_bootstrap=broker.bootstrap, data_dir=work / "data")
    apply_topics(kafka.admin(s), replication_factor=1)
    proc_env = alpr_env(ALPR_KAFKA_BOOTSTRAP=broker.bootstrap, ALPR_DATA_DIR=str(work / "data"),
                    ALPR_GEOFENCES_FILE=str(geofences), ALPR_ALERT_DEDUP_SECONDS="300",
                        ALPR_ALERTS_STOP_SECONDS=str(STOP_SECONDS))
    yield {"settings": s, "env": proc_env, "work": work, "broker": broker}
    broker.stop(1.0)  # in-memory broker: nothing to flush, no need to wait for a clean stop


class Watch:
    """Collects every alert on the topic in the background; tests wait on it with a deadline."""

    def __init__(self, settings, codec: Codec) -> None:
        self.codec, self.alerts, self._stop = codec, [], threading.Event()
        self._c = Consumer(kafka.consumer_config(settings, f"watch-{uuid.uuid4().hex[:6]}", "watch"))
        self._c.assign([TopicPartition(ALERTS, p, OFFSET_BEGINNING) for p in range(3)])
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for m in self._c.consume(100, 0.2):
                if not m.error():
                    self.alerts.append((m.key(), self.codec.decode(m.value(), Alert)))
        self._c.close()

    def for_read(self, read_id: str, timeout: float = 20.0, count: int = 1) -> list[Alert]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [a for _, a in self.alerts if a.read.read_id == read_id]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        return [a for _, a in self.alerts if a.read.read_id == read_id]

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)


class Worker:
    def __init__(self, env: dict, log: Path) -> None:
        self.log = log
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "alpr.cli", "alerts"], env=env,
                                         stdout=fh, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])

    def stop(self) -> tuple[int, float]:
        """SIGTERM; hard kill after the worker's own deadline plus a margin. Returns (rc, seconds)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_SECONDS + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _read(plate: str, camera: str = "cam-1", position: GeoPosition = OUTSIDE, state: str | None = "CA",
          at: datetime | None = None) -> PlateRead:
    at = at or datetime.now(timezone.utc)
    return PlateRead(read_id=f"r-{uuid.uuid4().hex[:10]}", camera_id=camera, agency="SPD", plate=plate,
                     plate_state=state, confidence=0.93, crop_jpeg=b"\xff\xd8crop", captured_at=at, read_at=at,
                     position=position, model_version="test")


def _entry(plate: str, expires: datetime | None = None, state: str = "CA"):
    return hotlist.make_entry(plate=plate, state=state, reason="STOLEN_VEHICLE", source="LOCAL",
                              case_number=f"C-{plate}", expires=expires, agency="SPD", user="tester")


def _partial(pid: str, pattern: str, expires: datetime) -> PartialPlate:
    return PartialPlate(pattern_id=pid, pattern=pattern, case_number="HOM-1", incident_type="HOMICIDE",
                        agency="SPD", entered_by="det1", entered_at=NOW, expires_at=expires)


@pytest.fixture(scope="module")
def topology(env):
    s, codec = env["settings"], Codec()
    pub = kafka.Publisher(s, codec, "test-seed")
    future, past = NOW + timedelta(days=30), NOW - timedelta(days=1)
    for e in [_entry("1EXACT1", future), _entry(SENTINEL), _entry("6PQR180", future), _entry("2OLD222", past),
              _entry("3TOMB33", future), _entry("4GEO444"), _entry("5DUP555"), _entry("7NV7777", state="NV")]:
        pub.publish(HOTLIST, e.key, e)
    pub.publish(HOTLIST, "CA:3TOMB33", None)  # tombstoned before the worker starts
    pub.publish(PARTIALS, "p-live", _partial("p-live", "8XY?4*", future))
    pub.publish(PARTIALS, "p-old", _partial("p-old", "8QQ*", past))
    pub.flush()
    watch = Watch(s, codec)
    worker = Worker(env["env"], env["work"] / "worker1.log")
    state = {"worker": worker, "watch": watch, "pub": pub, "codec": codec, "settings": s}
    warm = _read(SENTINEL)
    pub.publish(READS, warm.plate, warm)
    pub.flush()
    assert watch.for_read(warm.read_id, timeout=60), "the worker raised no alert within 60 s: " + \
        worker.log.read_text()[-2000:]
    yield state
    state["worker"].kill()
    watch.close()


def _send(t, read: PlateRead, key: str | None = None) -> None:
    t["pub"].publish(READS, key or read.plate, read)
    t["pub"].flush()


def _no_alert(t, read: PlateRead) -> list[Alert]:
    """Publish the read, then a sentinel under the same key; return the read's alerts once the sentinel's are out."""
    _send(t, read)
    sentinel = _read(SENTINEL, camera=f"sentinel-{uuid.uuid4().hex[:6]}")
    _send(t, sentinel, key=read.plate)
    assert t["watch"].for_read(sentinel.read_id), "sentinel read raised no alert"
    return t["watch"].for_read(read.read_id, timeout=0)


def test_exact_hit_carries_entry_read_and_clets_notice(topology):
    r = _read("1EXACT1")
    _send(topology, r)
    [alert] = topology["watch"].for_read(r.read_id)
    assert alert.kind.value == "EXACT" and alert.hotlist_entry.key == "CA:1EXACT1"
    assert alert.read == r and alert.agency == "SPD"
    assert alert.verify_before_action == VERIFY_NOTICE
    key = next(k for k, a in topology["watch"].alerts if a.alert_id == alert.alert_id)
    assert key == b"1EXACT1"
    text = format_alert(alert)
    assert "1EXACT1" in text and "cam-1" in text and "C-1EXACT1" in text and "CLETS" in text


def test_partial_hit(topology):
    r = _read("8XYZ456")
    _send(topology, r)
    [alert] = topology["watch"].for_read(r.read_id)
    assert alert.kind.value == "PARTIAL" and alert.partial.pattern_id == "p-live"
    assert alert.hotlist_entry is None and alert.verify_before_action == VERIFY_NOTICE


def test_possible_hit_one_ocr_confusion_away(topology):
    r = _read("6PQR1B0")  # hotlist has 6PQR180: 8 read as B
    _send(topology, r)
    [alert] = topology["watch"].for_read(r.read_id)
    assert alert.kind.value == "POSSIBLE" and alert.hotlist_entry.plate == "6PQR180"
    assert any("B/8" in n for n in alert.notices)


def test_plate_of_another_state_is_only_possible(topology):
    r = _read("7NV7777", state="CA")
    _send(topology, r)
    [alert] = topology["watch"].for_read(r.read_id)
    assert alert.kind.value == "POSSIBLE" and alert.hotlist_entry.state == "NV"


def test_expired_entry_and_expired_pattern_never_alert(topology):
    assert _no_alert(topology, _read("2OLD222")) == []
    assert _no_alert(topology, _read("8QQ1234")) == []


def test_tombstoned_entry_no_longer_alerts(topology):
    assert _no_alert(topology, _read("3TOMB33")) == []  # tombstoned before start
    plate = "3LIVE33"
    e = _entry(plate)
    topology["pub"].publish(HOTLIST, e.key, e)
    topology["pub"].flush()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # added while running: alerts once the change is applied
        if topology["watch"].for_read(_send_and_id(topology, _read(plate, camera=_cam())), timeout=1.5):
            break
    else:
        pytest.fail("an entry added while running never alerted")
    topology["pub"].publish(HOTLIST, e.key, None)
    topology["pub"].flush()
    deadline, quiet_rounds = time.monotonic() + 20, 0
    while time.monotonic() < deadline and quiet_rounds < 3:
        quiet_rounds = quiet_rounds + 1 if not _no_alert(topology, _read(plate, camera=_cam())) else 0
    assert quiet_rounds == 3, "a tombstoned entry kept alerting"


def _cam() -> str:
    return f"cam-{uuid.uuid4().hex[:6]}"


def _send_and_id(t, read: PlateRead) -> str:
    _send(t, read)
    return read.read_id


def test_geofence_notice_inside_only(topology):
    inside, outside = _read("4GEO444", camera="g-in", position=INSIDE), _read("4GEO444", camera="g-out")
    _send(topology, inside)
    _send(topology, outside)
    [a_in] = topology["watch"].for_read(inside.read_id)
    [a_out] = topology["watch"].for_read(outside.read_id)
    assert NOTICE in a_in.notices and NOTICE not in a_out.notices


def test_same_plate_same_camera_alerts_once_per_window(topology):
    t0 = datetime.now(timezone.utc)
    first = _read("5DUP555", camera="d-1", at=t0)
    _send(topology, first)
    assert topology["watch"].for_read(first.read_id)
    assert _no_alert(topology, _read("5DUP555", camera="d-1", at=t0 + timedelta(seconds=30))) == []
    other_camera = _read("5DUP555", camera="d-2", at=t0 + timedelta(seconds=30))
    later = _read("5DUP555", camera="d-1", at=t0 + timedelta(seconds=301))
    _send(topology, other_camera)
    _send(topology, later)
    assert topology["watch"].for_read(other_camera.read_id) and topology["watch"].for_read(later.read_id)


def test_undecodable_read_is_dead_lettered_and_processing_goes_on(topology):
    s = topology["settings"]
    topology["pub"].publish_raw(READS, SENTINEL.encode(), b"\xc3\x01not avro at all")
    topology["pub"].flush()
    after = _read(SENTINEL, camera=_cam())
    _send(topology, after)
    assert topology["watch"].for_read(after.read_id)
    letters = [topology["codec"].decode(m.value(), DeadLetter) for m in kafka.read_to_end(s, DEADLETTER, idle=0.3)]
    assert any(d.source_topic == READS and d.value == b"\xc3\x01not avro at all" for d in letters)


def test_metrics_count_reads_consumed_before_any_match(topology):
    """Prometheus sees the worker consume reads, hits or not; and what the ledger suppressed."""
    import re
    import urllib.request

    _no_alert(topology, _read("0NOHIT0", camera=_cam()))  # a read that matches nothing, then a sentinel
    url = re.search(r"metrics=(http://\S+)", topology["worker"].log.read_text()).group(1)
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    checked = re.search(r'^alpr_alert_reads_total\{outcome="checked"\} ([\d.e+]+)$', text, re.M)
    assert checked and float(checked.group(1)) >= 2
    assert re.search(r'^alpr_alert_reads_total\{outcome="dead_lettered"\} [1-9]', text, re.M)  # the garbage read
    assert re.search(r'^alpr_alerts_suppressed_total\{why="window"\} [1-9]', text, re.M)  # the 5DUP555 repeat


def test_restart_keeps_state_and_misses_no_read(topology, env):
    worker = topology["worker"]
    rc, took = worker.stop()
    assert rc == 0 and took < STOP_SECONDS + 2, f"SIGTERM: rc={rc} after {took:.1f}s"
    assert not pid_alive(worker.proc.pid)
    # While it is down: a new entry, reads for it and for entries it had before.
    new = _entry("1NEW111")
    topology["pub"].publish(HOTLIST, new.key, new)
    topology["pub"].flush()
    down_reads = [_read("1NEW111", camera=_cam()), _read("1EXACT1", camera=_cam()), _read("8XYQ4", camera=_cam())]
    for r in down_reads:
        _send(topology, r)
    topology["worker"] = Worker(env["env"], env["work"] / "worker2.log")
    for r in down_reads:
        assert topology["watch"].for_read(r.read_id, timeout=60), f"read {r.plate} made while down: no alert"
    assert _no_alert(topology, _read("3TOMB33", camera=_cam())) == []  # tombstone still applied


def test_operator_view_prints_alerts_for_a_person(topology):
    import io

    from alpr.topologies.alerts import follow

    out, deadline = io.StringIO(), time.monotonic() + 20
    shown = follow(topology["settings"], topology["codec"], out, from_beginning=True,
                   stop=lambda: "1EXACT1" in out.getvalue() or time.monotonic() > deadline)
    text = out.getvalue()
    assert shown >= 1 and "EXACT ALERT  plate 1EXACT1 (CA)" in text and VERIFY_NOTICE in text
    assert "STOLEN_VEHICLE  case C-1EXACT1" in text


def test_stop_that_overruns_its_deadline_exits_hard(topology, env):
    """A clean stop that cannot finish (the broker stops answering its final commit) is ended by the
    watchdog at the deadline, with its own exit status, instead of hanging."""
    topology["worker"].kill()
    hasty = Worker({**env["env"], "ALPR_ALERTS_STOP_SECONDS": "0.05"}, env["work"] / "worker3.log")
    topology["worker"] = hasty
    r = _read(SENTINEL, camera=_cam())
    _send(topology, r)
    assert topology["watch"].for_read(r.read_id, timeout=60)
    broker = env["broker"].process
    os.kill(broker.pid, signal.SIGSTOP)  # the commit on the way out now waits forever
    try:
        rc, took = hasty.stop()
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    assert rc == 70 and took < 3, f"rc={rc} after {took:.1f}s"
    assert "alerts.stop_overran" in hasty.log.read_text()
