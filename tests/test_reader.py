"""Plate reading core: end to end on synthetic scenes, plus the pieces the GPU path shares."""

from __future__ import annotations

import ctypes
import importlib.util
import sys
import types

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from alpr.gpu import (
    BackendUnavailable,
    CorruptImage,
    PlateText,
    decode_image,
    detect,
    open_reader,
    textlines,
)
from alpr.gpu.batching import batch_slices, run_batched
from alpr.gpu.graphs import detector_heads
from alpr.gpu.models import DETECTOR, RECOGNIZER, RECOGNIZER_V4, TEXT_DETECTOR, ModelFile
from alpr.gpu.ownrec import US_RECOGNIZER
from alpr.gpu.plates import REGION_FORMATS, fit, repair
from alpr.gpu.reader import ReaderSettings
from alpr.gpu.recognize import ALPHABET, AlphabetFold, Characters
from alpr.gpu.tensorrt_engine import Profile, engine_cache_key, profile_for

PLATE_BOX = (255, 284, 385, 316)  # where scene() pastes the plate: x1, y1, x2, y2


def scene(text: str, seed: int = 0) -> np.ndarray:
    """A 640x480 noisy frame with one dark-on-white plate of text: no evaluation image involved."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(100, 20, (480, 640, 3)), 0, 255).astype(np.uint8)
    x1, y1, x2, y2 = PLATE_BOX
    plate = np.full((y2 - y1, x2 - x1, 3), 230, np.uint8)
    cv2.rectangle(plate, (0, 0), (x2 - x1 - 1, y2 - y1 - 1), (10, 10, 10), 2)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.8, 2)
    org = ((x2 - x1 - tw) // 2, (y2 - y1 + th) // 2)
    cv2.putText(plate, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.8, (10, 10, 10), 2, cv2.LINE_AA)
    image[y1:y2, x1:x2] = plate
    return image


def iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


@pytest.fixture(scope="module")
def reader():
    return open_reader("onnxruntime", threads=1)


def test_reads_a_synthetic_plate_end_to_end(reader) -> None:
    (read,) = reader.read(scene("ABC1234"))
    assert isinstance(read, PlateText)
    assert read.text == "ABC1234"
    assert 0.5 < read.confidence <= 1.0
    assert len(read.char_confidences) == len(read.text)
    assert all(0.0 <= c <= 1.0 for c in read.char_confidences)
    assert iou(read.box, PLATE_BOX) > 0.6


def test_read_batch_keeps_image_order_and_empty_frames(reader) -> None:
    blank = np.full((360, 480, 3), 128, np.uint8)
    results = reader.read_batch([blank, scene("BRA2E19", seed=1), blank])
    assert [[r.text for r in reads] for reads in results] == [[], ["BRA2E19"], []]


def test_default_reader_reads_text_lines_that_fit_a_plate_format(reader) -> None:
    assert reader.read(scene("TEXAS")) == []  # legible, but a state name, not a plate (region us)
    eu = open_reader("onnxruntime", settings=ReaderSettings(region="eu"))
    assert eu.read(scene("HELLO")) == []  # no EU plate format fits and no EU band


def test_default_reader_loads_no_agpl_model(reader) -> None:
    reader.read(scene("ABC1234"))
    assert all(model.license == "Apache-2.0" for model in reader.models)
    assert set(reader.backend.loaded) <= {model.name for model in reader.models}
    assert DETECTOR.name not in reader.backend.loaded  # platedet.onnx (AGPL-3.0) never opened
    assert "platedet" not in reader.model_version


def test_model_version_names_the_models_and_the_region(reader) -> None:
    assert reader.model_version.startswith("ppocrv6-rapidocr-3.10.0+")
    assert reader.model_version.endswith("-us")  # the default region: the users' plates


@pytest.fixture(scope="module")
def platedet_reader():
    return open_reader("onnxruntime", threads=1, settings=ReaderSettings(plate_detector=True))


def test_platedet_is_an_explicit_opt_in_and_says_so(platedet_reader) -> None:
    assert platedet_reader.model_version.startswith("platedet-0.0.2+ppocrv6-rapidocr-3.10.0+")
    assert DETECTOR.license == "AGPL-3.0" and DETECTOR in platedet_reader.models
    (read,) = platedet_reader.read(scene("ABC1234"))
    assert read.text == "ABC1234"
    assert DETECTOR.name in platedet_reader.backend.loaded


def eu_scene(text: str) -> np.ndarray:
    """scene() with a blue EU country band at the plate's left edge."""
    image = scene(text)
    x1, y1, _, y2 = PLATE_BOX
    image[y1 + 2 : y2 - 2, x1 + 2 : x1 + 14] = (160, 40, 0)  # BGR: saturated blue
    return image


