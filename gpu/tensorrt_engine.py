"""TensorRT backend: FP16 engines built from the same ONNX graphs the CPU path loads.

Engines are built once per (model file, GPU, TensorRT version, profile) and cached on disk,
because a build takes minutes and an engine only runs on the GPU model and TensorRT release
it was built with. Inputs go through pinned host buffers and one CUDA stream per backend
(cuda-python), so copies and inference are asynchronous to the host until the final sync.
Everything model-specific (letterboxing, decoding, batching) stays in the shared modules.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alpr.core.settings import settings
from alpr.gpu.backends import BackendUnavailable
from alpr.gpu import ownrec
from alpr.gpu.models import DETECTOR, RECOGNIZER, RECOGNIZER_V4, TEXT_DETECTOR, ModelFile
from alpr.gpu.recognize import HEIGHT, WIDTH

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'alpr[gpu]' on a machine with NVIDIA's wheels"
WORKSPACE_BYTES = 1 << 30

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """One optimization profile for a model's single input: smallest, typical and largest shape."""

    input_name: str
    min: Shape
    opt: Shape
    max: Shape


def profile_for(model: ModelFile, max_batch: int) -> Profile:
    """Dynamic batch for every model; the detectors also take any input up to their largest size."""
    half = max(1, max_batch // 2)
    if model is DETECTOR:
        return Profile("images", (1, 3, 32, 32), (half, 3, 448, 448), (max_batch, 3, 640, 640))
    if model is TEXT_DETECTOR:
        return Profile("x", (1, 3, 32, 32), (half, 3, 736, 736), (max_batch, 3, 1024, 1024))
    if model is RECOGNIZER or model is RECOGNIZER_V4:
        return Profile("x", (1, 3, HEIGHT, WIDTH), (half, 3, HEIGHT, WIDTH), (max_batch, 3, HEIGHT, WIDTH))
    if model is ownrec.US_RECOGNIZER:  # grey 32x128 crops, many per frame: the largest batch is the profile's
        shape = (1, ownrec.HEIGHT, ownrec.WIDTH)
        return Profile(ownrec.INPUT_NAME, (1, *shape), (half, *shape), (max_batch, *shape))
    raise ValueError(f"no TensorRT profile for model {model.name!r}")


def engine_cache_key(
    model_sha256: str,
    graph_sha256: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    trt_version: str,
    profile: Profile,
    precision: str = "fp16",
) -> str:
    """Stable file name for an engine: changes whenever anything that invalidates an engine changes.

    graph_sha256 covers the load-time surgery (gpu/graphs.py), which can change while the
    shipped file does not.
    """
    facts = {
        "model": model_sha256,
        "graph": graph_sha256,
        "gpu": gpu_name,
        "sm": f"{compute_capability[0]}.{compute_capability[1]}",
        "tensorrt": trt_version,
        "profile": [profile.input_name, list(profile.min), list(profile.opt), list(profile.max)],
        "precision": precision,
    }
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]
    return f"{model_sha256[:12]}-sm{facts['sm']}-trt{trt_version}-{digest}.engine"


def _import_runtime() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT is not installed ({INSTALL_HINT})") from exc
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as exc:
            raise BackendUnavailable(f"cuda-python is not installed ({INSTALL_HINT})") from exc
    return trt, cudart


def _check(result: tuple[Any, ...]) -> Any:
    """cuda-python returns (error, value...); turn a non-success error into an exception."""
    err, *values = result
    if int(err) != 0:
        raise RuntimeError(f"CUDA call failed: {err}")
    return values[0] if len(values) == 1 else tuple(values)


class _Buffer:
    """A pinned host buffer and a device buffer of the same size, grown on demand."""

    def __init__(self, cudart: Any) -> None:
        self._cudart = cudart
        self.nbytes = 0
        self.host = 0
        self.device = 0

    def ensure(self, nbytes: int) -> None:
        if nbytes <= self.nbytes:
            return
        self.free()
        self.host = _check(self._cudart.cudaMallocHost(nbytes))
        self.device = _check(self._cudart.cudaMalloc(nbytes))
        self.nbytes = nbytes

    def host_array(self, shape: Shape, dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_uint8 * count).from_address(int(self.host))
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free(self) -> None:
        if self.nbytes:
            _check(self._cudart.cudaFreeHost(self.host))
            _check(self._cudart.cudaFree(self.device))
            self.nbytes = 0


