"""Score recognizers on labelled US plate crops (evaluation only: nothing here trains).

    python -m alpr.gpu.training.evaluate --crops ../shared/datasets/openalpr-us-crops

Reads `labels.csv` (file,state,plate) and scores, by exact match of the whole plate string on
the labels as shipped, overall and per state:
  own        the project's recognizer (alpr.gpu.ownrec) on the whole crop;
  ppocr      the PP-OCRv4 recognizer (the reader's RECOGNIZER) on the whole crop, folded to A-Z0-9;
  combined   own where its lowest character confidence is at least --min-confidence, else ppocr;
  reader     the default PlateReader on the crop as a picture (text lines, PP-OCRv4, format repair),
             counted right when the label is among its reads (--no-reader skips it: slow).
`--fold-o` also prints each score with the letter O read as digit 0, the convention of most
of these labels (DC VOTE is labelled DCV0TE); the shipped-label score stays the headline.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from alpr.gpu import ownrec, recognize
from alpr.gpu.backends import OnnxRuntimeBackend
from alpr.gpu.batching import run_batched
from alpr.gpu.models import RECOGNIZER, ModelFile


def load_crops(folder: Path, limit: int | None = None) -> list[tuple[str, str, str, np.ndarray]]:
    """(file, state, label, BGR image) per labelled crop, in file order."""
    with (folder / "labels.csv").open() as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["file"])
    out = []
    for row in rows[:limit]:
        image = cv2.imread(str(folder / row["file"]), cv2.IMREAD_COLOR)
        if image is not None:
            out.append((row["file"], row["state"], row["plate"], image))
    return out


def own_reader(backend: OnnxRuntimeBackend, model: ModelFile = ownrec.US_RECOGNIZER) -> Callable[[list[np.ndarray]], list[list[str]]]:
    recognizer = ownrec.PlateRecognizer(backend, model)
    return lambda crops: [[c.text] for c in recognizer.read(crops)]


def ppocr_reader(backend: OnnxRuntimeBackend) -> Callable[[list[np.ndarray]], list[list[str]]]:
    fold = recognize.AlphabetFold(backend.metadata(RECOGNIZER)["character"].splitlines())

    def read(crops: list[np.ndarray]) -> list[list[str]]:
        tensors = [recognize.prepare(c, fixed_width=True) for c in crops]
        return [[fold.decode(probs).text] for (probs,) in run_batched(backend, RECOGNIZER, tensors)]

    return read


def combined_reader(backend: OnnxRuntimeBackend, model: ModelFile, min_confidence: float) -> Callable[[list[np.ndarray]], list[list[str]]]:
    """The own recognizer where it is sure of every character, PP-OCRv4 on the whole crop elsewhere."""
    recognizer = ownrec.PlateRecognizer(backend, model)
    ppocr = ppocr_reader(backend)

    def read(crops: list[np.ndarray]) -> list[list[str]]:
        own = recognizer.read(crops)
        second = ppocr(crops)
        return [
            [o.text] if o.text and min(o.confidences) >= min_confidence else s for o, s in zip(own, second)
        ]

    return read


def plate_reader(backend: OnnxRuntimeBackend) -> Callable[[list[np.ndarray]], list[list[str]]]:
    from alpr.gpu.reader import PlateReader

    reader = PlateReader(backend)
    return lambda crops: [[r.text for r in reads] for reads in reader.read_batch(crops)]


def score(name: str, read: Callable, crops: list, fold_o: bool, batch: int = 32) -> dict[str, object]:
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    folded_hits = 0
    began = time.perf_counter()
    for start in range(0, len(crops), batch):
        part = crops[start : start + batch]
        for (_, state, label, _), reads in zip(part, read([c[3] for c in part])):
            ok = label in reads
            hits[state][0] += ok
            hits[state][1] += 1
            folded_hits += label.replace("O", "0") in {r.replace("O", "0") for r in reads}
    elapsed = time.perf_counter() - began
    total = sum(h[1] for h in hits.values())
    exact = sum(h[0] for h in hits.values()) / total
    result = {"name": name, "exact": exact, "folded": folded_hits / total, "ms": 1000 * elapsed / total, "states": dict(hits)}
    line = f"{name:8s} exact {exact:.3f} ({total} crops)"
    if fold_o:
        line += f"  O-as-0 {folded_hits / total:.3f}"
    print(line + f"  {result['ms']:.1f} ms/crop", flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=Path, default=Path("../shared/datasets/openalpr-us-crops"))
    parser.add_argument("--model", type=Path, default=None, help="an ONNX file other than the shipped one")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--own", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--reader", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--ppocr", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--min-confidence", type=float, default=0.8, help="combined: own read's lowest character confidence")
    parser.add_argument("--fold-o", action="store_true")
    parser.add_argument("--per-state", action="store_true")
    args = parser.parse_args(argv)
    crops = load_crops(args.crops, args.limit)
    backend = OnnxRuntimeBackend(threads=1)
    model = ownrec.US_RECOGNIZER
    if args.model is not None:
        model = ModelFile("us-recognizer-candidate", "alpr.gpu", str(args.model.resolve()), "a local file", "Apache-2.0")
    results = [score("own", own_reader(backend, model), crops, args.fold_o)] if args.own else []
    if args.ppocr:
        results.append(score("ppocr", ppocr_reader(backend), crops, args.fold_o))
    if args.own and args.ppocr:
        results.append(score("combined", combined_reader(backend, model, args.min_confidence), crops, args.fold_o))
    if args.reader:
        results.append(score("reader", plate_reader(backend), crops, args.fold_o, batch=1))
    if args.per_state:
        states = sorted(results[0]["states"])
        print("state  n   " + "  ".join(f"{r['name']:>6s}" for r in results))
        for state in states:
            n = results[0]["states"][state][1]
            print(f"{state:5s} {n:3d}   " + "  ".join(f"{r['states'][state][0] / n:6.3f}" for r in results))


if __name__ == "__main__":
    main()
