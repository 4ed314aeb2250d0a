"""Text recognizer (PP-OCRv4 rec, CTC over a 6,623-symbol dictionary): plate crops in, characters out.

Plates hold only Latin capitals and digits, so decoding folds lower case onto upper case and
treats every other symbol as blank: the recognizer can no longer answer with a Chinese
character, punctuation or a space where a plate has none.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import cv2
import numpy as np

HEIGHT = 48
WIDTH = 320  # one fixed width keeps batches rectangular; plates are ~2:1 to 5:1
UPSCALE = cv2.INTER_LINEAR  # interpolation for crops under 48 px high
MIN_WIDTH_STEP = 32  # variable-width inputs are rounded up to this, so similar crops share a batch
ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Characters:
    """Greedy CTC read: the characters and each one's peak probability."""

    text: str
    confidences: tuple[float, ...]
    # Per character, the probability of each of ALPHABET at the character's peak frame: the
    # recognizer's second choice, for format repair. Empty when not known.
    alternatives: tuple[tuple[float, ...], ...] = ()


def prepare(crop_bgr: np.ndarray, fixed_width: bool = True) -> np.ndarray:
    """A crop -> (3, 48, W) float32 in [-1, 1], left-aligned and zero padded like PaddleOCR.

    W is 320 with fixed_width (one shape for every crop: GPU engines); otherwise the crop's own
    width rounded up to a multiple of MIN_WIDTH_STEP: the recognizer's cost grows with W, and a
    plate line at 48 px high is often under 200 px wide, so a CPU need not pay for the padding.
    """
    h, w = crop_bgr.shape[:2]
    new_w = max(1, min(WIDTH, int(np.ceil(HEIGHT * w / max(h, 1)))))
    interpolation = UPSCALE if h < HEIGHT else cv2.INTER_LINEAR
    resized = cv2.resize(crop_bgr, (new_w, HEIGHT), interpolation=interpolation)
    out_w = WIDTH if fixed_width else min(WIDTH, max(2 * MIN_WIDTH_STEP, -(-new_w // MIN_WIDTH_STEP) * MIN_WIDTH_STEP))
    tensor = np.zeros((3, HEIGHT, out_w), dtype=np.float32)
    tensor[:, :, :new_w] = resized.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
    return tensor


class AlphabetFold:
    """Maps the recognizer's dictionary onto blank + A-Z0-9 (lower case added to upper case)."""

    def __init__(self, dictionary: list[str]) -> None:
        # Output column 0 is the CTC blank, columns 1..n the dictionary, the last one a space.
        columns = len(dictionary) + 2
        target = np.zeros(columns, dtype=np.int64)  # 0 = blank class
        for col, symbol in enumerate(dictionary, start=1):
            upper = symbol.upper()
            if len(upper) == 1 and upper in ALPHABET:
                target[col] = 1 + ALPHABET.index(upper)
        # Sum columns per target with reduceat rather than a matrix product: BLAS would spin
        # extra threads for a 40 x 6,625 product and break the one-core budget.
        self._order = np.argsort(target, kind="stable")
        self._starts = np.searchsorted(target[self._order], np.arange(1 + len(ALPHABET)))
        if len(np.unique(target)) != 1 + len(ALPHABET):
            raise ValueError("recognizer dictionary lacks some of A-Z0-9")

    def fold(self, probs: np.ndarray) -> np.ndarray:
        """(T, columns) -> (T, 1 + 36)."""
        return np.add.reduceat(probs[:, self._order], self._starts, axis=1).astype(np.float32, copy=False)

    def decode(self, probs: np.ndarray) -> Characters:
        """Greedy CTC decode of one (T, columns) output, folded onto A-Z0-9 first."""
        return ctc_greedy(self.fold(probs))


def ctc_greedy(probs: np.ndarray) -> Characters:
    """Greedy CTC decode of one (T, 1 + 36) output: best class per frame, repeats merged, blanks dropped.

    Each character's confidence is its probability at its peak frame; alternatives hold all 36
    probabilities at that frame, so a format repair can weigh 0 against O by state layout.
    """
    best = probs.argmax(axis=1)
    chars: list[str] = []
    confidences: list[float] = []
    alternatives: list[tuple[float, ...]] = []
    t = 0
    while t < len(best):
        cls = int(best[t])
        end = t + 1
        while end < len(best) and best[end] == cls:
            end += 1
        if cls != 0:
            peak = t + int(probs[t:end, cls].argmax())
            chars.append(ALPHABET[cls - 1])
            confidences.append(float(probs[peak, cls]))
            alternatives.append(tuple(float(p) for p in probs[peak, 1:]))
        t = end
    return Characters("".join(chars), tuple(confidences), tuple(alternatives))
