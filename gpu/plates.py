"""Plate-format knowledge applied after recognition."""

from __future__ import annotations

from dataclasses import dataclass

from gpu.recognize import Characters


@dataclass(frozen=True)
class Read:
    text: str
    confidences: tuple[float, ...]


def repair(chars: Characters) -> Read:
    return Read(chars.text, chars.confidences)
