"""Frames become reads through the real broker: known plates, corrupt frames, a worker killed mid-batch."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from alpr.gpu import ReaderSettings, open_reader
from alpr.core import kafka
from alpr.ops.broker import DevBroker, free_port
from alpr.recognition.footage import DEMO_PLATES, Scene, car_frame, drive_by
from alpr.core.kafka import Publisher
from alpr.core.settings import load_settings
from alpr.core.topics import DEADLETTER, FRAMES, READS, apply_topics
from alpr.recognition.worker import RecognitionWorker, near, read_id
from alpr.schemas import DeadLetter, Frame, PlateRead
from tests.conftest import alpr_env, drain, make_topic


@pytest.fixture(scope="module")
def reader():
    # The synthetic footage draws Mercosur-style plates (BRA2E19, MNO7P89): read them with the
    # Brazilian rules, which keep the O that the default US rules write as 0.
    return open_reader("onnxruntime", threads=1, settings=ReaderSettings(region="br"))


def _publish_frames(settings, codec, topic: str, images, camera_id: str = "cam-t") -> list[Frame]:
    from datetime import datetime, timedelta, timezone

    from alpr.schemas import GeoPosition

    pub = Publisher(settings, codec, "test-camera")
    frames = []
    t0 = datetime.now(timezone.utc)
    for i, image in enumerate(images):
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        f = Frame(frame_id=f"{camera_id}-{i}", camera_id=camera_id, agency="SPD", seq=i,
                  captured_at=t0 + timedelta(milliseconds=200 * i), position=GeoPosition(lat=38.5, lon=-121.5),
                  width=image.shape[1], height=image.shape[0], jpeg=jpeg.tobytes())
        pub.publish(topic, camera_id, f)
        frames.append(f)
    pub.flush()
    return frames


def _run_worker_until(worker: RecognitionWorker, done, timeout: float = 90) -> None:
    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.1)  # polling a condition with a deadline, not synchronising on time
    stop.set()
    t.join(30)
    assert not t.is_alive(), "worker did not stop"


def test_known_plates_read_end_to_end_one_read_per_car(settings, codec, reader, unique) -> None:
    frames_topic, reads_topic = make_topic(settings, f"frames-{unique}"), make_topic(settings, f"reads-{unique}")
    plates = DEMO_PLATES[:3]
    scene = Scene(frames_per_car=4, empty_frames=1)
    _publish_frames(settings, codec, frames_topic, list(drive_by(plates, seed=0, scene=scene)))
    worker = RecognitionWorker(settings, reader, batch_size=4, group=f"g-{unique}", frames_topic=frames_topic,
                               reads_topic=reads_topic)
    total = len(plates) * (scene.frames_per_car + scene.empty_frames)
    _run_worker_until(worker, lambda: worker.stats.frames >= total)
    reads = [codec.decode(m.value(), PlateRead) for m in drain(settings, reads_topic, 50, timeout=3)]
    assert sorted(r.plate for r in reads) == sorted(plates)          # every car read, right, once
    assert worker.stats.folded == len(plates) * (scene.frames_per_car - 1)
    for r in reads:
        assert r.agency == "SPD" and r.camera_id == "cam-t" and r.crop_jpeg and len(r.box) == 4
        assert r.read_id == read_id(r.frame_id, r.plate)
        assert r.model_version == reader.model_version


def test_a_us_plate_read_carries_the_state_printed_on_it(settings, codec, unique) -> None:
    """The state name read off the plate becomes the read's plate_state (the hotlist compares it)."""
    from tests.test_us_plates import us_plate_crop

    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[400:550, 500:800] = us_plate_crop("4WOL902", "CALIFORNIA")
    frames_topic, reads_topic = make_topic(settings, f"frames-{unique}"), make_topic(settings, f"reads-{unique}")
    _publish_frames(settings, codec, frames_topic, [frame])
    us_reader = open_reader("onnxruntime", threads=1, settings=ReaderSettings(region="us"))
    worker = RecognitionWorker(settings, us_reader, batch_size=1, group=f"g-{unique}", frames_topic=frames_topic,
                               reads_topic=reads_topic)
    _run_worker_until(worker, lambda: worker.stats.frames >= 1)
    (read,) = [codec.decode(m.value(), PlateRead) for m in drain(settings, reads_topic, 1, timeout=3)]
    assert (read.plate, read.plate_state) == ("4WOL902", "CA")


