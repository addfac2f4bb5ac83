"""Frames on the model's device (edge/device.py): the same results as the host path.

Every test runs on the CPU (torch CPU tensors, the same code) and again on CUDA where there is
one; CUDA cases skip without it, and fail instead when EDGE_REQUIRE_GPU=1.
"""

import csv
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from edge import device as device_module  # noqa: E402
from edge.cli import main  # noqa: E402
from edge.device import DevicePath, blend, for_models, host, segment  # noqa: E402
from edge.errors import UsageError  # noqa: E402
from edge.geometry import NO_CLASS, Preprocessor, Window  # noqa: E402
from edge.model import Contract  # noqa: E402
from tests.makers_clips import make_clip, solid  # noqa: E402
from tests.makers_programs import twins  # noqa: E402

DEVICES = ["cpu", "cuda"]


def on(device: str) -> DevicePath:
    if device == "cuda" and not torch.cuda.is_available():
        if os.environ.get("EDGE_REQUIRE_GPU") == "1":
            pytest.fail("EDGE_REQUIRE_GPU=1 but torch has no CUDA here")
        pytest.skip("torch has no CUDA here")
    return DevicePath(device)


def frames(n: int, size=(90, 120)) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    base = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), size[::-1], interpolation=cv2.INTER_CUBIC)
    return [np.roll(base, 3 * i, axis=1) for i in range(n)]


