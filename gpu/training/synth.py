"""Synthetic US licence plates: seeded renders with their labels, for training the project's own models.

Each sample is a function of (seed, index) alone, so a data set is reproducible, can be made
in any order or in parallel, and a test can re-render one sample and get the same pixels.

A plate is drawn flat (background, state name, slogan, stickers, bolts, frame, the characters
in a plate-like face with the state's layout), placed on a surround, warped in perspective and
cut out the way a detector or text-line proposer would cut it (loose, tight, clipped), then
degraded (resolution, blur, noise, JPEG, light). The label is the serial's characters in reading
order; separators, state names, slogans, stickers and the small stacked characters some plates
carry beside the serial (county numbers, plate-type letters) are drawn but never labelled: the
convention of the US crops the project measures on, where such marks are left out of the plate.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import cv2
import numpy as np
from alpr.gpu.states import STATE_LAYOUTS, STATE_NAMES
from alpr.gpu.training import fonts

LETTERS = string.ascii_uppercase
DIGITS = string.digits
ALPHABET = LETTERS + DIGITS
SERIAL_LETTERS = "".join(c for c in LETTERS if c not in "IOQ")  # most states leave these out of serials

PLATE_W, PLATE_H = 320, 160  # a US plate is 12 x 6 inches; drawn at about 27 px per inch

# Serial layouts and printed names by state: alpr.gpu.states (STATE_LAYOUTS, STATE_NAMES), shared with the reader.
SLOGANS = (
    "Golden State", "Empire State", "Garden State", "Land of Lincoln", "Sunshine State", "Live Free or Die",
    "Great Lakes", "Grand Canyon State", "Ocean State", "Green Mountain State", "America's Dairyland",
    "First in Flight", "Famous Potatoes", "The Lone Star State", "Peach State", "Beautiful Wild",
    "dmv.ca.gov", "Vacationland", "Land of Enchantment", "The Silver State", "Sportsman's Paradise",
    "Explore Minnesota", "Taxation Without Representation", "Wild Wonderful", "Show Me State",
    "Spirit of America", "The First State", "Keystone State", "visitPA.com", "Big Sky Country",
    "Pure Michigan", "Heart of Dixie", "Treasure State", "Centennial", "Great Faces Great Places",
    "In God We Trust", "Support Education", "Conserve Wildlife", "Collegiate", "Veteran", "Apportioned",
    "Commercial", "Trailer", "Official Use", "Your Dealer Here", "Drive Safely", "Celebrating 150 Years",
)
# The share of samples with each layout family: state serials mostly, California above all.
FAMILY_WEIGHTS = {"state": 0.58, "california": 0.18, "vanity": 0.12, "stacked": 0.12}

# (background, text) colour pairs seen on US plates, BGR.
PALETTES: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...] = (
    ((245, 245, 245), (110, 40, 20)),  # white, dark blue (California and many)
    ((240, 240, 240), (20, 20, 20)),  # white, black
    ((235, 238, 240), (30, 30, 170)),  # white, red
    ((230, 240, 235), (50, 110, 20)),  # white, green
    ((90, 215, 240), (20, 20, 20)),  # yellow, black (NY, AK)
    ((120, 60, 20), (90, 210, 240)),  # dark blue, yellow (DE, old CA)
    ((40, 100, 30), (240, 240, 240)),  # green, white (VT)
    ((230, 215, 180), (110, 40, 20)),  # light blue, dark blue
    ((215, 235, 245), (40, 40, 120)),  # cream, maroon
    ((200, 200, 205), (30, 30, 30)),  # grey, black (worn)
    ((30, 30, 30), (230, 230, 230)),  # black, white (classic and specialty)
    ((170, 120, 60), (250, 250, 250)),  # mid blue, white (IN)
)


@dataclass(frozen=True)
class Sample:
    """One rendered crop and what it shows."""

    image: np.ndarray  # BGR uint8, the crop as a detector or proposer would hand it over
    text: str  # the plate's characters, A-Z0-9 only
    state: str  # two-letter code of the layout used ("" for vanity)
    family: str  # state, california, vanity or stacked (serial with small stacked marks beside it)
    crop: str  # plate (the whole plate, loosely cut) or line (the characters' line only)


def rng_for(seed: int, index: int) -> np.random.Generator:
    """Independent stream per sample: sample i is the same whatever else was rendered."""
    return np.random.default_rng([seed, index])


def fill(pattern: str, rng: np.random.Generator, letters: str = SERIAL_LETTERS) -> str:
    """A layout pattern with each L, N, A replaced by a random character; gaps and separators kept."""
    out = []
    for p in pattern:
        if p == "L":
            out.append(letters[rng.integers(len(letters))])
        elif p == "N":
            out.append(DIGITS[rng.integers(10)])
        elif p == "A":
            out.append(ALPHABET[rng.integers(36)])
        else:
            out.append(p)
    return "".join(out)


def layout(rng: np.random.Generator) -> tuple[str, str, str, str]:
    """(family, state, stacked marks drawn left of the serial, serial with gaps/separators) for one plate."""
    family = str(rng.choice(list(FAMILY_WEIGHTS), p=list(FAMILY_WEIGHTS.values())))
    states = list(STATE_LAYOUTS)
    stacked = ""
    if family == "california":
        state, line = "CA", fill("NLLLNNN", rng)
    elif family == "vanity":
        state = states[rng.integers(len(states))]
        n = int(rng.integers(2, 8))
        chars = fill("A" * n, rng, LETTERS)
        if rng.random() < 0.4 and n >= 4:  # a word gap, as vanity plates often have
            cut = int(rng.integers(1, n))
            chars = chars[:cut] + " " + chars[cut:]
        line = chars
    elif family == "stacked":
        state = states[rng.integers(len(states))]
        stacked = fill(str(rng.choice(["LL", "NN", "LN"])), rng, LETTERS)
        line = fill(str(rng.choice(["NNNN", "NNNNN", "NNN LL", "LLNNN", "NNNL"])), rng)
    else:
        state = states[rng.integers(len(states))]
        formats = STATE_LAYOUTS[state]
        line = fill(formats[rng.integers(len(formats))], rng)
    return family, state, stacked, line


def label_of(line: str) -> str:
    """The label of a serial: its characters without gaps or separators."""
    return "".join(c for c in line if c in ALPHABET)


Style = tuple  # (Hershey face, thickness) or (Face, weight): drawn the same for a whole line


def pick_style(rng: np.random.Generator, plate_face: bool) -> Style:
    """One face for a plate's characters (so groups match) or for one caption."""
    if plate_face and rng.random() < 0.15:  # OpenCV Hershey stroke face
        return int(fonts.HERSHEY_FACES[rng.integers(len(fonts.HERSHEY_FACES))]), int(rng.integers(7, 12))
    faces = fonts.PLATE_FACES if plate_face else fonts.CAPTION_FACES
    face = faces[rng.integers(len(faces))]
    return face, int(face.weights[rng.integers(len(face.weights))]) if face.weights else 0


