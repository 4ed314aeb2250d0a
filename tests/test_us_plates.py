"""US plates: the `us` region's layouts and acceptance rules, the ALPR_PLATE_REGION setting,
and (where ../shared/datasets is present beside the clone) a handful of real US crops."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from alpr.gpu import ReaderSettings, open_reader
from alpr.gpu.plates import is_surround_text, region, repair, vanity_plausible, without_unsure_edge, REGION_FORMATS, Read
from alpr.gpu.recognize import ALPHABET, Characters
from alpr.gpu.states import STATE_LAYOUTS, STATE_NAMES, extra_glyph, letters_by_layout, state_named
from tests.test_reader import PLATE_BOX, iou, scene

REPO = Path(__file__).resolve().parents[1]
CROPS = REPO.parent / "shared" / "datasets" / "openalpr-us-crops"


def read(text: str, low: dict[int, float] | None = None) -> Characters:
    return Characters(text, tuple((low or {}).get(i, 0.99) for i in range(len(text))))


def test_layout_decides_look_alikes_only_for_doubtful_glyphs() -> None:
    us = region("us")
    assert us.repair(read("7ABC12B", {6: 0.6})).text == "7ABC128"  # CA 1ABC234: last place is a digit
    assert us.repair(read("7ABC12B", {6: 0.6})).fits_format
    # The same glyph read confidently stays: a plate that breaks every layout is a vanity plate.
    assert us.repair(read("7ABC12B")).text == "7ABC12B"
    assert not us.repair(read("7ABC12B")).fits_format
    # Other regions keep bending confident glyphs (their plates have fixed layouts).
    assert repair(read("NY13834"), REGION_FORMATS["br"]).text == "NYI3834"


def test_us_writes_the_letter_o_as_zero_in_any_position() -> None:
    us = region("us")
    assert us.repair(read("5LOD951")).text == "5L0D951"  # a letter place: O and 0 are one glyph
    assert us.repair(read("5L0D951")).fits_format
    assert us.repair(read("BLOGGER")).text == "BL0GGER"  # vanity: no layout, still written 0
    assert region("eu").repair(read("PP587AO")).text == "PP587AO"


def test_o_and_zero_pool_their_confidence_where_they_are_one_glyph() -> None:
    alternatives = [[0.0] * len(ALPHABET) for _ in range(7)]
    for i, char in enumerate("MNO7P89"):
        alternatives[i][ALPHABET.index(char)] = 1.0
    alternatives[2][ALPHABET.index("0")], alternatives[2][ALPHABET.index("O")] = 0.66, 0.34
    chars = Characters("MN07P89", (1.0, 1.0, 0.66, 1.0, 1.0, 1.0, 1.0), tuple(map(tuple, alternatives)))
    read = region("us").repair(chars)
    assert read.text == "MN07P89" and read.confidences[2] == pytest.approx(1.0)
    assert vanity_plausible(read.text, read.confidences, 0.8)  # a split O/0 is no doubt on a US plate
    assert region("br").repair(chars).confidences[2] == pytest.approx(0.66)


def test_digits_only_never_fit_a_layout_that_needs_a_letter() -> None:
    assert not region("us").repair(read("2014050")).fits_format  # a cut date stamp, 0 is no letter


@pytest.mark.parametrize(
    "text", ["CALIFORNIA", "JANCALIFORNIA", "DMVCAGOV", "0REG0N", "TEXAS", "SEP", "2014", "20140513", "201405"]
)
def test_text_around_plates_is_not_a_plate(text: str) -> None:
    assert is_surround_text(text)
    assert not vanity_plausible(text, (0.99,) * len(text), 0.8)


@pytest.mark.parametrize("text", ["IM4REAL", "ALKATRZ", "CEMENT0", "1365847", "4U2C"])
def test_vanity_plates_are_plausible_when_read_confidently(text: str) -> None:
    assert vanity_plausible(text, (0.99,) * len(text), 0.8)
    assert not vanity_plausible(text, (0.99,) * (len(text) - 1) + (0.5,), 0.8)


@pytest.mark.parametrize("text", ["AB", "88", "12345678", "ABCDEFGH"])
def test_vanity_needs_a_plate_length_and_a_digit_in_short_reads(text: str) -> None:
    assert not vanity_plausible(text, (0.99,) * len(text), 0.8)


def test_unknown_region_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown plate region"):
        region("mars")
    with pytest.raises(ValueError):
        open_reader("onnxruntime", settings=ReaderSettings(region="mars"))


def test_us_plate_box_grows_from_the_character_line() -> None:
    x1, y1, x2, y2 = region("us").plate_box((100.0, 100.0, 200.0, 120.0))
    assert x1 < 100 and x2 > 200 and y1 < 100 and y2 > 120
    assert region("eu").plate_box((100.0, 100.0, 200.0, 120.0)) == (100.0, 100.0, 200.0, 120.0)


@pytest.fixture(scope="module")
def us_reader():
    return open_reader("onnxruntime", threads=1)  # the default region is us


@pytest.mark.parametrize("text", ["7ABC123", "AB1C2D", "SKYLINE"])
def test_default_reader_reads_us_layouts_and_vanity_plates(us_reader, text: str) -> None:
    (plate,) = us_reader.read(scene(text))
    assert plate.text == text
    assert iou(plate.box, PLATE_BOX) > 0.5


def test_default_reader_drops_state_names_and_date_stamps(us_reader) -> None:
    assert us_reader.read(scene("TEXAS")) == []
    assert us_reader.read(scene("20140513")) == []


def alpr_read(image: Path, env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ALPR_")}
    out = subprocess.run(
        [sys.executable, "-m", "alpr.cli", "read", str(image), "--json"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


def test_alpr_read_honours_the_plate_region_setting(tmp_path) -> None:
    image = tmp_path / "vanity.png"
    cv2.imwrite(str(image), scene("SKYLINE"))
    assert [p["text"] for p in alpr_read(image, {})["plates"]] == ["SKYLINE"]  # default us: a vanity plate
    assert alpr_read(image, {"ALPR_PLATE_REGION": "br"})["plates"] == []  # no Brazilian layout fits


def test_an_unknown_plate_region_setting_is_a_config_error() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ALPR_")}
    result = subprocess.run(
        [sys.executable, "-m", "alpr.cli", "config"],
        env={**clean, "ALPR_PLATE_REGION": "mars"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode != 0 and "ALPR_PLATE_REGION" in result.stderr


@pytest.mark.skipif(not (CROPS / "labels.csv").is_file(), reason="../shared/datasets not beside the clone")
def test_reads_most_of_a_handful_of_real_us_crops(us_reader) -> None:
    """Evaluation data (AGPL-3.0, read in place): 12 crops spread over the states, one read each."""
    rows = list(csv.DictReader((CROPS / "labels.csv").open()))
    sample = rows[:: len(rows) // 12][:12]
    hits = 0
    for row in sample:
        image = cv2.imread(str(CROPS / row["file"]))
        padded = cv2.copyMakeBorder(image, 16, 16, 16, 16, cv2.BORDER_REPLICATE)
        hits += row["plate"] in {p.text for p in us_reader.read(padded)}
    assert hits >= 8, f"{hits}/12 US crops read"
    assert np.isfinite(hits)


def us_plate_crop(text: str, state: str = "TEXAS") -> np.ndarray:
    """A 300x150 white plate: a small state name on top, the characters large below."""
    plate = np.full((150, 300, 3), 235, np.uint8)
    cv2.putText(plate, state, (95, 32), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (120, 40, 20), 2, cv2.LINE_AA)
    (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.6, 4)
    cv2.putText(plate, text, ((300 - tw) // 2, 105), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (20, 20, 20), 4, cv2.LINE_AA)
    return plate


def test_read_plates_takes_the_characters_not_the_state_name(us_reader) -> None:
    blank = np.full((150, 300, 3), 235, np.uint8)
    plate, nothing = us_reader.read_plates([us_plate_crop("7ABC123"), blank])
    assert plate is not None and plate.text == "7ABC123"
    x1, y1, x2, y2 = plate.box
    assert 0 <= x1 < x2 <= 300 and 40 <= y1 < y2 <= 150  # the character line, in crop pixels
    assert nothing is None
    assert us_reader.read_plates([]) == []


def test_the_pp_ocrv4_recognizer_remains_an_option() -> None:
    v4 = open_reader("onnxruntime", settings=ReaderSettings(recognizer="ppocrv4"))
    assert v4.model_version.startswith("ppocrv4-rapidocr-1.4.4+")
    assert [p.text for p in v4.read(scene("7ABC123"))] == ["7ABC123"]


class FixedRecognizer:
    """Stands in for the own recognizer (gpu/ownrec.py): reads every crop as one text."""

    def __init__(self, text: str, confidence: float) -> None:
        self.text, self.confidence = text, confidence

    def read(self, crops):
        return [Characters(self.text, (self.confidence,) * len(self.text)) for _ in crops]


def test_second_opinion_only_fills_in_where_pp_ocr_read_no_plate() -> None:
    reader = open_reader("onnxruntime", settings=ReaderSettings(second_opinion=True))
    assert "+own-" in reader.model_version
    reader._own = FixedRecognizer("7ABC123", 0.9)  # a confident layout fit where PP-OCR read a state name
    assert [p.text for p in reader.read(scene("TEXAS"))] == ["7ABC123"]
    assert [p.text for p in reader.read(scene("SKYLINE"))] == ["SKYLINE"]  # PP-OCR's vanity read stands
    reader._own = FixedRecognizer("7ABC123", 0.6)  # not confident enough to fill in
    assert reader.read(scene("TEXAS")) == []
    assert reader.read_plates([us_plate_crop("7ABC124")])[0].text == "7ABC124"


@pytest.mark.parametrize(("line", "state"), [
    ("CALIFORNIA", "CA"), ("CALIF0RNIA", "CA"), ("California", "CA"), ("WESTVIRGINIA", "WV"), ("VIRGINIA", "VA"),
    ("ARKANSAS", "AR"), ("KANSAS", "KS"), ("WASHINGTON", "WA"), ("WASHINGTONDC", "DC"), ("NEWYORK", "NY"),
    ("0HI0", "OH"), ("EXPLOREMINNESOTA", "MN"), ("DMVCAGOV", None), ("7ABC123", None), ("IOW", None), ("", None),
])
def test_a_state_is_known_by_the_name_printed_on_its_plate(line: str, state: str | None) -> None:
    assert state_named(line) == state


def test_every_state_has_a_name_and_a_layout() -> None:
    assert set(STATE_NAMES) == set(STATE_LAYOUTS) and len(STATE_NAMES) == 51  # 50 states and DC
    assert {state_named(name) for name in STATE_NAMES.values()} == set(STATE_NAMES)


@pytest.mark.parametrize(("read", "glyphs", "state", "written"), [
    ("5A0J230", "5AOJ230", "CA", "5AOJ230"),  # NLLLNNN: read as an O, where a letter goes: the letter O
    ("5A0J230", "5A0J230", "CA", "5A0J230"),  # read as a 0 there: the recognizer and the layout disagree
    ("7ABC100", "7ABC1OO", "CA", "7ABC100"),  # an O where the layout has digits is the digit 0
    ("N0X218", "NOX218", "AR", "NOX218"), ("3550CT", "355OCT", "AR", "355OCT"),  # either of two layouts
    ("1230456", "123O456", "CA", "1230456"),  # fits no California layout as read: unchanged, no swaps
    ("SKY0", "SKYO", "CA", "SKY0"),  # a vanity plate keeps the region's spelling
    ("X0706", "XO706", "ZZ", "X0706"),  # an unknown state changes nothing
    ("5A0J230", "5AOJ2300", "CA", "5A0J230"),  # a glyph was dropped in the repair: positions unknown
])
def test_the_state_and_the_glyph_decide_letter_o_or_digit_zero(read: str, glyphs: str, state: str,
                                                              written: str) -> None:
    assert letters_by_layout(read, state, glyphs) == written


@pytest.mark.parametrize("text, confidences, kept", [
    ("S4280", (0.47, 1, 1, 1, 1), "4280"),  # one of Massachusetts' stacked "US" letters, left of the serial
    ("7364H", (1, 1, 1, 1, 0.51), "7364"),  # a stacked suffix right of it
    ("R72LY", (0.6, 1, 1, 1, 0.69), "72LY"),  # both edges unsure: the less sure one goes, once
    ("S4280", (0.8, 1, 1, 1, 1), "S4280"),  # sure enough: a plate of another layout
    ("4280", (0.3, 1, 1, 1), "4280"),  # short reads stay whole
    ("S4A80", (1, 1, 0.2, 1, 1), "S4A80"),  # the middle is repair()'s business, not this
])
def test_an_unsure_glyph_at_a_serials_end_is_dropped(text, confidences, kept) -> None:
    assert without_unsure_edge(Read(text, confidences, False)).text == kept


def test_the_us_region_trims_an_unsure_edge_only_from_reads_that_fit_no_layout() -> None:
    us = region("us")
    assert us.repair(read("S4280", {0: 0.47})).text == "4280"
    assert us.repair(read("7ABC1234", {7: 0.6})).text == "7ABC123"  # repair() drops it to fit CA's layout
    assert us.repair(read("7ABC123", {0: 0.6})).text == "7ABC123"  # fits as read: left alone
    assert region("eu").repair(read("S4280", {0: 0.47})).text == "S4280"  # only where vanity plates are read


@pytest.mark.parametrize("text, state, confidences, dropped", [
    ("5261BQU", "OR", (1, 1, 1, 0.8, 1, 1, 1), 3),  # Oregon's tree between the groups, read as a 1
    ("RFII947", "MS", (1, 1, 1, 0.79, 1, 1, 1), 3),  # either I would do: one spelling, the least sure one
    ("4AGB7548", "AZ", (0.78, 1, 1, 1, 1, 1, 1, 1), 0),  # a bolt left of the serial
    ("5261BQU", "OR", (1, 1, 1, 0.99, 1, 1, 1), None),  # every glyph read surely: a plate of another layout
    ("526BQU", "OR", (1, 1, 1, 0.5, 1, 1), None),  # fits a layout as it is
    ("5261BQU", "XX", (1, 1, 1, 0.5, 1, 1, 1), None),  # no layouts for this state
    ("ABC12345", "OR", (0.5,) * 8, None),  # one glyph fewer still fits no Oregon layout
    ("AB1C23", "NY", (1, 1, 0.6, 1, 1, 1), None),  # shorter than every New York layout: nothing to drop
])
def test_an_unsure_glyph_that_keeps_a_read_off_its_states_layouts_is_dropped(text, state, confidences,
                                                                             dropped) -> None:
    assert extra_glyph(text, state, confidences) == dropped


def test_a_crop_read_drops_the_emblem_read_as_a_character(us_reader) -> None:
    """Through read_plates: the state named on the crop decides, and the confidences follow the text."""
    from alpr.gpu.reader import _by_state
    from alpr.gpu.plates import Read

    read = Read("5261BQU", (1.0, 1.0, 1.0, 0.8, 1.0, 1.0, 1.0), False, "5261BQU")
    assert _by_state(read, "OR") == ("526BQU", (1.0, 1.0, 1.0, 1.0, 1.0, 1.0))
    assert _by_state(read, None) == ("5261BQU", read.confidences)


def test_a_looser_crop_replaces_a_short_read_only_when_it_fits_and_reads_surely(us_reader, monkeypatch) -> None:
    """A sticker cut the serial's last character off (GZG34 on a Hawaii plate): the looser crop's
    read is kept when it fits a layout and every glyph is sure; a bolt read as an extra first
    glyph (GG0945) is not."""
    from alpr.gpu.detect import Detection
    from alpr.gpu.plates import Read

    boxes = [(0, Detection((10.0, 10.0, 90.0, 40.0), 1.0))] * 2
    tight = [Read("GZG34", (1.0,) * 5, False, "GZG34"), Read("G0945", (1.0,) * 5, False, "G0945")]
    loose = [Read("GZG347", (1.0,) * 6, True, "GZG347"), Read("GG0945", (0.62, 0.96, 1, 1, 1, 1), True, "GG0945")]
    monkeypatch.setattr(us_reader, "_read_boxes", lambda images, asked, pad, fixed_width: loose[: len(asked)])
    reads = list(tight)
    us_reader._loosen([np.zeros((50, 100, 3), np.uint8)], boxes, reads, fixed_width=False)
    assert [r.text for r in reads] == ["GZG347", "G0945"]


def test_read_plates_reads_the_state_and_writes_its_letter_o(us_reader) -> None:
    crops = [us_plate_crop("4WOL902", name) for name in ("CALIFORNIA", "OREGON", "")]
    california, oregon, unnamed = us_reader.read_plates(crops)
    assert (california.text, california.state) == ("4WOL902", "CA")  # NLLLNNN: the round glyph is a letter
    assert (oregon.text, oregon.state) == ("4W0L902", "OR")  # no Oregon layout fits: written 0, as before
    assert (unnamed.text, unnamed.state) == ("4W0L902", None)  # no state: O and 0 are one glyph, written 0


def test_a_frame_read_carries_the_state_named_above_its_serial(us_reader) -> None:
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[400:550, 500:800] = us_plate_crop("7ABC100", "OREGON")
    (plate,) = us_reader.read(frame)
    assert (plate.text, plate.state) == ("7ABC100", "OR")
