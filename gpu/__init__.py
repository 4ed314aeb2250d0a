"""Plate reading core: detector + recognizer on ONNX Runtime (CPU) or TensorRT (GPU)."""

from gpu.backends import BackendUnavailable
from gpu.imaging import CorruptImage, decode_image
from gpu.reader import PlateReader, PlateText, ReaderSettings, open_reader

__all__ = [
    "BackendUnavailable",
    "CorruptImage",
    "PlateReader",
    "PlateText",
    "ReaderSettings",
    "decode_image",
    "open_reader",
]
