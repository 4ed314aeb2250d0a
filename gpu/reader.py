"""PlateReader: BGR images in, plate strings with boxes and confidences out.

Detector (platedet) -> padded crops -> recognizer (PP-OCRv4 rec) -> plate-format repair.
The backend only runs tensors; batching and all pre/post-processing live here and in the
domain modules, so the TensorRT path shares them with the CPU path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from gpu import detect, plates, recognize
from gpu.backends import Backend, BackendUnavailable, OnnxRuntimeBackend
from gpu.batching import run_batched
from gpu.imaging import crop
from gpu.models import DETECTOR, RECOGNIZER

log = logging.getLogger(__name__)

POSTPROCESS_VERSION = "alpr-post-1"


@dataclass(frozen=True)
class PlateText:
    text: str  # capitals and digits only, no spaces or dashes
    confidence: float  # 0..1 overall
    char_confidences: tuple[float, ...]
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in image pixels


@dataclass(frozen=True)
class ReaderSettings:
    detector_size: int = 448  # long side fed to the detector; 640 costs 2x the time
    min_detection_score: float = 0.3
    crop_pad_x: float = 0.06  # of box width: detector boxes often cut the first/last character
    crop_pad_y: float = 0.10
    min_text_confidence: float = 0.5
    max_plates_per_image: int = 8


class PlateReader:
    def __init__(self, backend: Backend, settings: ReaderSettings = ReaderSettings()) -> None:
        self.backend = backend
        self.settings = settings
        dictionary = backend.metadata(RECOGNIZER)["character"].splitlines()
        self._alphabet = recognize.AlphabetFold(dictionary)
        self.model_version = f"platedet-0.0.2+ppocrv4-rec+{POSTPROCESS_VERSION}"

    def read(self, image_bgr: np.ndarray) -> list[PlateText]:
        return self.read_batch([image_bgr])[0]

    def read_batch(self, images: list[np.ndarray]) -> list[list[PlateText]]:
        detections = self._detect(images)
        crops: list[np.ndarray] = []
        owners: list[tuple[int, detect.Detection]] = []
        for index, (image, found) in enumerate(zip(images, detections)):
            for det in found[: self.settings.max_plates_per_image]:
                patch = crop(image, det.box, self.settings.crop_pad_x, self.settings.crop_pad_y)
                if patch.shape[0] >= 4 and patch.shape[1] >= 4:
                    crops.append(recognize.prepare(patch))
                    owners.append((index, det))
        results: list[list[PlateText]] = [[] for _ in images]
        if not crops:
            return results
        outputs = run_batched(self.backend, RECOGNIZER, crops)
        for (index, det), (probs,) in zip(owners, outputs):
            chars = self._alphabet.decode(probs)
            read = plates.repair(chars)
            if not read.text:
                continue
            confidence = float(np.mean(read.confidences)) * det.score ** 0.25
            if confidence < self.settings.min_text_confidence:
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in det.box)
            results[index].append(PlateText(read.text, confidence, read.confidences, (x1, y1, x2, y2)))
        log.debug("read %d images, %d detections", len(images), len(owners))
        return results

    def _detect(self, images: list[np.ndarray]) -> list[list[detect.Detection]]:
        prepared = [detect.prepare(image, self.settings.detector_size) for image in images]
        outputs = run_batched(self.backend, DETECTOR, [tensor for tensor, _ in prepared])
        return [
            detect.decode(heads, transform, image.shape, self.settings.min_detection_score)
            for image, (_, transform), heads in zip(images, prepared, outputs)
        ]


def open_reader(backend: str = "onnxruntime", threads: int = 1, settings: ReaderSettings = ReaderSettings(), **kw: object) -> PlateReader:
    """Build a reader on the named backend; raises BackendUnavailable rather than falling back."""
    if backend == "onnxruntime":
        engine: Backend = OnnxRuntimeBackend(threads=threads)
    elif backend == "tensorrt":
        from gpu.tensorrt import TensorRTBackend

        engine = TensorRTBackend(**kw)  # type: ignore[arg-type]
    else:
        raise BackendUnavailable(f"unknown backend {backend!r}; choose 'onnxruntime' or 'tensorrt'")
    return PlateReader(engine, settings)
