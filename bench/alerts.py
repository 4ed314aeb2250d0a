"""Alerting benchmarks: partial-pattern check cost, read-to-alert latency, worker throughput.

    .venv/bin/python bench/alerts.py patterns            # index vs naive scan at 100 / 1,000 / 10,000 patterns
    .venv/bin/python bench/alerts.py topology [--seconds 20]

`topology` starts its own dev broker, seeds 100,000 hotlist entries and 1,000
patterns, runs `alpr alerts` as a subprocess, then publishes reads at 100/s and
1,000/s (a fifth of them hotlist hits, each at its own camera so none is
de-duplicated) and measures read_at -> alert received; last, a burst of reads as
fast as one producer goes, for the reads per second one worker sustains. Prints
JSON lines.
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
    """Witness-like partials: 7 positions, 2-3 of them unknown, sometimes an open end."""
    chars = list(plate(rng))
    for i in rng.sample(range(7), rng.randint(2, 3)):
        chars[i] = "?"
    p = "".join(chars)
    if rng.random() < 0.3:
        p = p[:rng.randint(3, 5)] + "*"
    try:
        return normalize_pattern(p)
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
    """Receives every alert and notes read_at -> received latency per read_id."""

    def __init__(self, settings, codec: Codec) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.codec, self.latency, self.received_at, self._stop = codec, {}, {}, threading.Event()
        self._c = Consumer(kafka.consumer_config(settings, f"bench-{uuid.uuid4().hex[:6]}", "bench",
                                                 **{"fetch.wait.max.ms": 10}))  # measure the topology, not us
        self._c.assign([TopicPartition(ALERTS, p, OFFSET_BEGINNING) for p in range(3)])
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for m in self._c.consume(1000, 0.1):
                if m.error():
                    continue
                now = time.time()
                a = self.codec.decode(m.value(), Alert)
                self.latency[a.read.read_id] = now - a.read.read_at.timestamp()
                self.received_at[a.read.read_id] = now
        self._c.close()

    def wait_for(self, ids: list[str], timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(i in self.latency for i in ids):
            time.sleep(0.1)
        return sum(i in self.latency for i in ids)

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)


POS = GeoPosition(lat=38.6, lon=-121.5)


def make_read(p: str, hit: bool) -> PlateRead:
    now = datetime.now(timezone.utc)
    return PlateRead(read_id=uuid.uuid4().hex[:16], camera_id=f"cam-{uuid.uuid4().hex[:8]}" if hit else "cam-1",
                     agency="SPD", plate=p, plate_state="CA", confidence=0.9, captured_at=now, read_at=now,
                     position=POS, model_version="bench")


def bench_topology(seconds: float) -> None:
    rng = random.Random(2)
    work = Path(tempfile.mkdtemp(prefix="alpr-bench-alerts-"))
    broker = DevBroker("127.0.0.1", free_port(), work / "broker.log").start()
    s = load_settings(kafka_bootstrap=broker.bootstrap, data_dir=work / "data")
    apply_topics(kafka.admin(s), replication_factor=1)
    codec = Codec()
    pub = kafka.Publisher(s, codec, "bench")
    hot = [plate(rng) for _ in range(100_000)]
    for p in hot:
        e = HotlistEntry(plate=p, state="CA", reason="STOLEN_VEHICLE", source="STATE", case_number="C", agency="A",
                         entered_by="bench", entered_at=NOW, expires_at=NOW + timedelta(days=30))
        pub.publish(HOTLIST, e.key, e)
    for i in range(1000):
        pub.publish(PARTIALS, f"p{i}", partial(i, pattern(rng)))
    pub.flush()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPR_")}
    env.update(ALPR_KAFKA_BOOTSTRAP=broker.bootstrap, ALPR_DATA_DIR=str(work / "data"), ALPR_LOG_LEVEL="WARNING")
    clock = AlertClock(s, codec)
    t_start = time.monotonic()
    worker = subprocess.Popen([sys.executable, "-m", "alpr.cli", "alerts"], env=env,
                              stderr=open(work / "worker.log", "wb"), cwd=Path(__file__).resolve().parents[1])
    try:
        warm = make_read(hot[0], True)
        pub.publish(READS, warm.plate, warm)
        pub.flush()
        if not clock.wait_for([warm.read_id], 180):
            raise SystemExit(f"worker raised no alert; log in {work / 'worker.log'}")
        print(json.dumps({"bench": "worker_ready", "hotlist": len(hot), "patterns": 1000,
                          "start_to_first_alert_s": round(time.monotonic() - t_start, 1)}), flush=True)
        for rate in (100, 1000):
            hits = run_rate(pub, hot, rng, rate, seconds)
            got = clock.wait_for(hits, 30)
            lat = sorted(clock.latency[i] for i in hits if i in clock.latency)
            print(json.dumps({"bench": "read_to_alert", "reads_per_s": rate, "seconds": seconds,
                              "alerts_expected": len(hits), "alerts_received": got,
                              "p50_ms": round(1000 * lat[len(lat) // 2], 1),
                              "p99_ms": round(1000 * lat[int(len(lat) * 0.99) - 1], 1),
                              "max_ms": round(1000 * lat[-1], 1)}), flush=True)
        n = 60_000
        reads = [make_read(hot[rng.randrange(len(hot))], True) if i % 10 == 0 or i == n - 1
                 else make_read(plate(rng), False) for i in range(n)]
        t0 = time.time()
        for r in reads:
            pub.publish(READS, r.plate, r)
        pub.flush()
        produced = time.time() - t0
        hits = [r.read_id for i, r in enumerate(reads) if i % 10 == 0 or i == n - 1]
        got = clock.wait_for(hits, 300)
        last = max(clock.received_at[i] for i in hits if i in clock.received_at)
        print(json.dumps({"bench": "burst_throughput", "reads": n, "produce_s": round(produced, 1),
                          "alerts_expected": len(hits), "alerts_received": got,
                          "reads_per_s": round(n / (last - t0))}), flush=True)
    finally:
        worker.terminate()
        worker.wait(30)
        clock.close()
        broker.stop(1.0)


def run_rate(pub: kafka.Publisher, hot: list[str], rng: random.Random, rate: int, seconds: float) -> list[str]:
    """Publish reads at `rate` per second for `seconds`; a fifth are hits. Returns the hits' read ids."""
    hits, t0, i = [], time.monotonic(), 0
    while (elapsed := time.monotonic() - t0) < seconds:
        due = int(elapsed * rate)
        while i < due:
            hit = i % 5 == 0
            r = make_read(hot[rng.randrange(len(hot))] if hit else plate(rng), hit)
            pub.publish(READS, r.plate, r)
            if hit:
                hits.append(r.read_id)
            i += 1
        pub.poll(0.002)
    pub.flush()
    return hits


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["patterns", "topology"])
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    bench_patterns() if args.what == "patterns" else bench_topology(args.seconds)
