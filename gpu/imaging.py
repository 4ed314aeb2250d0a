"""Image decoding and the geometric helpers shared by every backend."""

from __future__ import annotations

import cv2
import numpy as np
from alpr.core.errors import AlprError


class CorruptImage(AlprError, ValueError):
    """The bytes do not decode to an image (truncated upload, wrong content type...)."""


def decode_image(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG bytes to a BGR uint8 array; raise CorruptImage instead of returning None."""
    if not data:
        raise CorruptImage("empty image payload")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise CorruptImage(f"undecodable image payload ({len(data)} bytes)")
    return image


def crop(image: np.ndarray, box: tuple[float, float, float, float], pad_x: float, pad_y: float) -> np.ndarray:
    """Crop box grown by pad_x/pad_y of its width/height: detector boxes often clip the first or last character."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    ih, iw = image.shape[:2]
    xa, xb = int(max(0, np.floor(x1 - pad_x * w))), int(min(iw, np.ceil(x2 + pad_x * w)))
    ya, yb = int(max(0, np.floor(y1 - pad_y * h))), int(min(ih, np.ceil(y2 + pad_y * h)))
    return image[ya:yb, xa:xb]
