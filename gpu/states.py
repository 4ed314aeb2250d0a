"""US states as a plate shows them: the name printed on it, and the layouts of its serials.

The state name on a plate (CALIFORNIA in script above the serial, "Washington, D.C.") is text
the reader used to throw away. Read, it says whose plate it is (the read's plate_state, which
the hotlist compares) and which layouts its serial may have, and so whether a round glyph is
the letter O or the digit 0: the recognizer cannot tell them apart in most US plate fonts, so
without the state every one is written 0. The synthetic plate generator draws from the same
tables (alpr.gpu.training.synth).
"""

from __future__ import annotations

import re

# Serial layouts by state. L letter, N digit, A either, space = gap, "-" = a drawn separator.
# California's 1ABC234 first: it is most of what these users' cameras see.
STATE_LAYOUTS: dict[str, tuple[str, ...]] = {
    "CA": ("NLLLNNN",),
    "TX": ("LLL-NNNN", "LLL NNNN"),
    "NY": ("LLL-NNNN",),
    "PA": ("LLL-NNNN",),
    "FL": ("LLL NLL", "NNN LLL", "LLL LNN"),
    "IL": ("LL NNNNN", "NNNNNNN", "LLL NNNN"),
    "OH": ("LLL NNNN",),
    "GA": ("LLL NNNN",),
    "NC": ("LLL-NNNN",),
    "MI": ("LLL NNNN", "NLLLNN"),
    "NJ": ("LNN-LLL", "LLL-NNL"),
    "VA": ("LLL-NNNN",),
    "WA": ("LLLNNNN", "NNNLLLL"),
    "AZ": ("LLL NNNN", "NNN LLL"),
    "MA": ("NLLL NN", "NNN LLN"),
    "IN": ("NNNL", "NNNLLL"),
    "TN": ("LLL-NNN", "NLLNNNN"),
    "MO": ("LLN-LNL",),
    "MD": ("NLL NNNN",),
    "WI": ("LLL-NNNN", "NNN-LLL"),
    "CO": ("LLL-NNN", "NNN-LLL"),
    "MN": ("LLL NNN", "NNN LLL"),
    "SC": ("LLL NNN", "NNN LLL"),
    "AL": ("NNLLNNN", "NLNNNNL"),
    "LA": ("LLL NNN", "NNN LLL"),
    "KY": ("NNN LLL",),
    "OR": ("NNN LLL", "LLL NNN"),
    "OK": ("LLL-NNN", "NNN-LLL"),
    "CT": ("NLL-LNN", "LNN-LLL"),
    "UT": ("LNN NLL", "NNN LLL"),
    "NV": ("NNN-LLL", "NLL NNN"),
    "IA": ("LLL NNN", "NNN LLL"),
    "AR": ("NNN LLL", "LLL NNN"),
    "MS": ("LLL NNN", "LLN NNNN"),
    "KS": ("NNN LLL",),
    "NM": ("LLL-NNN", "NNN-LLL"),
    "NE": ("NN-LNNN", "LLL NNN"),
    "ID": ("N LNNNNN", "NL NNNNN"),
    "WV": ("NLL NNN", "LLL NNN"),
    "HI": ("LLL NNN",),
    "NH": ("NNN NNNN", "NNN NNN"),
    "ME": ("NNNN LL",),
    "MT": ("N-NNNNNL", "NN-NNNNL"),
    "RI": ("NNN NNN", "LL-NNN"),
    "DE": ("NNNNNN", "NNNNN"),
    "SD": ("N LNN NNN", "NN NNNN"),
    "ND": ("NNN LLL",),
    "AK": ("LLL NNN",),
    "DC": ("LL-NNNN",),
    "VT": ("LLL NNN", "NNN LNN"),
    "WY": ("NN NNNN", "NN NNNL"),
}
STATE_NAMES: dict[str, str] = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "DC": "Washington, D.C.", "FL": "Florida",
    "GA": "Georgia", "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois", "IN": "Indiana", "IA": "Iowa",
    "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana", "ME": "Maine", "MD": "Maryland",
    "MA": "Massachusetts", "MI": "Michigan", "MN": "Minnesota", "MS": "Mississippi", "MO": "Missouri",
    "MT": "Montana", "NE": "Nebraska", "NV": "Nevada", "NH": "New Hampshire", "NJ": "New Jersey",
    "NM": "New Mexico", "NY": "New York", "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio",
    "OK": "Oklahoma", "OR": "Oregon", "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina",
    "SD": "South Dakota", "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont",
    "VA": "Virginia", "WA": "Washington", "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming",
}

