"""Train the US plate recognizer on synthetic plates, export it to ONNX, print its validation scores.

    python -m alpr.gpu.training.recognizer --seed 1 --samples 40000 --steps 3000 --out gpu/weights/us_plate_rec.onnx

(the shipped weights came from a chain of shorter runs: gpu/weights/us_plate_rec.md lists them).

Everything comes from the seed: the training set is samples (seed, 0..N-1) of
`alpr.gpu.training.synth`, the validation set samples (seed, VALIDATION_OFFSET + i), so the two
never overlap; torch is seeded too. The run is bounded by --minutes (CPU, --threads at most 2
on a shared machine) or --steps; on a machine with a GPU, --device cuda trains the same model
faster. The rendered set is cached under --cache (a .npz per seed and size), never committed.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
from alpr.gpu import ownrec
from alpr.gpu.training import synth

log = logging.getLogger("alpr.gpu.training.recognizer")

VALIDATION_OFFSET = 10_000_000  # sample indices of the validation set start here
GENERATOR_VERSION = "synth-2"  # bump when synth.py changes what a (seed, index) renders
CLASSES = 1 + len(ownrec.ALPHABET)


def _render_one(args: tuple[int, int]) -> tuple[np.ndarray, str, str]:
    seed, index = args
    sample = synth.render(seed, index)
    tensor = ownrec.prepare(sample.image)[0]
    return np.round((tensor + 1.0) * 127.5).astype(np.uint8), sample.text, sample.family


def render_set(seed: int, start: int, count: int, workers: int = 1) -> tuple[np.ndarray, list[str], list[str]]:
    """Samples (seed, start..start+count-1) as prepared uint8 inputs (count, H, W), texts and families."""
    jobs = [(seed, start + i) for i in range(count)]
    if workers > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(workers) as pool:
            rows = pool.map(_render_one, jobs, chunksize=256)
    else:
        rows = [_render_one(job) for job in jobs]
    images = np.stack([r[0] for r in rows])
    return images, [r[1] for r in rows], [r[2] for r in rows]


def cached_set(cache: Path, seed: int, start: int, count: int, workers: int) -> tuple[np.ndarray, list[str], list[str]]:
    """render_set, kept in cache/ under a name that changes with the generator and input size."""
    key = f"{GENERATOR_VERSION}-{ownrec.HEIGHT}x{ownrec.WIDTH}-s{seed}-{start}-{count}"
    path = cache / f"{key}.npz"
    if path.is_file():
        data = np.load(path)
        return data["images"], list(data["texts"]), list(data["families"])
    began = time.monotonic()
    images, texts, families = render_set(seed, start, count, workers)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images, texts=np.array(texts), families=np.array(families))
    log.info("rendered %d samples in %.0f s -> %s", count, time.monotonic() - began, path)
    return images, texts, families


def build_model():
    """CNN (height 32 -> 1, width 128 -> 32 frames) + one BiLSTM + a linear head over blank + A-Z0-9."""
    import torch
    from torch import nn

    def block(inputs: int, outputs: int) -> list[nn.Module]:
        return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]

    class CRNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                *block(1, 32), nn.MaxPool2d(2),  # 16 x 64
                *block(32, 48), nn.MaxPool2d(2),  # 8 x 32
                *block(48, 64), *block(64, 64), nn.MaxPool2d((2, 1)),  # 4 x 32
                *block(64, 96), *block(96, 96), nn.MaxPool2d((2, 1)),  # 2 x 32
                nn.Conv2d(96, 128, (2, 1), bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),  # 1 x 32
            )
            self.rnn = nn.LSTM(128, 96, bidirectional=True, batch_first=True)
            self.head = nn.Linear(192, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """(N, 1, 32, 128) -> logits (N, 32, CLASSES)."""
            f = self.features(x).squeeze(2).permute(0, 2, 1)
            f, _ = self.rnn(f)
            return self.head(f)

    return CRNN()


class WithSoftmax:
    """The exported graph: probabilities, so the runtime decodes without a softmax of its own."""

    @staticmethod
    def wrap(model):
        from torch import nn

        class Exported(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x).softmax(dim=2)

        return Exported(model)


def encode(texts: list[str]) -> tuple[list[int], list[int]]:
    """CTC targets: concatenated class indices (1-based; 0 is blank) and each text's length."""
    flat = [1 + ownrec.ALPHABET.index(c) for t in texts for c in t]
    return flat, [len(t) for t in texts]


def greedy(logits: np.ndarray) -> list[str]:
    return [ownrec.decode(row).text for row in logits]


def evaluate(model, images: np.ndarray, texts: list[str], families: list[str], device: str = "cpu") -> dict[str, float]:
    """Exact-match accuracy on a prepared set, overall and per layout family."""
    import torch

    model.eval()
    reads: list[str] = []
    with torch.no_grad():
        for start in range(0, len(images), 256):
            x = torch.from_numpy(images[start : start + 256]).float().div(127.5).sub(1.0).unsqueeze(1).to(device)
            reads += greedy(model(x).softmax(2).cpu().numpy())
    model.train()
    hits = Counter(f for r, t, f in zip(reads, texts, families) if r == t)
    totals = Counter(families)
    scores = {f"exact_{f}": hits[f] / totals[f] for f in sorted(totals)}
    scores["exact"] = sum(hits.values()) / len(texts)
    return scores


