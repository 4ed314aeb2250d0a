"""Accuracy benchmark: read the OpenALPR end-to-end sets and US plate crops, and score the reader.

Per end-to-end set: exact whole-plate match (the labelled plate is among an image's reads), detection
recall (a returned box with IoU >= 0.5 against the labelled box), character accuracy
(1 - edit distance / label length against the best-matching read, floored at 0), time in
PlateReader.read per image (wall clock and process CPU time, median and p90), and why the
misses missed. Prints error classes and image positions (set#n), never plate text: some sets name
their images by the plate. A crop set (a folder with labels.csv: file,state,plate) is scored on
PlateReader.read_plates (the reader's path for a plate detector's crops), exact match overall and
per state; "detection recall" there is the share of crops with any read. Each set is read with
its own region (from the folder name: -us, -eu, -br; default us), as OpenALPR's benchmark passes
`-c`.

    python bench/accuracy.py [--sets DIR ...] [--backend onnxruntime] [--threads 1] [--region us|na|eu|br|any]
        [--detector text-lines|platedet] [--recognizer ppocrv6|ppocrv4] [--text-size PX] [--second-opinion] [--json OUT]
    python bench/accuracy.py --frame-timing ../shared/datasets/openalpr-us   # CPU ms per 1280x720 frame
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alpr.gpu import PlateText, open_reader
from alpr.gpu.models import RECOGNIZERS
from alpr.gpu.plates import REGION_FORMATS, best_fit
from alpr.gpu.reader import PlateReader, ReaderSettings

DATASETS = REPO.parent / "shared" / "datasets"
DEFAULT_SETS = [DATASETS / name for name in ("openalpr-us", "openalpr-us-crops", "openalpr-eu", "openalpr-br")]
IOU_HIT = 0.5
IOU_NEAR = 0.2  # below this no returned box is even near the plate: a missed detection
LOOKALIKES = {
    frozenset(pair)
    for pair in ("0O", "0D", "0Q", "1I", "1T", "2Z", "5S", "6G", "8B", "4A", "7T", "DO", "IJ", "MN", "UV")
}


@dataclass(frozen=True)
class Label:
    box: tuple[int, int, int, int]
    text: str


@dataclass
class SetScore:
    name: str
    images: int = 0
    exact: int = 0
    plates: int = 0
    detected: int = 0
    stray_reads: int = 0  # reads with no labelled plate near them: false positives or unlabelled plates
    char_accuracy_sum: float = 0.0
    ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # process CPU time: robust to a busy machine
    errors: Counter[str] = field(default_factory=Counter)
    misses: list[tuple[str, str]] = field(default_factory=list)
    states: dict[str, list[int]] = field(default_factory=dict)  # crop sets: state -> [exact, crops]

    def summary(self) -> dict[str, object]:
        per_state = {s: round(hit / n, 3) for s, (hit, n) in sorted(self.states.items())}
        return {
            "set": self.name,
            "images": self.images,
            "exact_match": round(self.exact / self.images, 3),
            "detection_recall": round(self.detected / self.plates, 3),
            "char_accuracy": round(self.char_accuracy_sum / self.plates, 3),
            "stray_reads_per_image": round(self.stray_reads / self.images, 3),
            "ms_median": round(statistics.median(self.ms), 1),
            "ms_p90": round(float(np.percentile(self.ms, 90)), 1),
            "cpu_ms_median": round(statistics.median(self.cpu_ms), 1),
            "cpu_ms_p90": round(float(np.percentile(self.cpu_ms, 90)), 1),
            "errors": dict(self.errors.most_common()),
            "misses": [{"image": image, "class": cls} for image, cls in self.misses],
            **({"per_state": per_state, "crops_per_state": {s: n for s, (_, n) in self.states.items()}}
               if self.states else {}),
        }


def load_labels(path: Path) -> list[Label]:
    labels = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 6:
            x, y, w, h = (int(v) for v in parts[1:5])
            labels.append(Label((x, y, x + w, y + h), parts[5].strip().upper()))
    return labels


def iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def classify(label: Label, reads: list[PlateText], formats: tuple[str, ...]) -> str:
    """Why an image missed: the first matching class, from coarse to fine."""
    if not reads:
        return "nothing read"
    near = [r for r in reads if iou(label.box, r.box) >= IOU_NEAR]
    if not near:
        return "missed detection (reads elsewhere only)"
    best = min(near, key=lambda r: edit_distance(r.text, label.text)).text
    distance = edit_distance(best, label.text)
    if distance > len(label.text) // 2:
        return "other text read (wrong line or region)"
    if len(best) > len(label.text):
        return "extra characters"
    if len(best) < len(label.text):
        return "missing characters"
    pairs = [frozenset((x, y)) for x, y in zip(best, label.text) if x != y]
    if all(p in LOOKALIKES for p in pairs):
        if best_fit(best, formats) == (best, 0) and best_fit(label.text, formats) != (label.text, 0):
            return "look-alike where the label breaks the plate format (e.g. O in a digit position)"
        return "look-alike substitution (0/O, 1/I, 8/B...)"
    return "other substitution"


def region_of(folder: Path) -> str:
    """Plate region a set is read with, as OpenALPR's own benchmark passes `-c eu` / `-c br`."""
    name = folder.name.removesuffix("-crops")
    return next((r for r in REGION_FORMATS if name.endswith(f"-{r}")), "us")