def test_free_form_plates_need_the_eu_band() -> None:
    eu = open_reader("onnxruntime", settings=ReaderSettings(region="eu"))
    assert [r.text for r in eu.read(eu_scene("KWPHX"))] == ["KWPHX"]  # fits no format, band seen
    assert eu.read(scene("KWPHX")) == []
    br = open_reader("onnxruntime", settings=ReaderSettings(region="br"))
    assert br.read(eu_scene("KWPHX")) == []  # Brazilian plates carry no EU band


def test_join_rows_joins_a_split_line_only() -> None:
    left, right = (10.0, 100.0, 60.0, 130.0), (85.0, 101.0, 200.0, 131.0)
    assert textlines.join_rows([left, right]) == [(10.0, 100.0, 200.0, 131.0)]
    assert textlines.join_rows([left, (300.0, 100.0, 400.0, 130.0)]) == []  # too far apart
    assert textlines.join_rows([left, (70.0, 140.0, 200.0, 170.0)]) == []  # next row
    assert textlines.join_rows([left, (70.0, 100.0, 200.0, 112.0)]) == []  # much smaller text


def test_a_lone_character_split_off_by_an_emblem_joins_its_line_only() -> None:
    """Wyoming's county number left of the horse, D.C.'s "DD" left of the flag: narrower than
    tall, so no line of its own, but a piece that joins the serial beside it."""
    prob = np.zeros((1, 128, 256), np.float32)
    prob[0, 40:70, 20:40] = 0.9  # a lone character: taller than wide
    prob[0, 40:70, 60:160] = 0.9  # the rest of the serial, past an emblem
    prob[0, 100:125, 230:240] = 0.9  # a narrow mark elsewhere: a piece with no line beside it
    lines, pieces = textlines.decode(prob, textlines.Scale(1.0, 1.0), (128, 256, 3))
    assert len(lines) == 1 and len(pieces) == 2
    (joined,) = textlines.join_rows(lines, pieces)
    assert joined[0] < 20 and joined[2] > 159  # the lone character and the serial, one box
    assert textlines.join_rows([], pieces) == []  # pieces never join each other


def test_decode_image_round_trip() -> None:
    ok, jpeg = cv2.imencode(".jpg", scene("ABC1234"))
    assert ok
    assert decode_image(jpeg.tobytes()).shape == (480, 640, 3)


def truncated_jpeg() -> bytes:
    jpeg = cv2.imencode(".jpg", scene("ABC1234"))[1].tobytes()
    return jpeg[: len(jpeg) // 2]


@pytest.mark.parametrize("payload", [b"", b"not an image", b"\xff\xd8\xff\xe0" + b"\x00" * 64, truncated_jpeg()])
def test_decode_image_rejects_corrupt_bytes(payload: bytes) -> None:
    with pytest.raises(CorruptImage) as caught:
        decode_image(payload)
    assert isinstance(caught.value, ValueError)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_backend_refuses_clearly_without_falling_back() -> None:
    with pytest.raises(BackendUnavailable, match=r"TensorRT is not installed \(pip install 'alpr\[gpu\]'"):
        open_reader("tensorrt")


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        open_reader("openvino")


def test_engine_cache_key_changes_with_everything_that_invalidates_an_engine() -> None:
    profile = Profile("x", (1, 3, 48, 320), (4, 3, 48, 320), (8, 3, 48, 320))
    base = {
        "model_sha256": "ab" * 32,
        "graph_sha256": "ef" * 32,
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "compute_capability": (9, 0),
        "trt_version": "10.7.0",
        "profile": profile,
    }
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base)
    assert key.endswith(".engine") and "sm9.0" in key and "trt10.7.0" in key
    variants = [
        {"model_sha256": "cd" * 32},
        {"graph_sha256": "01" * 32},
        {"gpu_name": "NVIDIA L4"},
        {"compute_capability": (8, 9)},
        {"trt_version": "10.8.0"},
        {"profile": Profile("x", (1, 3, 48, 320), (4, 3, 48, 320), (16, 3, 48, 320))},
    ]
    assert len({key, *(engine_cache_key(**{**base, **v}) for v in variants)}) == 1 + len(variants)


