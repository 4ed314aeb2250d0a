"""The project's own models: the synthetic plate generator, the shipped ONNX graph, its runtime wrapper."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from alpr.gpu import ownrec
from alpr.gpu.backends import OnnxRuntimeBackend
from alpr.gpu.recognize import Characters
from alpr.gpu.training import fonts, synth


def pattern_regex(pattern: str) -> str:
    """A layout pattern (L, N, gaps, separators) as the regex its label must match."""
    return "".join({"L": "[A-Z]", "N": "[0-9]", "A": "[A-Z0-9]"}.get(p, "") for p in pattern)


def test_same_seed_and_index_render_the_same_pixels_and_label():
    first, again = synth.render(3, 7), synth.render(3, 7)
    assert first.text == again.text and first.family == again.family and first.crop == again.crop
    assert np.array_equal(first.image, again.image)
    other = synth.render(3, 8)
    assert other.text != first.text or not np.array_equal(other.image, first.image)
    assert synth.render(4, 7).text != first.text or not np.array_equal(synth.render(4, 7).image, first.image)


def test_labels_follow_the_layout_they_were_drawn_with():
    families = set()
    for index in range(400):
        family, state, stacked, line = synth.layout(synth.rng_for(11, index))
        families.add(family)
        label = synth.label_of(line)
        assert re.fullmatch(r"[A-Z0-9]{2,9}", label), (family, line, label)
        if family == "california":
            assert state == "CA" and re.fullmatch(r"[0-9][A-Z]{3}[0-9]{3}", label)
        elif family == "state":
            assert any(re.fullmatch(pattern_regex(f), label) for f in synth.STATE_LAYOUTS[state]), (state, label)
            assert not set(label) & set("IOQ")  # serials leave out letters that look like digits
        elif family == "stacked":  # the small stacked marks are drawn, never labelled
            assert len(stacked) == 2 and label == synth.label_of(line)
    assert families == set(synth.FAMILY_WEIGHTS)


def test_rendered_crops_are_plate_shaped_images_with_their_layouts_label():
    for index in range(12):
        sample = synth.render(5, index)
        rng = synth.rng_for(5, index)
        family, _state, _stacked, line = synth.layout(rng)  # the first draws of the sample's own stream
        assert sample.text == synth.label_of(line) and sample.family == family
        h, w, channels = sample.image.shape
        assert sample.image.dtype == np.uint8 and channels == 3
        assert h >= 8 and 1.2 < w / h < (9 if sample.crop == "line" else 4), (sample.crop, w, h)


def test_every_font_comes_from_an_installed_wheel_with_a_recorded_licence():
    fonts.check_installed()
    assert {face.licence for face in fonts.CAPTION_FACES} == {"OFL-1.1"}
    assert fonts.HERSHEY_LICENCE


def test_exported_graph_takes_any_batch_of_grey_crops_and_returns_probabilities():
    path = ownrec.US_RECOGNIZER.path
    assert path.stat().st_size < 5_000_000  # it lives in the repository
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == 17
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["alphabet"] == ownrec.ALPHABET and meta["licence"] == "Apache-2.0"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == (ownrec.INPUT_NAME, "tensor(float)", [1, ownrec.HEIGHT, ownrec.WIDTH])
    assert out.name == ownrec.OUTPUT_NAME and out.type == "tensor(float)"
    assert isinstance(inp.shape[0], str) and isinstance(out.shape[0], str)  # dynamic batch
    for batch in (1, 5):
        x = np.random.default_rng(batch).uniform(-1, 1, (batch, 1, ownrec.HEIGHT, ownrec.WIDTH)).astype(np.float32)
        (probs,) = session.run(None, {inp.name: x})
        assert probs.shape == (batch, ownrec.WIDTH // 4, 1 + len(ownrec.ALPHABET))
        np.testing.assert_allclose(probs.sum(axis=2), 1.0, atol=1e-4)


def test_prepare_fills_the_fixed_grey_input_whatever_the_crop():
    for shape in ((150, 300, 3), (20, 120, 3), (40, 60)):
        crop = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        tensor = ownrec.prepare(crop)
        assert tensor.shape == (1, ownrec.HEIGHT, ownrec.WIDTH) and tensor.dtype == np.float32
        assert tensor.min() >= -1.0 and tensor.max() <= 1.0


def test_decode_merges_repeats_keeps_doubled_letters_split_by_blank_and_reports_peaks():
    def frame(cls: int, p: float) -> np.ndarray:
        row = np.full(1 + len(ownrec.ALPHABET), (1 - p) / len(ownrec.ALPHABET), np.float32)
        row[cls] = p
        return row

    seven, a = 1 + ownrec.ALPHABET.index("7"), 1 + ownrec.ALPHABET.index("A")
    probs = np.stack([frame(0, 0.9), frame(seven, 0.6), frame(seven, 0.8), frame(0, 0.9), frame(seven, 0.7), frame(a, 0.95)])
    read = ownrec.decode(probs)
    assert read.text == "77A"
    assert read.confidences == pytest.approx((0.8, 0.7, 0.95))
    assert len(read.alternatives) == 3 and read.alternatives[2][ownrec.ALPHABET.index("A")] == pytest.approx(0.95)


def test_recognizer_reads_clean_rendered_plates():
    recognizer = ownrec.PlateRecognizer(OnnxRuntimeBackend())
    plates, labels = [], []
    for index in range(10):
        plate, label, *_ = synth.render_plate(synth.rng_for(21, index))
        plates.append(plate)
        labels.append(label)
    reads = recognizer.read(plates + [np.zeros((0, 0, 3), np.uint8)])
    assert all(isinstance(r, Characters) for r in reads)
    assert reads[-1] == Characters("", ())  # an empty crop reads as nothing, without failing the batch
    right = [r.text == label for r, label in zip(reads, labels)]
    assert sum(right) >= 8, list(zip([r.text for r in reads], labels))
    for read in reads[:-1]:
        assert len(read.confidences) == len(read.text) and all(0 < c <= 1 for c in read.confidences)


def test_recognizer_refuses_a_graph_whose_metadata_disagrees():
    class WrongAlphabet(OnnxRuntimeBackend):
        def metadata(self, model):
            return {**super().metadata(model), "alphabet": "0123456789"}

    with pytest.raises(ownrec.ModelMismatch, match="alphabet"):
        ownrec.PlateRecognizer(WrongAlphabet())


def test_training_command_runs_two_steps_and_exports_a_checked_graph(tmp_path, capsys):
    pytest.importorskip("torch", reason="training needs the [train] extra")
    from alpr.gpu.training import recognizer

    out = tmp_path / "rec.onnx"
    recognizer.main([
        "--samples", "32", "--validation", "8", "--steps", "2", "--batch", "16", "--threads", "1",
        "--cache", str(tmp_path / "cache"), "--out", str(out),
    ])
    printed = capsys.readouterr().out
    assert "validation (held-out synthetic): exact=" in printed and "onnxruntime vs torch max diff" in printed
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {ownrec.INPUT_NAME: np.zeros((3, 1, ownrec.HEIGHT, ownrec.WIDTH), np.float32)})
    assert probs.shape == (3, ownrec.WIDTH // 4, 1 + len(ownrec.ALPHABET))