def score_crops(reader: PlateReader, folder: Path) -> SetScore:
    """One tight plate crop per image (labels.csv): exact = the reader's first read is the label."""
    score = SetScore(folder.name)
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    for n, row in enumerate(rows, 1):
        image = cv2.imread(str(folder / row["file"]))
        label = Label((0, 0, image.shape[1], image.shape[0]), row["plate"].strip().upper())
        start, cpu_start = time.perf_counter(), time.process_time()
        reads = [read for read in reader.read_plates([image]) if read is not None]
        score.ms.append((time.perf_counter() - start) * 1000)
        score.cpu_ms.append((time.process_time() - cpu_start) * 1000)
        score.images += 1
        score.plates += 1
        hit = bool(reads) and reads[0].text == label.text
        score.exact += hit
        tally = score.states.setdefault(row["state"].lower(), [0, 0])
        tally[0] += hit
        tally[1] += 1
        if not hit:
            # The crop is the plate: compare the text only (the read's line is inside the crop).
            where = Label(reads[0].box, label.text) if reads else label
            cls = classify(where, reads[:1], REGION_FORMATS[reader.settings.region])
            score.errors[cls] += 1
            score.misses.append((f"{folder.name}#{n}", cls))
        score.detected += bool(reads)  # crops: "detection" is a plate read on the crop at all
        score.stray_reads += max(0, len(reads) - 1)
        if reads:
            score.char_accuracy_sum += max(0.0, 1 - edit_distance(reads[0].text, label.text) / len(label.text))
        if n % 100 == 0 or n == len(rows):
            print(f"  {folder.name}: {n}/{len(rows)}", file=sys.stderr, flush=True)
    return score


def score_set(reader: PlateReader, folder: Path) -> SetScore:
    score = SetScore(folder.name)
    images = sorted(folder.glob("*.jpg"))
    for n, path in enumerate(images, 1):
        labels = load_labels(path.with_suffix(".txt"))
        image = cv2.imread(str(path))
        start, cpu_start = time.perf_counter(), time.process_time()
        reads = reader.read(image)
        score.ms.append((time.perf_counter() - start) * 1000)
        score.cpu_ms.append((time.process_time() - cpu_start) * 1000)
        texts = {r.text for r in reads}
        score.images += 1
        if any(label.text in texts for label in labels):
            score.exact += 1
        elif labels:
            cls = classify(labels[0], reads, REGION_FORMATS[reader.settings.region])
            score.errors[cls] += 1
            score.misses.append((f"{folder.name}#{n}", cls))  # by position: some file names are plate text
        score.stray_reads += sum(all(iou(label.box, r.box) < IOU_NEAR for label in labels) for r in reads)
        for label in labels:
            score.plates += 1
            score.detected += any(iou(label.box, r.box) >= IOU_HIT for r in reads)
            if reads:
                distance = min(edit_distance(r.text, label.text) for r in reads)
                score.char_accuracy_sum += max(0.0, 1 - distance / len(label.text))
        if n % 20 == 0 or n == len(images):
            print(f"  {folder.name}: {n}/{len(images)}", file=sys.stderr, flush=True)
    return score


FRAME = (1280, 720)
FRAME_TARGET_MS = 150.0


