"""Model files the reader loads, located inside installed wheels (never downloaded at run time)."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import onnx

from alpr.gpu.graphs import detector_heads
from alpr.core.errors import AlprError, ConfigError


class ModelMissing(AlprError):
    """A wheel that carries model weights is not installed."""


class ModelMismatch(ConfigError):
    """An ONNX file's metadata, inputs or outputs are not the ones the code that loads it expects."""


@dataclass(frozen=True)
class ModelFile:
    """One ONNX file shipped inside a wheel."""

    name: str  # role in the pipeline
    package: str  # importable package that carries the file
    relative_path: str  # path inside that package
    install_hint: str
    license: str  # of the weights, as far as known (docs/models.md says how it was found)
    surgery: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None  # applied at load time

    def graph(self) -> onnx.ModelProto:
        """The graph the runtimes load: the shipped file after this project's surgery, if any."""
        model = onnx.load(str(self.path))
        return self.surgery(model) if self.surgery else model

    @property
    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise ModelMissing(f"{self.name}: package {self.package!r} is not installed ({self.install_hint})")
        path = Path(spec.origin).parent / self.relative_path
        if not path.is_file():
            raise ModelMissing(f"{self.name}: {path} is missing from the installed {self.package!r} wheel")
        return path

    def sha256(self) -> str:
        return _sha256(self.path)


@cache
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


DETECTOR = ModelFile(
    name="detector",
    package="platedet",
    relative_path="artifacts/platedet.onnx",
    install_hint="pip install --no-deps platedet==0.0.2",
    # The ONNX metadata: author Ultralytics, license AGPL-3.0; the wheel and repository state none.
    license="AGPL-3.0",
    surgery=detector_heads,
)
RECOGNIZER_V4 = ModelFile(
    name="recognizer-v4",
    package="rapidocr_onnxruntime",
    relative_path="models/ch_PP-OCRv4_rec_infer.onnx",
    install_hint="pip install --no-deps rapidocr-onnxruntime==1.4.4",
    license="Apache-2.0",
)
# PP-OCRv6 small recognizer: same input and CTC output layout as v4 (dictionary of 18,708
# symbols in its `character` metadata); the wheel's MODEL_LICENSES.md names the weights
# Apache-2.0 (PaddleOCR's model cards). It reads US plate lines better than v4 (docs/models.md).
RECOGNIZER = ModelFile(
    name="recognizer",
    package="rapidocr",
    relative_path="models/PP-OCRv6_rec_small.onnx",
    install_hint="pip install --no-deps rapidocr==3.10.0",
    license="Apache-2.0",
)
RECOGNIZERS = {"ppocrv6": RECOGNIZER, "ppocrv4": RECOGNIZER_V4}
TEXT_DETECTOR = ModelFile(
    name="text-detector",
    package="rapidocr_onnxruntime",
    relative_path="models/ch_PP-OCRv4_det_infer.onnx",
    install_hint="pip install --no-deps rapidocr-onnxruntime==1.4.4",
    license="Apache-2.0",
)