class _Engine:
    """One deserialized engine, its execution context and its I/O buffers."""

    def __init__(self, trt: Any, cudart: Any, engine: Any) -> None:
        self.cudart, self.engine = cudart, engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.buffers = {n: _Buffer(cudart) for n in names}

    def run(self, batch: np.ndarray, stream: Any) -> list[np.ndarray]:
        (name,) = self.inputs
        batch = np.ascontiguousarray(batch, dtype=self.dtypes[name])
        self.context.set_input_shape(name, batch.shape)
        h2d, d2h = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        buf = self.buffers[name]
        buf.ensure(batch.nbytes)
        buf.host_array(batch.shape, batch.dtype)[...] = batch
        _check(self.cudart.cudaMemcpyAsync(buf.device, buf.host, batch.nbytes, h2d, stream))
        self.context.set_tensor_address(name, buf.device)
        shapes = {}
        for out in self.outputs:
            shapes[out] = tuple(self.context.get_tensor_shape(out))
            nbytes = int(np.prod(shapes[out])) * self.dtypes[out].itemsize
            self.buffers[out].ensure(nbytes)
            self.context.set_tensor_address(out, self.buffers[out].device)
        if not self.context.execute_async_v3(stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for out in self.outputs:
            nbytes = int(np.prod(shapes[out])) * self.dtypes[out].itemsize
            _check(self.cudart.cudaMemcpyAsync(self.buffers[out].host, self.buffers[out].device, nbytes, d2h, stream))
        _check(self.cudart.cudaStreamSynchronize(stream))
        return [self.buffers[out].host_array(shapes[out], self.dtypes[out]).copy() for out in self.outputs]


class TensorRTBackend:
    """Runs the reader's models as TensorRT engines on one GPU."""

    name = "tensorrt"
    square_inputs = True

    def __init__(self, max_batch: int = 16, device: int = 0, cache_dir: Path | None = None) -> None:
        self._trt, self._cudart = _import_runtime()
        _check(self._cudart.cudaSetDevice(device))
        props = _check(self._cudart.cudaGetDeviceProperties(device))
        name = props.name
        self._gpu_name = (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")
        self._capability = (int(props.major), int(props.minor))
        self._stream = _check(self._cudart.cudaStreamCreate())
        self._max_batch = max_batch
        self._cache_dir = cache_dir or settings().trt_cache  # ALPR_TRT_CACHE: a volume in production
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._engines: dict[str, _Engine] = {}

    def max_batch(self, model: ModelFile) -> int:
        return self._max_batch

    def metadata(self, model: ModelFile) -> dict[str, str]:
        return {p.key: p.value for p in model.graph().metadata_props}

    def run(self, model: ModelFile, batch: np.ndarray) -> list[np.ndarray]:
        if batch.shape[0] > self._max_batch:
            raise ValueError(f"batch of {batch.shape[0]} exceeds the engine profile's {self._max_batch}")
        return self._engine(model).run(batch, self._stream)

    def _engine(self, model: ModelFile) -> _Engine:
        if model.name not in self._engines:
            profile = profile_for(model, self._max_batch)
            graph = model.graph().SerializeToString()
            graph_sha = hashlib.sha256(graph).hexdigest()
            key = engine_cache_key(
                model.sha256(), graph_sha, self._gpu_name, self._capability, self._trt.__version__, profile
            )
            path = self._cache_dir / key
            if not path.is_file():
                self._build(model.name, graph, profile, path)
            runtime = self._trt.Runtime(self._logger)
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise RuntimeError(f"TensorRT could not load cached engine {path}; delete it to rebuild")
            self._engines[model.name] = _Engine(self._trt, self._cudart, engine)
        return self._engines[model.name]

    def _build(self, name: str, graph: bytes, profile: Profile, path: Path) -> None:
        trt = self._trt
        if not hasattr(trt, "Builder"):
            raise BackendUnavailable(
                f"this TensorRT install is runtime-only and {path.name} is not cached ({INSTALL_HINT})"
            )
        log.info("building TensorRT engine for %s (%s), minutes on first use", name, path.name)
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(graph):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {name}: {errors}")
        config = builder.create_builder_config()
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        trt_profile = builder.create_optimization_profile()
        trt_profile.set_shape(profile.input_name, profile.min, profile.opt, profile.max)
        config.add_optimization_profile(trt_profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT engine build failed for {name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(bytes(serialized))
        partial.replace(path)  # atomic: a concurrent reader never sees half an engine
