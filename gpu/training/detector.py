"""Train the US plate detector on synthetic road scenes, export it to ONNX, print its validation scores.

    python -m alpr.gpu.training.detector --seed 1 --scenes 3000 --minutes 25 --threads 1 --out gpu/weights/us_plate_det.onnx

Everything comes from the seed: the training set is scenes (seed, 0..N-1) of
`alpr.gpu.training.scenes`, the validation set scenes (seed, VALIDATION_OFFSET + i), so the two
never overlap; torch is seeded too. The run is bounded by --minutes or --steps; --device cuda
trains the same model on a GPU. Each step takes random crops of rescaled training scenes, so a
plate is seen at many sizes. The rendered set is cached under --cache (PNG-encoded, one .npz per
seed and size), never committed. --eval-dir also scores the exported model on a labelled folder
(`NAME.jpg` + `NAME.txt` as in ../shared/datasets/): for measuring only, never for training.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from pathlib import Path

import cv2
import numpy as np
from alpr.gpu import platefinder
from alpr.gpu.training import scenes

log = logging.getLogger("alpr.gpu.training.detector")

VALIDATION_OFFSET = 10_000_000  # scene indices of the validation set start here
GENERATOR_VERSION = "scenes-1"  # bump when scenes.py (or synth.py) changes what a (seed, index) renders
CROP_H, CROP_W = 320, 480  # training crop: multiples of 32; the graph itself takes any such size
IOU_HIT = 0.5


def render_set(seed: int, start: int, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Scenes (seed, start..start+count-1) PNG-encoded (uint8 byte arrays) and their boxes."""
    encoded, boxes = [], []
    for i in range(count):
        scene = scenes.render_scene(seed, start + i)
        encoded.append(cv2.imencode(".png", scene.image, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1])
        boxes.append(scene.boxes)
    return encoded, boxes