def contract(resize: str, input_format: str = "uint8_nhwc", channel_order: str = "RGB", size=(48, 64)) -> Contract:
    return Contract(task="camvid", input_size=size, input_format=input_format, output="class_ids", resize=resize,
                    classes=("a", "b", "c"), palette=((1, 2, 3), (4, 5, 6), (7, 8, 9)), producer="tests",
                    channel_order=channel_order, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("resize", ["squish", "crop", "pad"])
@pytest.mark.parametrize("input_format, channel_order", [("uint8_nhwc", "RGB"), ("float_nchw", "BGR")])
@pytest.mark.parametrize("size", [(48, 64), (160, 200)])  # shrinking, enlarging
def test_model_input_matches_the_host_preprocessing(device, resize, input_format, channel_order, size):
    path, spec = on(device), contract(resize, input_format, channel_order, size)
    images = frames(3)
    with path.stage():
        ours = host(path.model_input(path.upload(images), Window.fit(images[0].shape[:2], size, resize), spec))
    theirs = Preprocessor(spec)(images)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    scale = 1 if input_format == "uint8_nhwc" else 1 / (255 * 0.225)  # one level, normalized
    difference = np.abs(ours.astype(np.float64) - theirs)
    assert difference.mean() <= 0.6 * scale and np.quantile(difference, 0.99) <= 3 * scale


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("resize", ["squish", "crop", "pad"])
@pytest.mark.parametrize("logits", [False, True])
def test_segment_maps_classes_to_the_frame_exactly_as_the_host_does(device, resize, logits):
    path = on(device)
    rng = np.random.default_rng(1)
    ids = np.repeat(np.repeat(rng.integers(0, 3, (4, 12, 16)), 4, axis=1), 4, axis=2)  # blocks, few ties
    window = Window.fit((90, 160), (48, 64), resize)  # another aspect: crop leaves some unseen
    raw = np.eye(3, dtype=np.float32)[ids].transpose(0, 3, 1, 2) if logits else ids
    masks, fractions = segment(torch.from_numpy(raw).to(path.device), window, 3, logits)
    for mask, row, model_mask in zip(host(masks), fractions, ids.astype(np.uint8)):
        expected = window.mask_to_frame(model_mask)
        assert (mask == expected).all()
        counts = np.bincount(expected.ravel(), minlength=NO_CLASS + 1)[:3] / expected.size
        assert np.allclose(row, counts, rtol=0, atol=1e-12)
    if resize == "crop":
        assert (host(masks) == NO_CLASS).any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("keep_unseen", [False, True])
def test_blend_rounds_as_add_weighted(device, keep_unseen):
    on(device)
    image = frames(1)[0]
    mask = np.random.default_rng(2).integers(0, 3, image.shape[:2]).astype(np.uint8)
    mask[:10] = NO_CLASS
    palette = np.zeros((NO_CLASS + 1, 3), np.uint8)
    palette[:3] = [(200, 10, 10), (10, 200, 10), (10, 10, 200)]
    ours = blend(torch.from_numpy(image).to(device), mask, palette, 0.4, keep_unseen)
    theirs = cv2.addWeighted(image, 0.6, palette[mask], 0.4, 0)
    if keep_unseen:
        theirs[:10] = image[:10]
    assert np.abs(ours.astype(int) - theirs).max() <= 1


def rows(path):
    with open(path, newline="") as f:
        return [[float(v) for v in row] for row in list(csv.reader(f))[1:]]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("task, options", [("camvid", {}), ("camvid", {"output": "logits", "resize": "crop"}),
                                           ("planet", {}), ("biwi", {})])
@pytest.mark.parametrize("upload", ["planes", "rgb"])
def test_a_run_with_frames_on_the_device_gives_the_host_paths_outputs(tmp_path, device, task, options, upload):
    on(device)
    clip = tmp_path / "walk.mp4"
    pictures = []
    for i in range(30):
        frame = solid(96, 128, (200 if 10 <= i < 20 else 30, 40, 60 + 4 * i))
        frame[20 + i % 40 : 40 + i % 40, 10 + 3 * i : 30 + 3 * i] = (250, 250, 250)
        pictures.append(frame)
    make_clip(clip, pictures, fps=25)
    onnx_path, program = twins(tmp_path, task, **options)
    common = [str(clip), "--quiet", "--stride", "2", "--batch", "4"] + (["--save-masks"] if task == "camvid" else [])
    assert main(common + ["--model", onnx_path, "--out", str(tmp_path / "host")]) == 0
    assert main(common + ["--model", program, "--backend", "torch", "--device", device, "--upload", upload,
                          "--frames-on", "device", "--out", str(tmp_path / "device")]) == 0
    table = {"camvid": "classes.csv", "planet": "scores.csv", "biwi": "track.csv"}[task]
    ours, theirs = (np.array(rows(tmp_path / run / "walk" / task / table)) for run in ("device", "host"))
    assert ours.shape == theirs.shape == (15, theirs.shape[1])
    assert np.abs(ours - theirs).max() <= {"camvid": 0.01, "planet": 0.01, "biwi": 0.6}[task]
    if task == "camvid":
        for index in (0, 14, 28):
            name = f"masks/{index:07d}.png"
            ours, theirs = (cv2.imread(str(tmp_path / run / "walk" / task / name), cv2.IMREAD_UNCHANGED)
                            for run in ("device", "host"))
            assert (ours == theirs).mean() >= 0.99


def test_the_device_path_is_taken_only_where_every_model_takes_tensors_on_one_device():
    class Backend:
        def __init__(self, device):
            self.tensor_device = device

    assert for_models([Backend("cpu"), Backend("cpu")], "device").device.type == "cpu"
    assert for_models([Backend("cpu"), Backend("cpu")]) is None  # auto: on the CPU the host path is faster
    assert for_models([Backend("cuda")], "host") is None
    for backends in ([Backend("cpu"), Backend(None)], [Backend("cpu"), Backend("cuda")], [Backend(None)]):
        assert for_models(backends) is None
        with pytest.raises(UsageError, match="do not all take tensors on one device"):
            for_models(backends, "device")
    with pytest.raises(UsageError, match="allowed: auto, host, device"):
        for_models([Backend("cpu")], "gpu")


def test_host_and_finite_rows_take_arrays_and_tensors():
    values = np.array([[1.0, 2.0], [np.nan, 0.0], [np.inf, 1.0]], np.float32)
    for raw in (values, torch.from_numpy(values)):
        assert device_module.finite_rows(raw).tolist() == [True, False, False]
    assert device_module.finite_rows(torch.zeros(2, 3, dtype=torch.int64)) is None
    assert host(torch.ones(2)).tolist() == [1.0, 1.0] and host([1, 2]).tolist() == [1, 2]


def test_the_runtime_imports_without_torch():
    code = "import sys, edge.api, edge.device, edge.tasks.camvid; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__))).returncode == 0


@pytest.mark.parametrize("device", DEVICES)
def test_planes_become_rgb_on_the_device_as_cv2_converts_them(device):
    path = on(device)
    planes = [cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420) for frame in frames(3)]
    # and any bytes at all: luma below black, colours that clip
    planes.append(np.random.default_rng(0).integers(0, 256, planes[0].shape, dtype=np.uint8))
    with path.stage():
        ours = host(path.rgb(path.upload(planes)))
    theirs = np.stack([cv2.cvtColor(p, cv2.COLOR_YUV2RGB_I420) for p in planes])
    assert ours.shape == theirs.shape and np.abs(ours.astype(int) - theirs).max() <= 1


