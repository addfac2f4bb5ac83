"""export.onnx_export: tiny fastai-shaped models per task → contract ONNX files the runtime runs."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastai")
ort = pytest.importorskip("onnxruntime")

from fastai.layers import ConvLayer  # noqa: E402
from fastai.vision.learner import create_head  # noqa: E402
from fastai.vision.models.unet import DynamicUnet  # noqa: E402

from edge.cli import main  # noqa: E402
from edge.model import Contract, parse  # noqa: E402
from export.onnx_export import export_onnx, parity  # noqa: E402
from tests.makers_clips import make_clip, square  # noqa: E402

SIZE = (48, 64)
STATS = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CLASSES = ("Void", "Road", "Sky", "Car")
TAGS = ("clear", "cloudy", "road", "water", "haze")

CONTRACTS = {
    "camvid": Contract(task="camvid", input_size=SIZE, input_format="uint8_nhwc", output="class_ids",
                       classes=CLASSES, palette=((0, 0, 0), (128, 64, 128), (128, 128, 128), (64, 0, 128)),
                       producer="tests", **STATS),
    "planet": Contract(task="planet", input_size=SIZE, input_format="uint8_nhwc", output="probabilities",
                       classes=TAGS, thresholds=(0.5,) * len(TAGS), producer="tests", **STATS),
    "biwi": Contract(task="biwi", input_size=SIZE, input_format="uint8_nhwc", output="points",
                     point_convention="xy_minus1_1", producer="tests", **STATS),
}


def body():
    """A three-stage conv encoder: the shape of a resnet body, a thousandth of the cost."""
    return torch.nn.Sequential(ConvLayer(3, 8, stride=2), ConvLayer(8, 16, stride=2), ConvLayer(16, 32, stride=2))


def tiny(task: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if task == "camvid":
        return DynamicUnet(body(), len(CLASSES), SIZE)
    if task == "planet":
        return torch.nn.Sequential(body(), create_head(32, len(TAGS)))
    return torch.nn.Sequential(body(), create_head(32, 2, y_range=(-1, 1)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Per task: the tiny model and its exported file (built once; export is the slow part)."""
    folder = tmp_path_factory.mktemp("export")
    out = {}
    for task, contract in CONTRACTS.items():
        model = tiny(task)
        out[task] = model, export_onnx(model, contract, folder / f"{task}.onnx")
    return out


def images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("task", CONTRACTS)
def test_file_carries_the_contract_and_takes_uint8_nhwc_with_a_dynamic_batch(exported, task):
    session = ort.InferenceSession(exported[task][1], providers=["CPUExecutionProvider"])
    assert parse(dict(session.get_modelmeta().custom_metadata_map)) == CONTRACTS[task]
    pixels = session.get_inputs()[0]
    assert pixels.type == "tensor(uint8)" and pixels.shape[1:] == [*SIZE, 3] and isinstance(pixels.shape[0], str)
    tail = {"camvid": SIZE, "planet": (len(TAGS),), "biwi": (2,)}[task]
    for n in (1, 3):
        out = session.run(None, {pixels.name: images(n)})[0]
        assert out.shape == (n, *tail)
    assert out.dtype == (np.int64 if task == "camvid" else np.float32)


@pytest.mark.parametrize("task,key,bound", [
    ("camvid", "pixel_agreement", lambda v: v >= 0.999),
    ("planet", "max_prob_diff", lambda v: v < 1e-4),
    ("planet", "tag_agreement", lambda v: v == 1.0),
    ("biwi", "max_point_diff_px", lambda v: v < 1e-3),
])
def test_onnxruntime_agrees_with_torch(exported, task, key, bound):
    model, path = exported[task]
    figures = parity(model, path, CONTRACTS[task], images=images(4, seed=2))
    assert bound(figures[key]), figures


@pytest.mark.parametrize("task", ["camvid", "planet"])
def test_raw_logits_export(tmp_path, task):
    contract = dataclasses.replace(CONTRACTS[task], output="logits")
    model = tiny(task)
    path = export_onnx(model, contract, tmp_path / "logits.onnx", decode=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = session.run(None, {"pixels": images(2)})[0]
    assert out.shape == ((2, len(CLASSES), *SIZE) if task == "camvid" else (2, len(TAGS)))
    figures = parity(model, path, contract, images=images(2))
    assert figures.get("pixel_agreement", 1.0) >= 0.999 and figures.get("max_prob_diff", 0.0) < 1e-4


@pytest.mark.parametrize("task,change,kw,message", [
    ("camvid", dict(output="logits"), {}, "output"),
    ("camvid", dict(output="class_ids"), dict(decode=False), "output"),
    ("camvid", dict(input_format="float32_nchw"), {}, "input_format"),
    ("camvid", dict(channel_order="BGR"), {}, "channel_order"),
    ("camvid", dict(classes=CLASSES + ("Tree",), palette=CONTRACTS["camvid"].palette + ((128, 128, 0),)), {},
     "shape"),
    ("planet", dict(classes=TAGS[:3], thresholds=(0.5,) * 3), {}, "shape"),
    ("planet", dict(thresholds=(0.5,)), {}, "thresholds"),
    ("biwi", dict(point_convention="xy_pixels"), {}, "point_convention"),
    ("biwi", {}, dict(decode=False), "allowed tasks: camvid, planet"),
    ("planet", {}, dict(opset=9), "opset"),
    ("planet", {}, dict(decode="yes"), "decode"),
])
def test_a_contract_that_disagrees_with_the_graph_is_refused(tmp_path, task, change, kw, message):
    contract = dataclasses.replace(CONTRACTS[task], **change)
    with pytest.raises(ValueError, match=message):
        export_onnx(tiny(task), contract, tmp_path / "bad.onnx", **kw)
    assert not (tmp_path / "bad.onnx").exists()


def test_parity_refuses_images_of_the_wrong_kind(exported):
    model, path = exported["planet"]
    with pytest.raises(ValueError, match="uint8"):
        parity(model, path, CONTRACTS["planet"], images=images(2).astype(np.float32))


@pytest.mark.parametrize("task,written", [
    ("camvid", ["overlay.mp4", "classes.csv"]),
    ("planet", ["scores.csv"]),
    ("biwi", ["track.csv", "overlay.mp4"]),
])
def test_exported_model_runs_end_to_end(exported, tmp_path, task, written):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, [square(96, 128, 30, 4 * i, size=16) for i in range(8)], fps=10)
    assert main([str(clip), "--model", exported[task][1], "--out", str(tmp_path / "out"), "--quiet"]) == 0
    folder = tmp_path / "out" / "clip" / task
    for name in written:
        assert (folder / name).stat().st_size > 0
