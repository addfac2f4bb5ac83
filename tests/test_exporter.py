"""export.exporter (edge-export): tiny fastai learners built here, exported, gated, and run by edge-run.

Each learner is pickled the way a notebook's would be: camvid's get_y lives in a helper module
that is gone when the file is loaded, planet's in `__main__` with plain pickle (older fastai),
biwi's in this (importable) module.
"""

import contextlib
import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastai")
ort = pytest.importorskip("onnxruntime")

from fastai.data.block import DataBlock, MultiCategoryBlock  # noqa: E402
from fastai.data.transforms import FuncSplitter, Normalize, RandomSplitter, get_image_files  # noqa: E402
from fastai.layers import ConvLayer, Flatten  # noqa: E402
from fastai.learner import Learner  # noqa: E402
from fastai.losses import BCEWithLogitsLossFlat  # noqa: E402
from fastai.vision.augment import Resize, aug_transforms  # noqa: E402
from fastai.vision.core import imagenet_stats  # noqa: E402
from fastai.vision.data import ImageBlock, MaskBlock, PointBlock  # noqa: E402
from fastai.vision.learner import unet_learner, vision_learner  # noqa: E402
from PIL import Image  # noqa: E402

from edge.backends.ort import OrtBackend  # noqa: E402
from edge.backends.torch_backend import TorchBackend  # noqa: E402
from edge.cli import main as edge_run  # noqa: E402
from edge.errors import ModelError  # noqa: E402
from edge.model import parse  # noqa: E402
from export import exporter, learner  # noqa: E402
from tests.makers_clips import make_clip, square  # noqa: E402

CAMVID_SIZE = (40, 56)  # not a multiple of 32: the U-Net resizes back to it inside, frozen by the trace
CODES = ("Road", "Sky", "Blob")  # Blob is no CamVid code: it gets a palette colour of its own
TAGS = ("red", "green", "rare")  # no image is "rare": its threshold stays 0.2
PLANET_STATS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
# planet images: (red, green) as fractions; a tag is on when its channel is above 0.6.
PLANET_COLOURS = [(r, g) for r in (0.35, 0.45, 0.7, 0.9) for g in (0.4, 0.8)]


def tiny_arch(pretrained=False):
    """A three-stage conv net ending in a pool: fastai cuts its body at the pool, as a resnet's."""
    return torch.nn.Sequential(ConvLayer(3, 8, stride=2), ConvLayer(8, 16, stride=2), ConvLayer(16, 32, stride=2),
                               torch.nn.AdaptiveAvgPool2d(1), Flatten(), torch.nn.Linear(32, 10))


