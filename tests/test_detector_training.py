"""The project's own plate detector: the scene generator, a tiny training run's ONNX graph, the runtime wrapper."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from alpr.gpu import platefinder
from alpr.gpu.detect import Detection
from alpr.gpu.models import ModelMismatch
from alpr.gpu.training import detector, scenes


def test_same_seed_and_index_render_the_same_scene():
    first, again = scenes.render_scene(3, 7), scenes.render_scene(3, 7)
    assert np.array_equal(first.image, again.image) and np.array_equal(first.boxes, again.boxes)
    other = scenes.render_scene(3, 8)
    assert first.image.shape != other.image.shape or not np.array_equal(first.image, other.image)


def test_boxes_lie_inside_the_frame_and_cover_plate_sized_regions():
    counts = []
    for index in range(12):
        scene = scenes.render_scene(5, index)
        h, w, channels = scene.image.shape
        assert scene.image.dtype == np.uint8 and channels == 3 and w == scenes.WIDTH
        assert scene.boxes.dtype == np.float32 and scene.boxes.shape[1] == 4
        counts.append(len(scene.boxes))
        for x1, y1, x2, y2 in scene.boxes:
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            # 2 % to 25 % of the frame wide (a rotated plate's outline is a little wider), about 2:1
            assert 0.015 * w <= x2 - x1 <= 0.3 * w
            assert 1.0 < (x2 - x1) / (y2 - y1) < 4.0
            # a plate is there: its box is not flat background
            assert scene.image[int(y1) : int(y2) + 1, int(x1) : int(x2) + 1].std() > 5
    assert 0 in counts and max(counts) >= 2  # scenes without a plate, and some with several


def test_targets_put_a_peak_at_each_plate_centre():
    boxes = np.float32([[40, 40, 120, 80], [200, 100, 220, 110]])
    heat, geometry, weight = detector.targets(boxes, 40, 64)
    s = platefinder.STRIDE
    for x1, y1, x2, y2 in boxes:
        i, j = int((y1 + y2) / 2 / s), int((x1 + x2) / 2 / s)
        assert heat[0, i, j] == 1.0 and weight[0, i, j] == 1.0
        assert np.isclose(np.exp(geometry[2, i, j]) * s, x2 - x1) and np.isclose(np.exp(geometry[3, i, j]) * s, y2 - y1)
    assert (heat == 1.0).sum() == 2


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-step training run: the graph is untrained, but its interface is the shipped one's."""
    pytest.importorskip("torch", reason="training needs the [train] extra")
    folder = tmp_path_factory.mktemp("det")
    out = folder / "det.onnx"
    detector.main(["--seed", "2", "--scenes", "6", "--validation", "3", "--steps", "2", "--batch", "2",
                   "--threads", "1", "--cache", str(folder / "cache"), "--out", str(out), "--eval-every", "0"])
    return out


def test_training_exports_a_graph_with_dynamic_batch_and_size(tiny_model):
    graph = onnx.load(str(tiny_model))
    assert graph.opset_import[0].version == 17
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["licence"] == "Apache-2.0" and meta["stride"] == str(platefinder.STRIDE)
    session = ort.InferenceSession(str(tiny_model), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    heat, geometry = session.get_outputs()
    assert (inp.name, inp.type) == (platefinder.INPUT_NAME, "tensor(float)") and inp.shape[1] == 3
    assert (heat.name, geometry.name) == (platefinder.HEATMAP_NAME, platefinder.GEOMETRY_NAME)
    assert heat.type == geometry.type == "tensor(float)"
    assert all(isinstance(d, str) for d in (inp.shape[0], inp.shape[2], inp.shape[3], heat.shape[0]))
    for n, h, w in ((1, 64, 96), (3, 128, 160)):
        x = np.random.default_rng(n).uniform(0, 1, (n, 3, h, w)).astype(np.float32)
        got_heat, got_geometry = session.run(None, {inp.name: x})
        assert got_heat.shape == (n, 1, h // platefinder.STRIDE, w // platefinder.STRIDE)
        assert got_geometry.shape == (n, 4, h // platefinder.STRIDE, w // platefinder.STRIDE)
        assert 0 <= got_heat.min() and got_heat.max() <= 1


def test_wrapper_returns_detections_in_image_pixels(tiny_model):
    found = platefinder.OwnPlateDetector(tiny_model, min_score=0.0).detect(scenes.render_scene(2, 1).image)
    assert found and all(isinstance(d, Detection) for d in found)
    assert len(found) <= platefinder.MAX_DETECTIONS
    blank = np.full((300, 500, 3), 128, np.uint8)
    assert isinstance(platefinder.OwnPlateDetector(tiny_model).detect(blank), list)  # no plate: no failure
    for d in platefinder.OwnPlateDetector(tiny_model, min_score=0.0).detect(blank):
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 <= x2 <= 500 and 0 <= y1 <= y2 <= 300


def test_decode_maps_a_peak_back_through_the_letterbox():
    """A hand-made output: one peak, known offset and size, letterbox of a 1280x720 frame."""
    image = np.zeros((720, 1280, 3), np.uint8)
    _tensor, transform = platefinder.to_input(image)
    h, w = _tensor.shape[1] // platefinder.STRIDE, _tensor.shape[2] // platefinder.STRIDE
    heat = np.zeros((1, h, w), np.float32)
    geometry = np.zeros((4, h, w), np.float32)
    heat[0, 40, 80] = 0.9
    geometry[:, 40, 80] = (0.5, 0.0, np.log(16), np.log(8))  # 64 x 32 input px around (4 * 81, 4 * 40.5)
    (det,) = platefinder.decode(heat, geometry, transform, image.shape)
    cx, cy = 4 * 81, 4 * 40.5
    expected = transform.to_image(np.float32([[cx - 32, cy - 16, cx + 32, cy + 16]]))[0]
    assert np.allclose(det.box, expected) and det.score == pytest.approx(0.9)
    assert det.box[2] - det.box[0] == pytest.approx(64 / transform.scale)


def test_wrong_graph_is_refused():
    from alpr.gpu.ownrec import US_RECOGNIZER

    with pytest.raises(ModelMismatch):
        platefinder.OwnPlateDetector(US_RECOGNIZER.path)