def test_tensorrt_profiles_cover_the_shapes_the_reader_sends() -> None:
    det = profile_for(DETECTOR, max_batch=16)
    assert det.min[0] == 1 and det.max == (16, 3, 640, 640)
    rec = profile_for(RECOGNIZER, max_batch=16)
    assert rec.min[1:] == rec.max[1:] == (3, 48, 320)
    text = profile_for(TEXT_DETECTOR, max_batch=16)
    assert text.max[2] >= 960  # the us region's text_size
    assert profile_for(RECOGNIZER_V4, max_batch=16) == rec  # --recognizer ppocrv4: same input
    own = profile_for(US_RECOGNIZER, max_batch=16)
    assert (own.input_name, own.min, own.max) == ("image", (1, 1, 32, 128), (16, 1, 32, 128))


def test_detector_input_keeps_aspect_and_maps_boxes_back() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    tensor, transform = detect.prepare(image, 448)
    assert tensor.shape == (3, 352, 448) and tensor.dtype == np.float16  # 336 rows, padded up to 32s
    square, _ = detect.prepare(image, 448, square=True)
    assert square.shape == (3, 448, 448)
    box = np.array([[100.0, 50.0, 300.0, 120.0]])
    in_input = box * transform.scale + [transform.pad_x, transform.pad_y, transform.pad_x, transform.pad_y]
    np.testing.assert_allclose(transform.to_image(in_input), box, atol=1e-3)


def test_text_line_decode_finds_wide_regions_tallest_first() -> None:
    prob = np.zeros((1, 128, 256), np.float32)
    prob[0, 10:20, 20:120] = 0.9  # a wide, short line
    prob[0, 60:90, 40:200] = 0.9  # a taller line
    prob[0, 100:125, 230:240] = 0.9  # taller than wide: not a text line
    boxes, _ = textlines.decode(prob, textlines.Scale(2.0, 2.0), (256, 512, 3))
    assert len(boxes) == 2
    x1, y1, x2, y2 = boxes[0]
    # The taller line (input x 40..200, y 60..90), scaled 2x to image pixels and grown a little.
    assert x1 < 80 and x2 > 400 and y1 < 120 and y2 > 180


