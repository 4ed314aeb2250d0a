"""Plate-format knowledge applied after recognition.

Many national formats fix which positions hold letters and which hold digits (Brazil
LLLNNNN and Mercosur LLLNLNN, Italy/France LLNNNLL, ...). Where a read fits such a
format after swapping look-alike glyphs (0/O, 1/I, 8/B...), the swapped read is the better
guess: the recognizer cannot tell 0 from O in many plate fonts. Reads that fit no format
(vanity plates, German plates, ...) are left as read.

A deployment names its region (`ALPR_PLATE_REGION`): `Region` holds everything that depends
on it (layouts, how far a read may be bent to fit one, which unformatted reads are plates).
US plates (region `us`, and `na` for North America) are mostly vanity or state layouts, with
state names, slogans, stickers and frames around the characters, and in most states the
letter O and the digit 0 are one glyph: US reads write it as 0 (as the OpenALPR US ground
truth does), so a hotlist entry must compare O and 0 as equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

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
# US layouts, most common first: where a read fits several with the same number of swaps, the
# earlier one decides 0/O and 1/I. California (the deployment's own state) leads. A state's
# vanity plates fit none of these; the acceptance rules below decide those.
US_FORMATS = (
    "NLLLNNN",  # California passenger (1ABC234)
    "LLLNNNN",  # NY, PA, TX, OH, MI, GA, NC, VA, AZ, WI, ... (ABC1234)
    "NLNNNNN",  # California commercial (1A23456), Idaho county prefix
    "NNNNNLN",  # California commercial since 2015 (12345A1)
    "LLNLNL",  # Missouri (AB1C2D)
    "LLLNNN",  # many states' older and low-series plates (ABC123)
    "NNNLLL",  # AR, AZ, MN, OR, KY, KS, CO, ... (123ABC)
    "LLNNNNN",  # Illinois (AB12345)
    "NLLNNNN",  # Maryland (1AB2345)
    "LNNLLL",  # New Jersey, Florida (A12BCD)
    "NNNLNNN",  # Nevada (123A456)
    "NLNNNNL",  # Alabama county-coded (1A2345B)
    "NNLNNNL",  # Alabama, two-digit counties (12A345B)
    "NLLNNN",  # Massachusetts, Michigan (1AB234)
    "NNNLLN",  # Massachusetts (123AB4)
    "LLNNNN",  # District of Columbia (AB1234)
    "NNNNLL",  # Maine (1234AB)
    "LNNNLL",  # Utah (A123BC)
    "LLLLNN",  # Colorado, Florida (ABCD12)
    "LLNNNL",  # British Columbia-like, Washington trucks (AB123C)
)
CANADA_MEXICO_FORMATS = (
    "LLLLNNN",  # Ontario (ABCD123)
    "LLLNNNN",  # Alberta, Mexico (ABC1234)
    "NNNLLL",  # Quebec (123ABC)
    "LNNLLL",  # Quebec (A12BCD)
    "LLLNNNL",  # Mexico (ABC123D)
)
REGION_FORMATS["us"] = US_FORMATS
REGION_FORMATS["na"] = tuple(dict.fromkeys(US_FORMATS + CANADA_MEXICO_FORMATS))
REGION_FORMATS["any"] = tuple(
    dict.fromkeys(f for region in ("br", "eu") for f in REGION_FORMATS[region])
)
# Regions whose plates may fit no fixed format (German, vanity plates) and carry the EU band:
# there a text line is accepted without a format if the band is seen beside it.
FREE_FORM_REGIONS = frozenset({"eu", "any"})
FREE_FORM_LENGTH = (4, 8)
# Regions whose plates include vanity plates (2-7 free characters): there a confident read
# that fits no format is accepted unless it looks like the text around a plate (below).
VANITY_REGIONS = frozenset({"us", "na"})
VANITY_LENGTH = (2, 7)
# Text seen on and around US plates that is not the plate: state names, months and stickers,
# slogans, dealer frames, vehicle badges, signs. A letters-only read equal to one of these,
# or holding one of five letters or more, is not a plate (vanity plates rarely spell them).
SURROUND_WORDS = frozenset(
    """
    ALABAMA ALASKA ARIZONA ARKANSAS CALIFORNIA COLORADO CONNECTICUT DELAWARE FLORIDA GEORGIA
    HAWAII IDAHO ILLINOIS INDIANA IOWA KANSAS KENTUCKY LOUISIANA MAINE MARYLAND MASSACHUSETTS
    MICHIGAN MINNESOTA MISSISSIPPI MISSOURI MONTANA NEBRASKA NEVADA NEWHAMPSHIRE NEWJERSEY
    NEWMEXICO NEWYORK NORTHCAROLINA NORTHDAKOTA OHIO OKLAHOMA OREGON PENNSYLVANIA RHODEISLAND
    SOUTHCAROLINA SOUTHDAKOTA TENNESSEE TEXAS UTAH VERMONT VIRGINIA WASHINGTON WESTVIRGINIA
    WISCONSIN WYOMING COLUMBIA ONTARIO QUEBEC ALBERTA MEXICO
    JAN FEB MAR APR MAY JUN JUL AUG SEP SEPT OCT NOV DEC JANUARY FEBRUARY MARCH APRIL JUNE
    JULY AUGUST SEPTEMBER OCTOBER NOVEMBER DECEMBER
    DMV DMVCAGOV CAGOV GOV WWW COM ORG NET HTTP HTTPS
    STATE SUNSHINE NATURAL GRAND CANYON LINCOLN EMPIRE GARDEN FLIGHT LIVEFREEORDIE VACATIONLAND
    POTATOES POTATO GREATLAKES GREAT LAKES PURE DAIRYLAND KEYSTONE VOLUNTEER SHOWME PEACH
    LONESTAR SPORTSMANS PARADISE OCEAN ALOHA WILD WONDERFUL HEART DIXIE AMERICA AMERICAS
    CELEBRATING CENTENNIAL SESQUICENTENNIAL BICENTENNIAL YEARS STARS FELL TREASURE BEAUTIFUL
    EXPLORE DISCOVER FREEDOM LIBERTY TRUST WORLD FIRST COUNTY CITY TOWN
    DEALER DEALERS MOTORS MOTOR AUTO AUTOS SALES CARS TRUCKS TRUCK TRAILER SERVICE
    FORD TOYOTA HONDA CHEVROLET CHEVY NISSAN JEEP DODGE BUICK CADILLAC LEXUS SUBARU MAZDA
    HYUNDAI KIA VOLKSWAGEN ACURA INFINITI LINCOLN CHRYSLER GMC RAM TESLA AUDI VOLVO MERCEDES
    SPORT SPORTS HYBRID LIMITED TOURING CAMRY CIVIC ACCORD COROLLA ALTIMA ESCAPE EXPLORER
    COMMERCIAL APPORTIONED PERMANENT PERM TEMP TEMPORARY FARM EXEMPT OFFICIAL GOVERNMENT
    DISABLED VETERAN VETERANS VETERAN CLASSIC ANTIQUE HISTORIC COLLEGE UNIVERSITY
    POLICE SHERIFF TAXI FEDEX USPS UPS EXPRESS STOP PARKING EXIT ONLY PRIVATE PROPERTY
    VISIT CALL FREE SALE RENT RENTAL STORAGE MOVING ACCESS WELCOME
    """.split()
)
MIN_SURROUND_SUBSTRING = 5
# Digits that start like a camera's date stamp (2014051...): year 2000-2039, then a month.
DATE_STAMP = re.compile(r"^20[0-3][0-9](0[1-9]|1[0-2])")
MIN_DIGITS_ONLY = 4  # shorter digit groups are sticker numbers, house numbers, speed limits
# In vanity regions a glyph read at least this confidently is never swapped to fit a layout:
# on the US dev scenes every wrong swap was of a glyph read at >= 0.98, every right one < 0.95.
VANITY_SWAP_CONFIDENCE = 0.95
US_LINE_TO_PLATE = (1.05, 1.4)
US_TEXT_SIZE = 960


def swap_limit(region: str) -> float:
    """Highest glyph confidence format repair may still swap in this region (1.0: any)."""
    return VANITY_SWAP_CONFIDENCE if region in VANITY_REGIONS else 1.0
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
# Where swaps are cautious (vanity regions) the recognizer must give the replacement at least
# this: a glyph it barely considered is more often right as read (a vanity or unlisted layout).
CAUTIOUS_ALTERNATIVE = 0.03
MAX_SWAPS = 1  # two swaps bent vanity text into formats more often than they fixed a read
# A glyph read with less confidence than this may be a sticker, emblem or the EU country
# band rather than a character; it is dropped when that alone makes the read fit a format.
INTRUDER_CONFIDENCE = 0.75
MIN_EDGE_TRIM = 4


@dataclass(frozen=True)
class Read:
    text: str
    confidences: tuple[float, ...]
    fits_format: bool
    glyphs: str = ""  # what the recognizer itself read, before the repair (O and 0 still apart)


def fit(
    text: str,
    pattern: str,
    alternatives: tuple[tuple[float, ...], ...] = (),
    confidences: tuple[float, ...] = (),
    max_swap_confidence: float = 1.0,
    o_as_zero: bool = False,
) -> tuple[str, int] | None:
    """The text rewritten to the pattern and the number of glyph swaps, or None if it cannot fit.

    alternatives (per character, the recognizer's probability of each of ALPHABET) pick the
    replacement glyph where they are confident enough; the look-alike table otherwise. A glyph
    read with confidences[i] >= max_swap_confidence is never swapped: where vanity plates are
    common, a confidently read glyph that breaks a layout says the plate has another layout.
    There (max_swap_confidence < 1) the replacement must also be the recognizer's own choice at
    CAUTIOUS_ALTERNATIVE or more; the look-alike table serves only reads without alternatives.
    o_as_zero: the letter O and the digit 0 are one glyph, written 0, that fits either kind.
    """
    pattern = pattern.replace(STICKER, "")
    if len(text) != len(pattern):
        return None
    out, swaps = [], 0
    for index, (char, kind) in enumerate(zip(text, pattern)):
        wanted_letter = kind == "L"
        if o_as_zero and char in "O0":
            out.append("0")
            continue
        if char.isalpha() == wanted_letter:
            out.append(char)
            continue
        cautious = max_swap_confidence < 1.0
        if cautious and confidences and confidences[index] >= max_swap_confidence:
            return None
        floor = CAUTIOUS_ALTERNATIVE if cautious else MIN_ALTERNATIVE
        swapped = _alternative(alternatives[index], wanted_letter, floor) if alternatives else None
        if swapped is None and not (cautious and alternatives):
            swapped = (TO_LETTER if wanted_letter else TO_DIGIT).get(char)
        if swapped is None:
            return None
        out.append("0" if o_as_zero and swapped == "O" else swapped)
        swaps += 1
    if o_as_zero and "L" in pattern and all(c.isdigit() for c in out):
        return None  # digits only (a date, a phone number): a 0 may stand for O, not every letter
    return "".join(out), swaps


def _alternative(probabilities: tuple[float, ...], letter: bool, floor: float = MIN_ALTERNATIVE) -> str | None:
    span = range(26) if letter else range(26, 36)
    best = max(span, key=lambda i: probabilities[i])
    return ALPHABET[best] if probabilities[best] >= floor else None


def best_fit(
    text: str,
    formats: tuple[str, ...],
    alternatives: tuple[tuple[float, ...], ...] = (),
    confidences: tuple[float, ...] = (),
    max_swap_confidence: float = 1.0,
    o_as_zero: bool = False,
) -> tuple[str, int] | None:
    """The fit with the fewest swaps (at most MAX_SWAPS) over all formats, or None; on a tie
    the earlier format (the more common layout) wins."""
    fits = [
        f
        for pattern in formats
        if (f := fit(text, pattern, alternatives, confidences, max_swap_confidence, o_as_zero)) is not None
        and f[1] <= MAX_SWAPS
    ]
    return min(fits, key=lambda f: f[1]) if fits else None


def repair(
    chars: Characters, formats: tuple[str, ...], max_swap_confidence: float = 1.0, o_as_zero: bool = False
) -> Read:
    """Fit the read to the nearest format: look-alike swaps first, then dropping one glyph.

    A doubtful glyph may go if the rest fits with swaps; a confident one only if it sits in a
    format's sticker gap and the rest fits exactly. Glyphs read with max_swap_confidence or more
    are never swapped (see fit). o_as_zero writes every O as 0, whether or not a format fits.
    """
    alts, confs, limit = chars.alternatives, chars.confidences, max_swap_confidence
    direct = best_fit(chars.text, formats, alts, confs, limit, o_as_zero)
    if direct is not None:
        return Read(direct[0], chars.confidences, True)
    gaps = {p.index(STICKER) for p in formats if STICKER in p and len(p) == len(chars.text)}
    candidates = []
    for index, confidence in enumerate(chars.confidences):
        doubtful = confidence < INTRUDER_CONFIDENCE
        if not doubtful and index not in gaps:
            continue
        shorter = best_fit(
            chars.text[:index] + chars.text[index + 1 :],
            formats,
            alts[:index] + alts[index + 1 :] if alts else (),
            confs[:index] + confs[index + 1 :],
            limit,
            o_as_zero,
        )
        if shorter is not None and (doubtful or shorter[1] == 0):
            candidates.append((shorter[1], confidence, index, shorter[0]))
    if not candidates:
        return Read(chars.text.replace("O", "0") if o_as_zero else chars.text, chars.confidences, False)
    _, _, index, text = min(candidates)
    return Read(text, chars.confidences[:index] + chars.confidences[index + 1 :], True)


def without_unsure_edge(read: Read) -> Read:
    """The read without its first or last glyph where that was read below INTRUDER_CONFIDENCE
    (the less sure of the two): at a US serial's ends stand stacked small characters, a bolt,
    a frame's edge, which the recognizer reads as one more glyph, unsurely. Reads of
    MIN_EDGE_TRIM glyphs or fewer are kept whole."""
    text, confidences = read.text, read.confidences
    if len(text) <= MIN_EDGE_TRIM:
        return read
    index = 0 if confidences[0] <= confidences[-1] else len(text) - 1
    if confidences[index] >= INTRUDER_CONFIDENCE:
        return read
    keep = slice(1, None) if index == 0 else slice(None, -1)
    return Read(text[keep], confidences[keep], False)


def is_surround_text(text: str) -> bool:
    """Whether a read is text around a plate rather than the plate: a letters-only word from
    SURROUND_WORDS (or holding one of MIN_SURROUND_SUBSTRING letters or more), or digits only
    that read as a year or a date/time stamp (registration stickers, camera overlays). A 0 counts
    as an O here: regions that write O as 0 would otherwise hide OREGON as 0REG0N."""
    letters = text.replace("0", "O")
    if letters.isalpha():
        return letters in SURROUND_WORDS or any(
            len(word) >= MIN_SURROUND_SUBSTRING and word in letters for word in SURROUND_WORDS
        )
    if text.isdigit():
        return len(text) >= 8 or (len(text) == 4 and text[:2] in ("19", "20")) or DATE_STAMP.match(text) is not None
    return False


def vanity_plausible(text: str, confidences: tuple[float, ...], min_confidence: float) -> bool:
    """Whether a read that fits no format may still be a US vanity plate: 2-7 characters, each
    read with at least min_confidence, not surround text, and with a digit unless it is 5 or
    more letters (short letter groups are mostly words on signs, badges and stickers)."""
    if not VANITY_LENGTH[0] <= len(text) <= VANITY_LENGTH[1] or min(confidences) < min_confidence:
        return False
    if is_surround_text(text) or (text.isdigit() and len(text) < MIN_DIGITS_ONLY):
        return False
    return not text.replace("0", "O").isalpha() or len(text) >= 5


@dataclass(frozen=True)
class Region:
    """The plate rules of one deployment region."""

    name: str
    formats: tuple[str, ...]
    max_swap_confidence: float  # glyphs read at least this confidently are never swapped to fit
    o_as_zero: bool  # O and 0 are one glyph, written 0
    vanity: bool  # confident unformatted reads that are not surround text are plates
    eu_band: bool  # unformatted reads with an EU band beside them are plates
    # A plate's box from its character line's box (width, height factors, same centre): US
    # characters fill less of the plate than EU ones (the state name above, a slogan below).
    line_to_plate: tuple[float, float] = (1.0, 1.0)
    # Long side of the frame fed to the text detector. US plates are small in road scenes: at
    # 736 the detector proposed the plate's line on 188 of 222 US scenes, at 1280 on 216. EU and
    # BR plates were read as well at 736 as at 960, for 40% less time.
    text_size: int = 736
    # Whether a frame's neighbouring lines on one row are also read joined (EU plates split at
    # a sticker or emblem) and plate-length reads that fit no layout read again from a looser
    # crop. Neither found a US plate the single line missed on the US dev scenes; both cost
    # recognizer time on every frame.
    join_lines: bool = True

    def repair(self, chars: Characters) -> Read:
        if self.o_as_zero and chars.alternatives:
            chars = merge_o_and_zero(chars)
        read = repair(chars, self.formats, self.max_swap_confidence, self.o_as_zero)
        if self.vanity and not read.fits_format:
            read = without_unsure_edge(read)
        return replace(read, glyphs=chars.text)

    def plate_box(self, line: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = line
        grow_x, grow_y = (self.line_to_plate[0] - 1) * (x2 - x1) / 2, (self.line_to_plate[1] - 1) * (y2 - y1) / 2
        return x1 - grow_x, y1 - grow_y, x2 + grow_x, y2 + grow_y


def merge_o_and_zero(chars: Characters) -> Characters:
    """Where O and 0 are one glyph, a character read as either is as sure as both together: the
    recognizer splits its belief between them on such plates (0.66 for 0 and 0.34 for O is a
    certain 0)."""
    o, zero = ALPHABET.index("O"), ALPHABET.index("0")
    confidences = tuple(
        min(1.0, alts[o] + alts[zero]) if char in "O0" else conf
        for char, conf, alts in zip(chars.text, chars.confidences, chars.alternatives)
    )
    return Characters(chars.text, confidences, chars.alternatives)


def region(name: str) -> Region:
    """The rules of a region named in REGION_FORMATS; ValueError for any other name."""
    if name not in REGION_FORMATS:
        raise ValueError(f"unknown plate region {name!r}; known: {sorted(REGION_FORMATS)}")
    vanity = name in VANITY_REGIONS
    return Region(
        name=name,
        formats=REGION_FORMATS[name],
        max_swap_confidence=swap_limit(name),
        o_as_zero=vanity,
        vanity=vanity,
        eu_band=name in FREE_FORM_REGIONS,
        # Median labelled US plate box over the line box of its read on the US dev scenes.
        line_to_plate=US_LINE_TO_PLATE if vanity else (1.0, 1.0),
        text_size=US_TEXT_SIZE if vanity else 736,
        join_lines=not vanity,
    )
