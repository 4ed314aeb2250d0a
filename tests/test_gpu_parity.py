"""The CUDA backend on a real GPU with the real models: the same reads as the CPU backend on
the EU set, the staging buffers across batch sizes, and a worker end to end through Kafka.

Skipped unless ONNX Runtime has the CUDA provider and a GPU is visible (CI has neither).
The CPU reference pads frames to squares like the GPU backend does, so the comparison is of
the backends' arithmetic (FP16 recognizer, TF32/cuDNN convolutions), not of input shapes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from alpr.gpu import BackendUnavailable, ReaderSettings
from alpr.gpu.backends import OnnxRuntimeBackend
from alpr.gpu.models import RECOGNIZER
from alpr.gpu.reader import PlateReader

EU = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "openalpr-eu"
MAX_DIFFERENT_IMAGES = 2  # of 108: FP16 may flip a borderline read; more than this is a regression
CONFIDENCE_TOLERANCE = 0.03


def _gpu_missing() -> str | None:
    from alpr.gpu import cuda

    try:
        cuda.check_available()
    except BackendUnavailable as exc:
        return str(exc)
    return None


pytestmark = pytest.mark.skipif(_gpu_missing() is not None, reason=f"no CUDA GPU here: {_gpu_missing()}")


@pytest.fixture(scope="module")
def backend():
    from alpr.gpu.cuda import CudaBackend

    return CudaBackend(max_batch=16, recognizer_batch=64)


def test_sessions_run_on_the_gpu_and_batches_of_every_size_match_the_cpu(backend) -> None:
    from alpr.gpu.cuda import session_graph

    cpu = ort.InferenceSession(session_graph(RECOGNIZER, "fp32"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for n in (1, 5, 64, 3, 64):  # buffers grow, then are reused for smaller batches
        batch = rng.uniform(-1, 1, size=(n, 3, 48, 320)).astype(np.float32)
        (gpu,) = backend.run(RECOGNIZER, batch)
        (ref,) = cpu.run(None, {"x": batch})
        assert gpu.shape == ref.shape and gpu.dtype == np.float32
        assert np.abs(gpu - ref).max() < 0.05  # softmax probabilities: FP16 keeps ~3 digits
        assert np.mean(gpu.argmax(-1) == ref.argmax(-1)) > 0.98  # random inputs have near ties
    assert backend._session(RECOGNIZER).session.get_providers()[0] == "CUDAExecutionProvider"
    with pytest.raises(ValueError, match="exceeds"):
        backend.run(RECOGNIZER, np.zeros((65, 3, 48, 320), np.float32))


@pytest.mark.skipif(not EU.is_dir(), reason="EU set not present")
@pytest.mark.timeout(900)
def test_eu_set_same_plates_as_the_cpu_backend(backend) -> None:
    settings = ReaderSettings(region="eu")
    cpu_backend = OnnxRuntimeBackend(threads=4)
    cpu_backend.square_inputs = True  # same input shapes as the GPU backend
    cpu, gpu = PlateReader(cpu_backend, settings), PlateReader(backend, settings)
    paths = sorted(EU.glob("*.jpg"))
    images = [cv2.imread(str(p)) for p in paths]
    on_gpu = [r for start in range(0, len(images), 16) for r in gpu.read_batch(images[start:start + 16])]
    different = []
    for path, image, got in zip(paths, images, on_gpu):
        want = cpu.read(image)
        if {r.text for r in want} != {r.text for r in got}:
            different.append((path.name, [r.text for r in want], [r.text for r in got]))
            continue
        by_text = {r.text: r.confidence for r in want}
        for r in got:
            assert abs(r.confidence - by_text[r.text]) <= CONFIDENCE_TOLERANCE, (path.name, r.text)
    assert len(different) <= MAX_DIFFERENT_IMAGES, different


@pytest.mark.timeout(300)
def test_worker_on_the_gpu_reads_every_car_through_kafka(settings, codec, unique) -> None:
    from alpr.gpu import open_reader
    from alpr.recognition.footage import DEMO_PLATES, Scene, drive_by
    from alpr.recognition.worker import RecognitionWorker
    from alpr.schemas import PlateRead
    from tests.conftest import drain, make_topic
    from tests.test_recognition import _publish_frames

    frames_topic = make_topic(settings, f"frames-{unique}", partitions=3)
    reads_topic = make_topic(settings, f"reads-{unique}")
    plates = DEMO_PLATES[:3]
    scene = Scene(frames_per_car=4, empty_frames=1)
    _publish_frames(settings, codec, frames_topic, list(drive_by(plates, seed=0, scene=scene)))
    reader = open_reader("cuda", max_batch=16, settings=ReaderSettings(region="br"))  # Mercosur footage
    worker = RecognitionWorker(settings, reader, batch_size=16, deadline_ms=100, group=f"g-{unique}",
                               frames_topic=frames_topic, reads_topic=reads_topic, inference_threads=2)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    total = len(plates) * (scene.frames_per_car + scene.empty_frames)
    while worker.stats.frames < total and time.monotonic() < deadline:
        time.sleep(0.1)  # polling a condition with a deadline
    stop.set()
    thread.join(30)
    reads = [codec.decode(m.value(), PlateRead) for m in drain(settings, reads_topic, 50, timeout=3)]
    assert sorted(r.plate for r in reads) == sorted(plates)
