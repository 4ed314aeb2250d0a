"""Recognition workers: `alpr.frames` -> plate reader -> `alpr.reads`.

Workers share the frames topic in one consumer group, so adding a worker spreads
the partitions and a dead worker's partitions move to the others. A batch's input
offsets are committed only after every read it produced is acknowledged by the
broker (at-least-once): a worker killed mid-batch leaves its frames uncommitted,
and whoever gets the partition reads them again. Read ids are derived from the
frame id and the plate, so a re-read frame yields the same read ids and the
warehouse stores it once.

The same plate seen by the same camera in consecutive frames is one read: a read
within `dedup_window_s` of a recent read of that camera whose plate differs by at
most one character (an OCR slip on the same car) is folded into it.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np

from alpr.gpu import CorruptImage, PlateReader, PlateText, decode_image
from alpr.gpu.imaging import crop
from alpr.core.kafka import Publisher, Received, RecordConsumer
from alpr.core.logs import get_log
from alpr.core.metrics import INFERENCE_SECONDS, READS_FOLDED, READS_PUBLISHED, WORKER_FRAMES
from alpr.core.settings import Settings
from alpr.core.topics import FRAMES, READS
from alpr.schemas import Codec, Frame, PlateRead

log = get_log(__name__)
READ_NAMESPACE = uuid.UUID("6f1c2a3e-7d4b-4c2e-9a51-3b8f0e6d2c10")
GROUP = "alpr-recognition"


def read_id(frame_id: str, plate: str) -> str:
    return str(uuid.uuid5(READ_NAMESPACE, f"{frame_id}:{plate}"))


def near(a: str, b: str) -> bool:
    """Same plate, or one character apart (one substitution, insertion or deletion)."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    short, long_ = sorted((a, b), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


@dataclass
class Deduplicator:
    """Per-camera memory of recent plates, on capture time (so reprocessing folds the same way)."""

    window: timedelta
    recent: dict[str, list[tuple[str, datetime]]] = field(default_factory=dict)

    def is_repeat(self, camera_id: str, plate: str, at: datetime) -> bool:
        seen = [(p, t) for p, t in self.recent.get(camera_id, []) if abs(at - t) <= self.window]
        repeat = next((i for i, (p, _) in enumerate(seen) if near(p, plate)), None)
        if repeat is not None:
            seen[repeat] = (seen[repeat][0], max(seen[repeat][1], at))  # the car is still in view
        else:
            seen.append((plate, at))
        self.recent[camera_id] = seen
        return repeat is not None


@dataclass
class WorkerStats:
    frames: int = 0
    corrupt: int = 0
    reads: int = 0
    folded: int = 0
    batches: int = 0
    infer_ms_total: float = 0.0


class RecognitionWorker:
    def __init__(self, settings: Settings, reader: PlateReader, batch_size: int = 8,
                 dedup_window_s: float = 10.0, group: str = GROUP, frames_topic: str = FRAMES,
                 reads_topic: str = READS, client_id: str = "worker") -> None:
        self.settings, self.reader = settings, reader
        self.codec = Codec(settings.schema_registry_url)
        self.publisher = Publisher(settings, self.codec, client_id)
        self.consumer = RecordConsumer(settings, self.codec, group, [frames_topic], Frame, self.publisher,
                                       client_id=client_id)
        self.batch_size, self.reads_topic = batch_size, reads_topic
        self.backend_name = getattr(reader.backend, "name", type(reader.backend).__name__)
        self.dedup = Deduplicator(timedelta(seconds=dedup_window_s))
        self.stats = WorkerStats()
        # The plate region (ALPR_PLATE_REGION) decides which reads exist; say which one runs.
        log.info("worker.reader", model_version=reader.model_version, plate_region=reader.settings.region)

    def ready(self) -> bool:
        """In the group and able to publish: what /readyz reports."""
        return self.consumer.joined and self.publisher.healthy

    def run(self, stop: threading.Event, on_loop=lambda: None) -> None:
        """Consume until `stop`; the batch in hand is finished, published and committed first."""
        try:
            while not stop.is_set():
                on_loop()
                batch = self.consumer.poll_batch(self.batch_size, timeout=0.2)
                if batch:
                    self.process(batch)
                    self.publisher.flush()  # raises DeliveryFailed: then nothing is committed
                    self.consumer.commit()
                elif self.consumer.dead_lettered:
                    self.publisher.flush()
                    self.consumer.commit()
        finally:
            self.consumer.close()

    def process(self, batch: list[Received[Frame]]) -> list[PlateRead]:
        images, frames = [], []
        for item in batch:
            try:
                images.append(decode_image(item.record.jpeg))
                frames.append(item.record)
            except CorruptImage as exc:
                self.stats.corrupt += 1
                WORKER_FRAMES.labels("corrupt").inc()
                self.consumer.dead_letter(item.message, f"frame {item.record.frame_id}: {exc}", "CorruptImage")
        self.stats.frames += len(batch)
        if not images:
            return []
        WORKER_FRAMES.labels("decoded").inc(len(images))
        started = time.perf_counter()
        found = self.reader.read_batch(images)
        elapsed = time.perf_counter() - started
        INFERENCE_SECONDS.labels(self.backend_name, str(len(images))).observe(elapsed)
        self.stats.infer_ms_total += elapsed * 1000
        self.stats.batches += 1
        now = datetime.now(timezone.utc)
        out = []
        for frame, image, plates in zip(frames, images, found):
            for plate in plates:
                if self.dedup.is_repeat(frame.camera_id, plate.text, frame.captured_at):
                    self.stats.folded += 1
                    READS_FOLDED.inc()
                    continue
                read = self._read(frame, image, plate, now)
                self.publisher.publish(self.reads_topic, read.plate, read)
                out.append(read)
                READS_PUBLISHED.labels(frame.camera_id).inc()
                log.info("read.published", read_id=read.read_id, frame_id=frame.frame_id,
                         camera_id=frame.camera_id, confidence=round(read.confidence, 3))
        self.stats.reads += len(out)
        return out

    def _read(self, frame: Frame, image: np.ndarray, plate: PlateText, now: datetime) -> PlateRead:
        ok, jpeg = cv2.imencode(".jpg", crop(image, plate.box, 0.1, 0.2), [cv2.IMWRITE_JPEG_QUALITY, 90])
        return PlateRead(
            read_id=read_id(frame.frame_id, plate.text), frame_id=frame.frame_id, camera_id=frame.camera_id,
            agency=frame.agency, plate=plate.text, confidence=min(1.0, max(0.0, plate.confidence)),
            char_confidences=[float(c) for c in plate.char_confidences], box=list(plate.box),
            crop_jpeg=jpeg.tobytes() if ok else None, captured_at=frame.captured_at, read_at=now,
            position=frame.position, model_version=self.reader.model_version)
