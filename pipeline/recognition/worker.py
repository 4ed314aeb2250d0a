"""Recognition workers: `alpr.frames` -> plate reader -> `alpr.reads`.

Workers share the frames topic in one consumer group, so adding a worker spreads
the partitions and a dead worker's partitions move to the others. A batch's input
offsets are committed only after every read it produced is acknowledged by the
broker (at-least-once): a worker killed mid-batch leaves its frames uncommitted,
and whoever gets the partition reads them again. Read ids are derived from the
frame id and the plate, so a re-read frame yields the same read ids and the
warehouse stores it once.

Batches are shaped for the backend: frames from every assigned partition are gathered up
to `worker_batch_frames` or until `worker_batch_deadline_ms` after the first one, each
frame's JPEG decoded in a thread pool as it arrives. Batches are read by
`worker_inference_threads` threads while the main thread gathers the next one, publishes
finished batches in arrival order and commits exactly their offsets (`commit_through`),
never those of a batch still being read.

The same plate seen by the same camera in consecutive frames is one read: a read
within `dedup_window_s` of a recent read of that camera whose plate differs by at
most one character (an OCR slip on the same car) is folded into it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
    frames: int = 0  # gathered (decoded or dead-lettered)
    frames_done: int = 0  # gathered, read, published, acknowledged and committed
    corrupt: int = 0
    reads: int = 0
    folded: int = 0
    batches: int = 0
    infer_ms_total: float = 0.0


@dataclass
class Gathered:
    """One batch as gathered: each record with the future of its decoded image."""

    items: list[tuple[Received[Frame], Future[np.ndarray]]]


class FrameBatcher:
    """Gathers frames across partitions into one batch: up to `size` frames, or whatever has
    arrived `deadline_s` after the first one. Each frame's decode starts as it arrives, so
    decoding overlaps the wait for the rest of the batch and the inference of the last one."""

    def __init__(self, poll: Callable[[int, float], list[Received[Frame]]], size: int, deadline_s: float,
                 decode_pool: ThreadPoolExecutor, idle_s: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        self._poll, self.size, self.deadline_s = poll, size, deadline_s
        self._pool, self._idle_s, self._clock = decode_pool, idle_s, clock

    def gather(self) -> Gathered | None:
        """The next batch, or None when nothing arrived within idle_s."""
        first = self._poll(self.size, self._idle_s)
        if not first:
            return None
        items = self._decoding(first)
        until = self._clock() + self.deadline_s
        while len(items) < self.size:
            left = until - self._clock()
            if left <= 0:
                break
            items += self._decoding(self._poll(self.size - len(items), left))
        return Gathered(items)

    def _decoding(self, records: list[Received[Frame]]) -> list[tuple[Received[Frame], Future[np.ndarray]]]:
        return [(r, self._pool.submit(decode_image, r.record.jpeg)) for r in records]


@dataclass
class InFlight:
    """A batch handed to the reader: what must be published and committed once it is read."""

    messages: list  # every Kafka message of the batch, corrupt frames included (they are dead-lettered)
    frames: list[Frame]
    images: list[np.ndarray]
    found: Future[tuple[list[list[PlateText]], float]]  # reads per image, seconds the reader took


class RecognitionWorker:
    def __init__(self, settings: Settings, reader: PlateReader, batch_size: int | None = None,
                 dedup_window_s: float = 10.0, group: str = GROUP, frames_topic: str = FRAMES,
                 reads_topic: str = READS, client_id: str = "worker", deadline_ms: float | None = None,
                 decode_threads: int | None = None, inference_threads: int | None = None) -> None:
        """batch_size, deadline_ms, decode_threads, inference_threads: None takes the
        ALPR_WORKER_* setting of the same meaning."""
        self.settings, self.reader = settings, reader
        self.codec = Codec(settings.schema_registry_url)
        self.publisher = Publisher(settings, self.codec, client_id)
        self.consumer = RecordConsumer(settings, self.codec, group, [frames_topic], Frame, self.publisher,
                                       client_id=client_id)
        self.batch_size = batch_size or settings.worker_batch_frames
        self.reads_topic = reads_topic
        self.backend_name = getattr(reader.backend, "name", type(reader.backend).__name__)
        self.dedup = Deduplicator(timedelta(seconds=dedup_window_s))
        self.stats = WorkerStats()
        self._decode_pool = ThreadPoolExecutor(decode_threads or settings.worker_decode_threads,
                                               thread_name_prefix="decode")
        self._inference_threads = inference_threads or settings.worker_inference_threads
        self._infer_pool = ThreadPoolExecutor(self._inference_threads, thread_name_prefix="infer")
        deadline = settings.worker_batch_deadline_ms if deadline_ms is None else deadline_ms
        self.batcher = FrameBatcher(self.consumer.poll_batch, self.batch_size, deadline / 1000, self._decode_pool)
        # The plate region (ALPR_PLATE_REGION) decides which reads exist; say which one runs.
        log.info("worker.reader", model_version=reader.model_version, plate_region=reader.settings.region)

    def ready(self) -> bool:
        """In the group and able to publish: what /readyz reports."""
        return self.consumer.joined and self.publisher.healthy

    def run(self, stop: threading.Event, on_loop=lambda: None) -> None:
        """Consume until `stop`; batches in hand are finished, published and committed first.

        Up to inference_threads + 1 batches are in flight: one being read per inference thread
        and one gathered next. The oldest is finished first, so reads leave in frame order.
        """
        inflight: deque[InFlight] = deque()
        failed = True
        try:
            while not stop.is_set():
                on_loop()
                gathered = self.batcher.gather()
                if gathered:
                    inflight.append(self._start(gathered))
                # Keep the reader busy: finish only what exceeds one batch per inference thread.
                # With nothing new arriving, finish everything so no read waits on traffic.
                while inflight and (len(inflight) > self._inference_threads or not gathered):
                    self._finish(inflight.popleft())
                if not gathered and not inflight and self.consumer.dead_lettered:
                    self.publisher.flush()
                    self.consumer.commit()  # nothing in flight: every record consumed is handled
            failed = False
        finally:
            try:
                # After a failure, later batches are dropped uncommitted: committing them would
                # commit the failed batch's offsets too (they precede them), losing its frames.
                while inflight and not failed:
                    self._finish(inflight.popleft())
            finally:
                self._infer_pool.shutdown(wait=True)
                self._decode_pool.shutdown(wait=True)
                self.consumer.close()

    def _start(self, gathered: Gathered) -> InFlight:
        """Collect the decoded images (dead-lettering corrupt frames) and hand the batch to the reader."""
        images, frames = [], []
        for item, decoded in gathered.items:
            try:
                images.append(decoded.result())
                frames.append(item.record)
            except CorruptImage as exc:
                self.stats.corrupt += 1
                WORKER_FRAMES.labels("corrupt").inc()
                self.consumer.dead_letter(item.message, f"frame {item.record.frame_id}: {exc}", "CorruptImage")
        self.stats.frames += len(gathered.items)
        WORKER_FRAMES.labels("decoded").inc(len(images))
        messages = [item.message for item, _ in gathered.items]
        if not images:
            done: Future[tuple[list[list[PlateText]], float]] = Future()
            done.set_result(([], 0.0))
            return InFlight(messages, frames, images, done)
        return InFlight(messages, frames, images, self._infer_pool.submit(self._read_batch, images))

    def _read_batch(self, images: list[np.ndarray]) -> tuple[list[list[PlateText]], float]:
        started = time.perf_counter()
        found = self.reader.read_batch(images)
        elapsed = time.perf_counter() - started
        # Batches closed by the deadline have any size up to worker_batch_frames: the label is the
        # size rounded up to a power of two, so the series stay few (1, 2, 4 ... 1024).
        INFERENCE_SECONDS.labels(self.backend_name, str(1 << (len(images) - 1).bit_length())).observe(elapsed)
        return found, elapsed

    def _finish(self, batch: InFlight) -> None:
        """Publish a batch's reads, wait for the broker to acknowledge them, then commit its offsets."""
        self._publish(batch)
        self.publisher.flush()  # raises DeliveryFailed: then nothing of this batch is committed
        # A rebalance can run while a batch is in flight (partitions move inside a poll). A
        # partition taken from this worker is not committed: its new owner reads those frames
        # again (same read ids, stored once) rather than have its own commit overwritten.
        owned = [m for m in batch.messages if (m.topic(), m.partition()) in self.consumer.assigned]
        self.consumer.commit_through(owned)
        self.stats.frames_done += len(batch.messages)

    def _publish(self, batch: InFlight) -> list[PlateRead]:
        found, elapsed = batch.found.result()  # a reader error surfaces here, before anything is committed
        if batch.images:
            self.stats.infer_ms_total += elapsed * 1000
            self.stats.batches += 1
        now = datetime.now(timezone.utc)
        out = []
        for frame, image, plates in zip(batch.frames, batch.images, found):
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
            agency=frame.agency, plate=plate.text, plate_state=plate.state,
            confidence=min(1.0, max(0.0, plate.confidence)),
            char_confidences=[float(c) for c in plate.char_confidences], box=list(plate.box),
            crop_jpeg=jpeg.tobytes() if ok else None, captured_at=frame.captured_at, read_at=now,
            position=frame.position, model_version=self.reader.model_version)
