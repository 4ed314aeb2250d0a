"""Synthetic road scenes with US plates in them, and the plates' boxes: training data for the plate detector.

A scene is a function of (seed, index) alone, like a plate of `synth`: a rendered background
(sky, buildings, road, car bodies with bumpers and lights, poles), clutter that is text but not a
plate (signs, bumper stickers, dealer lettering, house numbers: never labelled, so the detector
learns that text alone is not a plate), then 0-3 plates from `synth.render_plate` warped in
perspective onto the cars at widths of about 2 % to 25 % of the frame, lit, shadowed, blurred;
last the camera's damage (blur, noise, colour cast, JPEG). Nothing here comes from a photograph:
every pixel is drawn from the seed, with the OFL-1.1 fonts and OpenCV's Hershey faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from alpr.gpu.training import synth

WIDTH = 640  # scene width; the height varies with the aspect ratio (3:4 portrait to 2:1 wide)
MIN_PLATE_FRAC, MAX_PLATE_FRAC = 0.02, 0.25  # plate width as a share of the frame width
CLUTTER_WORDS = (
    "STOP", "EXIT", "PARKING", "NO PARKING", "ONE WAY", "SALE", "OPEN", "PIZZA", "MOTEL", "GAS",
    "AUTO PARTS", "CAR WASH", "SPEED LIMIT", "MAIN ST", "ELM ST", "5TH AVE", "TOW AWAY ZONE", "RENT",
    "TAXI", "POLICE", "SCHOOL BUS", "HONK IF", "MY OTHER CAR", "BABY ON BOARD", "COEXIST", "VOTE",
    "LOBBY", "ENTRANCE", "24 HOURS", "DRIVE THRU", "ATM", "PHARMACY", "HOTEL", "BANK",
)


@dataclass(frozen=True)
class Scene:
    """One rendered frame and the plates in it."""

    image: np.ndarray  # BGR uint8, (H, WIDTH, 3)
    boxes: np.ndarray  # float32 (n, 4): x1, y1, x2, y2 of each plate's outline, in pixels; n may be 0


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _gradient(h: int, w: int, top, bottom) -> np.ndarray:
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    row = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    return np.broadcast_to(row, (h, w, 3)).copy()


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Sky, buildings with windows, road; float32 BGR."""
    horizon = int(h * rng.uniform(0.05, 0.55))
    image = np.empty((h, w, 3), np.float32)
    sky = (rng.uniform(150, 255), rng.uniform(120, 230), rng.uniform(80, 220))
    image[:horizon] = _gradient(horizon, w, sky, _colour(rng, 90, 256))
    road = float(rng.uniform(40, 160))
    image[horizon:] = _gradient(h - horizon, w, (road,) * 3, (road * rng.uniform(0.6, 1.4),) * 3)
    image += rng.normal(0, 4, (1, 1, 3)).astype(np.float32)
    x = int(rng.integers(-50, 0))
    while x < w and horizon > 10:  # buildings along the horizon
        bw, bh = int(rng.integers(40, 220)), int(rng.integers(horizon // 3 + 1, horizon + 40))
        wall = _colour(rng, 40, 230)
        cv2.rectangle(image, (x, horizon - bh), (x + bw, horizon + 5), wall, -1)
        win = _colour(rng, 20, 200)
        step = int(rng.integers(12, 30))
        for wy in range(horizon - bh + 6, horizon - 6, step):
            for wx in range(x + 5, x + bw - 8, step):
                if rng.random() < 0.8:
                    cv2.rectangle(image, (wx, wy), (wx + step // 2, wy + step // 2), win, -1)
        x += bw + int(rng.integers(0, 40))
    for cell in (8, 32):  # texture at two scales: asphalt, walls, foliage are never flat
        grid = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
        image += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)[..., None] * rng.uniform(0, 14)
    for _ in range(int(rng.integers(0, 4))):  # lane markings
        y = int(rng.integers(horizon, h))
        cv2.line(image, (int(rng.integers(0, w)), y), (int(rng.integers(0, w)), min(h - 1, y + int(rng.integers(5, 60)))),
                 (230, 230, 230) if rng.random() < 0.6 else (40, 200, 230), int(rng.integers(2, 8)))
    return image


def _car(image: np.ndarray, rng: np.random.Generator, cx: float, bumper_y: float, width: float) -> None:
    """A car's rear or front: shaded body, window, bumper, lights; the plate goes on at (cx, bumper_y)."""
    h = width * rng.uniform(0.5, 0.8)
    x0, x1 = int(cx - width / 2), int(cx + width / 2)
    y_top, y_bot = int(bumper_y - h * 0.65), int(bumper_y + h * 0.3)
    body = np.asarray(_colour(rng, 10, 250), np.float32)
    ys = np.arange(max(0, y_top), min(image.shape[0], y_bot))
    if len(ys) == 0 or x1 <= 0 or x0 >= image.shape[1]:
        return
    shade = (0.6 + 0.6 * np.sin(np.linspace(0.3, 2.8, len(ys))))[:, None, None].astype(np.float32)
    xa, xb = max(0, x0), min(image.shape[1], x1)
    image[ys[0] : ys[-1] + 1, xa:xb] = np.clip(body * shade, 0, 255)
    # window over the body, rounded corners by circles of the background-free colour
    win_top, win_bot = int(y_top - h * 0.35), int(y_top + h * 0.05)
    inset = int(width * rng.uniform(0.08, 0.18))
    glass = _colour(rng, 10, 90)
    pts = np.array([[x0 + inset, win_bot], [x1 - inset, win_bot], [x1 - inset * 2, win_top], [x0 + inset * 2, win_top]], np.int32)
    cv2.fillPoly(image, [pts], glass, cv2.LINE_AA)
    # bumper band and lights
    band = int(h * rng.uniform(0.08, 0.2))
    bumper = body * rng.uniform(0.3, 1.3) if rng.random() < 0.6 else np.asarray(_colour(rng, 10, 80), np.float32)
    cv2.rectangle(image, (x0, int(bumper_y + h * 0.12)), (x1, int(bumper_y + h * 0.12) + band), tuple(np.clip(bumper, 0, 255).tolist()), -1)
    light = (40, 40, int(rng.integers(160, 255))) if rng.random() < 0.7 else (200, 230, 240)
    lw, lh = int(width * rng.uniform(0.08, 0.2)), int(h * rng.uniform(0.08, 0.18))
    ly = int(bumper_y - h * rng.uniform(0.15, 0.4))
    for lx in (x0 + int(width * 0.03), x1 - int(width * 0.03) - lw):
        cv2.rectangle(image, (lx, ly), (lx + lw, ly + lh), light, -1)
    if rng.random() < 0.5:  # a badge between the lights
        cv2.circle(image, (int(cx), ly + lh // 2), max(2, int(width * 0.025)), (200, 200, 200), -1, cv2.LINE_AA)


def _text(image: np.ndarray, rng: np.random.Generator, text: str, x: int, y: int, height: int, colour) -> tuple[int, int]:
    """Caption-face text painted at (x, y); returns its (width, height). Not a plate: never labelled."""
    mask = synth._text_mask(text, max(4, height), synth.pick_style(rng, plate_face=rng.random() < 0.3))
    synth._paint(image, mask, x, y, colour)
    return mask.shape[1], mask.shape[0]


def _clutter(image: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Signs, stickers, lettering, poles and blobs: things a plate detector must not fire on."""
    h, w = image.shape[:2]
    for _ in range(count):
        kind = rng.random()
        if kind < 0.45:  # a sign or a sticker: a panel with a word or a number on it
            words = CLUTTER_WORDS if rng.random() < 0.7 else (synth.fill(str(rng.choice(["NNN", "NNNN", "LLL NNN", "NNN-NNNN"])), rng),)
            text = str(words[rng.integers(len(words))])
            th = int(np.exp(rng.uniform(np.log(6), np.log(40))))
            x, y = int(rng.integers(-20, w - 20)), int(rng.integers(0, h - th))
            panel = _colour(rng)
            pad = int(th * rng.uniform(0.1, 0.6))
            est_w = int(th * 0.55 * len(text))
            if rng.random() < 0.8:
                cv2.rectangle(image, (x - pad, y - pad), (x + est_w + pad, y + th + pad), panel, -1)
            ink = (20, 20, 20) if sum(panel) > 380 else (235, 235, 235)
            _text(image, rng, text, x, y, th, _colour(rng) if rng.random() < 0.3 else ink)
        elif kind < 0.65:  # bare lettering (shop fronts, car badges)
            text = str(rng.choice(synth.SLOGANS + tuple(synth.STATE_NAMES.values())))
            th = int(rng.integers(6, 30))
            _text(image, rng, text.upper() if rng.random() < 0.5 else text, int(rng.integers(-40, w)), int(rng.integers(0, h - th)), th, _colour(rng))
        elif kind < 0.8:  # a pole
            x = int(rng.integers(0, w))
            cv2.line(image, (x, int(rng.integers(0, h // 2))), (x + int(rng.integers(-10, 11)), h), _colour(rng, 30, 200), int(rng.integers(2, 12)))
        else:  # a blank plate-shaped panel or blob
            pw = int(rng.integers(8, w // 4))
            ph = int(pw * rng.uniform(0.2, 1.2))
            x, y = int(rng.integers(0, w)), int(rng.integers(0, max(1, h - ph)))
            cv2.rectangle(image, (x, y), (x + pw, y + ph), _colour(rng), -1 if rng.random() < 0.7 else int(rng.integers(1, 4)))


def _place_plate(
    image: np.ndarray, rng: np.random.Generator, cx: float, cy: float, width: float
) -> tuple[np.ndarray, np.ndarray]:
    """Warp one rendered plate onto image centred at (cx, cy), width px wide; returns its box and pixel mask."""
    plate, *_ = synth.render_plate(rng)
    height = width * synth.PLATE_H / synth.PLATE_W
    # draw near the final size first, so small plates lose detail the way a camera loses it
    small_w = max(8, int(round(width * 1.3)))
    small = cv2.resize(plate, (small_w, max(4, int(round(small_w / 2)))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    src = np.float32([[0, 0], [sw, 0], [sw, sh], [0, sh]])
    yaw = rng.normal(0, 0.12)  # one side nearer the camera
    half_w, half_h = width / 2, height / 2
    dst = np.float32([
        [-half_w, -half_h * (1 - yaw)], [half_w, -half_h * (1 + yaw)],
        [half_w, half_h * (1 + yaw)], [-half_w, half_h * (1 - yaw)],
    ])
    dst += rng.normal(0, 1, (4, 2)).astype(np.float32) * np.float32([width * 0.02, height * 0.04])
    angle = np.deg2rad(rng.normal(0, 4))
    rot = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = dst @ rot.T + np.float32([cx, cy])
    matrix = cv2.getPerspectiveTransform(src, dst)
    h, w = image.shape[:2]
    warped = cv2.warpPerspective(small.astype(np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones((sh, sw), np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    light = rng.uniform(0.45, 1.25)
    warped *= light
    if rng.random() < 0.3:  # a shadow edge across the plate (bumper, tree)
        x0, x1 = rng.uniform(cx - width, cx + width, 2)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        side = ((xs - x0) * height - (x1 - x0) * (ys - cy + height)) > 0
        warped[side] *= rng.uniform(0.4, 0.8)
    np.copyto(image, image * (1 - mask) + warped * mask)
    x1, y1 = dst.min(axis=0)
    x2, y2 = dst.max(axis=0)
    return np.float32([max(0, x1), max(0, y1), min(w, x2), min(h, y2)]), mask[..., 0] > 0.5


def _camera(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Whole-frame damage: light, colour cast, blur, noise, JPEG."""
    image = image * rng.uniform(0.6, 1.3) + rng.uniform(-40, 30)
    if rng.random() < 0.3:
        image *= rng.uniform(0.8, 1.2, 3).astype(np.float32)
    if rng.random() < 0.35:
        k = int(rng.choice([3, 5]))
        image = cv2.GaussianBlur(image, (k, k), 0)
    if rng.random() < 0.15:  # motion blur along the road
        k = int(rng.integers(3, 8))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        image = cv2.filter2D(image, -1, kernel)
    image = image + rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(0, 10)
    out = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < 0.8:
        _, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 95))])
        out = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return out


def render_scene(seed: int, index: int) -> Scene:
    """Scene (seed, index): background, cars, clutter, 0-3 plates, camera damage; boxes of the plates."""
    rng = synth.rng_for(seed, index)
    h = int(WIDTH * rng.uniform(0.5, 1.0)) // 2 * 2
    image = _background(rng, h, WIDTH)
    n_plates = int(rng.choice([0, 1, 2, 3], p=[0.15, 0.55, 0.2, 0.1]))
    _clutter(image, rng, int(rng.integers(0, 6)))  # behind the cars and plates, never over a plate
    # plates, each on a car; drawn far (small) to near (large) so nearer cars cover farther ones
    fracs = sorted(np.exp(rng.uniform(np.log(MIN_PLATE_FRAC), np.log(MAX_PLATE_FRAC), n_plates)))
    spots = []
    for frac in fracs:
        pw = frac * WIDTH
        cx = rng.uniform(pw * 0.6, WIDTH - pw * 0.6)
        cy = rng.uniform(pw * 0.4, h - pw * 0.4)
        spots.append((cx, cy, pw))
    if n_plates == 0 and rng.random() < 0.8:  # cars without a plate (or the plate out of view)
        pw = np.exp(rng.uniform(np.log(MIN_PLATE_FRAC), np.log(MAX_PLATE_FRAC))) * WIDTH
        _car(image, rng, rng.uniform(0, WIDTH), rng.uniform(0, h), pw * rng.uniform(4.5, 7))
    placed = []
    for cx, cy, pw in spots:
        if rng.random() < 0.9:
            _car(image, rng, cx + rng.normal(0, pw * 0.3), cy, pw * rng.uniform(4.5, 7))
        if rng.random() < 0.3:  # a bumper sticker or dealer lettering beside or under the plate
            side = rng.choice([-1, 1])
            _text(image, rng, str(rng.choice(CLUTTER_WORDS)), int(cx + side * pw * rng.uniform(0.8, 2.0)),
                  int(cy + pw * rng.uniform(-0.1, 0.4)), max(4, int(pw * rng.uniform(0.08, 0.2))), _colour(rng))
        box, mask = _place_plate(image, rng, cx, cy, pw)
        placed.append((box, mask, image[mask].copy()))
    # A nearer car drawn later may hide a farther plate: label only plates still mostly in view.
    boxes = [box for box, mask, pixels in placed if np.mean(np.all(image[mask] == pixels, axis=1)) >= 0.7]
    return Scene(_camera(image, rng), np.array(boxes, np.float32).reshape(-1, 4))