def test_cuda_uploads_go_through_one_pinned_buffer():
    path = on("cuda")
    with path.stage():
        first = path.upload(frames(4))
    buffer = path._local.staging
    with path.stage():
        second = path.upload(frames(2))
    assert path._local.staging is buffer and buffer.is_pinned()
    assert first.device.type == "cuda" and (host(second) == np.stack(frames(2))).all()


@pytest.mark.parametrize("device", DEVICES)
def test_a_resumed_device_run_equals_an_uninterrupted_one(tmp_path, device, monkeypatch):
    from tests.test_resume import contents, fail_at_checkpoint, scene

    on(device)
    clip = tmp_path / "walk.mp4"
    make_clip(clip, scene(60), fps=25, audio=True)
    _, program = twins(tmp_path, "camvid")
    argv = [str(clip), "--model", program, "--backend", "torch", "--device", device, "--stride", "3",
            "--checkpoint-every", "0.4", "--save-masks", "--quiet", "--frames-on", "device"]
    assert main(argv + ["--out", str(tmp_path / "whole")]) == 0
    fail_at_checkpoint(monkeypatch, 3)
    assert main(argv + ["--out", str(tmp_path / "cut")]) == 6
    monkeypatch.undo()
    assert main(argv + ["--out", str(tmp_path / "cut"), "--resume"]) == 0
    assert contents(tmp_path / "cut") == contents(tmp_path / "whole")


def test_run_json_says_where_frames_met_the_models(tmp_path):
    clip = tmp_path / "c.mp4"
    make_clip(clip, [solid(48, 64, (10 * i, 0, 0)) for i in range(6)], fps=25)
    onnx_path, program = twins(tmp_path, "planet")
    from edge.api import run
    from edge.run.options import RunOptions

    (on_host,) = run([str(clip)], RunOptions(models=[onnx_path], out=str(tmp_path / "a")))
    (on_device,) = run([str(clip)], RunOptions(models=[program], out=str(tmp_path / "b"), frames_on="device"))
    (auto,) = run([str(clip)], RunOptions(models=[program], out=str(tmp_path / "c")))
    assert (on_host.frames_on, on_device.frames_on, auto.frames_on) == ("host", "cpu", "host")
    assert on_host.options["encoder"] == "libx264"


