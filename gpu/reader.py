"""PlateReader: BGR images in, plate strings with boxes and confidences out.

Default (Apache-2.0 models only): text lines of the frame (PP-OCRv4 det) -> line crops, plus
neighbouring lines joined -> recognizer (PP-OCRv4 rec) -> plate-format repair -> lines kept
if they fit a plate format or carry an EU band. Opt-in (AGPL-3.0 platedet): plate boxes ->
padded crops -> the same recognizer and repair, with the text lines as the last fallback.
The backend only runs tensors; batching and all pre/post-processing live here and in the
domain modules, so the TensorRT path shares them with the CPU path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version

import cv2
import numpy as np

from alpr.gpu import detect, plates, recognize, states, textlines
from alpr.gpu.backends import Backend, BackendUnavailable, OnnxRuntimeBackend
from alpr.gpu.batching import run_batched
from alpr.gpu.imaging import crop
from alpr.gpu.models import DETECTOR, RECOGNIZERS, TEXT_DETECTOR, ModelFile

log = logging.getLogger(__name__)

# 2: joined lines, EU-band free-form reads, recognizer-chosen swaps; 3: plate regions (us/na rules);
# 4: the state name read; 5: narrow pieces joined to their line, a glyph off the state's layouts dropped
POSTPROCESS_VERSION = "alpr-post-5"


@dataclass(frozen=True)
class PlateText:
    text: str  # capitals and digits only, no spaces or dashes
    confidence: float  # 0..1 overall
    char_confidences: tuple[float, ...]
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in image pixels
    state: str | None = None  # the state whose name is printed on the plate, where it was read


@dataclass(frozen=True)
class ReaderSettings:
    """Every knob of the reading cascade; the defaults are the benchmarked configuration."""

    # Default False: read with the Apache-2.0 PP-OCRv4 models only (text lines that look like
    # plates). True opts in to platedet.onnx, which declares itself an AGPL-3.0 Ultralytics
    # export: see docs/models.md for what that obliges a deployment to do.
    plate_detector: bool = False
    detector_size: int = 448  # long side fed to the detector; 640 costs 2x the time
    min_detection_score: float = 0.3
    # Images with no read from confident boxes fall back to weaker boxes, then to a larger
    # detector input: small or odd plates score low, and the recognizer's confidence filters
    # what weak boxes bring. Frames without any plate pay for every step.
    retry_min_score: float = 0.1
    retry_size: int | None = 640
    # Last step for frames still without a read: every text line in the frame, kept only if it
    # fits a plate format of the region (None turns it off).
    text_fallback_size: int | None = 736
    # Crop margins as fractions of the box: a little slack recovers characters the box cut
    # off; more lets screws, frames and dealer text in (0.10/0.15 lost 2-6 points).
    crop_pad_x: float = 0.03
    crop_pad_y: float = 0.06
    loose_pad: tuple[float, float] | None = (0.10, 0.15)  # second crop for reads that fit no format
    min_text_confidence: float = 0.5  # mean character confidence x detector score ** 0.25
    max_plates_per_image: int = 8
    # Text-line path (the whole reader when plate_detector is False).
    max_text_lines: int = 8  # tallest lines read per frame (joined neighbours come on top)
    text_pad: tuple[float, float] = (0.0, 0.0)  # crop margins of a text line (DB boxes are unclipped already)
    free_form_plates: bool = True  # accept reads that fit no format if the line has an EU band (regions eu, any)
    free_form_confidence: float = 0.8  # lowest character confidence of such a read
    # Regions us/na: lowest character confidence of a read that fits no layout (a vanity plate).
    vanity_confidence: float = 0.8
    # Long side of the frame fed to the text detector on the default path; None: the region's
    # (plates.Region.text_size: 960 for us/na, where plates are small in road scenes, else 736).
    text_size: int | None = None
    # Which plate rules apply (plates.REGION_FORMATS keys): us (default: the users' plates),
    # na (US, Canada, Mexico), eu, br, any (eu + br).
    region: str = "us"
    # Text recognizer (models.RECOGNIZERS): ppocrv6 (PP-OCRv6 small) or ppocrv4.
    recognizer: str = "ppocrv6"
    # Also read each candidate plate with the project's own US recognizer (gpu/ownrec.py, the
    # plate around the line) and keep whichever read is more plate-like, then more confident.
    second_opinion: bool = False


class PlateReader:
    """Reads plates with one backend; keeps no per-frame state, so one reader serves a worker."""

    def __init__(self, backend: Backend, settings: ReaderSettings = ReaderSettings()) -> None:
        self.backend = backend
        self.settings = settings
        self._region = plates.region(settings.region)  # ValueError for an unknown region
        if settings.recognizer not in RECOGNIZERS:
            raise ValueError(f"unknown recognizer {settings.recognizer!r}; known: {sorted(RECOGNIZERS)}")
        self._recognizer = RECOGNIZERS[settings.recognizer]
        dictionary = backend.metadata(self._recognizer)["character"].splitlines()
        self._alphabet = recognize.AlphabetFold(dictionary)
        detector = f"platedet-{version('platedet')}+" if settings.plate_detector else ""
        # Reads depend on the region's formats too, so the region is part of the version.
        self._own = None
        own = ""
        if settings.second_opinion:
            from alpr.gpu.ownrec import PlateRecognizer

            self._own = PlateRecognizer(backend)
            own = f"+own-{self._own.model.sha256()[:12]}"
        self.model_version = (
            f"{detector}{settings.recognizer}-rapidocr-{version(self._recognizer.package)}{own}"
            f"+{POSTPROCESS_VERSION}-{settings.region}"
        )

    @property
    def models(self) -> tuple[ModelFile, ...]:
        """The model files this reader's settings use (each with its license)."""
        used = (self._recognizer, TEXT_DETECTOR)
        return (DETECTOR, *used) if self.settings.plate_detector else used

    def read(self, image_bgr: np.ndarray) -> list[PlateText]:
        return self.read_batch([image_bgr])[0]

    def read_batch(self, images: list[np.ndarray]) -> list[list[PlateText]]:
        """Cascade, each step only for images with no read yet: confident boxes at detector_size,
        then that pass's weak boxes, then a pass at retry_size keeping weak boxes too, then
        text lines that fit a plate format."""
        settings = self.settings
        results: list[list[PlateText]] = [[] for _ in images]
        if not settings.plate_detector:
            size = settings.text_size or self._region.text_size
            self._read_text_lines(images, results, list(range(len(images))), size)
            return results
        found = self._detect_at(images, settings.detector_size, settings.retry_min_score)
        strong = [[d for d in dets if d.score >= settings.min_detection_score] for dets in found]
        self._recognize(images, strong, results, range(len(images)))
        weak = [[d for d in dets if d.score < settings.min_detection_score] for dets in found]
        self._recognize(images, weak, results, [i for i, reads in enumerate(results) if not reads])
        retry = [i for i, reads in enumerate(results) if not reads]
        if settings.retry_size and retry:
            again = self._detect_at([images[i] for i in retry], settings.retry_size, settings.retry_min_score)
            per_image: list[list[detect.Detection]] = [[] for _ in images]
            for index, dets in zip(retry, again):
                per_image[index] = dets
            self._recognize(images, per_image, results, retry)
        remaining = [i for i, reads in enumerate(results) if not reads]
        if settings.text_fallback_size and remaining:
            self._read_text_lines(images, results, remaining, settings.text_fallback_size)
        return results

    def _read_text_lines(
        self, images: list[np.ndarray], results: list[list[PlateText]], indices: list[int], size: int
    ) -> None:
        """Plates among the text lines of whole frames (PP-OCRv4 det + rec, Apache-2.0 only).

        Candidates: the tallest lines, plus neighbouring lines of one row joined (a plate split
        at a sticker or emblem). A line's read is kept if it fits a plate format of the region,
        or, where the region has free-form plates (German, vanity), if it is plate-length, read
        confidently and has an EU country band at its left. Overlapping keeps are reduced to
        the best one: format fits first, then the longer read, then the more confident.
        """
        settings = self.settings
        prepared = [textlines.prepare(images[i], size, self.backend.square_inputs) for i in indices]
        outputs = run_batched(self.backend, TEXT_DETECTOR, [tensor for tensor, _ in prepared])
        boxes: list[tuple[int, detect.Detection]] = []
        for index, (_, scale), (prob,) in zip(indices, prepared, outputs):
            lines, pieces = textlines.decode(prob, scale, images[index].shape)
            lines = lines[: settings.max_text_lines]
            # A text line has no plate score; 1.0 leaves its confidence to the recognizer.
            joined = textlines.join_rows(lines, pieces[: settings.max_text_lines]) if self._region.join_lines else []
            boxes += [(index, detect.Detection(box, 1.0)) for box in lines + joined]
        variable = not self.backend.square_inputs
        reads = self._read_boxes(images, boxes, settings.text_pad, fixed_width=not variable)
        if self._region.join_lines:
            self._loosen(images, boxes, reads, fixed_width=not variable)
        region = self._region
        if self._own is not None:
            reads = self._second_opinion(images, boxes, reads)
        named: dict[int, list[tuple[tuple[float, float, float, float], str]]] = {}
        for index, box, state in self._state_lines(boxes, reads):  # whose plate: its state's name, near it
            named.setdefault(index, []).append((box, state))
        kept: dict[int, list[tuple[tuple[int, int, float], PlateText]]] = {}
        for (index, det), read in zip(boxes, reads):
            rank = self._rank(read, images[index], det.box) if read is not None else 0
            if read is None or rank == 0:
                continue
            confidence = float(np.mean(read.confidences))
            if confidence >= settings.min_text_confidence:
                ih, iw = images[index].shape[:2]
                x1, y1, x2, y2 = (round(v) for v in _clip(region.plate_box(det.box), iw, ih))
                state = _state_beside(det.box, named.get(index, []))
                text, chars = _by_state(read, state)
                plate = PlateText(text, float(np.mean(chars)), chars, (x1, y1, x2, y2), state)
                kept.setdefault(index, []).append(((rank, len(read.text), confidence), plate))
        for index, found in kept.items():
            for _, plate in sorted(found, key=lambda item: item[0], reverse=True):
                if len(results[index]) < settings.max_plates_per_image and not any(
                    _overlaps(plate.box, other.box) for other in results[index]
                ):
                    results[index].append(plate)

    def _loosen(self, images: list[np.ndarray], boxes: list[tuple[int, detect.Detection]],
                reads: list[plates.Read | None], fixed_width: bool) -> None:
        """A plate-length read that fits no format may have lost an edge character to a tight
        line box (or a sticker cutting into it): read it again from a looser crop, in place,
        and keep that if it fits and every glyph of it was read surely (a looser crop also lets
        in bolts and frame edges, read unsurely as one more character)."""
        if not self.settings.loose_pad:
            return
        again = [
            n
            for n, read in enumerate(reads)
            if read is not None and not read.fits_format and plates.FREE_FORM_LENGTH[0] <= len(read.text) <= 8
        ]
        retried = self._read_boxes(images, [boxes[n] for n in again], self.settings.loose_pad, fixed_width)
        for n, loose in zip(again, retried):
            if loose is not None and loose.fits_format and min(loose.confidences) >= self.settings.vanity_confidence:
                reads[n] = loose

    def _state_lines(self, boxes: list[tuple[int, detect.Detection]], reads: list[plates.Read | None]
                     ) -> list[tuple[int, tuple[float, float, float, float], str]]:
        """(image, line box, state) of every line that names a US state; none outside US/NA."""
        if not self._region.vanity:
            return []
        return [(index, det.box, state) for (index, det), read in zip(boxes, reads)
                if read is not None and (state := states.state_named(read.text)) is not None]

    def _rank(self, read: plates.Read, image: np.ndarray, line: tuple[float, float, float, float]) -> int:
        """How plate-like a line's read is: 2 fits a layout of the region, 1 is a plate of no
        layout (a confident vanity read in us/na, a confident read beside an EU band in eu/any),
        0 is not a plate (other text, or surround text such as a state name)."""
        settings, region = self.settings, self._region
        if read.fits_format and not plates.is_surround_text(read.text):
            return 2
        if region.vanity and plates.vanity_plausible(read.text, read.confidences, settings.vanity_confidence):
            return 1
        if (
            settings.free_form_plates
            and region.eu_band
            and plates.FREE_FORM_LENGTH[0] <= len(read.text) <= plates.FREE_FORM_LENGTH[1]
            and min(read.confidences) >= settings.free_form_confidence
            and textlines.eu_band(image, line)
        ):
            return 1
        return 0

    def _second_opinion(
        self,
        images: list[np.ndarray],
        boxes: list[tuple[int, detect.Detection]],
        reads: list[plates.Read | None],
    ) -> list[plates.Read | None]:
        """Each line's read, or the own recognizer's read of the plate around the line where the
        line's read is no plate and the own read fits a layout with every character confident."""
        assert self._own is not None
        crops, slots = [], []
        for n, (index, det) in enumerate(boxes):
            patch = crop(images[index], det.box, *OWN_PLATE_PAD)
            if patch.shape[0] >= 4 and patch.shape[1] >= 4:
                crops.append(patch)
                slots.append(n)
        out = list(reads)
        for n, chars in zip(slots, self._own.read(crops)):
            if not chars.text:
                continue
            own = self._region.repair(chars)
            index, det = boxes[n]
            mine = out[n]
            # Only where PP-OCR's read is no plate and the own read fits a layout, confidently:
            # letting the more confident read win measured worse (US scenes 0.829 -> 0.802).
            if (
                (mine is None or self._rank(mine, images[index], det.box) == 0)
                and self._rank(own, images[index], det.box) == 2
                and min(own.confidences) >= self.settings.vanity_confidence
            ):
                out[n] = own
        return out

    def read_plates(self, crops: list[np.ndarray]) -> list[PlateText | None]:
        """The text of plate crops (a plate detector's boxes, or tightly cut plates), one read per
        crop, None where nothing on it reads as a plate.

        A plate holds more text than its characters (state name, slogan, month and year
        stickers, dealer frame): the crop's text lines are found (text detector at the crop's
        own scale, at least PLATE_TEXT_SIZE), each read, and among the lines at least
        PLATE_LINE_HEIGHT as tall as the tallest (a plate's characters are its largest text) the
        most plate-like read wins: layout fit, then a plate of no layout, then any read that is
        not surround text; among equals the longer read (a whole line over one of its halves),
        then the taller line, then confidence. Boxes are in crop pixels.
        """
        if not crops:
            return []
        settings = self.settings
        padded = [_pad(c) for c in crops]
        prepared = [
            textlines.prepare(c, min(PLATE_TEXT_MAX, max(PLATE_TEXT_SIZE, *c.shape[:2])), self.backend.square_inputs)
            for c in padded
        ]
        outputs = run_batched(self.backend, TEXT_DETECTOR, [tensor for tensor, _ in prepared])
        boxes: list[tuple[int, detect.Detection]] = []
        for index, (_, scale), (prob,) in zip(range(len(crops)), prepared, outputs):
            lines, pieces = textlines.decode(prob, scale, padded[index].shape)
            lines, pieces = lines[: settings.max_text_lines], pieces[: settings.max_text_lines]
            boxes += [(index, detect.Detection(box, 1.0)) for box in lines + textlines.join_rows(lines, pieces)]
        reads = self._read_boxes(padded, boxes, settings.text_pad, fixed_width=self.backend.square_inputs)
        self._loosen(padded, boxes, reads, fixed_width=self.backend.square_inputs)
        candidates = [
            (index, det.box, read)
            for (index, det), read in zip(boxes, reads)
            if read is not None and not plates.is_surround_text(read.text) and 2 <= len(read.text) <= 8
        ]
        tallest = [0.0] * len(crops)
        for index, (_, y1, _, y2), _ in candidates:
            tallest[index] = max(tallest[index], y2 - y1)
        # A crop is one plate: a state name on any of its lines is that plate's state (unless two differ).
        named: list[set[str]] = [set() for _ in crops]
        for index, _, state in self._state_lines(boxes, reads):
            named[index].add(state)
        best: list[tuple[tuple[bool, int, int, float, float], PlateText] | None] = [None] * len(crops)
        for index, (x1, y1, x2, y2), read in candidates:
            rank = self._rank(read, padded[index], (x1, y1, x2, y2))
            confidence = float(np.mean(read.confidences))
            tall = y2 - y1 >= PLATE_LINE_HEIGHT * tallest[index]
            key = (tall, rank, len(read.text), y2 - y1, confidence)
            if best[index] is None or key > best[index][0]:  # type: ignore[index]
                ih, iw = crops[index].shape[:2]
                box = _clip((x1 - PLATE_PAD, y1 - PLATE_PAD, x2 - PLATE_PAD, y2 - PLATE_PAD), iw, ih)
                rounded = (round(box[0]), round(box[1]), round(box[2]), round(box[3]))
                state = next(iter(named[index])) if len(named[index]) == 1 else None
                text, chars = _by_state(read, state)
                plate = PlateText(text, float(np.mean(chars)), chars, rounded, state)
                best[index] = (key, plate)
        if self._own is not None:
            for index, chars in enumerate(self._own.read(crops)):
                if not chars.text:
                    continue
                own = self._region.repair(chars)
                if plates.is_surround_text(own.text) or not 2 <= len(own.text) <= 8:
                    continue
                ih, iw = crops[index].shape[:2]
                rank, confidence = self._rank(own, crops[index], (0.0, 0.0, iw, ih)), float(np.mean(own.confidences))
                found = best[index]
                # As in _second_opinion: only a confident layout fit over no plate-like read.
                if (found is None or found[0][1] == 0) and rank == 2 and min(own.confidences) >= (
                    self.settings.vanity_confidence
                ):
                    plate = PlateText(own.text, confidence, own.confidences, (0, 0, iw, ih))
                    best[index] = ((True, rank, len(own.text), float(ih), confidence), plate)
        return [found[1] if found else None for found in best]

    def _recognize(
        self,
        images: list[np.ndarray],
        detections: list[list[detect.Detection]],
        results: list[list[PlateText]],
        indices: Sequence[int],
        pad: tuple[float, float] | None = None,
        require_format: bool = False,
    ) -> None:
        """Recognize the boxes of the images at indices, appending accepted reads to results.

        A read that fits no plate format is read again from a looser crop, and the second read
        kept if it fits: the first crop may have cut off an edge character.
        """
        settings = self.settings
        boxes = [(i, det) for i in indices for det in detections[i][: settings.max_plates_per_image]]
        reads = self._read_boxes(images, boxes, pad or (settings.crop_pad_x, settings.crop_pad_y))
        again = [n for n, read in enumerate(reads) if read is not None and not read.fits_format]
        if again and settings.loose_pad:
            for n, loose in zip(again, self._read_boxes(images, [boxes[n] for n in again], settings.loose_pad)):
                if loose is not None and loose.fits_format:
                    reads[n] = loose
        for (index, det), read in zip(boxes, reads):
            if read is None or (require_format and not read.fits_format):
                continue
            confidence = float(np.mean(read.confidences)) * det.score**0.25
            if confidence >= settings.min_text_confidence:
                x1, y1, x2, y2 = (round(v) for v in det.box)
                results[index].append(PlateText(read.text, confidence, read.confidences, (x1, y1, x2, y2)))
        log.debug("recognized %d boxes (%d twice) from %d images", len(boxes), len(again), len(indices))

    def _read_boxes(
        self,
        images: list[np.ndarray],
        boxes: list[tuple[int, detect.Detection]],
        pad: tuple[float, float],
        fixed_width: bool = True,
    ) -> list[plates.Read | None]:
        """One recognizer batch over the boxes; None where the crop is degenerate or reads empty.

        fixed_width pads every crop to 320 px (platedet crops: variable width lost 1 EU read);
        text lines, many per frame, go at their own width on a CPU (same reads, 20-30% faster).
        """
        crops: list[np.ndarray] = []
        slots: list[int] = []  # position in boxes of each crop
        for n, (index, det) in enumerate(boxes):
            patch = crop(images[index], det.box, *pad)
            if patch.shape[0] >= 4 and patch.shape[1] >= 4:
                crops.append(recognize.prepare(patch, fixed_width=fixed_width))
                slots.append(n)
        reads: list[plates.Read | None] = [None] * len(boxes)
        for n, (probs,) in zip(slots, run_batched(self.backend, self._recognizer, crops)):
            read = self._region.repair(self._alphabet.decode(probs))
            reads[n] = read if read.text else None
        return reads

    def _detect_at(self, images: list[np.ndarray], size: int, min_score: float) -> list[list[detect.Detection]]:
        prepared = [detect.prepare(image, size, self.backend.square_inputs) for image in images]
        outputs = run_batched(self.backend, DETECTOR, [tensor for tensor, _ in prepared])
        return [
            detect.decode(heads, transform, image.shape, min_score)
            for image, (_, transform), heads in zip(images, prepared, outputs)
        ]


