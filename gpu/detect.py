"""Plate detector (platedet, a YOLOv8s-seg export cut at its box head): images in, plate boxes out.

Pre- and post-processing are plain NumPy so every backend shares them. Input is letterboxed
to a long side of `size` and padded only to a multiple of 32 (not to a square), which saves
a quarter of the compute on 4:3 frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

STRIDES = (8, 16, 32)
DFL_BINS = 16


@dataclass(frozen=True)
class Letterbox:
    """How an image was scaled and padded into the detector's input, to map boxes back."""

    scale: float
    pad_x: float
    pad_y: float

    def to_image(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        out = boxes_xyxy.astype(np.float32).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        return out


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    score: float


def prepare(image_bgr: np.ndarray, size: int, square: bool = False) -> tuple[np.ndarray, Letterbox]:
    """One image -> (3, H, W) float16 RGB in [0, 1] with max(H, W) == size, H and W multiples of 32.

    square pads to size x size instead, so frames of any aspect ratio share one batch on a GPU.
    """
    h, w = image_bgr.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    out_w, out_h = (size, size) if square else (-(-new_w // 32) * 32, -(-new_h // 32) * 32)
    left, top = (out_w - new_w) // 2, (out_h - new_h) // 2
    canvas = np.full((out_h, out_w, 3), 114, dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = cv2.resize(
        image_bgr, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    rgb = canvas[:, :, ::-1].transpose(2, 0, 1)
    return (rgb.astype(np.float16) * np.float16(1 / 255)), Letterbox(scale, left, top)


def decode(
    heads: list[np.ndarray],
    transform: Letterbox,
    image_shape: tuple[int, ...],
    min_score: float,
    iou_threshold: float = 0.45,
) -> list[Detection]:
    """One image's three (64 + 1, h, w) head maps -> boxes above min_score after NMS, best first."""
    boxes: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for stride, head in zip(STRIDES, heads):
        head = head.astype(np.float32)
        prob = 0.5 * (1 + np.tanh(head[4 * DFL_BINS] / 2))  # sigmoid without exp overflow
        ys, xs = np.nonzero(prob > min_score)
        if ys.size == 0:
            continue
        logits = head[: 4 * DFL_BINS, ys, xs].reshape(4, DFL_BINS, -1)
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        dist = (weights * np.arange(DFL_BINS, dtype=np.float32)[:, None]).sum(axis=1) / weights.sum(axis=1)
        cx, cy = xs + 0.5, ys + 0.5
        boxes.append(np.stack([cx - dist[0], cy - dist[1], cx + dist[2], cy + dist[3]], axis=1) * stride)
        scores.append(prob[ys, xs])
    if not boxes:
        return []
    xyxy, score = np.concatenate(boxes), np.concatenate(scores)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    chosen = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), score.tolist(), min_score, iou_threshold), dtype=int).reshape(
        -1
    )
    chosen = chosen[np.argsort(-score[chosen])]
    mapped = transform.to_image(xyxy[chosen])
    ih, iw = image_shape[:2]
    mapped[:, [0, 2]] = mapped[:, [0, 2]].clip(0, iw)
    mapped[:, [1, 3]] = mapped[:, [1, 3]].clip(0, ih)
    return [Detection(tuple(float(v) for v in box), float(s)) for box, s in zip(mapped, score[chosen])]