class ChannelScore(torch.nn.Module):
    """planet stand-in with known outputs: tag logits are the normalised red and green means (and 0)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, len(TAGS))
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0]]))
            self.linear.bias.zero_()

    def forward(self, x):
        return self.linear(x.mean((2, 3)))


def get_msk(path):
    return path.parent / "labels" / f"{path.stem}_P.png"


def get_tags(path):
    return path.stem.split("_")[1:]


def get_ctr(path):
    _, x, y = path.stem.split("_")
    return torch.tensor([[float(x), float(y)]])


def write_camvid(folder: Path) -> list[Path]:
    (folder / "labels").mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(8):
        files.append(folder / f"f{i}.png")
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(files[-1])
        Image.fromarray(rng.integers(0, len(CODES), (48, 64), dtype=np.uint8)).save(get_msk(files[-1]))
    return files


def write_planet(folder: Path) -> Path:
    """train/ and valid/ images of solid colour, named with their tags."""
    for split in ("train", "valid"):
        (folder / split).mkdir(parents=True)
        for i, (r, g) in enumerate(PLANET_COLOURS):
            tags = [t for t, v in (("red", r), ("green", g)) if v > 0.6]
            pixels = np.zeros((36, 36, 3), np.uint8) + np.array([r, g, 0.5]) * 255
            Image.fromarray(pixels.astype(np.uint8)).save(folder / split / ("_".join([f"{i}", *tags]) + ".png"))
    return folder


def planet_dls(data, *, size, bs, seed, augment):
    """export.datasets.planet_dls's signature, over write_planet's layout (stands in for it in --data,
    so these tests need nothing from the real layouts)."""
    block = DataBlock(blocks=(ImageBlock, MultiCategoryBlock(vocab=list(TAGS))), get_items=get_image_files,
                      get_y=get_tags, splitter=FuncSplitter(lambda p: p.parent.name == "valid"),
                      item_tfms=Resize(size), batch_tfms=Normalize.from_stats(*PLANET_STATS))
    return block.dataloaders(data, bs=bs, num_workers=0)


def write_biwi(folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    files = []
    for i in range(8):
        files.append(folder / f"{i}_{10 + 5 * i}_{20 + 2 * i}.png")
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(files[-1])
    return files


@contextlib.contextmanager
def pickled_from(function, module_name: str):
    """While exporting, `function` lives in `module_name`, so the pickle names it there."""
    with pytest.MonkeyPatch.context() as mp:
        module = sys.modules.get(module_name) or types.ModuleType(module_name)
        mp.setitem(sys.modules, module_name, module)
        mp.setattr(module, function.__name__, function, raising=False)
        mp.setattr(function, "__module__", module_name)
        yield


def build_learners(folder: Path) -> dict[str, Path]:
    """The three learner files, each as `learn.export()` writes it."""
    torch.manual_seed(0)
    block = DataBlock(blocks=(ImageBlock, MaskBlock(codes=CODES)), get_y=get_msk,
                      splitter=RandomSplitter(0.25, seed=0), item_tfms=Resize(CAMVID_SIZE, method="squish"),
                      batch_tfms=Normalize.from_stats(*imagenet_stats))
    camvid = unet_learner(block.dataloaders(write_camvid(folder / "camvid"), bs=2, num_workers=0), tiny_arch,
                          pretrained=False)
    with pickled_from(get_msk, "notebook_helpers"):  # a helper module of the notebook, absent at load
        camvid.export(folder / "camvid.pkl")

    planet = Learner(planet_dls(write_planet(folder / "planet"), size=32, bs=4, seed=0, augment=False),
                     ChannelScore(), loss_func=BCEWithLogitsLossFlat())
    with pickled_from(get_tags, "__main__"):  # the notebook itself, pickled by name as older fastai did
        planet.export(folder / "planet.pkl", pickle_module=pickle)

    block = DataBlock(blocks=(ImageBlock, PointBlock), get_y=get_ctr, splitter=RandomSplitter(0.25, seed=0),
                      item_tfms=Resize((48, 64), method="pad"))
    biwi = vision_learner(block.dataloaders(write_biwi(folder / "biwi"), bs=2, num_workers=0), tiny_arch,
                          pretrained=False, y_range=(-1, 1))
    biwi.export(folder / "biwi.pkl")
    return {task: folder / f"{task}.pkl" for task in ("camvid", "planet", "biwi")}


@pytest.fixture(scope="module")
def learners(tmp_path_factory):
    return build_learners(tmp_path_factory.mktemp("learners"))


@pytest.fixture(scope="module")
def exported(learners, tmp_path_factory):
    """Per task: the report of `export()` with an ONNX file and a torch program."""
    folder = tmp_path_factory.mktemp("exported")
    return {task: exporter.export(path, folder / f"{task}.onnx", torch_program=folder / f"{task}.pt2")
            for task, path in learners.items()}


def contract_of(path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return parse(dict(session.get_modelmeta().custom_metadata_map)), session.get_inputs()[0]


def test_learners_load_though_their_dataset_functions_are_gone(learners, capsys):
    for task, name in (("camvid", "notebook_helpers.get_msk"), ("planet", "__main__.get_tags")):
        learn = learner.load_learner(learners[task])
        assert isinstance(learn.model, torch.nn.Module)
        assert name in capsys.readouterr().err
    with pytest.raises(ModelError, match="notebook_helpers.get_msk is not importable"):
        learner.placeholder("notebook_helpers", "get_msk")(Path("x.png"))


@pytest.mark.parametrize("task", ["camvid", "planet", "biwi"])
def test_contract_is_read_from_the_learner(exported, task):
    contract, pixels = contract_of(exported[task]["onnx"])
    assert contract.task == task and contract.input_format == "uint8_nhwc"
    assert pixels.type == "tensor(uint8)" and pixels.shape[1:] == [*contract.input_size, 3]
    if task == "camvid":
        assert contract.input_size == CAMVID_SIZE and contract.resize == "squish"
        assert contract.classes == CODES
        assert contract.palette[:2] == ((128, 64, 128), (128, 128, 128))  # CamVid's Road and Sky
        assert contract.palette[2] not in contract.palette[:2]
        assert (contract.mean, contract.std) == tuple(tuple(stats) for stats in imagenet_stats)
    elif task == "planet":
        assert contract.input_size == (32, 32) and contract.resize == "crop"  # Resize's default method
        assert contract.classes == TAGS and contract.thresholds == (0.2, 0.2, 0.2)
        assert (contract.mean, contract.std) == PLANET_STATS
    else:
        assert contract.input_size == (48, 64) and contract.resize == "pad"
        assert contract.point_convention == "xy_minus1_1"
        assert (contract.mean, contract.std) == ((0, 0, 0), (1, 1, 1))  # no Normalize: fastai fed 0..1


def test_the_gate_prints_its_table_and_returns_it(learners, tmp_path, capsys):
    assert exporter.main([str(learners["biwi"]), "--onnx", str(tmp_path / "biwi.onnx")]) == 0
    out, err = capsys.readouterr()
    assert "parity: onnxruntime vs PyTorch on random pixels" in out and "max_point_diff_px" in out
    assert "random images" in err and "no Normalize" in err
    report = exporter.export(learners["camvid"], tmp_path / "camvid.onnx")
    assert report["parity"]["passed"] and report["parity"]["metrics"]["pixel_agreement"] == 1.0
    assert set(report["parity"]["metrics"]) == {"pixel_agreement", "mean_iou", "differing_pixels"}


def perturbed_export(original):
    """export_onnx, but of a model whose last layer's weights were nudged: a broken export."""
    def export_onnx(model, contract, path, **kw):
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        saved = last.weight.detach().clone()
        with torch.no_grad():
            last.weight.add_(0.5)
        try:
            return original(model, contract, path, **kw)
        finally:
            with torch.no_grad():
                last.weight.copy_(saved)
    return export_onnx