def time_frames(reader: PlateReader, folder: Path) -> dict[str, object]:
    """CPU ms of PlateReader.read per 1280x720 frame, frames without a plate included: each
    scene of an end-to-end set scaled and padded to 1280x720, once as is and once with its
    labelled plates painted over (the same clutter, no plate)."""
    with_plate: list[float] = []
    without: list[float] = []
    for path in sorted(folder.glob("*.jpg")):
        image = cv2.imread(str(path))
        scale = min(FRAME[0] / image.shape[1], FRAME[1] / image.shape[0])
        frame = np.zeros((FRAME[1], FRAME[0], 3), np.uint8)
        resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
        frame[: resized.shape[0], : resized.shape[1]] = resized
        blank = frame.copy()
        for label in load_labels(path.with_suffix(".txt")):
            x1, y1, x2, y2 = (round(v * scale) for v in label.box)
            patch = blank[y1:y2, x1:x2]
            if patch.size:
                blank[y1:y2, x1:x2] = patch.reshape(-1, 3).mean(axis=0).astype(np.uint8)
        for target, picture in ((with_plate, frame), (without, blank)):
            start = time.process_time()
            reader.read(picture)
            target.append((time.process_time() - start) * 1000)
    both = with_plate + without

    def stats(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values), 1), "p90": round(float(np.percentile(values, 90)), 1)}

    return {"set": folder.name, "frames": len(both), "cpu_ms_all": stats(both), "cpu_ms_with_plate": stats(with_plate),
            "cpu_ms_without_plate": stats(without), "target_median_ms": FRAME_TARGET_MS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", type=Path, default=DEFAULT_SETS)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--region", choices=sorted(REGION_FORMATS), help="plate formats for every set (default: from each set's name)"
    )
    parser.add_argument(
        "--detector",
        choices=("text-lines", "platedet"),
        default="text-lines",
        help="text-lines (default): Apache-2.0 PP-OCRv4 models only; platedet: opt-in AGPL-3.0 plate detector",
    )
    parser.add_argument("--recognizer", choices=sorted(RECOGNIZERS), default=ReaderSettings.recognizer)
    parser.add_argument("--text-size", type=int, default=ReaderSettings.text_size, help="text detector long side")
    parser.add_argument(
        "--second-opinion", action="store_true", help="also read with the project's own recognizer (gpu/ownrec.py)"
    )
    parser.add_argument("--text-lines-only", action="store_true", help=argparse.SUPPRESS)  # the old flag: now the default
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--frame-timing", type=Path, metavar="SET", help="only time 1280x720 frames made from this end-to-end set"
    )
    args = parser.parse_args()

    cv2.setNumThreads(args.threads)  # OpenCV's own pool would otherwise add cores to a "one core" figure
    if args.frame_timing:
        reader = open_reader(
            args.backend,
            threads=args.threads,
            settings=ReaderSettings(
                region=args.region or region_of(args.frame_timing),
                recognizer=args.recognizer,
                text_size=args.text_size,
                second_opinion=args.second_opinion,
            ),
        )
        reader.read(np.zeros((720, 1280, 3), dtype=np.uint8))
        timing = {"model_version": reader.model_version, **time_frames(reader, args.frame_timing)}
        print(json.dumps(timing))
        if args.json:
            args.json.write_text(json.dumps(timing, indent=2))
        return
    results = []
    for folder in args.sets:
        reader = open_reader(
            args.backend,
            threads=args.threads,
            settings=ReaderSettings(
                region=args.region or region_of(folder),
                plate_detector=args.detector == "platedet",
                recognizer=args.recognizer,
                text_size=args.text_size,
                second_opinion=args.second_opinion,
            ),
        )
        reader.read(np.zeros((480, 640, 3), dtype=np.uint8))  # warm-up: session creation is not per-image time
        scored = score_crops(reader, folder) if (folder / "labels.csv").is_file() else score_set(reader, folder)
        summary = {"model_version": reader.model_version, **scored.summary()}
        results.append(summary)
        print(
            f"{summary['set']:<14} images {summary['images']:>4}  exact {summary['exact_match']:.3f}  "
            f"det-recall {summary['detection_recall']:.3f}  char-acc {summary['char_accuracy']:.3f}  "
            f"stray reads/img {summary['stray_reads_per_image']:.2f}  "
            f"ms median {summary['ms_median']:.0f} p90 {summary['ms_p90']:.0f}  "
            f"cpu-ms median {summary['cpu_ms_median']:.0f} p90 {summary['cpu_ms_p90']:.0f}"
        )
        for cls, count in summary["errors"].items():
            print(f"    {count:>3}  {cls}")
        if "per_state" in summary:
            counts = summary["crops_per_state"]
            print("    per state: " + "  ".join(f"{s} {v:.2f} ({counts[s]})" for s, v in summary["per_state"].items()))
    if args.json:
        payload = {
            "backend": args.backend,
            "threads": args.threads,
            "region": args.region,
            "detector": args.detector,
            "recognizer": args.recognizer,
            "text_size": args.text_size,
            "second_opinion": args.second_opinion,
            "sets": results,
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