# Plate crops get a replicated border (the text detector finds nothing touching the edge) and a
# text-detector input of at least PLATE_TEXT_SIZE px on the long side (a 100 px wide crop's
# characters are too small for it otherwise), at most PLATE_TEXT_MAX.
PLATE_PAD = 16
PLATE_TEXT_SIZE = 320
PLATE_TEXT_MAX = 640
PLATE_LINE_HEIGHT = 0.7
# How far from a plate's serial line, in serial heights, a line naming a state may lie (the
# state name above a US serial, a "Washington, D.C." below it) to count as the plate's state.
STATE_LINE_REACH = 1.5
# The own recognizer reads whole plates (state name and slogan included): it gets the plate
# around a character line, the line grown by these fractions of its width and height per side.
OWN_PLATE_PAD = (0.08, 0.7)


def _by_state(read: plates.Read, state: str | None) -> tuple[str, tuple[float, ...]]:
    """The read's text and character confidences as its state's layouts have them: a glyph that
    is no part of the serial dropped (states.extra_glyph), then O where the layout has a letter
    and the recognizer saw one (states.letters_by_layout). Unchanged without a state."""
    if state is None:
        return read.text, read.confidences
    text, chars, glyphs = read.text, read.confidences, read.glyphs
    drop = states.extra_glyph(text, state, chars)
    if drop is not None:
        text, chars = text[:drop] + text[drop + 1 :], chars[:drop] + chars[drop + 1 :]
        glyphs = glyphs[:drop] + glyphs[drop + 1 :] if len(glyphs) == len(read.text) else ""
    return states.letters_by_layout(text, state, glyphs), chars


