"""Camera producers: a source's frames -> JPEG -> `alpr.frames`, keyed by camera id.

A source is a video file, an RTSP/HTTP stream, a folder of images, or generated
footage (`synthetic:`). A source that cannot be opened or drops out is retried
with exponential backoff; a corrupt frame is counted as dropped and skipped. The
producer never dies silently: every failure is a log line with the camera id,
and counters say what was sent and dropped.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alpr.recognition import footage
from alpr.core.errors import AlprError, ConfigError
from alpr.core.kafka import Publisher
from alpr.core.logs import get_log
from alpr.core.metrics import FRAMES_DROPPED, FRAMES_SENT, SOURCE_RECONNECTS
from alpr.core.settings import Settings
from alpr.core.topics import FRAMES
from alpr.schemas import Codec, Frame, GeoPosition

log = get_log(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
JPEG_QUALITY = 90


class SourceError(AlprError):
    """A source cannot be opened or stopped delivering frames; the producer retries."""


class CameraConfig(BaseModel):
    """One camera: where it is, whose it is, what it reads from."""

    model_config = ConfigDict(extra="forbid")
    camera_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    agency: str = Field(min_length=1)
    source: str = Field(min_length=1, description="video file, rtsp:// or http(s):// URL, image folder, synthetic:")
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    heading_deg: float | None = Field(None, ge=0, lt=360)
    max_fps: float = Field(5.0, gt=0, le=60, description="frame-rate cap; extra frames are skipped")
    loop: bool = Field(False, description="replay a file or folder forever (demo, soak tests)")

    @field_validator("source")
    @classmethod
    def _local_source_exists(cls, value: str) -> str:
        """A stream may be down for a while (retried); a local path that is not there is a typo: fail now."""
        if value.startswith("synthetic:") or "://" in value:
            return value
        path = Path(value)
        if not path.exists():
            raise ValueError(f"source {value!r}: no such file or folder")
        if path.is_dir() and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            raise ValueError(f"source {value!r}: the folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return value


def load_cameras(path: Path) -> list[CameraConfig]:
    try:
        doc = yaml.safe_load(Path(path).read_text())
        # ${VAR} in a source comes from the environment, so stream credentials stay out of the file
        return [CameraConfig(**{**c, "source": os.path.expandvars(str(c.get("source", "")))}) for c in doc["cameras"]]
    except FileNotFoundError:
        raise ConfigError(f"camera file {path} not found") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"camera file {path}: {where}: {err['msg'].removeprefix('Value error, ')}") from None
    except Exception as exc:
        raise ConfigError(f"camera file {path}: {exc}".splitlines()[0]) from None


@dataclass
class CameraStats:
    sent: int = 0
    dropped: int = 0
    reconnects: int = 0
    last_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for k, v in deltas.items():
                setattr(self, k, getattr(self, k) + v)


def open_source(source: str) -> Iterator[np.ndarray | None]:
    """Frames of one pass over the source; None marks a corrupt frame. Raises SourceError."""
    if source.startswith("synthetic:"):
        seed = int(source.split(":", 1)[1] or 0)
        return footage.drive_by(seed=seed)
    path = Path(source)
    if path.is_dir():
        return _folder(path)
    if not (path.is_file() or "://" in source):
        raise SourceError(f"source {source!r} is not a file, folder or stream URL")
    return _video(source)


def _folder(path: Path) -> Iterator[np.ndarray | None]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"folder {path} has no images")
    for f in files:
        yield cv2.imdecode(np.fromfile(f, np.uint8), cv2.IMREAD_COLOR)  # None when corrupt


def _video(source: str) -> Iterator[np.ndarray | None]:
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise SourceError(f"cannot open {source.split('@')[-1]}")  # never log stream credentials
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                if "://" in source:
                    raise SourceError("stream stopped delivering frames")
                return
            yield frame
    finally:
        cap.release()


class Camera:
    """Publishes one camera's frames until stopped; reconnects with backoff."""

    def __init__(self, config: CameraConfig, publisher: Publisher, max_backoff: float = 30.0) -> None:
        self.config, self.publisher = config, publisher
        self.position = GeoPosition(lat=config.lat, lon=config.lon, heading_deg=config.heading_deg)
        self.stats = CameraStats()
        self.max_backoff = max_backoff
        self._seq = 0

    def run(self, stop: threading.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                passed = self._one_pass(stop)
                backoff = 1.0
                if not (self.config.loop and passed):
                    return
            except SourceError as exc:
                self.stats.add(reconnects=1)
                SOURCE_RECONNECTS.labels(self.config.camera_id).inc()
                self.stats.last_error = str(exc)
                log.warning("camera.source_failed", camera_id=self.config.camera_id, error=str(exc),
                            retry_in_s=backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _one_pass(self, stop: threading.Event) -> bool:
        """Returns True if the pass yielded at least one frame."""
        interval = 1.0 / self.config.max_fps
        next_at = time.monotonic()
        any_frame = False
        for image in open_source(self.config.source):
            if stop.is_set():
                return any_frame
            any_frame = True
            if image is None:
                self.stats.add(dropped=1)
                FRAMES_DROPPED.labels(self.config.camera_id, "corrupt").inc()
                log.warning("camera.corrupt_frame", camera_id=self.config.camera_id, seq=self._seq)
                continue
            wait = next_at - time.monotonic()
            if wait > 0:
                stop.wait(wait)  # the frame-rate cap
            next_at = max(next_at + interval, time.monotonic())
            self.publish(image)
        return any_frame

    def publish(self, image: np.ndarray) -> Frame:
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            self.stats.add(dropped=1)
            FRAMES_DROPPED.labels(self.config.camera_id, "encode").inc()
            raise SourceError("frame could not be JPEG-encoded")
        frame = Frame(frame_id=uuid.uuid4().hex, camera_id=self.config.camera_id, agency=self.config.agency,
                      seq=self._seq, captured_at=datetime.now(timezone.utc), position=self.position,
                      width=image.shape[1], height=image.shape[0], jpeg=jpeg.tobytes())
        self._seq += 1
        self.publisher.publish(FRAMES, self.config.camera_id, frame)
        self.stats.add(sent=1)
        FRAMES_SENT.labels(self.config.camera_id).inc()
        return frame


def run_cameras(settings: Settings, configs: list[CameraConfig], stop: threading.Event,
                report_every: float = 10.0, on_loop=lambda: None) -> list[Camera]:
    """Run each camera in its own thread until `stop`; logs counters every `report_every` s."""
    publisher = Publisher(settings, Codec(settings.schema_registry_url), "camera")
    cameras = [Camera(c, publisher) for c in configs]
    threads = [threading.Thread(target=c.run, args=(stop,), name=f"camera-{c.config.camera_id}", daemon=True)
               for c in cameras]
    for t in threads:
        t.start()
    try:
        next_report = time.monotonic() + report_every
        while any(t.is_alive() for t in threads) and not stop.wait(1.0):
            on_loop()
            publisher.poll(0)
            if time.monotonic() < next_report:
                continue
            next_report += report_every
            for c in cameras:
                log.info("camera.progress", camera_id=c.config.camera_id, sent=c.stats.sent,
                         dropped=c.stats.dropped, reconnects=c.stats.reconnects)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        publisher.flush()
    return cameras
