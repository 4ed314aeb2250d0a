"""Plate-format knowledge applied after recognition.

Many national formats fix which positions hold letters and which hold digits (Brazil
LLLNNNN and Mercosur LLLNLNN, Italy/France LLNNNLL, ...). Where a read fits such a
format after swapping look-alike glyphs (0/O, 1/I, 8/B...), the swapped read is the better
guess: the recognizer cannot tell 0 from O in many plate fonts. Reads that fit no format
(vanity plates, German plates, ...) are left as read.
"""

from __future__ import annotations

from dataclasses import dataclass

from alpr.gpu.recognize import ALPHABET, Characters

# L = letter, N = digit, STICKER = a gap where a sticker or emblem sits on many plates of
# that format (Czech inspection stickers, Slovak coats of arms), which the recognizer reads
# as a glyph ("8" for a round two-colour sticker).
STICKER = "·"
# Grouped by the region a deployment is configured for (as `alpr -c eu|br` in OpenALPR):
# formats from different continents contradict each other (Poland's LLNNNNN would turn a
# Brazilian LLLNNNN "NYI..." into "NY1...").
REGION_FORMATS: dict[str, tuple[str, ...]] = {
    "br": (
        "LLLNNNN",  # grey plates (1990-2018)
        "LLLNLNN",  # Mercosur (2018-)
    ),
    "eu": (
        "LLNNNLL",  # Italy, France (SIV)
        "NLN·NNNN",  # Czechia (inspection stickers between the groups)
        "LLL·NNNN",  # Slovakia (older plates), Poland (three-letter districts)
        "NNNNLLL",  # Spain
        "LLNNLLL",  # United Kingdom
        "LLNNNNN",  # Poland (two-letter districts)
    ),
}
REGION_FORMATS["any"] = tuple(dict.fromkeys(f for formats in REGION_FORMATS.values() for f in formats))
# Regions whose plates may fit no fixed format (German, vanity plates) and carry the EU band:
# there a text line is accepted without a format if the band is seen beside it.
FREE_FORM_REGIONS = frozenset({"eu", "any"})
FREE_FORM_LENGTH = (4, 8)
TO_LETTER = {"0": "O", "1": "I", "2": "Z", "4": "A", "5": "S", "6": "G", "7": "T", "8": "B"}
TO_DIGIT = {
    "O": "0",
    "D": "0",
    "Q": "0",
    "I": "1",
    "L": "1",
    "Z": "2",
    "A": "4",
    "S": "5",
    "G": "6",
    "T": "7",
    "B": "8",
}
# A position whose glyph is of the wrong kind takes the recognizer's best glyph of the right
# kind at that position when it gave that glyph at least this probability; otherwise the
# look-alike table above decides.
MIN_ALTERNATIVE = 0.02
MAX_SWAPS = 1  # two swaps bent vanity text into formats more often than they fixed a read
# A glyph read with less confidence than this may be a sticker, emblem or the EU country
# band rather than a character; it is dropped when that alone makes the read fit a format.
INTRUDER_CONFIDENCE = 0.75


@dataclass(frozen=True)
class Read:
    text: str
    confidences: tuple[float, ...]
    fits_format: bool


def fit(text: str, pattern: str, alternatives: tuple[tuple[float, ...], ...] = ()) -> tuple[str, int] | None:
    """The text rewritten to the pattern and the number of glyph swaps, or None if it cannot fit.

    alternatives (per character, the recognizer's probability of each of ALPHABET) pick the
    replacement glyph where they are confident enough; the look-alike table otherwise.
    """
    pattern = pattern.replace(STICKER, "")
    if len(text) != len(pattern):
        return None
    out, swaps = [], 0
    for index, (char, kind) in enumerate(zip(text, pattern)):
        wanted_letter = kind == "L"
        if char.isalpha() == wanted_letter:
            out.append(char)
            continue
        swapped = _alternative(alternatives[index], wanted_letter) if alternatives else None
        swapped = swapped or (TO_LETTER if wanted_letter else TO_DIGIT).get(char)
        if swapped is None:
            return None
        out.append(swapped)
        swaps += 1
    return "".join(out), swaps


def _alternative(probabilities: tuple[float, ...], letter: bool) -> str | None:
    span = range(26) if letter else range(26, 36)
    best = max(span, key=lambda i: probabilities[i])
    return ALPHABET[best] if probabilities[best] >= MIN_ALTERNATIVE else None


def best_fit(
    text: str, formats: tuple[str, ...], alternatives: tuple[tuple[float, ...], ...] = ()
) -> tuple[str, int] | None:
    """The fit with the fewest swaps (at most MAX_SWAPS) over all formats, or None."""
    fits = [
        f for pattern in formats if (f := fit(text, pattern, alternatives)) is not None and f[1] <= MAX_SWAPS
    ]
    return min(fits, key=lambda f: f[1]) if fits else None


def repair(chars: Characters, formats: tuple[str, ...]) -> Read:
    """Fit the read to the nearest format: look-alike swaps first, then dropping one glyph.

    A doubtful glyph may go if the rest fits with swaps; a confident one only if it sits in a
    format's sticker gap and the rest fits exactly.
    """
    alts = chars.alternatives
    direct = best_fit(chars.text, formats, alts)
    if direct is not None:
        return Read(direct[0], chars.confidences, True)
    gaps = {p.index(STICKER) for p in formats if STICKER in p and len(p) == len(chars.text)}
    candidates = []
    for index, confidence in enumerate(chars.confidences):
        doubtful = confidence < INTRUDER_CONFIDENCE
        if not doubtful and index not in gaps:
            continue
        shorter = best_fit(
            chars.text[:index] + chars.text[index + 1 :], formats, alts[:index] + alts[index + 1 :] if alts else ()
        )
        if shorter is not None and (doubtful or shorter[1] == 0):
            candidates.append((shorter[1], confidence, index, shorter[0]))
    if not candidates:
        return Read(chars.text, chars.confidences, False)
    _, _, index, text = min(candidates)
    return Read(text, chars.confidences[:index] + chars.confidences[index + 1 :], True)