def _text_mask(text: str, height: int, style: Style) -> np.ndarray:
    """Text drawn white on black, cut to its ink, scaled to height px: float32 in [0, 1]."""
    big = 96
    if isinstance(style[0], int):
        face, thickness = style
        scale = 3.0
        (tw, th), base = cv2.getTextSize(text, face, scale, thickness)
        canvas = np.zeros((th + base + 2 * thickness, tw + 2 * thickness), np.uint8)
        cv2.putText(canvas, text, (thickness, th + thickness), face, scale, 255, thickness, cv2.LINE_AA)
    else:
        from PIL import Image, ImageDraw

        font = fonts.truetype(style[0], big, style[1])
        left, top, right, bottom = font.getbbox(text)
        image = Image.new("L", (right - left + 8, bottom - top + 8), 0)
        ImageDraw.Draw(image).text((4 - left, 4 - top), text, font=font, fill=255)
        canvas = np.asarray(image)
    ys, xs = np.nonzero(canvas > 40)
    if len(xs) == 0:
        return np.zeros((height, 1), np.float32)
    canvas = canvas[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    width = max(1, round(canvas.shape[1] * height / canvas.shape[0]))
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _paint(plate: np.ndarray, mask: np.ndarray, x: int, y: int, colour) -> None:
    """Alpha-blend colour through mask at (x, y), clipped to the plate."""
    h, w = mask.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, plate.shape[1]), min(y + h, plate.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    m = mask[y0 - y : y1 - y, x0 - x : x1 - x, None]
    region = plate[y0:y1, x0:x1].astype(np.float32)
    plate[y0:y1, x0:x1] = (region * (1 - m) + np.asarray(colour, np.float32) * m).astype(np.uint8)


def _jitter_colour(colour, rng: np.random.Generator, amount: int = 25) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _background(rng: np.random.Generator, base) -> np.ndarray:
    """Plain, gradient or scenic plate background (sky, hills, sun) around the base colour."""
    plate = np.empty((PLATE_H, PLATE_W, 3), np.float32)
    plate[:] = base
    kind = rng.random()
    if kind < 0.35:  # vertical or horizontal gradient
        other = np.asarray(_jitter_colour(base, rng, 70), np.float32)
        t = np.linspace(0, 1, PLATE_H if rng.random() < 0.7 else PLATE_W, dtype=np.float32)
        t = t[:, None, None] if len(t) == PLATE_H else t[None, :, None]
        plate = plate * (1 - t) + other * t
    elif kind < 0.6:  # scenery: a hill line and a sun or emblem, in pale colours
        hill = _jitter_colour(base, rng, 60)
        xs = np.arange(0, PLATE_W + 40, 40)
        ys = PLATE_H * (0.55 + 0.35 * rng.random(len(xs)))
        poly = np.array([[0, PLATE_H]] + [[int(x), int(y)] for x, y in zip(xs, ys)] + [[PLATE_W, PLATE_H]], np.int32)
        cv2.fillPoly(plate, [poly], hill, cv2.LINE_AA)
        if rng.random() < 0.6:
            centre = (int(rng.integers(20, PLATE_W - 20)), int(rng.integers(20, PLATE_H - 20)))
            cv2.circle(plate, centre, int(rng.integers(12, 45)), _jitter_colour(base, rng, 80), -1, cv2.LINE_AA)
    noise = rng.standard_normal(plate.shape[:2], dtype=np.float32)[..., None] * rng.uniform(0, 6)
    return np.clip(plate + noise, 0, 255).astype(np.uint8)


def _caption(plate, text, rng, y_centre, height, colour, width_frac) -> None:
    mask = _text_mask(text, height, pick_style(rng, plate_face=False))
    if mask.shape[1] > PLATE_W * width_frac:
        mask = cv2.resize(mask, (int(PLATE_W * width_frac), height))
    x = (PLATE_W - mask.shape[1]) // 2 + int(rng.integers(-15, 16))
    _paint(plate, mask, x, int(y_centre - height / 2), colour)


def _sticker(plate: np.ndarray, rng: np.random.Generator, x: int, y: int) -> None:
    """A registration sticker: a coloured tab with a month or year on it."""
    w, h = int(rng.integers(24, 42)), int(rng.integers(16, 28))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    cv2.rectangle(plate, (x, y), (x + w, y + h), colour, -1)
    text = str(rng.choice(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]))
    if rng.random() < 0.5:
        text = f"{int(rng.integers(0, 100)):02d}"
    ink = (255, 255, 255) if sum(colour) < 380 else (0, 0, 0)
    cv2.putText(plate, text, (x + 2, y + h - 4), cv2.FONT_HERSHEY_SIMPLEX, h / 40, ink, 1, cv2.LINE_AA)


