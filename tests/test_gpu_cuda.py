"""The TensorRT backend's CUDA plumbing on a real GPU: pinned host buffers, device buffers,
async copies and stream ordering through cuda-python.

TensorRT itself cannot be installed where these run, so the engine is a stand-in whose
"inference" is a CuPy kernel over the very device pointers the backend bound, launched on
the backend's own stream: if a copy went to the wrong buffer, ran on another stream, or
the host read results before the stream finished, the output would be wrong. Skipped
where there is no CUDA device (CI).
"""

from __future__ import annotations

import importlib.util
import sys
import time
import types

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("cupy") is None
                                or importlib.util.find_spec("cuda") is None, reason="no CUDA stack here")


def _gpu_tensorrt(builds: list[bytes]) -> types.ModuleType:
    """tensorrt stand-in: input "x" (float16) -> output "y" = 2x + 1 computed on the GPU."""
    import cupy as cp

    from tests.test_reader import fake_tensorrt

    trt = fake_tensorrt(builds)
    trt.nptype = lambda dtype: np.float16
    engine_cls = trt.Runtime(None).deserialize_cuda_engine(b"").__class__
    base_context = engine_cls.create_execution_context

    class GpuContext(type(base_context())):
        def execute_async_v3(self, stream) -> bool:
            count = int(np.prod(self.shape))
            mem = lambda addr: cp.cuda.MemoryPointer(cp.cuda.UnownedMemory(int(addr), count * 2, self), 0)  # noqa: E731
            x = cp.ndarray((count,), cp.float16, mem(self.addresses["x"]))
            y = cp.ndarray((count,), cp.float16, mem(self.addresses["y"]))
            with cp.cuda.ExternalStream(int(stream)):
                cp.multiply(x, 2, out=y)
                cp.add(y, 1, out=y)
            return True

    engine_cls.create_execution_context = staticmethod(GpuContext)
    return trt


@pytest.fixture
def backend(tmp_path, monkeypatch):
    from alpr.gpu.tensorrt_engine import TensorRTBackend

    monkeypatch.setitem(sys.modules, "tensorrt", _gpu_tensorrt([]))
    return TensorRTBackend(max_batch=32, cache_dir=tmp_path)


def test_pinned_buffers_and_stream_give_exact_results_for_every_batch_size(backend) -> None:
    from alpr.gpu.models import RECOGNIZER

    rng = np.random.default_rng(7)
    for n in (1, 3, 16, 32, 5, 32):  # buffers grow and are reused
        batch = rng.uniform(-4, 4, size=(n, 3, 48, 320)).astype(np.float16)
        (out,) = backend.run(RECOGNIZER, batch)
        assert out.shape == batch.shape and out.dtype == np.float16
        np.testing.assert_array_equal(out, (batch * np.float16(2)) + np.float16(1))


def test_transfer_and_launch_cost_of_a_recognizer_batch(backend, capsys) -> None:
    """Not a benchmark gate: prints what one batch of 16 crops costs through the plumbing."""
    from alpr.gpu.models import RECOGNIZER

    batch = np.random.default_rng(1).uniform(0, 1, size=(16, 3, 48, 320)).astype(np.float16)
    for _ in range(5):
        backend.run(RECOGNIZER, batch)
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        backend.run(RECOGNIZER, batch)
        times.append((time.perf_counter() - t0) * 1000)
    with capsys.disabled():
        print(f"\nrecognizer batch 16x3x48x320 fp16 through pinned buffers + stub kernel: "
              f"median {np.median(times):.3f} ms, p90 {np.percentile(times, 90):.3f} ms")
    assert np.median(times) < 50