def cached_set(cache: Path, seed: int, start: int, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """render_set, kept in cache/ under a name that changes with the generator."""
    path = cache / f"{GENERATOR_VERSION}-s{seed}-{start}-{count}.npz"
    if path.is_file():
        data = np.load(path)
        offsets, box_offsets = data["offsets"], data["box_offsets"]
        blob, flat = data["blob"], data["boxes"]
        return ([blob[offsets[i] : offsets[i + 1]] for i in range(count)],
                [flat[box_offsets[i] : box_offsets[i + 1]] for i in range(count)])
    began = time.monotonic()
    encoded, boxes = render_set(seed, start, count)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(
        path, blob=np.concatenate(encoded), offsets=np.cumsum([0] + [len(e) for e in encoded]),
        boxes=np.concatenate(boxes).reshape(-1, 4), box_offsets=np.cumsum([0] + [len(b) for b in boxes]),
    )
    log.info("rendered %d scenes in %.0f s -> %s", count, time.monotonic() - began, path)
    return encoded, boxes


def build_model():
    """Depthwise-separable backbone to stride 32, a top-down neck back to stride 4, two 1x1 heads."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def cbr(i: int, o: int, k: int = 3, s: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    def sep(i: int, o: int, s: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(i, i, 3, s, 1, groups=i, bias=False), nn.BatchNorm2d(i), nn.ReLU(inplace=True),
            nn.Conv2d(i, o, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
        )

    class CenterNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s4 = nn.Sequential(cbr(3, 16, 3, 2), sep(16, 32, 2), sep(32, 32))
            self.s8 = nn.Sequential(sep(32, 64, 2), sep(64, 64))
            self.s16 = nn.Sequential(sep(64, 128, 2), sep(128, 128), sep(128, 128))
            self.s32 = nn.Sequential(sep(128, 320, 2), sep(320, 320), sep(320, 320))
            self.l32, self.l16, self.l8, self.l4 = (cbr(c, 64, 1) for c in (320, 128, 64, 32))
            self.m16, self.m8, self.m4 = sep(64, 64), sep(64, 64), sep(64, 48)
            self.heat = nn.Sequential(sep(48, 48), nn.Conv2d(48, 1, 1))
            self.geometry = nn.Sequential(sep(48, 48), nn.Conv2d(48, 4, 1))
            nn.init.constant_(self.heat[-1].bias, -2.19)  # start at p = 0.1: the focal loss's usual prior

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(N, 3, H, W) RGB in [0, 1] -> heatmap logits (N, 1, H/4, W/4), geometry (N, 4, H/4, W/4)."""
            c4 = self.s4(x)
            c8 = self.s8(c4)
            c16 = self.s16(c8)
            c32 = self.s32(c16)
            p = self.l32(c32)
            p = self.m16(self.l16(c16) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
            p = self.m8(self.l8(c8) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
            p = self.m4(self.l4(c4) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
            return self.heat(p), self.geometry(p)

    return CenterNet()


def wrap_for_export(model):
    """The exported graph: heatmap as probabilities, so the runtime needs no sigmoid of its own."""
    from torch import nn

    class Exported(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            heat, geometry = self.inner(x)
            return heat.sigmoid(), geometry

    return Exported(model)


def targets(boxes: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes in input pixels -> heatmap target (1, h, w), geometry target (4, h, w), its weight (1, h, w).

    Each plate is an elongated Gaussian around its centre (sigma a sixth of its size in cells, at
    least 0.6); geometry (centre offset in cells, log width and height in cells) is learnt at
    every cell where that Gaussian is above 0.3, weighted by it, so neighbours of the peak also
    predict the right box.
    """
    s = platefinder.STRIDE
    heat = np.zeros((1, h, w), np.float32)
    geometry = np.zeros((4, h, w), np.float32)
    weight = np.zeros((1, h, w), np.float32)
    ys, xs = np.arange(h, dtype=np.float32)[:, None] + 0.5, np.arange(w, dtype=np.float32)[None, :] + 0.5
    for x1, y1, x2, y2 in boxes:
        bw, bh = (x2 - x1) / s, (y2 - y1) / s
        if bw < 1.0 or bh < 0.5:
            continue
        cx, cy = (x1 + x2) / 2 / s, (y1 + y2) / 2 / s
        sx, sy = max(bw / 6, 0.6), max(bh / 6, 0.6)
        g = np.exp(-((xs - cx) ** 2) / (2 * sx * sx) - ((ys - cy) ** 2) / (2 * sy * sy)).astype(np.float32)
        ci, cj = min(h - 1, int(cy)), min(w - 1, int(cx))
        g[ci, cj] = 1.0  # the centre cell is the positive the focal loss counts
        take = g > weight[0]
        take &= g > 0.3
        geometry[0][take] = (cx - xs + 0 * ys)[take]
        geometry[1][take] = (cy - ys + 0 * xs)[take]
        geometry[2][take] = np.log(bw)
        geometry[3][take] = np.log(bh)
        weight[0][take] = g[take]
        heat[0] = np.maximum(heat[0], g)
    return heat, geometry, weight


def focal_loss(logits, target):
    """CenterNet's penalty-reduced focal loss, summed over cells and divided by the number of plates."""
    import torch

    p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1.0).float()
    neg = 1.0 - pos
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p**2 * (1 - target) ** 4 * neg
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def random_crop(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rescale a scene by 0.5-1.5 and cut a CROP_H x CROP_W window (grey padding where it runs out).

    Plates cut by the window keep their label only if most of them is inside: a sliver of a
    plate is neither a positive nor worth a box.
    """
    scale = float(np.exp(rng.uniform(np.log(0.5), np.log(1.5))))
    h, w = image.shape[:2]
    image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    boxes = boxes * scale
    h, w = image.shape[:2]
    if len(boxes) and rng.random() < 0.7:  # centre the window near a plate most of the time
        b = boxes[rng.integers(len(boxes))]
        x0 = int((b[0] + b[2]) / 2 - rng.uniform(0.1, 0.9) * CROP_W)
        y0 = int((b[1] + b[3]) / 2 - rng.uniform(0.1, 0.9) * CROP_H)
    else:
        x0, y0 = int(rng.integers(min(0, w - CROP_W), max(1, w - CROP_W + 1))), int(rng.integers(min(0, h - CROP_H), max(1, h - CROP_H + 1)))
    canvas = np.full((CROP_H, CROP_W, 3), 114, np.uint8)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + CROP_W), min(h, y0 + CROP_H)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    moved = boxes - np.float32([x0, y0, x0, y0])
    clipped = moved.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, CROP_W)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, CROP_H)
    area = lambda b: (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)  # noqa: E731
    keep = area(clipped) >= 0.6 * np.maximum(area(moved), 1e-6)
    return canvas, clipped[keep]


def to_tensor_input(image_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 -> (3, H, W) float32 RGB in [0, 1], as platefinder.to_input makes after its letterbox."""
    return image_bgr[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0


def batch(encoded, boxes, indices, rng):
    images, heats, geoms, weights = [], [], [], []
    for i in indices:
        image = cv2.imdecode(encoded[i], cv2.IMREAD_COLOR)
        crop, crop_boxes = random_crop(image, boxes[i], rng)
        if rng.random() < 0.1:  # grey frames (night IR cameras)
            crop = cv2.cvtColor(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        heat, geometry, weight = targets(crop_boxes, CROP_H // platefinder.STRIDE, CROP_W // platefinder.STRIDE)
        images.append(to_tensor_input(crop))
        heats.append(heat)
        geoms.append(geometry)
        weights.append(weight)
    return (np.stack(images), np.stack(heats), np.stack(geoms), np.stack(weights))


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score_detections(found: list[list[tuple[float, ...]]], truth: list[np.ndarray]) -> dict[str, float]:
    """Recall and precision at IoU >= 0.5 (each labelled box matched at most once), recall by a
    looser rule (a detection's centre inside the labelled box), and proposals per image."""
    plates = hits = centre_hits = proposals = true_props = 0
    for dets, labels in zip(found, truth):
        plates += len(labels)
        proposals += len(dets)
        used: set[int] = set()
        for lab in labels:
            best = max(((iou(d, lab), k) for k, d in enumerate(dets) if k not in used), default=(0.0, -1))
            if best[0] >= IOU_HIT:
                hits += 1
                used.add(best[1])
            if any(lab[0] <= (d[0] + d[2]) / 2 <= lab[2] and lab[1] <= (d[1] + d[3]) / 2 <= lab[3] for d in dets):
                centre_hits += 1
        true_props += len(used)
    return {
        "recall": hits / max(plates, 1), "precision": true_props / max(proposals, 1),
        "centre_recall": centre_hits / max(plates, 1), "proposals_per_image": proposals / max(len(found), 1),
        "plates": float(plates), "images": float(len(found)),
    }


def evaluate(model, encoded, boxes, device: str = "cpu", min_score: float = platefinder.MIN_SCORE) -> dict[str, float]:
    """Detect on each validation scene through the runtime's own letterbox and decode."""
    import torch

    model.eval()
    found = []
    with torch.no_grad():
        for data in encoded:
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
            tensor, transform = platefinder.to_input(image)
            heat, geometry = model(torch.from_numpy(tensor[None]).to(device))
            dets = platefinder.decode(heat.sigmoid()[0].cpu().numpy(), geometry[0].cpu().numpy(), transform,
                                      image.shape, min_score)
            found.append([d.box for d in dets])
    model.train()
    return score_detections(found, boxes)


def labelled_folder(folder: Path) -> list[tuple[Path, np.ndarray]]:
    """NAME.jpg with NAME.txt beside it (tab-separated: file x y w h PLATE, one line per plate)."""
    out = []
    for label_file in sorted(folder.glob("*.txt")):
        image = label_file.with_suffix(".jpg")
        if not image.is_file():
            continue
        rows = []
        for line in label_file.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 5:
                x, y, w, h = (int(v) for v in parts[1:5])
                rows.append((x, y, x + w, y + h))
        out.append((image, np.array(rows, np.float32).reshape(-1, 4)))
    return out


def evaluate_folder(onnx_path: Path, folder: Path) -> dict[str, float]:
    """The exported graph on a labelled folder, through OwnPlateDetector (one thread): measuring only."""
    detector = platefinder.OwnPlateDetector(onnx_path, threads=1)
    found, truth, ms = [], [], []
    for image_path, labels in labelled_folder(folder):
        image = cv2.imread(str(image_path))
        began = time.perf_counter()
        dets = detector.detect(image)
        ms.append((time.perf_counter() - began) * 1000)
        found.append([d.box for d in dets])
        truth.append(labels)
    scores = score_detections(found, truth)
    scores["ms_median"] = float(np.median(ms)) if ms else 0.0
    return scores


def export(model, out: Path, seed: int, scores: dict[str, float]) -> None:
    """ONNX (opset 17, dynamic batch, height and width), metadata for the runtime, checked against torch."""
    import onnx
    import onnxruntime as ort
    import torch

    model = model.cpu().eval()
    exported = wrap_for_export(model).eval()
    dummy = torch.zeros(2, 3, 384, 640)
    out.parent.mkdir(parents=True, exist_ok=True)
    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        exported, (dummy,), str(out), opset_version=17, dynamo=False,
        input_names=[platefinder.INPUT_NAME], output_names=[platefinder.HEATMAP_NAME, platefinder.GEOMETRY_NAME],
        dynamic_axes={platefinder.INPUT_NAME: axes, platefinder.HEATMAP_NAME: axes, platefinder.GEOMETRY_NAME: axes},
    )
    graph = onnx.load(str(out))
    meta = {
        "stride": str(platefinder.STRIDE), "size": str(platefinder.SIZE), "licence": "Apache-2.0",
        "training": f"alpr.gpu.training.detector --seed {seed}", "generator": GENERATOR_VERSION,
        "input": "RGB float32 in [0, 1], letterboxed (grey 114 padding), H and W multiples of 32",
        "geometry": "dx, dy (centre offset in cells), log width, log height (in cells of stride px)",
        "validation": " ".join(f"{k}={v:.4f}" for k, v in sorted(scores.items())),
    }
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(out))
    probe = torch.from_numpy(np.random.default_rng(seed).uniform(0, 1, (1, 3, 224, 320)).astype(np.float32))
    with torch.no_grad():
        expected = [t.numpy() for t in exported(probe)]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {platefinder.INPUT_NAME: probe.numpy()})
    diff = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
    if diff > 1e-3:
        raise SystemExit(f"onnxruntime and torch disagree by {diff} on the exported graph")
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"exported {out} ({out.stat().st_size / 1e6:.2f} MB) sha256 {digest}; onnxruntime vs torch max diff {diff:.2e}")


def _report(scores: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in scores.items())


def train(args: argparse.Namespace) -> dict[str, float]:
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(args.seed)
    encoded, boxes = cached_set(args.cache, args.seed, 0, args.scenes)
    val_encoded, val_boxes = cached_set(args.cache, args.seed, VALIDATION_OFFSET, args.validation)
    model = build_model()
    if args.init is not None:  # continue from an earlier run's weights (the model card lists each run)
        model.load_state_dict(torch.load(args.init, map_location="cpu"))
    model = model.to(args.device)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.2f} M parameters; {len(encoded)} training and {len(val_encoded)} validation scenes")
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    total_steps = args.steps  # without --steps: planned from the pace of the first 10 steps
    began = time.monotonic()
    step, losses, schedule = 0, [], None
    scores: dict[str, float] = {}
    while True:
        idx = rng.integers(len(encoded), size=args.batch)
        x, heat_t, geo_t, weight_t = (torch.from_numpy(a).to(args.device) for a in batch(encoded, boxes, idx, rng))
        heat, geometry = model(x)
        heat_loss = focal_loss(heat, heat_t)
        geo_loss = ((geometry - geo_t).abs() * weight_t).sum() / weight_t.sum().clamp(min=1.0)
        loss = heat_loss + args.geometry_weight * geo_loss
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimiser.step()
        losses.append((float(heat_loss.detach()), float(geo_loss.detach())))
        step += 1
        if step == 10 and total_steps is None:
            pace = (time.monotonic() - began) / 10
            total_steps = max(20, int(args.minutes * 60 / pace))
            print(f"{pace * 1000:.0f} ms per step of {args.batch}: planning {total_steps} steps", flush=True)
        if total_steps is not None and schedule is None:
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=total_steps + 1,
                                                           pct_start=0.1)
            for _ in range(step):
                schedule.step()
        if schedule is not None:
            schedule.step()
        if step % args.log_every == 0:
            recent = np.mean(losses[-args.log_every:], axis=0)
            print(f"step {step}/{total_steps} heat {recent[0]:.3f} geometry {recent[1]:.3f} "
                  f"{time.monotonic() - began:.0f} s", flush=True)
        if args.eval_every and step % args.eval_every == 0 and step < (total_steps or 0):
            interim = evaluate(model, val_encoded[:100], val_boxes[:100], args.device)
            print(f"step {step} validation (first 100): {_report(interim)}", flush=True)
            if args.checkpoint:  # a usable state before the run ends
                torch.save(model.state_dict(), args.checkpoint)
        if total_steps is not None and step >= total_steps:
            break
    scores = evaluate(model, val_encoded, val_boxes, args.device)
    print(f"validation (held-out synthetic, IoU >= {IOU_HIT}, min score {platefinder.MIN_SCORE}): {_report(scores)}")
    print(f"training took {time.monotonic() - began:.0f} s for {step} steps")
    if args.checkpoint:
        torch.save(model.state_dict(), args.checkpoint)
    export(model, args.out, args.seed, scores)
    if args.eval_dir is not None and not args.eval_dir.is_dir():
        print(f"no labelled folder at {args.eval_dir}: skipped")
    elif args.eval_dir is not None:
        real = evaluate_folder(args.out, args.eval_dir)
        print(f"evaluation only ({args.eval_dir}): {_report(real)}")
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("gpu/weights/us_plate_det.onnx"))
    parser.add_argument("--scenes", type=int, default=3_000, help="rendered training scenes")
    parser.add_argument("--validation", type=int, default=300, help="rendered held-out scenes")
    parser.add_argument("--minutes", type=float, default=25.0, help="training time budget (ignored with --steps)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--geometry-weight", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the dev box is shared: keep 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--cache", type=Path, default=Path(".cache/training"))
    parser.add_argument("--init", type=Path, default=None, help="start from this torch state dict")
    parser.add_argument("--checkpoint", type=Path, default=None, help="also save the torch state dict here")
    parser.add_argument("--eval-dir", type=Path, default=None, help="labelled scenes to measure on (never trained on)")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--eval-every", type=int, default=250)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    train(args)


if __name__ == "__main__":
    main()