def test_batch_slices_cover_every_item_once() -> None:
    assert batch_slices(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert batch_slices(0, 4) == []
    with pytest.raises(ValueError):
        batch_slices(3, 0)


class RecordingBackend:
    """Echoes each item's first value back, and records every batch shape it was given."""

    name = "recording"
    square_inputs = False

    def __init__(self, max_batch: int) -> None:
        self.limit = max_batch
        self.batches: list[tuple[int, ...]] = []

    def max_batch(self, model: ModelFile) -> int:
        return self.limit

    def run(self, model: ModelFile, batch: np.ndarray) -> list[np.ndarray]:
        self.batches.append(batch.shape)
        return [batch.reshape(len(batch), -1)[:, 0]]

    def metadata(self, model: ModelFile) -> dict[str, str]:
        return {}


def test_run_batched_groups_by_shape_respects_max_batch_and_keeps_order() -> None:
    items = [np.full((2, 3) if i % 2 else (4, 3), i, np.float32) for i in range(7)]
    backend = RecordingBackend(max_batch=2)
    outputs = run_batched(backend, RECOGNIZER, items)
    assert [int(out[0]) for out in outputs] == list(range(7))
    assert all(shape[0] <= 2 for shape in backend.batches)
    assert sorted(shape[1:] for shape in backend.batches) == [(2, 3)] * 2 + [(4, 3)] * 2


def test_detector_graph_surgery_frees_batch_and_size() -> None:
    session = ort.InferenceSession(detector_heads(__import__("onnx").load(str(DETECTOR.path))).SerializeToString())
    rng = np.random.default_rng(0)
    batch = rng.random((2, 3, 96, 128)).astype(np.float16)
    together = session.run(None, {"images": batch})
    alone = session.run(None, {"images": batch[1:]})
    assert [t.shape for t in together] == [(2, 65, 12, 16), (2, 65, 6, 8), (2, 65, 3, 4)]
    for t, a in zip(together, alone):
        np.testing.assert_allclose(t[1].astype(np.float32), a[0].astype(np.float32), atol=2e-2)


def test_format_fit_swaps_look_alikes_by_position() -> None:
    assert fit("PP587A0", "LLNNNLL") == ("PP587AO", 1)
    second_choice = [[0.0] * len(ALPHABET) for _ in range(7)]
    second_choice[6][ALPHABET.index("D")] = 0.3  # the recognizer's best letter at the last position
    assert fit("PP587A0", "LLNNNLL", tuple(map(tuple, second_choice))) == ("PP587AD", 1)
    assert fit("BRA2E19", "LLLNLNN") == ("BRA2E19", 0)
    assert fit("ABC1X34", "LLLNNNN") is None  # X has no digit look-alike
    assert fit("ABC123", "LLLNNNN") is None


def confident(text: str, low: dict[int, float] | None = None) -> Characters:
    confs = tuple((low or {}).get(i, 0.99) for i in range(len(text)))
    return Characters(text, confs)


def test_repair_drops_one_doubtful_glyph_only_when_that_makes_a_format() -> None:
    eu = REGION_FORMATS["eu"]
    assert repair(confident("HRK708A1", {0: 0.5}), eu).text == "RK708AI"
    assert repair(confident("HRK708A1"), eu).text == "HRK708A1"  # every glyph confident: kept
    assert repair(confident("GWAGEN", {0: 0.4}), eu).text == "GWAGEN"  # fits nothing either way


def test_repair_drops_a_confident_glyph_only_in_a_sticker_gap_with_an_exact_fit() -> None:
    eu = REGION_FORMATS["eu"]
    assert repair(confident("4B389376"), eu).text == "4B39376"  # NLN·NNNN: sticker read as 8
    assert repair(confident("4B38937O"), eu).text == "4B38937O"  # rest would need a swap: kept


def test_region_changes_which_format_wins() -> None:
    assert repair(confident("NY13834"), REGION_FORMATS["br"]).text == "NYI3834"
    assert repair(confident("NY13834"), REGION_FORMATS["eu"]).text == "NY13834"  # Polish LLNNNNN


def test_alphabet_fold_uppercases_drops_foreign_symbols_and_collapses_repeats() -> None:
    dictionary = ["a", "中", "-", *ALPHABET]
    fold = AlphabetFold(dictionary)
    columns = {s: i + 1 for i, s in enumerate(dictionary)}  # column 0 is the CTC blank
    frames = ["a", "a", "中", "B", "blank", "B", "-", "1"]
    probs = np.zeros((len(frames), len(dictionary) + 2), np.float32)
    for t, symbol in enumerate(frames):
        probs[t, 0 if symbol == "blank" else columns[symbol]] = 0.9
        probs[t, 0 if symbol != "blank" else 1] += 0.1
    chars = fold.decode(probs)
    assert chars.text == "ABB1"
    assert chars.confidences == pytest.approx((0.9, 0.9, 0.9, 0.9))  # "a" and "A" share a class


def test_alphabet_fold_refuses_a_dictionary_without_latin_capitals_and_digits() -> None:
    with pytest.raises(ValueError, match="lacks"):
        AlphabetFold(["a", "b", "1"])


class FakeCudart:
    """cuda.bindings.runtime stand-in: (error, value) tuples, host memory for device memory."""

    class cudaMemcpyKind:  # named as in the binding
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self) -> None:
        self.blocks: dict[int, ctypes.Array] = {}
        self.syncs = 0

    def _alloc(self, nbytes: int) -> tuple[int, int]:
        block = (ctypes.c_uint8 * nbytes)()
        self.blocks[ctypes.addressof(block)] = block
        return 0, ctypes.addressof(block)

    cudaMallocHost = cudaMalloc = _alloc

    def cudaFreeHost(self, ptr: int) -> tuple[int]:
        del self.blocks[ptr]
        return (0,)

    cudaFree = cudaFreeHost

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream: object) -> tuple[int]:
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def cudaSetDevice(self, device: int) -> tuple[int]:
        return (0,)

    def cudaGetDeviceProperties(self, device: int) -> tuple[int, object]:
        return 0, types.SimpleNamespace(name=b"Fake GPU\x00", major=9, minor=0)

    def cudaStreamCreate(self) -> tuple[int, str]:
        return 0, "stream"

    def cudaStreamSynchronize(self, stream: object) -> tuple[int]:
        self.syncs += 1
        return (0,)


