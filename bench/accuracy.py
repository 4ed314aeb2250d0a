"""Accuracy benchmark: read the OpenALPR end-to-end sets and score the reader.

Per set: exact whole-plate match (the labelled plate is among an image's reads), detection
recall (a returned box with IoU >= 0.5 against the labelled box), character accuracy
(1 - edit distance / label length against the best-matching read, floored at 0), time in
PlateReader.read per image (median, p90), and why the misses missed. Prints image names and
error classes, never plate text.

    python bench/accuracy.py [--sets DIR ...] [--backend onnxruntime] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gpu import PlateText, open_reader  # noqa: E402

DEFAULT_SETS = [REPO.parent / "shared" / "datasets" / name for name in ("openalpr-eu", "openalpr-br")]
IOU_HIT = 0.5
IOU_NEAR = 0.2  # below this no returned box is even near the plate: a missed detection
LOOKALIKES = {frozenset(pair) for pair in ("0O", "0D", "0Q", "1I", "1T", "2Z", "5S", "6G", "8B", "4A", "7T", "DO", "IJ", "MN", "UV")}


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
    char_accuracy_sum: float = 0.0
    ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    misses: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        ms = sorted(self.ms)
        return {
            "set": self.name,
            "images": self.images,
            "exact_match": round(self.exact / self.images, 3),
            "detection_recall": round(self.detected / self.plates, 3),
            "char_accuracy": round(self.char_accuracy_sum / self.plates, 3),
            "ms_median": round(statistics.median(ms), 1),
            "ms_p90": round(float(np.percentile(ms, 90)), 1),
            "errors": dict(self.errors.most_common()),
            "misses": [{"image": image, "class": cls} for image, cls in self.misses],
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


def classify(label: Label, reads: list[PlateText]) -> str:
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
        return "look-alike substitution (0/O, 1/I, 8/B...)"
    return "other substitution"


def score_set(reader, folder: Path) -> SetScore:
    score = SetScore(folder.name)
    images = sorted(folder.glob("*.jpg"))
    for n, path in enumerate(images, 1):
        labels = load_labels(path.with_suffix(".txt"))
        image = cv2.imread(str(path))
        start = time.perf_counter()
        reads = reader.read(image)
        score.ms.append((time.perf_counter() - start) * 1000)
        texts = {r.text for r in reads}
        score.images += 1
        if any(label.text in texts for label in labels):
            score.exact += 1
        elif labels:
            cls = classify(labels[0], reads)
            score.errors[cls] += 1
            score.misses.append((path.name, cls))
        for label in labels:
            score.plates += 1
            score.detected += any(iou(label.box, r.box) >= IOU_HIT for r in reads)
            if reads:
                distance = min(edit_distance(r.text, label.text) for r in reads)
                score.char_accuracy_sum += max(0.0, 1 - distance / len(label.text))
        if n % 20 == 0 or n == len(images):
            print(f"  {folder.name}: {n}/{len(images)}", file=sys.stderr, flush=True)
    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", type=Path, default=DEFAULT_SETS)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    reader = open_reader(args.backend, threads=args.threads)
    reader.read(np.zeros((480, 640, 3), dtype=np.uint8))  # warm-up: session creation is not per-image time
    results = []
    for folder in args.sets:
        summary = score_set(reader, folder).summary()
        results.append(summary)
        print(
            f"{summary['set']:<14} images {summary['images']:>4}  exact {summary['exact_match']:.3f}  "
            f"det-recall {summary['detection_recall']:.3f}  char-acc {summary['char_accuracy']:.3f}  "
            f"ms median {summary['ms_median']:.0f} p90 {summary['ms_p90']:.0f}"
        )
        for cls, count in summary["errors"].items():
            print(f"    {count:>3}  {cls}")
    if args.json:
        payload = {"model_version": reader.model_version, "backend": args.backend, "threads": args.threads, "sets": results}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
