"""The CUDA backend's CPU-checkable parts: one clear error where it cannot run, and the
precision choice (which graphs become FP16), whose reads are compared with FP32 on the CPU."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from alpr.gpu import BackendUnavailable, open_reader
from alpr.gpu import cuda
from alpr.gpu.models import DETECTOR, RECOGNIZER, TEXT_DETECTOR

EU = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "openalpr-eu"
HAS_CUDA_EP = cuda.PROVIDER in ort.get_available_providers()


@pytest.mark.skipif(HAS_CUDA_EP, reason="this ONNX Runtime has the CUDA provider")
def test_cuda_backend_without_the_cuda_provider_is_one_clear_error() -> None:
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider.*onnxruntime-gpu"):
        open_reader("cuda")


def test_cuda_provider_present_but_no_gpu_visible_is_refused(monkeypatch) -> None:
    import types

    fake = types.SimpleNamespace(cudaGetDeviceCount=lambda: (100, 0))  # cudaErrorNoDevice
    monkeypatch.setattr(ort, "get_available_providers", lambda: [cuda.PROVIDER, "CPUExecutionProvider"])
    monkeypatch.setattr(cuda, "_import_cudart", lambda: fake)
    with pytest.raises(BackendUnavailable, match="no CUDA GPU is visible"):
        cuda.CudaBackend()


@pytest.mark.skipif(HAS_CUDA_EP, reason="this ONNX Runtime has the CUDA provider")
def test_alpr_read_with_the_cuda_backend_says_why_it_cannot(alpr, tmp_path) -> None:
    image = tmp_path / "frame.jpg"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    result = alpr(["read", "--backend", "cuda", str(image)])
    assert result.exit_code != 0
    text = result.output + (getattr(result, "stderr", "") or "")
    assert "onnxruntime-gpu" in text and "Traceback" not in text


def _input_type(graph: bytes) -> int:
    return onnx.load_from_string(graph).graph.input[0].type.tensor_type.elem_type


def test_fp16_converts_both_ppocr_models_and_fp32_none() -> None:
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert _input_type(cuda.session_graph(RECOGNIZER, "fp16")) == half
    assert _input_type(cuda.session_graph(TEXT_DETECTOR, "fp16")) == half
    assert _input_type(cuda.session_graph(RECOGNIZER, "fp32")) == single
    assert _input_type(cuda.session_graph(TEXT_DETECTOR, "fp32")) == single


@pytest.mark.skipif(not EU.is_dir(), reason="EU set not present")
def test_folded_batch_norms_keep_the_fp16_text_detector_on_the_plate_line() -> None:
    """Without the fold a batch norm's variance (9.8e7) is clipped to FP16's 65,504 and the map goes wrong."""
    import warnings

    from onnxruntime.transformers.float16 import convert_float_to_float16

    from alpr.gpu import textlines

    image = cv2.imread(str(EU / "eu10.jpg"))
    x, _ = textlines.prepare(image, 736, True)
    (want,) = ort.InferenceSession(cuda.session_graph(TEXT_DETECTOR, "fp32"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x[None]})
    (folded,) = ort.InferenceSession(cuda.session_graph(TEXT_DETECTOR, "fp16"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x[None].astype(np.float16)})
    assert np.abs(folded.astype(np.float32) - want).max() < 0.15
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unfolded = convert_float_to_float16(TEXT_DETECTOR.graph(), keep_io_types=False)
    (wrong,) = ort.InferenceSession(unfolded.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x[None].astype(np.float16)})
    assert np.abs(wrong.astype(np.float32) - want).max() > 0.5  # the failure the fold exists for


def test_the_shipped_fp16_detector_is_left_as_it_is() -> None:
    from alpr.gpu.models import ModelMissing

    try:
        assert DETECTOR.path.is_file()
    except ModelMissing:
        pytest.skip("platedet is not installed")
    assert cuda.session_graph(DETECTOR, "fp16") == cuda.session_graph(DETECTOR, "fp32")


def _crops(count: int) -> list[tuple[np.ndarray, str]]:
    from alpr.gpu.imaging import crop

    out = []
    for path in sorted(EU.glob("*.jpg"))[:count]:
        parts = path.with_suffix(".txt").read_text().split("\t")
        x, y, w, h = (int(v) for v in parts[1:5])
        out.append((crop(cv2.imread(str(path)), (x, y, x + w, y + h), 0.03, 0.06), parts[5].strip().upper()))
    return out


@pytest.mark.skipif(not EU.is_dir(), reason="EU set not present")
def test_fp16_recognizer_reads_what_fp32_reads_on_eu_plates() -> None:
    """The FP16 graph on the CPU's FP16 kernels: same characters, confidences within 0.02."""
    from alpr.gpu import recognize

    batch = np.stack([recognize.prepare(c) for c, _ in _crops(8)])
    full = ort.InferenceSession(cuda.session_graph(RECOGNIZER, "fp32"), providers=["CPUExecutionProvider"])
    half = ort.InferenceSession(cuda.session_graph(RECOGNIZER, "fp16"), providers=["CPUExecutionProvider"])
    (p32,) = full.run(None, {"x": batch})
    (p16,) = half.run(None, {"x": batch.astype(np.float16)})
    fold = recognize.AlphabetFold(full.get_modelmeta().custom_metadata_map["character"].splitlines())
    for a, b in zip(p32, p16.astype(np.float32)):
        ra, rb = fold.decode(a), fold.decode(b)
        assert ra.text == rb.text and len(ra.text) >= 4
        assert np.allclose(ra.confidences, rb.confidences, atol=0.02)


