"""edge-bench --host on a tiny clip: the free models compute what they claim under the default
models' contracts, their torch programs the same as their graphs, and the report holds one row
per size and work item with sane figures (never their speed), on the host path and on the device
path (--host-device cpu: the GPU path's code on CPU tensors), each FFmpeg anchor encoding as edge
did; the options it refuses, and a machine without ffmpeg, torch or CUDA."""

import dataclasses
import importlib.util
import json
import shutil
import sys

import numpy as np
import onnxruntime as ort
import pytest

from bench import cli, free_models, host, report
from edge import backends, tasks, writer
from edge.errors import UsageError
from edge.geometry import Preprocessor
from edge.model import parse
from tests.makers_clips import make_clip, square

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg command is not installed")
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
FRAMES = 24


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    make_clip(path, [square(120, 160, 40, 4 * i, size=16, rgb=(200, 90, 30)) for i in range(FRAMES)], fps=25)
    return str(path)


def metadata(path) -> dict[str, str]:
    return dict(ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map)


def infer(path, contract, rgb: np.ndarray, backend: str = "onnxruntime") -> np.ndarray:
    """The model's raw output for a batch of model-sized RGB images, fed as edge's host path
    feeds its contract, through edge's backend (torch: the .pt2 beside the .onnx)."""
    file = free_models.program_of(path) if backend == "torch" else path
    return backends.load(str(file), backend=backend, device="cpu").run(Preprocessor(contract)(list(rgb)))


VARIANTS = {  # the defaults' contracts, and each the other way round where the contract allows
    "default": {},
    "other": {"input_format": "float32_nchw", "channel_order": "BGR", "point_convention": "xy_pixels"},
}


def variant_contract(task: str, variant: str):
    contract = free_models.free_contract(task)
    if variant != "default":
        other = {"camvid": "logits", "planet": "logits", "biwi": "points"}[task]
        contract = dataclasses.replace(contract, output=other, **VARIANTS[variant])
    return contract