# Printed name (letters only, upper case) -> state; the longest name found in a line wins, so
# WEST VIRGINIA is not VIRGINIA and ARKANSAS is not KANSAS. "Washington, D.C." is DC.
_BY_NAME = {re.sub(r"[^A-Z]", "", name.upper()): state for state, name in STATE_NAMES.items()}
_BY_NAME["WASHINGTONDC"] = "DC"
_BY_NAME["DISTRICTOFCOLUMBIA"] = "DC"
_NAMES_LONGEST_FIRST = sorted(_BY_NAME, key=len, reverse=True)


def state_named(text: str) -> str | None:
    """The state whose name a read line holds (a 0 read for an O counts as O), or None."""
    letters = re.sub(r"[^A-Z]", "", text.upper().replace("0", "O"))
    if len(letters) < 4:  # IOWA, OHIO, UTAH are the shortest names
        return None
    return next((_BY_NAME[name] for name in _NAMES_LONGEST_FIRST if name in letters), None)


# A glyph the recognizer read with less confidence than this may be dropped (extra_glyph).
UNSURE_GLYPH = 0.95


def _patterns(state: str) -> list[str]:
    """The state's layouts as glyph patterns (gaps and separators are not glyphs)."""
    return [layout.replace(" ", "").replace("-", "") for layout in STATE_LAYOUTS.get(state, ())]


def _fits(text: str, pattern: str) -> bool:
    """Each glyph of the kind its position wants: a letter for L, a digit for N, either for A;
    O and 0, one glyph on most US plates, fit both."""
    return len(text) == len(pattern) and all(
        kind == "A" or char in "O0" or char.isalpha() == (kind == "L") for char, kind in zip(text, pattern))


def extra_glyph(text: str, state: str, confidences: tuple[float, ...]) -> int | None:
    """The position of a glyph that is not part of the serial, or None.

    Emblems, bolts and sticker edges between or beside a serial's groups (Oregon's tree,
    Mississippi's and Georgia's separators) are read as one more character. Where a read fits
    no layout of its state but does, one character shorter, with the dropped glyph read unsurely
    (below UNSURE_GLYPH), that glyph is the extra one: the least sure such glyph, if only one
    spelling results. A read that fits a layout as it is, or a state without layouts, is left
    alone."""
    patterns = _patterns(state)
    if not patterns or any(_fits(text, p) for p in patterns):
        return None
    options = [i for i in range(len(text)) if confidences[i] < UNSURE_GLYPH
               and any(_fits(text[:i] + text[i + 1:], p) for p in patterns)]
    if not options:
        return None
    least = min(confidences[i] for i in options)
    spellings = {text[:i] + text[i + 1:] for i in options if confidences[i] == least}
    return min(i for i in options if confidences[i] == least) if len(spellings) == 1 else None


def letters_by_layout(text: str, state: str, glyphs: str) -> str:
    """The read with an O written where the recognizer itself saw an O (`glyphs`, its read
    before the region wrote every O as 0) and the state's serial layout has a letter. Both must
    agree: the layout alone put O into real zeros where STATE_LAYOUTS lacks a layout, the glyph
    alone reads many zeros as O. Unchanged unless exactly one spelling fits, every other glyph
    already of its position's kind (no look-alike swaps here): a vanity plate or a layout missing
    from STATE_LAYOUTS keeps the region's spelling (0)."""
    if len(glyphs) != len(text):  # a glyph was dropped or swapped in: positions no longer line up
        return text
    spellings = set()
    for pattern in _patterns(state):
        if _fits(text, pattern):
            spellings.add("".join("O" if char in "O0" and kind == "L" and seen == "O" else char
                                  for char, seen, kind in zip(text, glyphs, pattern)))
    return spellings.pop() if len(spellings) == 1 else text
