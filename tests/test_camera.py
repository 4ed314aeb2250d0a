"""Camera producers: frames published keyed by camera, corrupt images dropped, dead sources retried."""

from __future__ import annotations

import threading

import cv2
import numpy as np

from alpr.recognition.camera import Camera, CameraConfig, open_source
from alpr.recognition.footage import car_frame
from alpr.core.kafka import Publisher
from alpr.core.topics import FRAMES
from alpr.schemas import Frame
from tests.conftest import drain_until


def _config(source: str, **kw) -> CameraConfig:
    return CameraConfig(camera_id="cam-folder", agency="SPD", source=source, lat=38.5, lon=-121.5, max_fps=60, **kw)


def test_folder_source_publishes_frames_and_drops_corrupt(settings, codec, tmp_path, unique) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:02d}.jpg"), car_frame("BRA2E19", i, 0.5))
    (folder / "01b.jpg").write_bytes(b"not an image")
    cam = Camera(_config(str(folder)).model_copy(update={"camera_id": f"cam-{unique}"}), Publisher(settings, codec, "t"))
    cam.run(threading.Event())
    cam.publisher.flush()
    assert (cam.stats.sent, cam.stats.dropped) == (3, 1)
    mine = _frames_of(settings, codec, f"cam-{unique}", 3)
    assert [f.seq for f in mine] == [0, 1, 2]
    assert all(f.jpeg[:2] == b"\xff\xd8" and (f.width, f.height) == (1280, 720) for f in mine)


def test_unopenable_source_retries_with_backoff_and_stops_on_request(settings, codec) -> None:
    cam = Camera(_config("rtsp://127.0.0.1:9/none"), Publisher(settings, codec, "t"), max_backoff=0.2)
    stop = threading.Event()
    t = threading.Thread(target=cam.run, args=(stop,))
    t.start()
    try:
        deadline_hit = not _wait(lambda: cam.stats.reconnects >= 3, 30)
    finally:
        stop.set()
        t.join(10)
    assert not deadline_hit and not t.is_alive()
    assert cam.stats.sent == 0 and "cannot open" in cam.stats.last_error


def test_missing_path_is_a_source_error() -> None:
    import pytest

    from alpr.recognition.camera import SourceError

    with pytest.raises(SourceError):
        open_source("/nonexistent/path")


def _frames_of(settings, codec, camera_id: str, expected: int) -> list[Frame]:
    """This camera's frames on the shared frames topic, read until `expected` of them arrived."""
    def mine(msgs):
        return [f for f in (codec.decode(m.value(), Frame) for m in msgs) if f.camera_id == camera_id]

    return mine(drain_until(settings, FRAMES, lambda msgs: len(mine(msgs)) >= expected, timeout=20, partitions=12))


def _wait(cond, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_video_file_source_publishes_every_frame(settings, codec, tmp_path, unique) -> None:
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    assert writer.isOpened(), "this OpenCV build cannot write MJPG"
    for i in range(5):
        writer.write(np.full((240, 320, 3), 40 * i, np.uint8))
    writer.release()
    cam = Camera(_config(str(clip)).model_copy(update={"camera_id": f"cam-v{unique}"}), Publisher(settings, codec, "t"))
    cam.run(threading.Event())
    cam.publisher.flush()
    assert (cam.stats.sent, cam.stats.dropped, cam.stats.reconnects) == (5, 0, 0)
    assert sorted(f.seq for f in _frames_of(settings, codec, f"cam-v{unique}", 5)) == [0, 1, 2, 3, 4]
