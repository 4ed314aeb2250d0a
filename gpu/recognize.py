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
ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Characters:
    """Greedy CTC read: the characters and each one's peak probability."""

    text: str
    confidences: tuple[float, ...]


def prepare(crop_bgr: np.ndarray) -> np.ndarray:
    """A crop -> (3, 48, 320) float32 in [-1, 1], left-aligned and zero padded like PaddleOCR."""
    h, w = crop_bgr.shape[:2]
    new_w = max(1, min(WIDTH, int(np.ceil(HEIGHT * w / max(h, 1)))))
    resized = cv2.resize(crop_bgr, (new_w, HEIGHT), interpolation=cv2.INTER_LINEAR)
    tensor = np.zeros((3, HEIGHT, WIDTH), dtype=np.float32)
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
        """Greedy CTC decode of one (T, columns) output: best class per frame, repeats merged, blanks dropped."""
        folded = self.fold(probs)
        best = folded.argmax(axis=1)
        chars: list[str] = []
        confs: list[float] = []
        t = 0
        while t < len(best):
            cls = best[t]
            end = t + 1
            while end < len(best) and best[end] == cls:
                end += 1
            if cls != 0:
                chars.append(ALPHABET[cls - 1])
                confs.append(float(folded[t:end, cls].max()))
            t = end
        return Characters("".join(chars), tuple(confs))
