"""Generated camera footage for the demo and tests: cars carrying plates drive past.

Nothing is shipped or downloaded: frames are drawn from a seed, so every run of the
demo sees the same plates, which the demo hotlist is written to match. The plates
use the Mercosur layout (a blue band, seven characters) that the shipped detector
was trained on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

# Plates the demo cameras see, in order; the demo hotlist and partial plates refer to them.
DEMO_PLATES = ("BRA2E19", "QRS4T56", "MNO7P89", "KLT3C41", "FHD8J02", "RTZ5W77", "PWX1N36", "GUA6H54")


@dataclass(frozen=True)
class Scene:
    width: int = 1280
    height: int = 720
    frames_per_car: int = 6    # consecutive frames a car is in view (the worker folds them into one read)
    empty_frames: int = 2      # frames with no car between cars


def plate_image(text: str, width: int = 300) -> np.ndarray:
    height = width // 3
    plate = np.full((height, width, 3), 235, np.uint8)
    cv2.rectangle(plate, (0, 0), (width, height // 4), (160, 60, 20), -1)
    cv2.rectangle(plate, (1, 1), (width - 2, height - 2), (20, 20, 20), 2)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = width / 170
    (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
    scale *= min(height * 0.55 / th, width * 0.9 / tw)
    thickness = max(2, int(scale * 2.2))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    cv2.putText(plate, text, ((width - tw) // 2, height - (height - th) // 2 + height // 8), font, scale,
                (15, 15, 15), thickness, cv2.LINE_AA)
    return plate


def car_frame(text: str | None, seed: int, progress: float, scene: Scene = Scene()) -> np.ndarray:
    """One frame: a road background and, if `text`, a car whose x position follows `progress` (0..1)."""
    rng = np.random.default_rng(seed)
    w, h = scene.width, scene.height
    shade = (70 + 60 * np.arange(h) / h).astype(np.uint8)[:, None]
    img = np.dstack([np.repeat(shade, w, 1)] * 3)
    if text:
        cx, cy = int(w * (0.3 + 0.4 * progress)), int(h * 0.55)
        color = tuple(int(c) for c in rng.integers(40, 220, 3))
        body = np.zeros_like(img)
        cv2.ellipse(body, (cx, cy), (380, 230), 0, 0, 360, color, -1)
        mask = body.any(axis=2)
        img[mask] = body[mask]
        cv2.rectangle(img, (cx - 260, cy - 190), (cx + 260, cy - 70), (35, 35, 40), -1)
        for dx in (-250, 250):
            cv2.circle(img, (cx + dx, cy + 10), 45, (230, 230, 200), -1)
        cv2.rectangle(img, (cx - 360, cy + 60), (cx + 360, cy + 110), (30, 30, 30), -1)
        plate = plate_image(text, 300)
        ph, pw = plate.shape[:2]
        x1, y1 = max(0, min(w - pw, cx - pw // 2)), cy + 50 - ph
        img[y1:y1 + ph, x1:x1 + pw] = plate
    img = cv2.GaussianBlur(img, (3, 3), 0.8)
    noise = np.random.default_rng(seed * 7919 + int(progress * 100)).normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def drive_by(plates: tuple[str, ...] = DEMO_PLATES, seed: int = 0, scene: Scene = Scene()) -> Iterator[np.ndarray]:
    """Frames of each plate's car crossing the view, with empty road between cars."""
    for i, text in enumerate(plates):
        for f in range(scene.frames_per_car):
            yield car_frame(text, seed + i, f / max(1, scene.frames_per_car - 1), scene)
        for f in range(scene.empty_frames):
            yield car_frame(None, seed + i, 0.0, scene)