def test_an_export_that_disagrees_fails_with_exit_4_and_writes_nothing(learners, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(exporter, "export_onnx", perturbed_export(exporter.export_onnx))
    out = tmp_path / "planet.onnx"
    assert exporter.main([str(learners["planet"]), "--onnx", str(out)]) == 4
    assert "disagrees with PyTorch" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_gate_bounds_are_the_module_constant(learners, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(exporter.GATE, "biwi", {"max_point_diff_px": ("<=", -1.0)})
    assert exporter.main([str(learners["biwi"]), "--onnx", str(tmp_path / "biwi.onnx")]) == 4
    out, err = capsys.readouterr()
    assert "FAIL" in out and "max_point_diff_px" in err


def test_a_task_conflicting_with_the_learner_names_both(learners, tmp_path, capsys):
    assert exporter.main([str(learners["camvid"]), "--onnx", str(tmp_path / "x.onnx"), "--task", "biwi"]) == 4
    [error] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "--task biwi" in error and "camvid" in error


def test_what_is_not_a_learner_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "state.pkl")
    for name, code, message in (("junk.pkl", 4, "not a fastai learner"),
                                ("state.pkl", 4, "not a fastai learner ('dict'"), ("absent.pkl", 3, "not found")):
        assert exporter.main([str(tmp_path / name), "--onnx", str(tmp_path / "x.onnx")]) == code
        err = capsys.readouterr().err.strip()
        assert message in err and str(tmp_path / name) in err and len(err.splitlines()) == 1


def test_planet_thresholds_are_fitted_on_labelled_validation_images(learners, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(exporter.datasets, "planet_dls", planet_dls)
    data = learners["planet"].parent / "planet"
    assert exporter.main([str(learners["planet"]), "--onnx", str(tmp_path / "p.onnx"), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "thresholds (best F2" in out and f"{len(PLANET_COLOURS)} images from {data}" in out
    thresholds = dict(zip(TAGS, contract_of(tmp_path / "p.onnx")[0].thresholds))

    def prob(v):  # ChannelScore's output for a channel at fraction v, after uint8 and Normalize
        return 1 / (1 + np.exp(-(int(v * 255) / 255 - 0.5) / 0.25))

    for tag, channel in (("red", 0), ("green", 1)):
        values = {colour[channel] for colour in PLANET_COLOURS}
        highest_off = max(prob(v) for v in values if v <= 0.6)
        lowest_on = min(prob(v) for v in values if v > 0.6)
        assert highest_off < thresholds[tag] <= lowest_on  # every image right; 0.2 would tag them all
    assert thresholds["rare"] == 0.2


@pytest.mark.parametrize("item,batch,expected", [
    (Resize((48, 64), method="pad"), [], ((48, 64), "pad")),
    (Resize(30), [], ((30, 30), "crop")),
    (Resize((48, 64), method="crop"), aug_transforms(size=(24, 32)), ((24, 32), "crop")),  # same aspect: crop
    (Resize((48, 64), method="pad"), aug_transforms(size=(32, 32)), ((32, 32), "squish")),
    (Resize((48, 64)), aug_transforms(size=(24, 24), min_scale=0.5), ((24, 24), "crop")),  # RandomResizedCropGPU
])
def test_the_input_size_is_what_fastai_fed_at_validation(learners, item, batch, expected):
    block = DataBlock(blocks=(ImageBlock, PointBlock), get_y=get_ctr, item_tfms=item, batch_tfms=batch)
    dls = block.dataloaders(sorted((learners["biwi"].parent / "biwi").glob("*.png")), bs=2, num_workers=0)
    assert learner.input_size(dls) == expected
    assert dls.valid.one_batch()[0].shape[-2:] == expected[0]


def test_size_override_exports_the_unet_at_that_size(learners, tmp_path):
    report = exporter.export(learners["camvid"], tmp_path / "c.onnx", size=(64, 64))
    contract, pixels = contract_of(report["onnx"])
    assert contract.input_size == (64, 64) and pixels.shape[1:] == [64, 64, 3]
    assert report["parity"]["passed"]


@pytest.mark.parametrize("task,files", [
    ("camvid", ("overlay.mp4", "classes.csv", "run.json")),
    ("planet", ("scores.csv", "timeline.json", "tags.vtt")),
    ("biwi", ("overlay.mp4", "track.csv")),
])
def test_the_exported_file_runs_through_edge_run(exported, tmp_path, task, files):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, [square(48, 64, 8 + 4 * i, 16 + 4 * i, size=12) for i in range(6)], fps=10)
    out = tmp_path / "out"
    assert edge_run([str(clip), "--model", exported[task]["onnx"], "--out", str(out), "--quiet"]) == 0
    folder = out / "clip" / task
    assert all((folder / name).stat().st_size > 0 for name in files)
    assert json.loads((folder / "run.json").read_text())["frames"]["processed"] == 6


@pytest.mark.parametrize("task", ["camvid", "planet", "biwi"])
def test_the_torch_program_matches_the_onnx_file(exported, task):
    report = exported[task]
    assert report["torch_parity"]["passed"]
    onnx, program = OrtBackend(report["onnx"]), TorchBackend(report["torch_program"])
    assert program.metadata == {k: v for k, v in onnx.metadata.items() if k.startswith("edge.")}
    h, w = parse(program.metadata).input_size
    batch = np.random.default_rng(3).integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    ours, theirs = program.run(batch), onnx.run(batch)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    if task == "camvid":
        assert (ours == theirs).mean() >= 0.999
    else:
        assert np.abs(ours - theirs).max() <= 1e-4


def test_a_learner_in_memory_gates_on_its_own_validation_set(learners, tmp_path):
    learn = Learner(planet_dls(learners["planet"].parent / "planet", size=32, bs=4, seed=0, augment=False),
                    ChannelScore(), loss_func=BCEWithLogitsLossFlat())
    report = exporter.export(learn, tmp_path / "p.onnx")
    assert report["images"] == f"{len(PLANET_COLOURS)} images from the learner's validation set"
    assert report["parity"]["passed"] and report["contract"]["edge.thresholds"] != json.dumps([0.2] * 3)


class EngineStandIn:
    """Runs the engine gate without a GPU: the ONNX the engine was built from, through
    onnxruntime, optionally nudged the way an fp16 overflow would be."""

    nudge = 0.0

    def __init__(self, path, *, precision, batch):
        from edge import engine_cache

        side = engine_cache.read_sidecar(path)
        assert side["precision"] == precision
        self.onnx = OrtBackend(side["onnx"])

    def run(self, batch):
        return self.onnx.run(batch) + self.nudge


@pytest.fixture
def fake_trt(monkeypatch, tmp_path):
    from edge import tensorrt_engine
    from tests import fake_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt)
    monkeypatch.setenv("EDGE_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tensorrt_engine, "gpu_info", lambda: {
        "trt_version": "10.3.0", "gpu_name": "NVIDIA GeForce RTX 3060", "compute_capability": "8.6"})
    monkeypatch.setattr("edge.backends.tensorrt.TensorrtBackend", EngineStandIn)
    return fake_tensorrt


def test_trt_builds_a_plain_engine_with_its_sidecar_beside_the_onnx(learners, tmp_path, fake_trt, capsys):
    out = tmp_path / "models" / "biwi.onnx"
    assert exporter.main([str(learners["biwi"]), "--onnx", str(out), "--trt", "--fp16", "--batch", "4"]) == 0
    printed = capsys.readouterr().out
    assert "parity: TensorRT fp16 vs PyTorch" in printed
    plan = json.loads((tmp_path / "models" / "biwi.engine").read_bytes())  # the fake's plan is JSON
    assert "FP16" in plan["builder_flags"]
    side = json.loads((tmp_path / "models" / "biwi.engine.json").read_text())
    assert side["precision"] == "fp16" and side["profile"] == [1, 4, 4]
    assert side["metadata"]["edge.task"] == "biwi" and side["onnx_sha256"]


def test_an_engine_that_disagrees_is_removed_and_names_the_fp32_way_out(learners, tmp_path, fake_trt, capsys,
                                                                        monkeypatch):
    monkeypatch.setattr(EngineStandIn, "nudge", 0.5)  # half the [-1, 1] range: points far off
    out = tmp_path / "biwi.onnx"
    assert exporter.main([str(learners["biwi"]), "--onnx", str(out), "--trt", "--fp16"]) == 4
    assert "--fp32-layers" in capsys.readouterr().err
    assert out.exists() and not (tmp_path / "biwi.engine").exists() and not (tmp_path / "biwi.engine.json").exists()


def test_bad_trt_options_are_refused_before_anything_is_written(learners, tmp_path, capsys):
    out = tmp_path / "biwi.onnx"
    assert exporter.main([str(learners["biwi"]), "--onnx", str(out), "--trt", "--fp32-layers", "conv"]) == 2
    assert "--trt:" in capsys.readouterr().err and not out.exists()


def test_trt_options_need_trt_and_tensorrt(learners, tmp_path, capsys, monkeypatch):
    assert exporter.main([str(learners["biwi"]), "--onnx", str(tmp_path / "b.onnx"), "--fp16"]) == 2
    assert "add --trt" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert exporter.main([str(learners["biwi"]), "--onnx", str(tmp_path / "b.onnx"), "--trt"]) == 2
    [error] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "TensorRT is not installed" in error