def test_corrupt_frame_goes_to_deadletter_and_worker_keeps_going(settings, codec, reader, unique) -> None:
    from datetime import datetime, timezone

    from alpr.schemas import GeoPosition

    frames_topic, reads_topic = make_topic(settings, f"frames-{unique}"), make_topic(settings, f"reads-{unique}")
    pub = Publisher(settings, codec, "test")
    bad = Frame(frame_id="corrupt-1", camera_id="cam-c", agency="SPD", seq=0, captured_at=datetime.now(timezone.utc),
                position=GeoPosition(lat=1, lon=1), width=10, height=10, jpeg=b"\xff\xd8 this is not a jpeg")
    pub.publish(frames_topic, "cam-c", bad)
    pub.flush()
    _publish_frames(settings, codec, frames_topic, [car_frame(DEMO_PLATES[4], 4, 0.5)], camera_id="cam-c")
    worker = RecognitionWorker(settings, reader, batch_size=1, group=f"g-{unique}", frames_topic=frames_topic,
                               reads_topic=reads_topic)
    _run_worker_until(worker, lambda: worker.stats.frames >= 2)
    assert worker.stats.corrupt == 1
    (msg,) = drain(settings, reads_topic, 1)
    assert codec.decode(msg.value(), PlateRead).plate == DEMO_PLATES[4]
    letters = [codec.decode(m.value(), DeadLetter) for m in drain(settings, DEADLETTER, 500, timeout=3)]
    mine = [d for d in letters if d.source_topic == frames_topic]
    assert len(mine) == 1 and "corrupt-1" in mine[0].reason and mine[0].error_class == "CorruptImage"


def test_near_plates() -> None:
    assert near("BRA2E19", "BRA2E19") and near("BRA2E19", "BRA2E18") and near("BRA2E19", "BRA2E1")
    assert not near("BRA2E19", "BRA2F18") and not near("ABC", "ABCDE")


@pytest.fixture
def own_broker(tmp_path):
    """A broker of its own: the subprocess workers use the default topic names."""
    b = DevBroker("127.0.0.1", free_port(), tmp_path / "broker.log").start()
    s = load_settings(kafka_bootstrap=b.bootstrap, data_dir=tmp_path)
    apply_topics(kafka.admin(s), replication_factor=1)
    yield s
    b.stop()


def _start_worker(settings, tmp_path: Path, name: str) -> subprocess.Popen:
    env = alpr_env(ALPR_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, ALPR_DATA_DIR=str(tmp_path))
    return subprocess.Popen([sys.executable, "-m", "alpr.cli", "worker", "--batch-size", "4"], env=env,
                            stdout=subprocess.PIPE, stderr=open(tmp_path / f"{name}.log", "wb"))


@pytest.mark.timeout(240)
def test_worker_killed_mid_batch_loses_no_frame(own_broker, codec, tmp_path) -> None:
    """Every frame is one different car: each frame must end with at least one read, whatever dies."""
    settings = own_broker
    plates = ("AAA1A11", "BBB2B22", "CCC3C33", "DDD4D44", "EEE5E55", "FFF6F66", "GGG7G77", "HHH8H88",
              "TUV9W99", "KKK1K12", "LLL2L23", "MMM3M34", "NNN4N45", "PPP5P56", "RRR6R67", "SSS7S78")
    images = [car_frame(p, i, 0.5) for i, p in enumerate(plates)]
    frames = _publish_frames(settings, codec, FRAMES, images)
    first = _start_worker(settings, tmp_path, "w1")
    try:
        seen: list = []
        deadline = time.monotonic() + 120
        while len(seen) < 3 and time.monotonic() < deadline:
            seen = drain(settings, READS, 100, timeout=1, partitions=6)
        assert len(seen) >= 3, "first worker produced no reads"
        first.send_signal(signal.SIGKILL)  # mid-stream: some batches done, one in flight, the rest untouched
        first.wait(10)
        second = _start_worker(settings, tmp_path, "w2")
        try:
            want = {f.frame_id for f in frames}
            got: dict[str, set] = {}
            deadline = time.monotonic() + 150
            while set(got) != want and time.monotonic() < deadline:
                for m in drain(settings, READS, 200, timeout=2, partitions=6):
                    r = codec.decode(m.value(), PlateRead)
                    got.setdefault(r.frame_id, set()).add(r.plate)
            missing = want - set(got)
            assert not missing, f"frames with no read after the crash: {sorted(missing)}"
            by_frame = {f.frame_id: p for f, p in zip(frames, plates)}
            assert all(by_frame[fid] in found for fid, found in got.items())
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(30)
            except subprocess.TimeoutExpired:
                second.kill()
    finally:
        if first.poll() is None:
            first.kill()
