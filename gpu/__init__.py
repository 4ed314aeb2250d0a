"""Plate reading core: detector + recognizer on ONNX Runtime (CPU) or TensorRT (GPU)."""

from alpr.gpu.backends import BackendUnavailable
from alpr.gpu.imaging import CorruptImage, decode_image
from alpr.gpu.reader import PlateReader, PlateText, ReaderSettings, open_reader

__all__ = [
    "BackendUnavailable",
    "CorruptImage",
    "PlateReader",
    "PlateText",
    "ReaderSettings",
    "decode_image",
    "open_reader",
]
