"""Inference backends: run a named model on one batch. Everything else is shared NumPy code."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import onnxruntime as ort

from alpr.gpu.models import ModelFile
from alpr.core.errors import Unavailable


class BackendUnavailable(Unavailable):
    """The requested backend cannot run on this machine; the message says what is missing."""


class Backend(Protocol):
    name: str
    square_inputs: bool  # pad detector inputs to one square shape so mixed frames batch together

    def max_batch(self, model: ModelFile) -> int:
        """Largest batch the model accepts on this backend."""

    def run(self, model: ModelFile, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs of the model's graph, in graph order, for one batch no larger than max_batch."""

    def metadata(self, model: ModelFile) -> dict[str, str]:
        """Custom metadata of the ONNX file (the recognizer keeps its dictionary there)."""


class OnnxRuntimeBackend:
    """CPU inference through ONNX Runtime; one session per model, created on first use."""

    name = "onnxruntime"
    square_inputs = False  # on a CPU padding is pure cost; batches are small anyway

    def __init__(self, threads: int = 1) -> None:
        self._options = ort.SessionOptions()
        # Throughput comes from more worker processes, not more threads in one: a fixed,
        # small thread count keeps per-image latency predictable on shared CPUs.
        self._options.intra_op_num_threads = threads
        self._options.inter_op_num_threads = 1
        # Idle pool threads would otherwise spin between calls and burn the other workers' cores.
        self._options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._sessions: dict[str, ort.InferenceSession] = {}

    def _session(self, model: ModelFile) -> ort.InferenceSession:
        if model.name not in self._sessions:
            self._sessions[model.name] = ort.InferenceSession(
                model.graph().SerializeToString(), sess_options=self._options, providers=["CPUExecutionProvider"]
            )
        return self._sessions[model.name]

    @property
    def loaded(self) -> tuple[str, ...]:
        """Names of the models this backend has loaded so far."""
        return tuple(self._sessions)

    def max_batch(self, model: ModelFile) -> int:
        # On a CPU a bigger batch buys little; 8 bounds the memory and latency of one call.
        return 8

    def run(self, model: ModelFile, batch: np.ndarray) -> list[np.ndarray]:
        session = self._session(model)
        return session.run(None, {session.get_inputs()[0].name: batch})

    def metadata(self, model: ModelFile) -> dict[str, str]:
        return dict(self._session(model).get_modelmeta().custom_metadata_map)