@pytest.mark.skipif(not EU.is_dir(), reason="EU set not present")
def test_fp16_reader_reads_the_same_plates_as_fp32_on_eu_scenes() -> None:
    """Whole frames through both FP16 graphs (the CUDA backend's), on the CPU: same plates."""
    from alpr.gpu.backends import OnnxRuntimeBackend
    from alpr.gpu.reader import PlateReader, ReaderSettings

    class Fp16OnCpu(OnnxRuntimeBackend):
        def _session(self, model):
            if model.name not in self._sessions:
                self._sessions[model.name] = ort.InferenceSession(
                    cuda.session_graph(model, "fp16"), sess_options=self._options, providers=["CPUExecutionProvider"])
            return self._sessions[model.name]

        def run(self, model, batch):
            session = self._session(model)
            dtype = cuda.input_dtype(session)
            return [o.astype(np.float32) for o in session.run(None, {session.get_inputs()[0].name: batch.astype(dtype)})]

    full, half = OnnxRuntimeBackend(), Fp16OnCpu()
    full.square_inputs = half.square_inputs = True  # the GPU backends' input shapes
    settings = ReaderSettings(region="eu")
    a, b = PlateReader(full, settings), PlateReader(half, settings)
    images = [cv2.imread(str(p)) for p in sorted(EU.glob("*.jpg"))[:6]]
    for want, got in zip(a.read_batch(images), b.read_batch(images)):
        assert [r.text for r in want] == [r.text for r in got]
        assert np.allclose([r.confidence for r in want], [r.confidence for r in got], atol=0.01)


class _HostCudart:
    """cuda-python's runtime calls the backend makes, over host memory: copies are memmoves."""

    cudaStreamNonBlocking = 1

    class cudaMemcpyKind:  # noqa: N801 - cuda-python's name
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self) -> None:
        self.blocks: dict[int, object] = {}
        self.copies: list[tuple[int, int]] = []

    def _alloc(self, nbytes: int):
        import ctypes

        block = ctypes.create_string_buffer(nbytes)
        self.blocks[ctypes.addressof(block)] = block
        return 0, ctypes.addressof(block)

    cudaMallocHost = cudaMalloc = _alloc

    def cudaFreeHost(self, ptr):  # noqa: N802
        self.blocks.pop(int(ptr))
        return (0,)

    cudaFree = cudaFreeHost

    def cudaSetDevice(self, device):  # noqa: N802
        return (0,)

    def cudaStreamCreateWithFlags(self, flags):  # noqa: N802
        return 0, 7

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):  # noqa: N802
        import ctypes

        assert stream == 7, "every copy goes on the backend's own stream"
        ctypes.memmove(int(dst), int(src), nbytes)
        self.copies.append((kind, nbytes))
        return (0,)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return (0,)


def test_staging_path_gives_the_graphs_outputs_for_every_batch_size(monkeypatch) -> None:
    """The backend's own work (pinned staging, FP16 cast, I/O binding, copy back, float32 out)
    run with host memory standing in for the device: outputs equal a plain session's."""
    fake = _HostCudart()
    monkeypatch.setattr(cuda, "check_available", lambda: None)
    monkeypatch.setattr(cuda, "_import_cudart", lambda: fake)

    class OnHost(cuda.CudaBackend):
        _memory = "cpu"

        def _providers(self) -> list:
            return [("CPUExecutionProvider", {})]

    backend = OnHost(recognizer_batch=8)
    plain = ort.InferenceSession(cuda.session_graph(RECOGNIZER, "fp16"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    for n in (2, 8, 1, 8):  # buffers grow, then are reused
        batch = rng.uniform(-1, 1, size=(n, 3, 48, 320)).astype(np.float32)
        (got,) = backend.run(RECOGNIZER, batch)
        (want,) = plain.run(None, {"x": batch.astype(np.float16)})
        assert got.dtype == np.float32 and np.array_equal(got, want.astype(np.float32))
    assert {kind for kind, _ in fake.copies} == {1, 2}
    assert fake.copies[0] == (1, 2 * 3 * 48 * 320 * 2)  # FP16 on the wire: 2 bytes per value
    with pytest.raises(ValueError, match="exceeds"):
        backend.run(RECOGNIZER, np.zeros((9, 3, 48, 320), np.float32))
