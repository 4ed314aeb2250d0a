"""The project's own US plate detector: a BGR frame in, plate boxes in image pixels out.

A small fully convolutional CenterNet-style network trained by
`python -m alpr.gpu.training.detector` on synthetic road scenes only (see
gpu/weights/us_plate_det.md), so its weights are the project's own (Apache-2.0), unlike the
opt-in AGPL `platedet`. The frame is letterboxed to a long side of 640 and padded to multiples
of 32 (`alpr.gpu.detect.prepare`, shared with platedet); the graph returns, every 4 input
pixels, a plate-centre probability and the box's centre offset and log size. Decoding (peaks,
boxes, NMS, mapping back through the letterbox) is plain NumPy, so any runtime can share it.
Not used by the default reader: this is the first version, measured in its model card.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from alpr.gpu.detect import Detection, Letterbox, prepare
from alpr.gpu.models import ModelFile, ModelMismatch

STRIDE = 4  # output cell size in input pixels: plates 13 px wide are still 3 cells wide
SIZE = 640  # letterbox long side
INPUT_NAME, HEATMAP_NAME, GEOMETRY_NAME = "image", "heatmap", "geometry"
MIN_SCORE = 0.3  # the peak probability a proposal needs; the model card's figures use it
MAX_DETECTIONS = 16

US_DETECTOR = ModelFile(
    name="us-detector",
    package="alpr.gpu",
    relative_path="weights/us_plate_det.onnx",
    install_hint="it ships inside the alpr package (gpu/weights/)",
    license="Apache-2.0",  # trained by this project on scenes it rendered itself
)


def to_input(image_bgr: np.ndarray, size: int = SIZE) -> tuple[np.ndarray, Letterbox]:
    """A frame -> ((3, H, W) float32 RGB in [0, 1], H and W multiples of 32, long side size; its letterbox)."""
    tensor, box = prepare(image_bgr, size)
    return tensor.astype(np.float32), box


def decode(
    heatmap: np.ndarray,
    geometry: np.ndarray,
    transform: Letterbox,
    image_shape: tuple[int, ...],
    min_score: float = MIN_SCORE,
    iou_threshold: float = 0.4,
) -> list[Detection]:
    """One image's (1, h, w) heatmap and (4, h, w) geometry -> plate boxes in image pixels, best first.

    A proposal is a local maximum of the heatmap (3x3) above min_score; its box is the cell
    centre moved by the predicted offset, sized exp(log size) cells. Overlapping proposals of
    one plate are merged by NMS, which peaks alone do not guarantee for long plates.
    """
    heat = heatmap[0].astype(np.float32)
    peaks = (heat >= cv2.dilate(heat, np.ones((3, 3), np.uint8))) & (heat > min_score)
    ys, xs = np.nonzero(peaks)
    if ys.size == 0:
        return []
    dx, dy, log_w, log_h = geometry[:, ys, xs].astype(np.float32)
    cx, cy = (xs + 0.5 + dx) * STRIDE, (ys + 0.5 + dy) * STRIDE
    w, h = np.exp(np.clip(log_w, -3, 6)) * STRIDE, np.exp(np.clip(log_h, -3, 6)) * STRIDE
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    score = heat[ys, xs]
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    chosen = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), score.tolist(), min_score, iou_threshold), dtype=int)
    chosen = chosen.reshape(-1)
    chosen = chosen[np.argsort(-score[chosen])][:MAX_DETECTIONS]
    mapped = transform.to_image(xyxy[chosen])
    ih, iw = image_shape[:2]
    mapped[:, [0, 2]] = mapped[:, [0, 2]].clip(0, iw)
    mapped[:, [1, 3]] = mapped[:, [1, 3]].clip(0, ih)
    return [Detection(tuple(float(v) for v in box), float(s)) for box, s in zip(mapped, score[chosen])]


class OwnPlateDetector:
    """The ONNX graph in ONNX Runtime on the CPU: one thread by default, as the shared boxes need."""

    def __init__(self, path: Path | str | None = None, threads: int = 1, min_score: float = MIN_SCORE,
                 size: int = SIZE) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path is not None else US_DETECTOR.path
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != ([INPUT_NAME], [HEATMAP_NAME, GEOMETRY_NAME]):
            raise ModelMismatch(f"{self.path}: inputs/outputs {names}, expected "
                                   f"{[INPUT_NAME]}/{[HEATMAP_NAME, GEOMETRY_NAME]}")
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("stride", str(STRIDE)) != str(STRIDE):
            raise ModelMismatch(f"{self.path}: stride {meta['stride']}, this module decodes stride {STRIDE}")
        self.min_score = min_score
        self.size = size

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Plates in one BGR frame, boxes in its pixels, best first; [] when there is none."""
        tensor, transform = to_input(image_bgr, self.size)
        heatmap, geometry = self.session.run(None, {INPUT_NAME: tensor[None]})
        return decode(heatmap[0], geometry[0], transform, image_bgr.shape, self.min_score)
