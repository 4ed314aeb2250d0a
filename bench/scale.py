"""Scale test: N cameras feed the frames topic at a fixed rate while 1, then 2, then 3
recognition workers run; throughput and lag are read from the workers' /metrics and
the group's lag; one worker is killed in the last phase; at the end every frame must
have its read (no frame lost).

    .venv/bin/python bench/scale.py --cameras 4 --fps 4 --phase 45

Each frame shows a different car, and a camera's capture times are spaced 12 s apart
(more than the worker's 10 s same-car window), so no two frames fold into one read and
each frame must yield its own read: that makes "no frame lost" checkable frame by frame.
Throughput is the sum over workers of each one's own counter increase, so a killed
worker's vanished counter does not count as negative work.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from alpr.core import kafka  # noqa: E402
from alpr.ops.broker import DevBroker, free_port  # noqa: E402
from alpr.recognition.footage import car_frame  # noqa: E402
from alpr.core.lag import group_lag  # noqa: E402
from alpr.core.settings import load_settings  # noqa: E402
from alpr.ops.status import StatusFollower  # noqa: E402
from alpr.core.topics import FRAMES, READS, TOPICS, apply_topics  # noqa: E402
from alpr.recognition.worker import GROUP  # noqa: E402
from alpr.schemas import Codec, Frame, GeoPosition, PlateRead  # noqa: E402

LETTERS = "ABCDEFGHKLMNPRSTUVWXYZ"


def plates(n: int) -> list[str]:
    out = []
    for i in range(n):
        a, b, c = LETTERS[i % 22], LETTERS[(i // 22) % 22], LETTERS[(i * 7 + 3) % 22]
        out.append(f"{a}{b}{c}{i % 10}{LETTERS[(i * 5) % 22]}{(i * 3) % 10}{(i * 7) % 10}")
    return out


def feed(settings, frames_jpeg: list[bytes], cameras: int, fps: float, stop: threading.Event,
         sent: list[tuple[str, int]]):
    """Publish frames round-robin over the cameras at `fps` per camera."""
    pub = kafka.Publisher(settings, Codec(), "bench-camera")
    seq = 0
    next_at = time.monotonic()
    t0 = datetime.now(timezone.utc)
    while not stop.is_set():
        for cam in range(cameras):
            jpeg = frames_jpeg[(seq * cameras + cam) % len(frames_jpeg)]
            f = Frame(frame_id=f"c{cam}-{seq}", camera_id=f"bench-cam-{cam}", agency="BENCH", seq=seq,
                      captured_at=t0 + timedelta(seconds=12 * seq), position=GeoPosition(lat=38.5, lon=-121.5),
                      width=1280, height=720, jpeg=jpeg)
            pub.publish(FRAMES, f.camera_id, f)
            sent.append((f.frame_id, (seq * cameras + cam) % len(frames_jpeg)))
        seq += 1
        next_at += 1.0 / fps
        stop.wait(max(0.0, next_at - time.monotonic()))
    pub.flush()


def start_worker(settings, work: Path, name: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPR_")}
    env.update(ALPR_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, ALPR_DATA_DIR=str(work), ALPR_METRICS_PORT="0",
               ALPR_INSTANCE_ID=name, ALPR_HEARTBEAT_INTERVAL_S="1", ALPR_LOG_LEVEL="WARNING")
    return subprocess.Popen([sys.executable, "-m", "alpr.cli", "worker", "--batch-size", "4"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "wb"))


def scrape_frames(url: str) -> float:
    try:
        text = urllib.request.urlopen(url + "/metrics", timeout=3).read().decode()
    except Exception:
        return float("nan")
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("alpr_worker_frames_total"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=float, default=1.0, help="frames per second per camera")
    ap.add_argument("--phase", type=float, default=45.0, help="seconds per worker count")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="alpr-scale-"))
    broker = DevBroker("127.0.0.1", free_port(), work / "broker.log").start()
    settings = load_settings(kafka_bootstrap=broker.bootstrap, data_dir=work)
    apply_topics(kafka.admin(settings), replication_factor=1)
    print(f"rendering 96 distinct cars; broker {broker.bootstrap}", flush=True)
    frames_jpeg = [cv2.imencode(".jpg", car_frame(p, i, 0.5), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
                   for i, p in enumerate(plates(96))]
    # Which images the reader reads at all: a frame of an image it cannot read has no read to
    # find, and would look like a lost frame. Same reader and settings as the workers.
    from alpr.gpu import decode_image, open_reader

    reader = open_reader("onnxruntime", threads=1)
    readable = {i for i, jpeg in enumerate(frames_jpeg) if reader.read(decode_image(jpeg))}
    print(f"{len(readable)} of {len(frames_jpeg)} rendered cars yield a read (the rest: reader misses)", flush=True)
    stop, sent = threading.Event(), []
    feeder = threading.Thread(target=feed, args=(settings, frames_jpeg, args.cameras, args.fps, stop, sent))
    feeder.start()
    follower = StatusFollower(settings)
    workers: list[subprocess.Popen] = []
    phases = []
    last: dict[str, float] = {}  # per worker metrics URL: its frames counter at the last scrape
    try:
        for n in range(1, args.workers + 1):
            workers.append(start_worker(settings, work, f"worker-{n}"))
            t0 = time.monotonic()
            killed = None
            samples = []
            done = 0.0
            while time.monotonic() - t0 < args.phase:
                follower.poll(5.0)
                urls = [i.latest.metrics_url for i in follower.board.instances.values()
                        if i.latest.role == "worker" and i.state(datetime.now(timezone.utc), 6) == "running"]
                for u in urls:
                    value = scrape_frames(u)
                    if value == value:  # not NaN: the worker answered
                        done += max(0.0, value - last.get(u, 0.0))  # a new worker counts from 0
                        last[u] = value
                total = done
                lag = sum(p.lag for p in group_lag(settings, GROUP, FRAMES, TOPICS[FRAMES].partitions))
                samples.append((time.monotonic(), total, lag, len(urls)))
                print(f"  {n} workers  t={time.monotonic() - t0:5.1f}s  up={len(urls)}  frames done={total:6.0f}"
                      f"  lag={lag:5d}", flush=True)
                if n == args.workers and killed is None and time.monotonic() - t0 > args.phase / 2:
                    killed = workers[0]
                    killed.send_signal(signal.SIGKILL)
                    print("  -- killed worker-1 (SIGKILL) --", flush=True)
            steady = [s for s in samples if s[0] - samples[0][0] > 10] or samples
            rate = (steady[-1][1] - steady[0][1]) / max(1e-9, steady[-1][0] - steady[0][0]) if len(steady) > 1 else 0
            phases.append({"workers": n, "frames_per_s": round(rate, 2), "lag_start": samples[0][2],
                           "lag_end": samples[-1][2], "killed_one": killed is not None})
            print(f"phase {n} workers: {rate:.2f} frames/s, lag {samples[0][2]} -> {samples[-1][2]}", flush=True)
        stop.set()
        feeder.join()
        print(f"feed stopped after {len(sent)} frames; draining", flush=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            lag = sum(p.lag for p in group_lag(settings, GROUP, FRAMES, TOPICS[FRAMES].partitions))
            if lag == 0:
                break
            follower.poll(3.0)
        codec = Codec()
        got = {codec.decode(m.value(), PlateRead).frame_id
               for m in kafka.read_to_end(settings, READS, 0, idle=1.0)}
        for p in range(1, TOPICS[READS].partitions):
            got |= {codec.decode(m.value(), PlateRead).frame_id for m in kafka.read_to_end(settings, READS, p, idle=0.5)}
        lost = [f for f, image in sent if image in readable and f not in got]
        unreadable = sum(1 for _, image in sent if image not in readable)
        final_lag = sum(p.lag for p in group_lag(settings, GROUP, FRAMES, TOPICS[FRAMES].partitions))
        print(f"after drain: group lag {final_lag}; {len(got)} frames with reads; frames without a read: "
              f"{len(lost)} (first: {lost[:8]})", flush=True)
        result = {"date": time.strftime("%Y-%m-%d"), "cameras": args.cameras, "offered_fps": args.cameras * args.fps,
                  "phases": phases, "frames_sent": len(sent), "frames_of_unreadable_cars": unreadable,
                  "readable_frames_without_read": len(lost)}
        print(json.dumps(result), flush=True)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        stop.set()
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
        follower.close()
        broker.stop()


if __name__ == "__main__":
    main()
