"""Group per-item tensors into backend-sized batches and split the outputs back per item."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from alpr.gpu.backends import Backend
from alpr.gpu.models import ModelFile


def batch_slices(count: int, max_batch: int) -> list[slice]:
    """Consecutive slices covering range(count), each at most max_batch long."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return [slice(start, min(start + max_batch, count)) for start in range(0, count, max_batch)]


def group_by_shape(items: Sequence[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    """Indices of items per shape, in first-seen order: only same-shaped tensors stack into a batch."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.shape, []).append(index)
    return groups


def run_batched(backend: Backend, model: ModelFile, items: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """Run items (each one input without its batch axis) and return each item's outputs, in item order."""
    per_item: list[list[np.ndarray]] = [[] for _ in items]
    max_batch = backend.max_batch(model)
    for indices in group_by_shape(items).values():
        for part in batch_slices(len(indices), max_batch):
            chosen = indices[part]
            outputs = backend.run(model, np.stack([items[i] for i in chosen]))
            for row, index in enumerate(chosen):
                per_item[index] = [out[row] for out in outputs]
    return per_item
