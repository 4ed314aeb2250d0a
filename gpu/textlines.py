"""Text-line detector (PP-OCRv4 det, DB segmentation): a fallback plate finder.

When the plate detector yields no read, text lines found anywhere in the frame are read and
kept only if they fit a plate format of the region. It finds what the plate detector misses
(dark plates, plates seen close up) and costs nothing on frames the detector already read.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PIXEL_THRESHOLD = 0.3  # DB probability that a pixel is text
MIN_LINE_SCORE = 0.5  # mean probability inside a line's contour
UNCLIP_RATIO = 1.6  # DB shrinks text regions when training; grow them back by area * ratio / perimeter


@dataclass(frozen=True)
class Scale:
    """Input-to-image scale per axis (the DB model wants both sides multiples of 32)."""

    x: float
    y: float


def prepare(image_bgr: np.ndarray, size: int, square: bool = False) -> tuple[np.ndarray, Scale]:
    """One image -> (3, H, W) float32 in [-1, 1] with max(H, W) ~ size, both multiples of 32."""
    h, w = image_bgr.shape[:2]
    scale = size / max(h, w)
    out_w, out_h = (
        (size, size) if square else (max(32, round(w * scale / 32) * 32), max(32, round(h * scale / 32) * 32))
    )
    resized = cv2.resize(image_bgr, (out_w, out_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return resized.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0, Scale(w / out_w, h / out_h)


def decode(prob: np.ndarray, scale: Scale, image_shape: tuple[int, ...]) -> list[tuple[float, float, float, float]]:
    """One (1, H, W) probability map -> axis-aligned line boxes in image pixels, wider than tall,
    tallest first (a plate's characters are usually the largest text in a road scene)."""
    prob = prob.reshape(prob.shape[-2:])
    mask = (prob > PIXEL_THRESHOLD).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    ih, iw = image_shape[:2]
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if h < 4 or w < h:
            continue
        inside = mask[y : y + h, x : x + w] > 0
        if prob[y : y + h, x : x + w][inside].mean() < MIN_LINE_SCORE:
            continue
        grow = cv2.contourArea(contour) * UNCLIP_RATIO / max(1.0, cv2.arcLength(contour, True))
        boxes.append(
            (
                max(0.0, (x - grow) * scale.x),
                max(0.0, (y - grow) * scale.y),
                min(float(iw), (x + w + grow) * scale.x),
                min(float(ih), (y + h + grow) * scale.y),
            )
        )
    return sorted(boxes, key=lambda b: b[1] - b[3])
