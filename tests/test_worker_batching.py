"""The GPU-shaped worker on CPU: cross-partition batches bounded by size and deadline, decode
started while a batch fills, and offsets committed only for batches whose reads are acknowledged,
never for a batch still being read (real dev broker, real reader)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from alpr.gpu import ReaderSettings, open_reader
from alpr.recognition.footage import DEMO_PLATES, car_frame
from alpr.recognition.worker import FrameBatcher, RecognitionWorker
from tests.conftest import make_topic, wait_for

JPEG = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()


@dataclass
class _Record:
    frame_id: str
    jpeg: bytes = JPEG


@dataclass
class _Received:
    message: object
    record: _Record


class _Source:
    """A poll function over a list of records, `per_call` at a time, advancing a fake clock."""

    def __init__(self, count: int, per_call: int, step_s: float) -> None:
        self.pending = [_Received(None, _Record(f"f{i}")) for i in range(count)]
        self.per_call, self.step_s, self.now = per_call, step_s, 0.0
        self.calls: list[tuple[int, float]] = []

    def poll(self, max_records: int, timeout: float) -> list[_Received]:
        self.calls.append((max_records, timeout))
        self.now += self.step_s
        n = min(max_records, self.per_call)
        taken, self.pending = self.pending[:n], self.pending[n:]
        return taken

    def clock(self) -> float:
        return self.now


@pytest.fixture
def pool():
    with ThreadPoolExecutor(2) as p:
        yield p


def test_a_batch_fills_to_its_size_across_polls_and_asks_only_for_what_is_missing(pool) -> None:
    src = _Source(count=100, per_call=7, step_s=0.001)
    batch = FrameBatcher(src.poll, size=16, deadline_s=10.0, decode_pool=pool, clock=src.clock).gather()
    assert [r.record.frame_id for r, _ in batch.items] == [f"f{i}" for i in range(16)]  # arrival order kept
    assert [n for n, _ in src.calls] == [16, 9, 2]
    assert all(img.result().shape == (48, 64, 3) for _, img in batch.items)


def test_the_deadline_closes_a_partial_batch_and_bounds_each_wait(pool) -> None:
    src = _Source(count=100, per_call=1, step_s=0.010)  # one frame every 10 ms
    batch = FrameBatcher(src.poll, size=64, deadline_s=0.035, decode_pool=pool, clock=src.clock).gather()
    assert 3 <= len(batch.items) <= 5  # what arrived in 35 ms, not 64
    waits = [timeout for _, timeout in src.calls[1:]]
    assert waits and all(0 < w <= 0.035 + 1e-9 for w in waits) and waits == sorted(waits, reverse=True)


def test_nothing_arrived_gives_no_batch_after_one_idle_poll(pool) -> None:
    src = _Source(count=0, per_call=1, step_s=0.2)
    batcher = FrameBatcher(src.poll, size=8, deadline_s=0.05, decode_pool=pool, idle_s=0.2, clock=src.clock)
    assert batcher.gather() is None
    assert src.calls == [(8, 0.2)]


def test_decoding_starts_while_the_batch_is_still_filling() -> None:
    order: list[str] = []

    class Recording(ThreadPoolExecutor):
        def submit(self, fn, *args):
            order.append("decode")
            return super().submit(fn, *args)

    src = _Source(count=4, per_call=2, step_s=0.001)
    poll = lambda n, t: (order.append("poll"), src.poll(n, t))[1]  # noqa: E731
    with Recording(1) as pool:
        FrameBatcher(poll, size=4, deadline_s=1.0, decode_pool=pool, clock=src.clock).gather()
    assert order == ["poll", "decode", "decode", "poll", "decode", "decode"]


def test_batch_size_must_be_positive(pool) -> None:
    with pytest.raises(ValueError):
        FrameBatcher(lambda n, t: [], size=0, deadline_s=0.0, decode_pool=pool)


class _GatedReader:
    """The real CPU reader, holding its second batch until the test opens the gate."""

    def __init__(self) -> None:
        self.real = open_reader("onnxruntime", threads=1, settings=ReaderSettings(region="br"))  # Mercosur footage
        self.backend, self.model_version, self.settings = self.real.backend, self.real.model_version, self.real.settings
        self.gate, self.sizes, self.calls = threading.Event(), [], 0

    def read_batch(self, images):
        self.calls += 1
        self.sizes.append(len(images))
        if self.calls == 2:
            assert self.gate.wait(60), "test never opened the gate"
        return self.real.read_batch(images)


def _committed(settings, group: str, topic: str, partitions: int) -> int:
    from confluent_kafka import Consumer, TopicPartition

    from alpr.core.kafka import consumer_config

    c = Consumer(consumer_config(settings, group, "probe"))  # same group, never subscribes: reads its offsets only
    try:
        done = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(0, tp.offset) for tp in done)
    finally:
        c.close()




@pytest.mark.timeout(180)
def test_a_batch_still_being_read_is_not_committed_though_later_frames_were_consumed(settings, codec, unique) -> None:
    from tests.test_recognition import _publish_frames

    topic, reads = make_topic(settings, f"frames-{unique}", partitions=2), make_topic(settings, f"reads-{unique}")
    group = f"g-{unique}"
    images = [car_frame(plate, i, 0.3) for i, plate in enumerate(DEMO_PLATES[:3])] * 2
    _publish_frames(settings, codec, topic, images[:3], camera_id="cam-a")  # both partitions get frames
    _publish_frames(settings, codec, topic, images[3:], camera_id="cam-b")
    reader = _GatedReader()
    worker = RecognitionWorker(settings, reader, batch_size=2, deadline_ms=2000, group=group, frames_topic=topic,
                               reads_topic=reads, inference_threads=1)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        # Batch 1 read and committed; batch 2 held in the reader; batch 3 gathered behind it.
        assert wait_for(lambda: worker.stats.frames == 6), f"worker gathered {worker.stats.frames} frames"
        assert wait_for(lambda: _committed(settings, group, topic, 2) == reader.sizes[0])
        time.sleep(0.5)  # give a wrong commit of batches 2-3 the chance to happen before checking it did not
        assert _committed(settings, group, topic, 2) == reader.sizes[0] == 2
        reader.gate.set()
        assert wait_for(lambda: _committed(settings, group, topic, 2) == 6), "not every batch was committed"
    finally:
        reader.gate.set()
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert reader.sizes == [2, 2, 2] and worker.stats.batches == 3


def test_a_reader_failure_commits_neither_its_batch_nor_the_ones_after(settings, codec, unique) -> None:
    from tests.test_recognition import _publish_frames

    class Failing(_GatedReader):
        def read_batch(self, images):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("device lost")
            return self.real.read_batch(images)

    topic, reads = make_topic(settings, f"frames-{unique}"), make_topic(settings, f"reads-{unique}")
    group = f"g-{unique}"
    _publish_frames(settings, codec, topic, [car_frame(DEMO_PLATES[0], 0, 0.3)] * 4)
    worker = RecognitionWorker(settings, Failing(), batch_size=2, deadline_ms=2000, group=group, frames_topic=topic,
                               reads_topic=reads, inference_threads=1)
    with pytest.raises(RuntimeError, match="device lost"):
        worker.run(threading.Event())
    assert worker.stats.frames == 4  # batch 2 was gathered and started behind the failing one
    assert _committed(settings, group, topic, 1) == 0


def test_a_partition_revoked_while_its_batch_was_read_is_not_committed(settings, unique) -> None:
    from concurrent.futures import Future

    from alpr.recognition.worker import InFlight

    class Msg:
        def __init__(self, partition: int, offset: int) -> None:
            self._p, self._o = partition, offset

        def topic(self) -> str:
            return "frames"

        def partition(self) -> int:
            return self._p

        def offset(self) -> int:
            return self._o

    worker = RecognitionWorker(settings, _GatedReader(), group=f"g-{unique}", frames_topic=f"none-{unique}")
    committed: list = []
    worker.consumer.commit_through = lambda messages: committed.extend((m.partition(), m.offset()) for m in messages)
    worker.consumer.assigned = {("frames", 0)}  # partition 1 moved to another worker mid-batch
    done: Future = Future()
    done.set_result(([], 0.0))
    worker._finish(InFlight([Msg(0, 5), Msg(1, 7), Msg(0, 6)], [], [], done))
    worker.consumer.close()
    assert committed == [(0, 5), (0, 6)] and worker.stats.frames_done == 3


@pytest.mark.timeout(180)
def test_with_two_batches_in_the_reader_a_faster_later_one_waits_for_the_earlier(settings, codec, unique) -> None:
    """inference_threads=2: batch 2 is read while batch 1 is still held, yet nothing is published
    or committed past batch 1 until it is done, and reads leave in frame order."""
    from alpr.schemas import PlateRead
    from tests.conftest import drain
    from tests.test_recognition import _publish_frames

    class FirstHeld(_GatedReader):
        def read_batch(self, images):
            self.calls += 1
            call = self.calls
            if call == 1:
                assert self.gate.wait(60), "test never opened the gate"
            found = self.real.read_batch(images)
            self.sizes.append((call, len(images)))
            return found

    topic, reads = make_topic(settings, f"frames-{unique}"), make_topic(settings, f"reads-{unique}")
    group = f"g-{unique}"
    plates = DEMO_PLATES[:4]
    _publish_frames(settings, codec, topic, [car_frame(p, i, 0.5) for i, p in enumerate(plates)])
    reader = FirstHeld()
    worker = RecognitionWorker(settings, reader, batch_size=2, deadline_ms=2000, group=group, frames_topic=topic,
                               reads_topic=reads, inference_threads=2, dedup_window_s=0)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: (2, 2) in reader.sizes), "batch 2 was not read while batch 1 was held"
        assert worker.stats.frames_done == 0 and _committed(settings, group, topic, 1) == 0
        assert drain(settings, reads, 1, timeout=1) == []
        reader.gate.set()
        assert wait_for(lambda: _committed(settings, group, topic, 1) == 4)
    finally:
        reader.gate.set()
        stop.set()
        thread.join(30)
    got = [codec.decode(m.value(), PlateRead) for m in drain(settings, reads, 4, timeout=10)]
    assert [r.plate for r in got] == list(plates)  # frame order, though batch 2 was read first