def render_plate(rng: np.random.Generator) -> tuple[np.ndarray, str, str, str, tuple[int, int, int, int]]:
    """A flat PLATE_H x PLATE_W plate -> (image, label, state, family, line box x0, y0, x1, y1)."""
    family, state, stacked, line = layout(rng)
    back, ink = PALETTES[rng.integers(len(PALETTES))]
    if family == "california" and rng.random() < 0.7:
        back, ink = (245, 245, 245), (110, 40, 20)
    back, ink = _jitter_colour(back, rng, 15), _jitter_colour(ink, rng, 25)
    plate = _background(rng, back)

    # State name across the top, slogan along the bottom, in a contrasting colour of their own.
    accent = _jitter_colour(ink if rng.random() < 0.5 else (30, 30, 190), rng, 40)
    if rng.random() < 0.92:
        name = STATE_NAMES[state] if rng.random() < 0.95 else str(rng.choice(list(STATE_NAMES.values())))
        name = name.upper() if rng.random() < 0.5 else name
        _caption(plate, name, rng, rng.uniform(16, 26), int(rng.integers(16, 30)), accent, 0.75)
    if rng.random() < 0.8:
        slogan = str(rng.choice(SLOGANS))
        slogan = slogan.upper() if rng.random() < 0.4 else slogan
        _caption(plate, slogan, rng, rng.uniform(136, 148), int(rng.integers(10, 18)), accent, 0.8)
    if rng.random() < 0.7:
        _sticker(plate, rng, int(rng.integers(8, 30)), int(rng.integers(6, 22)))
    if rng.random() < 0.6:
        _sticker(plate, rng, int(rng.integers(PLATE_W - 70, PLATE_W - 40)), int(rng.integers(6, 22)))

    # The characters: one height for the line; groups split at gaps and separators.
    char_h = int(rng.integers(62, 82))
    squeeze = rng.uniform(0.8, 1.25)  # condensed or wide glyphs
    style = pick_style(rng, plate_face=True)
    groups = [g for g in line.replace("-", " - ").split(" ") if g]
    pieces: list[np.ndarray | str] = []
    for g in groups:
        if g == "-":
            pieces.append("-")
        else:
            mask = _text_mask(g, char_h, style)
            pieces.append(cv2.resize(mask, (max(1, int(mask.shape[1] * squeeze)), char_h)))
    gap = int(rng.integers(8, 26))
    widths = [gap if isinstance(p, str) else p.shape[1] for p in pieces]
    stack_w = int(char_h * 0.42) if stacked else 0
    total = sum(widths) + gap * (len(pieces) - 1) + (stack_w + 6 if stacked else 0)
    limit = PLATE_W * rng.uniform(0.8, 0.92)
    if total > limit:  # squeeze the whole line to fit the plate
        f = limit / total
        pieces = [p if isinstance(p, str) else cv2.resize(p, (max(1, int(p.shape[1] * f)), char_h)) for p in pieces]
        widths = [int(gap * f) if isinstance(p, str) else p.shape[1] for p in pieces]
        gap, stack_w = int(gap * f), int(stack_w * f)
        total = sum(widths) + gap * (len(pieces) - 1) + (stack_w + 6 if stacked else 0)
    x = int((PLATE_W - total) / 2 + rng.integers(-6, 7))
    y = int(PLATE_H / 2 - char_h / 2 + rng.integers(-6, 8))
    x_start = x
    if stacked:  # two small characters one above the other, left of the serial (not labelled)
        small_h = int(char_h * 0.44)
        for i, c in enumerate(stacked):
            mask = _text_mask(c, small_h, style)
            mask = cv2.resize(mask, (min(stack_w, mask.shape[1]), small_h))
            _paint(plate, mask, x, y + i * (char_h - small_h), ink)
        x += stack_w + 6
    for piece, width in zip(pieces, widths):
        if isinstance(piece, str):  # a dash, a dot or a small emblem between groups
            kind = rng.random()
            cx, cy = x + width // 2, y + char_h // 2
            if kind < 0.4:
                cv2.rectangle(plate, (x + 1, cy - 3), (x + width - 1, cy + 3), ink, -1)
            elif kind < 0.7:
                cv2.circle(plate, (cx, cy), max(2, width // 4), ink, -1, cv2.LINE_AA)
            else:
                emblem = tuple(int(c) for c in rng.integers(0, 256, 3))
                cv2.circle(plate, (cx, cy), max(4, width // 2 + 4), emblem, -1, cv2.LINE_AA)
        else:
            _paint(plate, piece, x, y, ink)
        x += width + gap
    line_box = (x_start, y, x - gap, y + char_h)
    if rng.random() < 0.35:  # a mark in the space beside the serial: a sticker or small letters
        room_left, room_right = x_start - 4, PLATE_W - (x - gap) - 4
        side = "left" if room_left >= room_right else "right"
        room = max(room_left, room_right)
        if room >= 18:
            if rng.random() < 0.5:
                _sticker(plate, rng, 4 if side == "left" else PLATE_W - min(room, 40) - 2, int(y + rng.integers(0, char_h // 2)))
            else:
                small_h = int(char_h * rng.uniform(0.25, 0.45))
                mark = fill(str(rng.choice(["A", "AA", "N", "NN", "AAA"])), rng, LETTERS)
                mask = _text_mask(mark, small_h, pick_style(rng, plate_face=False))
                mask = cv2.resize(mask, (min(room - 4, mask.shape[1]), small_h))
                mx = 4 if side == "left" else PLATE_W - mask.shape[1] - 4
                _paint(plate, mask, mx, int(y + rng.integers(0, char_h - small_h)), ink)

    if rng.random() < 0.7:  # bolts, top and bottom
        for bx in (int(PLATE_W * 0.23), int(PLATE_W * 0.77)):
            for by in (int(rng.integers(10, 20)), int(rng.integers(PLATE_H - 20, PLATE_H - 10))):
                if rng.random() < 0.7:
                    cv2.circle(plate, (bx, by), int(rng.integers(4, 8)), _jitter_colour((150, 150, 150), rng, 80), -1)
    if rng.random() < 0.55:  # a frame, often with a dealer's text over the slogan
        frame = _jitter_colour((30, 30, 30) if rng.random() < 0.6 else (180, 180, 180), rng, 30)
        t = int(rng.integers(4, 12))
        cv2.rectangle(plate, (0, 0), (PLATE_W - 1, PLATE_H - 1), frame, 2 * t)
        if rng.random() < 0.5:
            bottom = int(rng.integers(12, 24))
            cv2.rectangle(plate, (0, PLATE_H - bottom), (PLATE_W, PLATE_H), frame, -1)
            dealer = str(rng.choice(["AUTO MALL", "TOYOTA OF", "HONDA", "FORD", "CARMAX", "DEALER"]))
            _caption(plate, dealer, rng, PLATE_H - bottom / 2, max(8, bottom - 6), (235, 235, 235), 0.6)
    return plate, label_of(line), state if family != "vanity" else "", family, line_box


def _degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera and compression damage: resolution, blur, noise, JPEG, contrast, a shadow."""
    h, w = image.shape[:2]
    target_h = int(rng.integers(18, 90))  # plates far and near; small ones lose detail for real
    if target_h < h:
        small = cv2.resize(image, (max(4, int(w * target_h / h)), target_h), interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.4:
        k = int(rng.choice([3, 5]))
        image = cv2.GaussianBlur(image, (k, k), 0)
    if rng.random() < 0.2:  # horizontal motion blur
        k = int(rng.integers(3, 8))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        image = cv2.filter2D(image, -1, kernel)
    out = image.astype(np.float32)
    if rng.random() < 0.4:  # a shadow edge across the plate
        x0, x1 = rng.uniform(-0.5, 1.5, 2) * w
        ys, xs = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
        side = (xs - x0) * h - (x1 - x0) * ys > 0
        out[side] *= rng.uniform(0.45, 0.85)
    alpha, beta = rng.uniform(0.55, 1.35), rng.uniform(-50, 40)
    out = out * alpha + beta
    if rng.random() < 0.3:  # colour cast of the camera or the street lights
        out *= rng.uniform(0.8, 1.2, 3)
    out += rng.standard_normal(out.shape, dtype=np.float32) * rng.uniform(0, 12)
    image = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.7:
        _, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 95))])
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return image


def render(seed: int, index: int, line_crop_share: float = 0.25) -> Sample:
    """Sample (seed, index): a plate on a surround, warped, cut out and degraded."""
    rng = rng_for(seed, index)
    plate, text, state, family, line_box = render_plate(rng)

    # Surround: car body or bumper colour, so loose crops show what a detector's box shows.
    margin = 60
    canvas = np.empty((PLATE_H + 2 * margin, PLATE_W + 2 * margin, 3), np.uint8)
    canvas[:] = tuple(int(c) for c in rng.integers(0, 256, 3))
    canvas[margin : margin + PLATE_H, margin : margin + PLATE_W] = plate

    # Perspective: each corner moved a little; slight rotation comes with it.
    src = np.float32([[margin, margin], [margin + PLATE_W, margin], [margin + PLATE_W, margin + PLATE_H], [margin, margin + PLATE_H]])
    dst = src + rng.normal(0, 1, (4, 2)).astype(np.float32) * np.float32([PLATE_W * 0.035, PLATE_H * 0.05])
    angle = np.deg2rad(rng.normal(0, 3))
    centre = src.mean(axis=0)
    rot = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (dst - centre) @ rot.T + centre
    matrix = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    warped = cv2.warpPerspective(canvas, matrix, (canvas.shape[1], canvas.shape[0]), borderMode=cv2.BORDER_REPLICATE)

    crop = "line" if rng.random() < line_crop_share else "plate"
    if crop == "line":
        x0, y0, x1, y1 = line_box
        box = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) + margin
        pad_x, pad_y = rng.uniform(0.01, 0.08) * (x1 - x0), rng.uniform(-0.05, 0.2) * (y1 - y0)
    else:
        box = src
        pad_x, pad_y = rng.uniform(-0.04, 0.1) * PLATE_W, rng.uniform(-0.06, 0.15) * PLATE_H
    corners = cv2.perspectiveTransform(box[None], matrix)[0]
    xa, ya = corners.min(axis=0) - (pad_x, pad_y)
    xb, yb = corners.max(axis=0) + (pad_x, pad_y)
    shift = rng.normal(0, 0.01, 2) * (xb - xa, yb - ya)  # off-centre boxes
    xa, xb = xa + shift[0], xb + shift[0]
    ya, yb = ya + shift[1], yb + shift[1]
    xa, ya = int(max(0, xa)), int(max(0, ya))
    xb, yb = int(min(warped.shape[1], xb)), int(min(warped.shape[0], yb))
    image = _degrade(warped[ya:yb, xa:xb], rng)
    return Sample(image=image, text=text, state=state, family=family, crop=crop)
