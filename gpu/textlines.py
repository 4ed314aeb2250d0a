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
MIN_JOIN_HEIGHT_RATIO = 0.7
MIN_ROW_OVERLAP = 0.6
MAX_JOIN_GAP = 1.5  # in line heights
PIECE_MIN_ASPECT = 0.3  # narrowest region kept as a piece (a lone "1" is about 0.4 as wide as tall)
BAND_REACH = 0.9  # how far left of a line (in line heights) the EU band is looked for
BAND_INSIDE = 0.15  # and how far inside it (a line box may take the band in)
BAND_MIN_WIDTH = 0.15  # blue columns needed, in line heights


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


def decode(
    prob: np.ndarray, scale: Scale, image_shape: tuple[int, ...], min_aspect: float = 1.0
) -> tuple[list[tuple[float, float, float, float]], list[tuple[float, float, float, float]]]:
    """One (1, H, W) probability map -> (lines, pieces), boxes in image pixels, each tallest first
    (a plate's characters are usually the largest text in a road scene). Lines are at least
    min_aspect times as wide as tall; pieces are narrower, but at least PIECE_MIN_ASPECT as wide
    as tall. A piece is no plate on its own, but a plate's serial is often split by an emblem
    into a lone character or pair and the rest (Wyoming's county number left of the horse, "DD"
    left of the D.C. flag): `join_rows` joins pieces to the line beside them."""
    prob = prob.reshape(prob.shape[-2:])
    mask = (prob > PIXEL_THRESHOLD).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    ih, iw = image_shape[:2]
    lines, pieces = [], []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if h < 4 or w < PIECE_MIN_ASPECT * h:
            continue
        inside = mask[y : y + h, x : x + w] > 0
        if prob[y : y + h, x : x + w][inside].mean() < MIN_LINE_SCORE:
            continue
        grow = cv2.contourArea(contour) * UNCLIP_RATIO / max(1.0, cv2.arcLength(contour, True))
        box = (
            max(0.0, (x - grow) * scale.x),
            max(0.0, (y - grow) * scale.y),
            min(float(iw), (x + w + grow) * scale.x),
            min(float(ih), (y + h + grow) * scale.y),
        )
        (lines if w >= min_aspect * h else pieces).append(box)
    return sorted(lines, key=lambda b: b[1] - b[3]), sorted(pieces, key=lambda b: b[1] - b[3])


def join_rows(
    boxes: list[tuple[float, float, float, float]], pieces: list[tuple[float, float, float, float]] = ()
) -> list[tuple[float, float, float, float]]:
    """Boxes of neighbouring lines on one row, joined: the text detector splits a plate at a
    sticker, an emblem or a wide gap (Czech, German plates). Only pairs of similar height that
    share most of their rows and are at most MAX_JOIN_GAP heights apart are joined. Pieces
    (see decode) join a line, never each other."""
    joined = []
    pairs = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]] + [(a, b) for a in boxes for b in pieces]
    for a, b in pairs:
        left, right = (a, b) if a[0] <= b[0] else (b, a)
        ha, hb = a[3] - a[1], b[3] - b[1]
        overlap = min(a[3], b[3]) - max(a[1], b[1])
        if min(ha, hb) < MIN_JOIN_HEIGHT_RATIO * max(ha, hb) or overlap < MIN_ROW_OVERLAP * min(ha, hb):
            continue
        if right[0] - left[2] > MAX_JOIN_GAP * max(ha, hb):
            continue
        joined.append((left[0], min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
    return joined


def eu_band(image_bgr: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """Whether a saturated blue band stands just left of a text box, as on EU plates (the
    country band): a cue, independent of the text, that a line is a plate."""
    x1, y1, _, y2 = box
    h = y2 - y1
    ih, iw = image_bgr.shape[:2]
    xa, xb = int(max(0, x1 - BAND_REACH * h)), int(min(iw, x1 + BAND_INSIDE * h))
    ya, yb = int(max(0, y1 + 0.1 * h)), int(min(ih, y2 - 0.1 * h))
    if xb - xa < 2 or yb - ya < 2:
        return False
    hsv = cv2.cvtColor(image_bgr[ya:yb, xa:xb], cv2.COLOR_BGR2HSV)
    blue = (hsv[..., 0] >= 95) & (hsv[..., 0] <= 130) & (hsv[..., 1] >= 90) & (hsv[..., 2] >= 20)
    columns = blue.mean(axis=0) >= 0.5
    return int(columns.sum()) >= max(2, BAND_MIN_WIDTH * h)
