"""The project's own US plate recognizer: BGR plate crops in, characters with per-character confidences out.

A small CNN + BiLSTM read with CTC, trained by `python -m alpr.gpu.training.recognizer` on
synthetic US plates only (see gpu/weights/us_plate_rec.md). It reads whole plate crops (state
name, slogan, stickers and frame included: it was trained to skip them) as well as tight crops
of the characters' line. The graph's input is one grey channel at a fixed size, so every crop
batches with every other; the characters' alphabet and the input size travel in the ONNX
metadata and are checked against this module at load time.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from alpr.gpu.backends import Backend, OnnxRuntimeBackend
from alpr.gpu.batching import run_batched
from alpr.gpu.models import ModelFile, ModelMismatch
from alpr.gpu.recognize import ALPHABET, Characters, ctc_greedy  # output column 0 is the CTC blank, then ALPHABET

HEIGHT, WIDTH = 32, 128
INPUT_NAME, OUTPUT_NAME = "image", "probs"

US_RECOGNIZER = ModelFile(
    name="us-recognizer",
    package="alpr.gpu",
    relative_path="weights/us_plate_rec.onnx",
    install_hint="it ships inside the alpr package (gpu/weights/)",
    license="Apache-2.0",  # trained by this project on its own synthetic plates
)


def prepare(crop_bgr: np.ndarray) -> np.ndarray:
    """A crop -> (1, HEIGHT, WIDTH) float32 in [-1, 1]: grey, stretched to the fixed size, contrast normalised.

    The aspect ratio is not kept: whole plates (2:1) and character lines (4:1 to 6:1) both fill
    the input, which the model saw in training. Contrast is stretched between the 2nd and 98th
    percentiles, so dark, washed-out and inverted-colour plates reach the network alike in range.
    """
    grey = crop_bgr if crop_bgr.ndim == 2 else cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY)
    h = grey.shape[0]
    interpolation = cv2.INTER_AREA if h > HEIGHT else cv2.INTER_LINEAR
    grey = cv2.resize(grey, (WIDTH, HEIGHT), interpolation=interpolation).astype(np.float32)
    lo, hi = (float(v) for v in np.percentile(grey, (2, 98)))
    scaled = (grey - np.float32(lo)) / np.float32(max(hi - lo, 16.0))
    return (np.clip(scaled, 0.0, 1.0) * 2.0 - 1.0)[None].astype(np.float32, copy=False)


def decode(probs: np.ndarray) -> Characters:
    """Greedy CTC decode of one (T, 1 + 36) output (the same decode as PP-OCR's, after its fold)."""
    return ctc_greedy(probs)


class PlateRecognizer:
    """Reads plate crops with the project's own recognizer on any Backend (ONNX Runtime by default)."""

    def __init__(self, backend: Backend | None = None, model: ModelFile = US_RECOGNIZER) -> None:
        self.backend = backend or OnnxRuntimeBackend()
        self.model = model
        meta = self.backend.metadata(model)
        expected = {"alphabet": ALPHABET, "height": str(HEIGHT), "width": str(WIDTH)}
        found = {key: meta.get(key) for key in expected}
        if found != expected:
            raise ModelMismatch(f"{model.name}: metadata {found} does not match this reader's {expected}")

    def read(self, crops: Sequence[np.ndarray]) -> list[Characters]:
        """One Characters per crop, in order; an empty crop reads as no characters."""
        results = [Characters("", ()) for _ in crops]
        live = [i for i, c in enumerate(crops) if c.size and min(c.shape[:2]) >= 2]
        outputs = run_batched(self.backend, self.model, [prepare(crops[i]) for i in live])
        for index, (probs,) in zip(live, outputs):
            results[index] = decode(probs)
        return results
