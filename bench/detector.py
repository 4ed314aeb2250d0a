"""Plate detector benchmark: recall of plate boxes on labelled end-to-end scenes, proposals and time per image.

Scores the project's own detector (`alpr.gpu.platefinder`, Apache-2.0) and, for reference, the
opt-in AGPL platedet (`alpr.gpu.detect`), each alone on one ONNX Runtime thread: recall at
IoU >= 0.5 against the labelled box, recall by a looser rule (a returned box's centre lies
inside the labelled box: enough for a reader that pads its crops), proposals per image, and
milliseconds per image (median; letterbox, inference and decoding, not reading the JPEG).
The evaluation sets are AGPL-3.0 and for measuring only: nothing here trains or tunes on them.

    python bench/detector.py [--sets ../shared/datasets/openalpr-us] [--detector own|platedet ...]
        [--model gpu/weights/us_plate_det.onnx] [--min-score 0.3] [--size 640] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alpr.gpu import detect, platefinder
from alpr.gpu.backends import OnnxRuntimeBackend
from alpr.gpu.models import DETECTOR
from alpr.gpu.training.detector import labelled_folder, score_detections

DATASETS = REPO.parent / "shared" / "datasets"


def own(model: Path | None, min_score: float, size: int):
    finder = platefinder.OwnPlateDetector(model, threads=1, min_score=min_score, size=size)
    return finder.detect


def platedet(min_score: float, size: int):
    backend = OnnxRuntimeBackend(threads=1)

    def run(image: np.ndarray) -> list[detect.Detection]:
        tensor, transform = detect.prepare(image, size)
        heads = backend.run(DETECTOR, tensor[None])
        return detect.decode([h[0] for h in heads], transform, image.shape, min_score)

    return run


def measure(name: str, find, folder: Path) -> dict[str, object]:
    found, truth, ms = [], [], []
    for image_path, labels in labelled_folder(folder):
        image = cv2.imread(str(image_path))
        began = time.perf_counter()
        dets = find(image)
        ms.append((time.perf_counter() - began) * 1000)
        found.append([d.box for d in dets])
        truth.append(labels)
    scores = score_detections(found, truth)
    return {"detector": name, "set": folder.name, **{k: round(v, 3) for k, v in scores.items()},
            "ms_median": round(float(np.median(ms)), 1), "ms_p90": round(float(np.percentile(ms, 90)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=Path, nargs="+", default=[DATASETS / "openalpr-us"])
    parser.add_argument("--detector", nargs="+", choices=("own", "platedet"), default=["own", "platedet"])
    parser.add_argument("--model", type=Path, default=None, help="own detector's ONNX file (default: the shipped one)")
    parser.add_argument("--min-score", type=float, default=platefinder.MIN_SCORE)
    parser.add_argument("--size", type=int, default=platefinder.SIZE, help="letterbox long side, both detectors")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rows = []
    for folder in args.sets:
        for name in args.detector:
            find = own(args.model, args.min_score, args.size) if name == "own" else platedet(args.min_score, args.size)
            row = measure(name, find, folder)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