def export(model, out: Path, seed: int, scores: dict[str, float]) -> None:
    """ONNX (opset 17, dynamic batch), metadata for the runtime, checked against torch on random input."""
    import onnx
    import onnxruntime as ort
    import torch

    model.eval()
    exported = WithSoftmax.wrap(model).eval()
    dummy = torch.zeros(2, 1, ownrec.HEIGHT, ownrec.WIDTH)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        exported, (dummy,), str(out), opset_version=17, dynamo=False,
        input_names=[ownrec.INPUT_NAME], output_names=[ownrec.OUTPUT_NAME],
        dynamic_axes={ownrec.INPUT_NAME: {0: "batch"}, ownrec.OUTPUT_NAME: {0: "batch"}},
    )
    graph = onnx.load(str(out))
    meta = {
        "alphabet": ownrec.ALPHABET, "height": str(ownrec.HEIGHT), "width": str(ownrec.WIDTH),
        "blank": "0", "licence": "Apache-2.0", "training": f"alpr.gpu.training.recognizer --seed {seed}",
        "generator": GENERATOR_VERSION, "validation": " ".join(f"{k}={v:.4f}" for k, v in sorted(scores.items())),
    }
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(out))
    probe = torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (3, 1, ownrec.HEIGHT, ownrec.WIDTH)).astype(np.float32))
    with torch.no_grad():
        expected = exported(probe).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {ownrec.INPUT_NAME: probe.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    if diff > 1e-4:
        raise SystemExit(f"onnxruntime and torch disagree by {diff} on the exported graph")
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"exported {out} ({out.stat().st_size / 1e6:.2f} MB) sha256 {digest}; onnxruntime vs torch max diff {diff:.2e}")


def train(args: argparse.Namespace) -> dict[str, float]:
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    images, texts, _ = cached_set(args.cache, args.seed, 0, args.samples, args.workers)
    val_images, val_texts, val_families = cached_set(args.cache, args.seed, VALIDATION_OFFSET, args.validation, args.workers)
    model = build_model()
    if args.init is not None:  # continue from an earlier run's weights (the model card lists each run)
        model.load_state_dict(torch.load(args.init, map_location="cpu"))
    model = model.to(args.device)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.2f} M parameters; {len(images)} training and {len(val_images)} validation samples")
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    # Without --steps the schedule assumes the measured pace of the first 20 steps holds.
    total_steps = args.steps
    began = time.monotonic()
    step, losses = 0, []
    schedule = None
    while True:
        order = rng.permutation(len(images))
        for start in range(0, len(order) - args.batch + 1, args.batch):
            idx = order[start : start + args.batch]
            x = torch.from_numpy(images[idx]).float().div(127.5).sub(1.0).unsqueeze(1)
            if args.augment:  # cheap extra variety on top of the rendered set: shift and inversion
                shift = int(rng.integers(-4, 5))
                x = torch.roll(x, shift, dims=3)
                if rng.random() < 0.1:
                    x = -x
            batch_texts = [texts[i] for i in idx]
            flat, lengths = encode(batch_texts)
            logits = model(x.to(args.device))
            log_probs = logits.log_softmax(2).permute(1, 0, 2)  # (T, N, C) for CTCLoss
            loss = ctc(
                log_probs, torch.tensor(flat), torch.full((len(idx),), log_probs.shape[0], dtype=torch.long),
                torch.tensor(lengths),
            )
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            losses.append(float(loss.detach()))
            step += 1
            if step == 20 and total_steps is None:
                pace = (time.monotonic() - began) / 20
                total_steps = max(40, int(args.minutes * 60 / pace))
                print(f"{pace * 1000:.0f} ms per step of {args.batch}: planning {total_steps} steps")
            if total_steps is not None and schedule is None:
                schedule = torch.optim.lr_scheduler.OneCycleLR(
                    optimiser, max_lr=args.lr, total_steps=total_steps + 1, pct_start=0.15
                )
                for _ in range(step):
                    schedule.step()
            if schedule is not None:
                schedule.step()
            if step % args.log_every == 0:
                print(f"step {step}/{total_steps} loss {np.mean(losses[-args.log_every:]):.3f} "
                      f"{time.monotonic() - began:.0f} s", flush=True)
            if step % args.eval_every == 0:
                interim = evaluate(model, val_images[:1000], val_texts[:1000], val_families[:1000], args.device)
                print(f"step {step} validation {interim}", flush=True)
                if args.export_every:  # a usable graph before the run ends, scored on the first 1000
                    export(model.cpu(), args.out, args.seed, interim)
                    if args.checkpoint:
                        torch.save(model.state_dict(), args.checkpoint)
                    model.to(args.device).train()
            if total_steps is not None and step >= total_steps:
                scores = evaluate(model, val_images, val_texts, val_families, args.device)
                print("validation (held-out synthetic):", " ".join(f"{k}={v:.4f}" for k, v in sorted(scores.items())))
                export(model.cpu(), args.out, args.seed, scores)
                if args.checkpoint:
                    torch.save(model.state_dict(), args.checkpoint)
                return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("gpu/weights/us_plate_rec.onnx"))
    parser.add_argument("--samples", type=int, default=60_000, help="rendered training plates")
    parser.add_argument("--validation", type=int, default=3_000, help="rendered held-out plates")
    parser.add_argument("--minutes", type=float, default=20.0, help="training time budget (ignored with --steps)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the dev box is shared: keep <= 2)")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering the data set")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--cache", type=Path, default=Path(".cache/training"))
    parser.add_argument("--init", type=Path, default=None, help="start from this torch state dict")
    parser.add_argument("--checkpoint", type=Path, default=None, help="also save the torch state dict here")
    parser.add_argument("--export-every", action="store_true", help="export --out at every validation too")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=1000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    train(args)


if __name__ == "__main__":
    main()