def images(contract) -> np.ndarray:
    h, w = contract.input_size
    rgb = np.random.default_rng(0).integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    rgb[0, 0, 0, 0], rgb[1, 0, 0, 0] = 0, 255  # planet's corner pixel at both ends
    return rgb


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("torch", marks=needs_torch)])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("task", ["camvid", "planet", "biwi"])
def test_free_models_compute_what_they_claim(tmp_path, task, variant, backend):
    contract = variant_contract(task, variant)
    path = free_models.write(contract, tmp_path / f"{task}.onnx")
    h, w = contract.input_size
    rgb = images(contract)
    y = infer(path, contract, rgb, backend)
    red = rgb[..., 0].astype(np.int64)
    if task == "camvid":
        ids = y.argmax(axis=1) if contract.output == "logits" else y
        assert ids.shape == (3, h, w) and np.array_equal(ids, red * len(contract.classes) // 256)
    elif task == "planet":
        k = len(contract.classes)
        want = np.clip(red[:, :1, 0] / 255 + np.arange(k) / (k - 1) - 0.5, 0, 1)
        got = 1 / (1 + np.exp(-y)) if contract.output == "logits" else y
        assert got.shape == (3, k)
        assert np.allclose(got, np.clip(want, free_models.LOGIT_EPS, 1 - free_models.LOGIT_EPS)
                           if contract.output == "logits" else want, atol=1e-4)
        passed = got >= np.array(contract.thresholds)
        assert passed.any() and not passed.all()  # some tags pass, some do not
    else:
        centre = rgb[:, h // 2, w // 2, :2] / 255
        want = centre * 2 - 1 if contract.point_convention == "xy_minus1_1" else centre * [w, h]
        assert y.shape == (3, 2) and np.allclose(y, want, atol=1e-4)


@needs_torch
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("task", ["camvid", "planet", "biwi"])
def test_free_programs_compute_the_same_as_the_graphs(tmp_path, task, variant):
    """The same input array through edge's onnxruntime and torch backends: the same outputs (class
    ids and one-hot logits exactly; floats within an ulp or two of each runtime's log and division)."""
    contract = variant_contract(task, variant)
    path = free_models.write(contract, tmp_path / f"{task}.onnx")
    x = Preprocessor(contract)(list(images(contract)))
    ort_backend = backends.load(str(path), backend="onnxruntime")
    program = backends.load(str(free_models.program_of(path)), backend="torch", device="cpu")
    assert parse(program.metadata) == parse(ort_backend.metadata)
    graph, y = ort_backend.run(x), program.run(x)
    assert y.dtype == graph.dtype and y.shape == graph.shape
    if task == "camvid":
        assert np.array_equal(y, graph)
    else:
        assert np.allclose(y, graph, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("task", ["camvid", "planet", "biwi"])
def test_free_models_carry_the_default_contract_and_are_cached(tmp_path, task):
    path = free_models.free_model(task, tmp_path)
    mine, default = parse(metadata(path)), free_models.default_contract(task)
    assert mine.producer == free_models.PRODUCER
    assert dataclasses.replace(mine, producer=default.producer, producer_version=default.producer_version) == default
    built = path.stat().st_mtime_ns
    assert free_models.free_model(task, tmp_path) == path and path.stat().st_mtime_ns == built
    path.write_bytes(b"not onnx")  # a broken file is built again
    assert parse(metadata(free_models.free_model(task, tmp_path))) == mine


@needs_torch
def test_free_programs_are_cached_and_a_broken_one_is_built_again(tmp_path):
    program = free_models.program_of(free_models.free_model("camvid", tmp_path))
    built = program.stat().st_mtime_ns
    free_models.free_model("camvid", tmp_path)
    assert program.stat().st_mtime_ns == built
    program.write_bytes(b"not a program")
    free_models.free_model("camvid", tmp_path)
    loaded = backends.load(str(program), backend="torch", device="cpu")
    assert parse(loaded.metadata) == free_models.free_contract("camvid")


def test_without_torch_no_program_is_written_and_the_device_path_says_it_needs_torch(tmp_path, clip, monkeypatch,
                                                                                      capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    path = free_models.free_model("camvid", tmp_path)
    assert path.is_file() and not free_models.program_of(path).exists()
    assert cli.main([clip, "--host", "--host-device", "cpu", "--out", str(tmp_path / "r")]) == UsageError.exit_code
    assert capsys.readouterr().err == f"edge-bench: error: {host.NEEDS_TORCH}\n"


def test_without_onnx_the_free_models_say_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(UsageError, match="pip install onnx"):
        free_models.free_model("camvid", tmp_path)


@needs_ffmpeg
def test_host_report_has_a_row_per_size_and_work_item(tmp_path, clip):
    out = tmp_path / "report"
    code = cli.main([clip, "--host", "--repeat", "1", "--host-sizes", "320x240", "--out", str(out), "--quiet"])
    assert code == 0
    assert {"report.md", "report.json", "fps.png"} <= {p.name for p in out.iterdir()}
    r = json.loads((out / "report.json").read_text())
    assert [(row["size"], row["item"]) for row in r["rows"]] == [
        (size, item.name) for size in ("160x120", "320x240") for item in host.ITEMS]
    for row in r["rows"]:
        assert row["frames"] == FRAMES and row["frames_on"] == "host"
        assert row["encoder"] == (None if row["item"].startswith("planet") else "libx264")
        for side in (row["ffmpeg"], row["edge"]):
            assert side["fps"] > 0 and side["cpu_ms_per_frame"] > 0 and len(side["rounds_s"]) == 1
            assert side["fps"] == pytest.approx(FRAMES / side["wall_s"], rel=1e-2)
        assert row["ratio"] == pytest.approx(row["ffmpeg"]["wall_s"] / row["edge"]["wall_s"], rel=1e-2)
        assert row["met"] is (None if row["goal"] is None else row["ratio"] >= row["goal"])
        assert set(row["stage_busy_ms_per_frame"]) >= {"decode", "infer", "sinks"}
        assert "native pools" in row["thread_cpu_ms_per_frame"]
        assert row["processed"] == (1 if row["item"] == "planet --sample-fps 1" else FRAMES)  # 0.96 s of video
        if row["item"] == "all":  # also against FFmpeg's one decode and two encodes
            assert row["same_work_ratio"] == pytest.approx(row["same_work"]["wall_s"] / row["edge"]["wall_s"], rel=1e-2)
        else:
            assert row["same_work"] is None
    assert [s["size"] for s in r["sampling"]] == ["160x120", "320x240"]
    by = {(row["size"], row["item"]): row for row in r["rows"]}
    for s in r["sampling"]:
        every, sampled = by[(s["size"], "planet")], by[(s["size"], "planet --sample-fps 1")]
        assert s["speedup"] == pytest.approx(every["edge"]["wall_s"] / sampled["edge"]["wall_s"], rel=1e-2)
        assert s["goal"] == (3.0 if 24 <= s["fps"] <= 30 else None)
    assert r["ffmpeg"].startswith("ffmpeg version") and r["machine"]["cores"] >= 1
    md = (out / "report.md").read_text()
    assert report.machine_name(r["machine"]) in md and r["ffmpeg"] in md
    assert md.count("| 320x240 | camvid | host | libx264 | transcode | 24 |") == 1
    assert (out / "clip-320x240.mp4").is_file()  # the scaled copy, kept beside the report


@needs_ffmpeg
def test_host_frames_limits_both_sides(tmp_path, clip):
    out = tmp_path / "report"
    assert cli.main([clip, "--host", "--repeat", "1", "--frames", "10", "--out", str(out), "--quiet"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert {row["frames"] for row in r["rows"]} == {10}
    assert "-frames:v 10" in r["commands"]["transcode"] and r["frames_limit"] == 10


def test_without_ffmpeg_the_error_is_one_line_exit_2(tmp_path, clip, monkeypatch, capsys):
    monkeypatch.setattr(host.shutil, "which", lambda name: None)
    assert cli.main([clip, "--host", "--out", str(tmp_path / "r")]) == UsageError.exit_code
    err = capsys.readouterr().err
    assert err == f"edge-bench: error: {host.FFMPEG_MISSING}\n"


@pytest.mark.parametrize("args, message", [
    (["--host", "--task", "camvid"], "it takes no --task"),
    (["--host", "--model", "m.onnx"], "it takes no --model"),
    (["--host", "--host-sizes", "1280by720"], "--host-sizes takes comma-separated WIDTHxHEIGHT"),
    (["--host", "--host-sizes", "321x240"], "--host-sizes takes comma-separated WIDTHxHEIGHT, even"),
    (["--host", "--repeat", "0"], "--repeat must be 1 or more"),
    (["--host", "--frames", "0"], "--frames must be 1 or more"),
    (["--task", "camvid", "--host-sizes", "320x240"], "--host-sizes goes with --host"),
    (["--task", "camvid", "--host-device", "cpu"], "--host-device goes with --host"),
])
def test_options_that_do_not_go_with_host_are_refused(tmp_path, clip, capsys, args, message):
    assert cli.main([clip, *args, "--out", str(tmp_path / "r")]) == UsageError.exit_code
    assert message in capsys.readouterr().err


@needs_ffmpeg
@needs_torch
def test_host_device_cpu_takes_the_device_path_and_anchors_encode_as_edge_did(tmp_path, clip):
    out = tmp_path / "report"
    assert cli.main([clip, "--host", "--host-device", "cpu", "--repeat", "1", "--out", str(out), "--quiet"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["host_device"] == "cpu" and [row["item"] for row in r["rows"]] == [item.name for item in host.ITEMS]
    for row, item in zip(r["rows"], host.ITEMS):
        assert row["frames_on"] == "cpu" and row["frames"] == FRAMES  # edge's device path, on CPU tensors
        assert row["encoder"] == (None if item.tasks == ("planet",) else "libx264")  # edge's auto, off a GPU
        assert row["anchor"] == host.anchor_name(item.anchor, "libx264")
        if row["encoder"]:
            assert f"-c:v {row['encoder']} " in r["commands"][row["anchor"]]
        assert row["edge"]["fps"] > 0 and row["ffmpeg"]["fps"] > 0
    assert {p.name for p in (out / "free-models").iterdir()} >= {"camvid.pt2", "planet.pt2", "biwi.pt2"}
    md = (out / "report.md").read_text()
    assert "device path (cpu)" in md and md.count("| 160x120 | camvid | cpu | libx264 | transcode | 24 |") == 1


def test_nvenc_anchors_encode_as_edge_s_writer_sets_nvenc():
    nvenc = "-c:v h264_nvenc -preset {} -rc vbr -cq 20 -b:v 0".format(writer.NVENC_PRESETS[tasks.Options().preset])
    commands = host.commands("clip.mp4", 300, ["h264_nvenc"])
    assert set(commands) == {"transcode nvenc", "two encodes nvenc", "decode", "scaled copies"}
    assert f"{nvenc} -c:a copy TMP/transcode.mp4" in commands["transcode nvenc"]
    assert commands["two encodes nvenc"].count(nvenc) == 2 and "libx264" not in commands["two encodes nvenc"]
    assert host.anchor_name("decode", "h264_nvenc") == "decode"


@needs_ffmpeg
def test_the_anchors_take_the_encoder_edge_picked_on_each_clip(tmp_path, clip, monkeypatch):
    """As on a GPU where edge's overlays go to NVENC: the encoder its warm-up run reports is the
    one every FFmpeg anchor encodes with (FFmpeg itself stood in for: there is no NVENC here)."""
    ran = []
    monkeypatch.setattr(host, "warm_up", lambda setup, clip: "h264_nvenc")
    monkeypatch.setattr(host, "ffmpeg_once", lambda command: ran.append(" ".join(command)) or (0.01, 0.01))
    out = tmp_path / "report"
    assert cli.main([clip, "--host", "--repeat", "1", "--frames", "5", "--out", str(out), "--quiet"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert [row["anchor"] for row in r["rows"]] == [
        "transcode nvenc", "transcode nvenc", "decode", "transcode nvenc", "decode"]
    assert set(r["commands"]) == {"transcode nvenc", "two encodes nvenc", "decode", "scaled copies"}
    encoded = [command for command in ran if "-f null" not in command]
    assert len(encoded) == 4 and all("h264_nvenc" in c and "libx264" not in c for c in encoded)


@needs_torch
def test_host_device_cuda_without_cuda_is_one_line_exit_2(tmp_path, clip, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as here; on a GPU box too
    assert cli.main([clip, "--host", "--host-device", "cuda", "--out", str(tmp_path / "r")]) == UsageError.exit_code
    assert capsys.readouterr().err == f"edge-bench: error: {host.NO_CUDA}\n"