def _state_beside(line: tuple[float, float, float, float],
                  named: list[tuple[tuple[float, float, float, float], str]]) -> str | None:
    """The state named by a line printed just above or below a plate's serial line: its centre
    within the serial's width, at most STATE_LINE_REACH serial heights away, and smaller than the
    serial. None if no such line, or if two name different states."""
    x1, y1, x2, y2 = line
    height = y2 - y1
    found = {
        state
        for (a1, b1, a2, b2), state in named
        if x1 <= (a1 + a2) / 2 <= x2
        and b2 - b1 < height
        and (y1 - STATE_LINE_REACH * height <= b2 <= y1 + height / 2 or y2 - height / 2 <= b1 <= y2 + STATE_LINE_REACH * height)
    }
    return found.pop() if len(found) == 1 else None


def _pad(crop_bgr: np.ndarray) -> np.ndarray:
    return cv2.copyMakeBorder(crop_bgr, PLATE_PAD, PLATE_PAD, PLATE_PAD, PLATE_PAD, cv2.BORDER_REPLICATE)


def _clip(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, float, float, float]:
    return max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3])


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two boxes share more than half of the smaller one."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy > 0.5 * max(1, smaller)


def open_reader(
    backend: str = "onnxruntime", threads: int = 1, settings: ReaderSettings = ReaderSettings(), **kw: object
) -> PlateReader:
    """Build a reader on the named backend; raises BackendUnavailable rather than falling back.

    threads: ONNX Runtime intra-op threads. kw: TensorRTBackend options (max_batch, device,
    cache_dir), refused for onnxruntime so a misspelt option cannot pass silently.
    """
    if backend == "onnxruntime":
        if kw:
            raise TypeError(f"options not understood by the onnxruntime backend: {sorted(kw)}")
        engine: Backend = OnnxRuntimeBackend(threads=threads)
    elif backend == "tensorrt":
        from alpr.gpu.tensorrt_engine import TensorRTBackend

        engine = TensorRTBackend(**kw)  # type: ignore[arg-type]
    elif backend == "cuda":
        from alpr.gpu.cuda import CudaBackend

        engine = CudaBackend(**kw)  # type: ignore[arg-type]
    else:
        raise BackendUnavailable(f"unknown backend {backend!r}; choose 'onnxruntime' or 'tensorrt'")
    return PlateReader(engine, settings)
