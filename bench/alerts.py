"""Alerting benchmarks: partial-pattern check cost, read-to-alert latency, worker throughput.

    .venv/bin/python bench/alerts.py patterns            # index vs naive scan at 100 / 1,000 / 10,000 patterns
    .venv/bin/python bench/alerts.py topology [--seconds 10] [--rates 1000,5000] [--workers 1,3]

`topology` starts its own dev broker, seeds 100,000 hotlist entries and 10,000
patterns, runs `alpr alerts` as subprocesses and measures: start to first alert,
a clean restart to first alert, then for each rate (with that many workers) reads
published for `--seconds` (1 % hotlist hits, each at its own camera so none is
de-duplicated): read_at -> alert received, and read_at -> raised_at (the worker's
part). Last, how many alert ids arrived more than once. Prints JSON lines with the
box's load average, so a busy box shows as busy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alpr.core import kafka  # noqa: E402
from alpr.ops.broker import DevBroker, free_port  # noqa: E402
from alpr.alerting.partials import PatternIndex, compile_all, normalize_pattern, scan_match, BadInput  # noqa: E402
from alpr.core.settings import load_settings  # noqa: E402
from alpr.core.topics import ALERTS, HOTLIST, PARTIALS, READS, apply_topics  # noqa: E402
from alpr.schemas import Alert, Codec, GeoPosition, HotlistEntry, PartialPlate, PlateRead  # noqa: E402

ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
NOW = datetime.now(timezone.utc)


def plate(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(7))


def pattern(rng: random.Random) -> str:
    """Witness-like partials: 7 positions, 2-3 of them unknown, or the first 5 with at most one unknown
    and an open end. (Open patterns with only 2-3 known characters would match about every read at
    10,000 patterns, which is not a hotlist workload but an alert flood.)"""
    chars = list(plate(rng))
    if rng.random() < 0.3:
        chars = chars[:5]
        chars[rng.randrange(5)] = "?" if rng.random() < 0.5 else chars[0]
        return normalize_pattern("".join(chars) + "*")
    for i in rng.sample(range(7), rng.randint(2, 3)):
        chars[i] = "?"
    try:
        return normalize_pattern("".join(chars))
    except BadInput:
        return "7AB*"


def partial(i: int, p: str) -> PartialPlate:
    return PartialPlate(pattern_id=f"p{i}", pattern=p, case_number=f"C{i}", incident_type="ROBBERY", agency="A",
                        entered_by="bench", entered_at=NOW, expires_at=NOW + timedelta(days=30))


def bench_patterns() -> None:
    rng = random.Random(1)
    plates = [plate(rng) for _ in range(20000)]
    for n in (100, 1000, 10000):
        entries = [partial(i, pattern(rng)) for i in range(n)]
        idx = PatternIndex()
        t0 = time.perf_counter()
        for e in entries:
            idx.put(e.pattern_id, e)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        hits = sum(bool(idx.match(p, NOW)) for p in plates)
        per_index = (time.perf_counter() - t0) / len(plates)
        compiled = compile_all(entries)
        sample = plates[: max(200, 2_000_000 // n)]
        t0 = time.perf_counter()
        for p in sample:
            scan_match(compiled, p)
        per_scan = (time.perf_counter() - t0) / len(sample)
        cands = statistics.mean(len(idx.candidates(p)) for p in plates[:2000])
        print(json.dumps({"bench": "partial_patterns", "patterns": n, "index_us_per_read": round(per_index * 1e6, 1),
                          "scan_us_per_read": round(per_scan * 1e6, 1), "mean_candidates": round(cands, 2),
                          "index_build_ms": round(build * 1000, 1), "reads_with_hit_pct":
                          round(100 * hits / len(plates), 2)}), flush=True)


class AlertClock:
    """Receives every alert and notes, per read_id: read_at -> raised_at (worker) -> received (here)."""

    def __init__(self, settings, codec: Codec) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.codec, self.latency, self.received_at, self._stop = codec, {}, {}, threading.Event()
        self.to_raise: dict[str, float] = {}  # read_at -> raised_at: produce, broker, fetch wait, event loop
        self.ids: dict[str, int] = {}          # alert id -> times received (a repeat is a duplicate)
        self._c = Consumer(kafka.consumer_config(settings, f"bench-{uuid.uuid4().hex[:6]}", "bench",
                                                 **{"fetch.wait.max.ms": 5}))  # measure the topology, not us
        self._c.assign([TopicPartition(ALERTS, p, OFFSET_BEGINNING) for p in range(3)])
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self._c.poll(0.05)  # consume(n, t) would wait for n alerts or all of t: that is not ours
            for m in [] if first is None else [first, *self._c.consume(999, 0)]:
                if m.error():
                    continue
                now = time.time()
                a = self.codec.decode(m.value(), Alert)
                rid = a.read.read_id
                self.ids[a.alert_id] = self.ids.get(a.alert_id, 0) + 1
                self.latency.setdefault(rid, now - a.read.read_at.timestamp())
                self.to_raise.setdefault(rid, a.raised_at.timestamp() - a.read.read_at.timestamp())
                self.received_at.setdefault(rid, now)
        self._c.close()

    def wait_for(self, ids: list[str], timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(i in self.latency for i in ids):
            time.sleep(0.02)
        return sum(i in self.latency for i in ids)

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)


POS = GeoPosition(lat=38.6, lon=-121.5)


def make_read(p: str, hit: bool) -> PlateRead:
    """A read as a recognition worker would publish it (built unvalidated: the bench's own CPU
    is CPU the workers lose on a 2-core box; the workers validate every read they decode)."""
    now = datetime.now(timezone.utc)
    return PlateRead.model_construct(frame_id=None, crop_jpeg=None, frames_seen=1, read_id=uuid.uuid4().hex[:16], camera_id=f"cam-{uuid.uuid4().hex[:8]}" if hit else "cam-1",
                     agency="SPD", plate=p, plate_state="CA", confidence=0.9, captured_at=now, read_at=now,
                     position=POS, model_version="bench")


def _pct(values: list[float], q: float) -> float:
    return round(1000 * values[min(len(values) - 1, int(len(values) * q))], 1)


class Workers:
    """`alpr alerts` subprocesses against the bench broker."""

    def __init__(self, env: dict, work: Path) -> None:
        self.env, self.work, self.procs = env, work, []

    def start(self) -> subprocess.Popen:
        n = len(self.procs)
        proc = subprocess.Popen([sys.executable, "-m", "alpr.cli", "alerts"], env=self.env,
                                stderr=open(self.work / f"worker{n}.log", "wb"),
                                cwd=Path(__file__).resolve().parents[1])
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def first_alert(pub, clock: AlertClock, plate_: str, t_start: float, timeout: float = 120) -> float:
    """Seconds from t_start until a fresh hit on plate_ raised its alert (re-sent every 0.5 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = make_read(plate_, True)
        pub.publish(READS, r.plate, r)
        pub.flush()
        if clock.wait_for([r.read_id], 0.5):
            return clock.received_at[r.read_id] - (time.time() - (time.monotonic() - t_start))
    raise SystemExit("worker raised no alert")


def transport_floor(s, codec: Codec, pub: kafka.Publisher, rate: int = 200, seconds: float = 3.0) -> dict:
    """read_at -> the read consumed by a bare librdkafka consumer with the worker's fetch wait.

    The same hop an alert makes twice (read to worker, alert to operator): what the broker, the
    producer's linger and the fetch wait cost before any of our code runs."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    c = Consumer(kafka.consumer_config(s, f"floor-{uuid.uuid4().hex[:6]}", "floor",
                                       **{"fetch.wait.max.ms": s.alerts_fetch_wait_ms}))
    c.assign([TopicPartition(READS, p, OFFSET_END) for p in range(6)])
    c.poll(1.0)
    lat, stop = [], threading.Event()

    def consume() -> None:
        while not stop.is_set():
            m = c.poll(0.05)
            if m is not None and not m.error():
                lat.append(time.time() - codec.decode(m.value(), PlateRead).read_at.timestamp())

    t = threading.Thread(target=consume)
    t.start()
    rng = random.Random(3)
    run_rate(pub, ["X"], rng, rate, seconds, 0.0001)
    time.sleep(0.5)
    stop.set()
    t.join()
    c.close()
    lat.sort()
    return {"bench": "transport_floor", "reads_per_s": rate, "reads": len(lat), "p50_ms": _pct(lat, 0.5),
            "p99_ms": _pct(lat, 0.99), "fetch_wait_ms": s.alerts_fetch_wait_ms}


def bench_topology(seconds: float, rates: list[int], workers_at: list[int], patterns: int, hit_pct: float,
                   entries: int, fetch_wait_ms: int, session_timeout_ms: int) -> None:
    rng = random.Random(2)
    work = Path(tempfile.mkdtemp(prefix="alpr-bench-alerts-"))
    broker = DevBroker("127.0.0.1", free_port(), work / "broker.log").start()
    s = load_settings(kafka_bootstrap=broker.bootstrap, data_dir=work / "data", alerts_fetch_wait_ms=fetch_wait_ms,
                      kafka_session_timeout_ms=session_timeout_ms)
    apply_topics(kafka.admin(s), replication_factor=1)
    codec = Codec()
    pub = kafka.Publisher(s, codec, "bench")
    hot = [plate(rng) for _ in range(entries)]
    for p in hot:
        e = HotlistEntry(plate=p, state="CA", reason="STOLEN_VEHICLE", source="STATE", case_number="C", agency="A",
                         entered_by="bench", entered_at=NOW, expires_at=NOW + timedelta(days=30))
        pub.publish(HOTLIST, e.key, e)
    for i in range(patterns):
        pub.publish(PARTIALS, f"p{i}", partial(i, pattern(rng)))
    pub.flush()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPR_")}
    env.update(ALPR_KAFKA_BOOTSTRAP=broker.bootstrap, ALPR_DATA_DIR=str(work / "data"), ALPR_LOG_LEVEL="INFO",
               ALPR_METRICS_PORT="0", ALPR_ALERTS_FETCH_WAIT_MS=str(fetch_wait_ms),
               ALPR_KAFKA_SESSION_TIMEOUT_MS=str(session_timeout_ms))
    print(json.dumps(transport_floor(s, codec, pub)), flush=True)
    clock = AlertClock(s, codec)
    workers = Workers(env, work)
    box = {"cpus": os.cpu_count(), "load_1m_at_start": round(os.getloadavg()[0], 2),
           "session_timeout_ms": session_timeout_ms}
    try:
        t0 = time.monotonic()
        workers.start()
        print(json.dumps({"bench": "start_to_first_alert", "hotlist": entries, "patterns": patterns,
                          "seconds": round(first_alert(pub, clock, hot[0], t0), 2), **box}), flush=True)
        # A clean restart (SIGTERM, then start): the figure a rolling deploy sees.
        workers.procs[0].terminate()
        workers.procs[0].wait(30)
        t0 = time.monotonic()
        workers.start()
        print(json.dumps({"bench": "restart_to_first_alert", "hotlist": entries, "patterns": patterns,
                          "seconds": round(first_alert(pub, clock, hot[1], t0), 2)}), flush=True)
        for rate, n_workers in zip(rates, workers_at):
            while len([p for p in workers.procs if p.poll() is None]) < n_workers:
                t0 = time.monotonic()
                workers.start()
                first_alert(pub, clock, hot[2], t0)  # the group has rebalanced and processes again
            time.sleep(4)  # the dev broker takes ~3 s per rebalance round: measure after the last one
            hits = run_rate(pub, hot, rng, rate, seconds, hit_pct)
            got = clock.wait_for(hits, 30)
            lat = sorted(clock.latency[i] for i in hits if i in clock.latency)
            raise_ = sorted(clock.to_raise[i] for i in hits if i in clock.to_raise)
            out = sorted(clock.latency[i] - clock.to_raise[i] for i in hits if i in clock.to_raise)
            print(json.dumps({"bench": "read_to_alert", "reads_per_s": rate, "workers": n_workers,
                              "seconds": seconds, "alerts_expected": len(hits), "alerts_received": got,
                              "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99), "max_ms": _pct(lat, 1.0),
                              "read_to_raised_p50_ms": _pct(raise_, 0.5), "read_to_raised_p99_ms": _pct(raise_, 0.99),
                              "raised_to_received_p50_ms": _pct(out, 0.5), "raised_to_received_p99_ms": _pct(out, 0.99),
                              "load_1m": round(os.getloadavg()[0], 2)}), flush=True)
        dups = {k: v for k, v in clock.ids.items() if v > 1}
        print(json.dumps({"bench": "duplicates", "alert_ids": len(clock.ids), "repeated": len(dups)}), flush=True)
    finally:
        workers.stop_all()
        clock.close()
        broker.stop(1.0)


def run_rate(pub: kafka.Publisher, hot: list[str], rng: random.Random, rate: int, seconds: float,
             hit_pct: float) -> list[str]:
    """Publish reads at `rate` per second for `seconds`; hit_pct % are hits. Returns the hits' read ids."""
    every = max(1, round(100 / hit_pct))
    hits, t0, i = [], time.monotonic(), 0
    while (elapsed := time.monotonic() - t0) < seconds:
        due = int(elapsed * rate)
        while i < due:
            hit = i % every == 0
            r = make_read(hot[rng.randrange(len(hot))] if hit else plate(rng), hit)
            pub.publish(READS, r.plate, r)
            if hit:
                hits.append(r.read_id)
            i += 1
        pub.poll(0.001)
    pub.flush()
    return hits


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["patterns", "topology"])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rates", default="1000,5000", help="reads per second, one run each")
    ap.add_argument("--workers", default="1,3", help="alert workers for each rate (at most the 6 read partitions)")
    ap.add_argument("--patterns", type=int, default=10_000)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--hit-pct", type=float, default=1.0)
    ap.add_argument("--fetch-wait-ms", type=int, default=5, help="the workers' setting alerts_fetch_wait_ms")
    ap.add_argument("--session-timeout-ms", type=int, default=3000,
                    help="kafka_session_timeout_ms: the dev broker holds a group join for half of it "
                         "(3000 is the embedded stack's default)")
    args = ap.parse_args()
    if args.what == "patterns":
        bench_patterns()
    else:
        bench_topology(args.seconds, [int(r) for r in args.rates.split(",")],
                       [int(w) for w in args.workers.split(",")], args.patterns, args.hit_pct, args.entries,
                       args.fetch_wait_ms, args.session_timeout_ms)