@pytest.mark.parametrize("task", ["camvid", "planet", "biwi"])
def test_agreement_compares_what_users_get_from_two_runs(tmp_path, task):
    from bench.agreement import compare, met

    clip = tmp_path / "walk.mp4"
    make_clip(clip, [solid(96, 128, (200 if i > 8 else 30, 40, 8 * i)) for i in range(16)], fps=25)
    onnx_path, program = twins(tmp_path, task)
    for name, model, where in (("a", onnx_path, "host"), ("b", program, "device")):
        assert main([str(clip), "--model", model, "--save-masks", "--quiet", "--frames-on", where,
                     "--out", str(tmp_path / name)]) == 0
    figures = compare(task, tmp_path / "a" / "walk" / task, tmp_path / "b" / "walk" / task)
    assert figures["frames"] == 16 and met(task, figures), figures
    broken = {"camvid": {"pixels_equal": 0.9}, "planet": {"frames_same_tags": 0.5}, "biwi": {"max_px": 3.0}}[task]
    assert not met(task, {**figures, **broken})


@pytest.mark.parametrize("task", ["camvid", "planet", "biwi"])
def test_the_shipped_torch_programs_are_their_onnx_twins(task):
    from edge.backends.ort import OrtBackend
    from edge.backends.torch_backend import TorchBackend
    from edge.model import parse
    from edge.run.models import default_model

    onnx_path = default_model(task)
    onnx, program = OrtBackend(onnx_path), TorchBackend(onnx_path.removesuffix(".onnx") + ".pt2")
    assert parse(program.metadata) == parse(onnx.metadata)
    h, w = parse(onnx.metadata).input_size
    pixels = np.random.default_rng(0).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    ours, theirs = program.run(pixels), onnx.run(pixels)
    if task == "camvid":
        assert (ours == theirs).mean() >= 0.999
    else:
        assert np.abs(ours - theirs).max() <= 1e-4


def test_what_the_decoder_gives_follows_where_frames_go():
    from edge.run.stages import pixels_for

    assert (pixels_for(["camvid"]), pixels_for(["planet"]), pixels_for(["biwi", "planet"])) == ("all_planes", "planes", "all_planes")
    assert pixels_for(["camvid", "planet"], on_device=True, upload="planes") == "all_planes"
    assert pixels_for(["camvid"], on_device=True, upload="rgb") == "all"
    assert pixels_for(["planet"], on_device=True, upload="planes") == "planes"
    assert pixels_for(["planet"], on_device=True, upload="rgb") == "selected"
    assert pixels_for(["camvid", "biwi"], on_device=True, upload="planes") == "all"  # biwi draws on the host


@pytest.mark.parametrize("task, options", [("camvid", {}), ("camvid", {"output": "logits"}), ("planet", {"batch": 2}),
                                           ("biwi", {})])
def test_onnxruntime_runs_tensors_in_place_as_it_runs_arrays(tmp_path, task, options):
    from edge.backends.ort import OrtBackend
    from tests import makers_models

    backend = OrtBackend(getattr(makers_models, task)(tmp_path / "m.onnx", **options))
    h, w = backend.input_shape[1:3]
    pixels = np.random.default_rng(0).integers(0, 256, (3, h, w, 3), dtype=np.uint8)  # 3: a fixed batch of 2 pads
    ours = backend.run_tensor(torch.from_numpy(pixels))
    assert isinstance(ours, torch.Tensor) and (host(ours) == backend.run(pixels)).all()
    assert backend.tensor_device == "cpu"


def test_agreement_counts_a_frame_one_precision_left_out_as_disagreeing(tmp_path):
    from bench.agreement import compare

    for name, rows in (("fp32", ["0.0,0,10,10,10,10", "0.04,1,20,20,20,20", "0.08,2,30,30,30,30"]),
                       ("fp16", ["0.0,0,10.5,10,10,10", "0.08,2,30,30,30,30"])):  # frame 1 came out NaN
        (tmp_path / name).mkdir()
        (tmp_path / name / "track.csv").write_text("time_s,frame,x,y,x_smooth,y_smooth\n" + "\n".join(rows) + "\n")
    figures = compare("biwi", tmp_path / "fp32", tmp_path / "fp16")
    assert figures["frames"] == 3 and figures["max_px"] == float("inf") and figures["within_1px"] == 2 / 3