def fake_tensorrt(builds: list[bytes]) -> types.ModuleType:
    """tensorrt stand-in whose engine doubles its float32 input "x" into output "y"."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.0.fake"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="ws")
    trt.nptype = lambda dtype: np.float32

    class Context:
        def __init__(self) -> None:
            self.shape: tuple[int, ...] = ()
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
            self.shape = tuple(shape)

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.shape

        def set_tensor_address(self, name: str, address: int) -> None:
            self.addresses[name] = address

        def execute_async_v3(self, stream: object) -> bool:
            count = int(np.prod(self.shape))
            x = np.frombuffer((ctypes.c_float * count).from_address(self.addresses["x"]), np.float32)
            np.frombuffer((ctypes.c_float * count).from_address(self.addresses["y"]), np.float32)[:] = 2 * x
            return True

    class Engine:
        num_io_tensors = 2
        get_tensor_name = staticmethod(lambda i: ("x", "y")[i])
        get_tensor_mode = staticmethod(lambda name: "in" if name == "x" else "out")
        get_tensor_dtype = staticmethod(lambda name: "float32")
        create_execution_context = staticmethod(Context)

    class Builder:
        def __init__(self, logger: object) -> None:
            pass

        def create_network(self, flags: int) -> object:
            return object()

        def create_builder_config(self) -> object:
            return types.SimpleNamespace(
                set_flag=lambda flag: None,
                set_memory_pool_limit=lambda pool, size: None,
                add_optimization_profile=lambda profile: None,
            )

        def create_optimization_profile(self) -> object:
            return types.SimpleNamespace(set_shape=lambda *args: None)

        def build_serialized_network(self, network: object, config: object) -> bytes:
            builds.append(b"engine")
            return b"engine"

    trt.Builder = Builder
    trt.OnnxParser = type(
        "OnnxParser",
        (),
        {"__init__": lambda self, network, logger: None, "parse": lambda self, graph: True, "num_errors": 0},
    )
    trt.Runtime = type(
        "Runtime", (), {"__init__": lambda self, logger: None, "deserialize_cuda_engine": lambda self, data: Engine()}
    )
    return trt


def test_tensorrt_backend_builds_once_caches_and_runs_through_pinned_buffers(tmp_path, monkeypatch) -> None:
    from alpr.gpu.tensorrt_engine import TensorRTBackend

    builds: list[bytes] = []
    cudart = FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(builds))
    monkeypatch.setitem(sys.modules, "cuda", types.SimpleNamespace(bindings=types.SimpleNamespace(runtime=cudart)))
    monkeypatch.setitem(sys.modules, "cuda.bindings", types.SimpleNamespace(runtime=cudart))
    batch = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)

    (out,) = TensorRTBackend(max_batch=4, cache_dir=tmp_path).run(RECOGNIZER, batch)
    np.testing.assert_array_equal(out, 2 * batch)
    assert cudart.syncs == 1
    (engine_file,) = tmp_path.iterdir()
    assert "sm9.0" in engine_file.name and "trt10.0.fake" in engine_file.name

    again = TensorRTBackend(max_batch=4, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.run(RECOGNIZER, batch[:1])[0], 2 * batch[:1])
    assert len(builds) == 1  # the second backend loaded the cached engine
    with pytest.raises(ValueError, match="exceeds"):
        again.run(RECOGNIZER, np.zeros((5, 3, 4), np.float32))
