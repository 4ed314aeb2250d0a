"""CUDA backend: the reader's ONNX graphs on ONNX Runtime's CUDA execution provider, in FP16.

Why ONNX Runtime rather than PyTorch: the PP-OCRv4 recognizer does not convert with onnx2torch,
and running the very graphs the CPU path runs keeps one set of models and one parity question
(FP16 vs FP32) instead of two. The TensorRT backend (gpu/tensorrt_engine.py) stays the
production GPU image's path; this one runs wherever `onnxruntime-gpu` and cuda-python do.

Per backend (= per worker process): one non-blocking CUDA stream that every session computes
on (ORT's `user_compute_stream`) and that our copies are queued on, so a copy can never race a
kernel; pinned host buffers for inputs and outputs (page-locked memory is what lets a copy run
asynchronously and at full PCIe speed); device input buffers reused between calls, inputs bound
through I/O binding so ONNX Runtime does no copy of its own. Between the reader's stages the
tensors do cross to the host: line decoding and cropping are CPU code shared with every backend.

onnxruntime and onnxruntime-gpu install the same `onnxruntime` package: with both installed,
whichever went in last wins. The backend therefore checks at run time that the CUDA provider
is present and a GPU visible, and refuses with BackendUnavailable otherwise, never falling back
to the CPU quietly (ONNX Runtime itself would, if the CUDA libraries fail to load).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import warnings
from functools import cache
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort

from alpr.gpu.backends import BackendUnavailable
from alpr.gpu.models import RECOGNIZER, TEXT_DETECTOR, ModelFile
from alpr.gpu.tensorrt_engine import _Buffer, _check

log = logging.getLogger(__name__)

PROVIDER = "CUDAExecutionProvider"
INSTALL_HINT = (
    "on a machine with an NVIDIA GPU: pip install 'alpr[gpu]' && pip uninstall -y onnxruntime onnxruntime-gpu "
    "&& pip install --no-deps 'onnxruntime-gpu>=1.20' (both wheels write one folder; docs/operations.md)"
)
# fp16: FP16 for the models in HALF_SAFE; fp16-all: every model (to re-check the others on a GPU); fp32: none.
Precision = Literal["fp16", "fp16-all", "fp32"]
# Measured on the CPU (ONNX Runtime 1.32, FP16 kernels) on EU frames: both PP-OCRv4 models read what
# FP32 reads once the text detector's batch norms are folded (fold_batch_norms); converted as
# shipped, its probability map was off by up to 1.0 and eu10.jpg's plate line was lost.
HALF_SAFE = frozenset({RECOGNIZER.name, TEXT_DETECTOR.name})
_ORT_DTYPES = {"tensor(float16)": np.dtype(np.float16), "tensor(float)": np.dtype(np.float32)}


def fold_batch_norms(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each BatchNormalization with constant parameters -> Mul and Add by constants computed in FP64.

    Why: the text detector's head has a BatchNormalization whose running variance reaches
    9.8e7, beyond FP16's largest value (65,504); converted to FP16 it is clipped, and that
    layer's output goes wrong by a factor of ~30. Scale gamma/sqrt(var+eps) and shift
    beta-mean*scale are small numbers FP16 holds. Same function in FP32, to rounding.
    """
    from onnx import numpy_helper

    known = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            known[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    nodes, added = [], []
    for node in model.graph.node:
        params = list(node.input[1:5])
        if node.op_type != "BatchNormalization" or len(node.output) != 1 or not all(p in known for p in params):
            nodes.append(node)
            continue
        gamma, beta, mean, var = (known[p].astype(np.float64) for p in params)
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        shape = (1, -1, 1, 1)  # NCHW: one value per channel
        names = (f"{node.output[0]}__bn_scale", f"{node.output[0]}__bn_shift", f"{node.output[0]}__bn_scaled")
        added += [numpy_helper.from_array(scale.reshape(shape).astype(np.float32), names[0]),
                  numpy_helper.from_array(shift.reshape(shape).astype(np.float32), names[1])]
        nodes += [onnx.helper.make_node("Mul", [node.input[0], names[0]], [names[2]]),
                  onnx.helper.make_node("Add", [names[2], names[1]], [node.output[0]])]
    # Drop what fed only the folded nodes, so no FP16 copy of a clipped variance is left behind.
    used = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    kept = [n for n in nodes if n.op_type != "Constant" or n.output[0] in used]
    initializers = [i for i in model.graph.initializer if i.name in used] + added
    del model.graph.node[:]
    model.graph.node.extend(kept)
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    return model


@cache
def session_graph(model: ModelFile, precision: Precision) -> bytes:
    """The serialized graph a session loads: the reader's graph, converted to FP16 where asked.

    Inputs and outputs become FP16 too (keep_io_types=False): half the bytes over PCIe each way.
    A graph already in FP16 (platedet) is left as it is.
    """
    graph = model.graph()
    half = precision == "fp16-all" or (precision == "fp16" and model.name in HALF_SAFE)
    if half and graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with warnings.catch_warnings():  # it warns about every constant clipped to FP16's range
            warnings.simplefilter("ignore")
            graph = convert_float_to_float16(fold_batch_norms(graph), keep_io_types=False)
    return graph.SerializeToString()


def input_dtype(session: ort.InferenceSession) -> np.dtype:
    """NumPy dtype of a session's (single) input."""
    kind = session.get_inputs()[0].type
    if kind not in _ORT_DTYPES:
        raise ValueError(f"unsupported input type {kind}")
    return _ORT_DTYPES[kind]


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as exc:
            raise BackendUnavailable(f"cuda-python is not installed ({INSTALL_HINT})") from exc
    return cudart


def check_available() -> None:
    """Raise BackendUnavailable naming what is missing: the CUDA provider, cuda-python, or a GPU."""
    providers = ort.get_available_providers()
    if PROVIDER not in providers:
        raise BackendUnavailable(
            f"ONNX Runtime {ort.__version__} here has no {PROVIDER} (providers: {', '.join(providers)}); "
            f"the cuda backend needs onnxruntime-gpu: {INSTALL_HINT}"
        )
    cudart = _import_cudart()
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        raise BackendUnavailable(f"no CUDA GPU is visible to this process ({err}); the cuda backend needs one")


class _PinnedHost:
    """A page-locked host buffer, grown on demand: where device outputs are copied back to."""

    def __init__(self, cudart: Any) -> None:
        self._cudart, self.nbytes, self.host = cudart, 0, 0

    def ensure(self, nbytes: int) -> None:
        if nbytes > self.nbytes:
            if self.nbytes:
                _check(self._cudart.cudaFreeHost(self.host))
            self.host, self.nbytes = _check(self._cudart.cudaMallocHost(nbytes)), nbytes

    def array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return np.frombuffer((ctypes.c_uint8 * count).from_address(int(self.host)), dtype=dtype).reshape(shape)


class _Session:
    """One model's session, its input dtype and its reusable staging buffers."""

    def __init__(self, session: ort.InferenceSession, cudart: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_names = [o.name for o in session.get_outputs()]
        self.dtype = input_dtype(session)
        self.staged_in = _Buffer(cudart)  # pinned host + device, grown to the largest batch seen
        self.staged_out = {name: _PinnedHost(cudart) for name in self.output_names}
        self.binding = session.io_binding()


class CudaBackend:
    """Runs the reader's models with ONNX Runtime on one GPU: FP16, pinned buffers, one stream."""

    name = "cuda"
    _memory = "cuda"  # where inputs are bound and outputs allocated (a CPU test double says "cpu")

    def __init__(
        self,
        max_batch: int = 32,
        recognizer_batch: int = 128,
        device: int = 0,
        precision: Precision = "fp16",
        square_inputs: bool = True,
    ) -> None:
        """max_batch: frames per detector call; recognizer_batch: crops per recognizer call (crops
        are ~60x smaller than a frame, so a device fills with many more of them).
        square_inputs: pad frames to one square shape (one batch for mixed cameras, fixed-width
        recognizer crops) at the price of padding pixels; False keeps each frame's aspect."""
        check_available()
        self._cudart = _import_cudart()
        _check(self._cudart.cudaSetDevice(device))
        self._device = device
        # Non-blocking: the stream does not serialise with the legacy default stream that
        # other libraries in the process might use.
        self._stream = _check(self._cudart.cudaStreamCreateWithFlags(self._cudart.cudaStreamNonBlocking))
        self._max_batch, self._recognizer_batch = max_batch, recognizer_batch
        self.precision: Precision = precision
        self.square_inputs = square_inputs
        self._sessions: dict[str, _Session] = {}
        # Staging buffers and bindings are per backend: a worker's inference threads take turns
        # on the GPU, and one thread's CPU stages overlap the other's GPU work.
        self._lock = threading.Lock()

    def _provider_options(self) -> dict[str, str]:
        return {
            "device_id": str(self._device),
            # Every session of this worker computes on our stream: stages and copies are ordered on it.
            "has_user_compute_stream": "1",
            "user_compute_stream": str(int(self._stream)),
            # Input shapes repeat (square frames, fixed-width crops): measure each conv once, keep the fastest.
            "cudnn_conv_algo_search": "EXHAUSTIVE",
            "cudnn_conv_use_max_workspace": "1",
        }

    def _providers(self) -> list:
        return [(PROVIDER, self._provider_options()), "CPUExecutionProvider"]

    def _session(self, model: ModelFile) -> _Session:
        if model.name not in self._sessions:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(
                session_graph(model, self.precision), sess_options=options, providers=self._providers()
            )
            # ONNX Runtime falls back to the CPU when the CUDA provider fails to load: refuse instead.
            if self._providers()[0][0] not in session.get_providers():
                raise BackendUnavailable(f"{model.name}: ONNX Runtime could not start {PROVIDER} ({INSTALL_HINT})")
            self._sessions[model.name] = _Session(session, self._cudart)
            log.info("cuda session for %s (%s) on device %d", model.name, self.precision, self._device)
        return self._sessions[model.name]

    @property
    def loaded(self) -> tuple[str, ...]:
        return tuple(self._sessions)

    def max_batch(self, model: ModelFile) -> int:
        return self._recognizer_batch if model is RECOGNIZER else self._max_batch

    def metadata(self, model: ModelFile) -> dict[str, str]:
        return {p.key: p.value for p in model.graph().metadata_props}

    def run(self, model: ModelFile, batch: np.ndarray) -> list[np.ndarray]:
        """One batch: host -> pinned -> device (our stream), run, device -> pinned -> host, as float32."""
        if batch.shape[0] > self.max_batch(model):
            raise ValueError(f"batch of {batch.shape[0]} exceeds {model.name}'s limit of {self.max_batch(model)}")
        with self._lock:
            return self._run(self._session(model), batch)

    def _run(self, s: _Session, batch: np.ndarray) -> list[np.ndarray]:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        nbytes = int(np.prod(batch.shape)) * s.dtype.itemsize
        s.staged_in.ensure(nbytes)
        s.staged_in.host_array(batch.shape, s.dtype)[...] = batch  # the FP16 cast happens in this one pass
        _check(cudart.cudaMemcpyAsync(s.staged_in.device, s.staged_in.host, nbytes, h2d, self._stream))
        s.binding.clear_binding_inputs()
        s.binding.clear_binding_outputs()
        s.binding.bind_input(
            s.input_name, self._memory, self._device, s.dtype.type, list(batch.shape), int(s.staged_in.device)
        )
        for name in s.output_names:
            s.binding.bind_output(name, self._memory, self._device)  # ORT allocates from its arena: shapes are dynamic
        s.session.run_with_iobinding(s.binding)
        results = []
        pending = []
        for name, value in zip(s.output_names, s.binding.get_outputs()):
            shape = tuple(value.shape())
            dtype = _ORT_DTYPES[value.data_type()]
            out_bytes = int(np.prod(shape)) * dtype.itemsize
            staged = s.staged_out[name]
            staged.ensure(out_bytes)
            _check(cudart.cudaMemcpyAsync(staged.host, value.data_ptr(), out_bytes, d2h, self._stream))
            pending.append((staged, shape, dtype))
        _check(cudart.cudaStreamSynchronize(self._stream))
        for staged, shape, dtype in pending:
            results.append(staged.array(shape, dtype).astype(np.float32))  # shared decoders expect float32
        return results
