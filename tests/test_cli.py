"""What a user sees when something is wrong: one line, a distinct exit code, nothing written."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge.api import run
from edge.run.options import RunOptions
from edge.cli import main
from edge.errors import UsageError
from edge.device import torch_has_cuda
from tests import makers_models
from tests.makers_clips import make_clip, make_tone, solid, square

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    make_clip(path, [square(48, 64, 10, 2 * i) for i in range(10)], fps=10)
    return path


def edge_run(tmp_path, capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def written(folder: Path) -> list[Path]:
    """The files under `folder`, but the lock file two runs into one folder share jobs.json with."""
    return [p for p in folder.rglob("*") if p.is_file() and p.name != ".jobs.json.lock"] if folder.exists() else []


def only_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def file_with(name, data: bytes):
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(data)
        return folder / name
    return make


def tone(folder: Path) -> Path:
    make_tone(folder / "song.m4a", 1.0)
    return folder / "song.m4a"


@pytest.mark.parametrize("make,expected", [
    (lambda p: p / "missing.mp4", "not found"),
    (file_with("empty.mp4", b""), "empty"),
    (file_with("noise.mp4", os.urandom(4096)), "not a video"),
    (file_with("notes.txt", b"hello " * 100), "not a video"),
    (tone, "no video stream"),
    (lambda p: p, "no videos and no images (.jpg, .jpeg, .png"),
], ids=["missing", "zero-byte", "random-bytes", "text", "audio-only", "directory"])
def test_bad_inputs_exit_3_with_one_line(tmp_path, capsys, models, make, expected):
    path = make(tmp_path)
    out = tmp_path / "out"
    code, _, err = edge_run(tmp_path, capsys, path, "--model", models.planet(), "--out", out)
    line = only_line(err)
    assert code == 3 and line.startswith("edge-run: error: ") and expected in line
    if not path.exists():  # a typo makes nothing: no output folder, no jobs.json
        assert not out.exists()
        return
    assert written(out) == [out / "jobs.json"]  # the failure's record, and nothing else
    (job,) = json.loads((out / "jobs.json").read_text())["jobs"].values()
    assert job["state"] == "failed" and job["exit_code"] == 3


@pytest.mark.parametrize("inputs, expected", [
    (["nothing/*.jpg"], "no videos and no images match"),
    (["a.mp4", "b.mp4"], "none of the 2 inputs exists (a.mp4, ...)"),
])
def test_inputs_that_all_name_nothing_make_nothing(tmp_path, capsys, monkeypatch, models, inputs, expected):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)  # the default --out, edge-out/, would be made here
    code, _, err = edge_run(tmp_path, capsys, *inputs, "--model", models.planet())
    assert code == 3 and expected in only_line(err)
    assert list(here.iterdir()) == []


def test_one_missing_input_of_several_is_its_own_failure(tmp_path, capsys, clip, models):
    out = tmp_path / "out"
    code, _, err = edge_run(tmp_path, capsys, clip, tmp_path / "gone.mp4", "--model", models.planet(), "--out", out)
    assert code == 7 and "input video not found" in err
    states = {Path(k).name: job["state"] for k, job in json.loads((out / "jobs.json").read_text())["jobs"].items()}
    assert states == {clip.name: "done", "gone.mp4": "failed"}


def test_bad_models_exit_4_before_any_decoding(tmp_path, capsys, clip):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(2000))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    cases = [
        (garbage, "not a valid ONNX model"),
        (empty, "empty"),
        (tmp_path / "nope.onnx", "not found"),
    ]
    for path, expected in cases:
        code, _, err = edge_run(tmp_path, capsys, clip, "--model", path, "--out", tmp_path / "out")
        assert code == 4 and expected in only_line(err)
    assert written(tmp_path / "out") == []


def test_contract_breaches_name_the_key(tmp_path, capsys, clip):
    import onnx

    path = makers_models.camvid(tmp_path / "m.onnx")
    model = onnx.load(path)
    kept = [p for p in model.metadata_props if p.key != "edge.palette"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, path)
    code, _, err = edge_run(tmp_path, capsys, clip, "--model", path, "--out", tmp_path / "out")
    assert code == 4 and "'edge.palette' is missing" in only_line(err)


def test_a_model_whose_contract_lies_about_its_input_is_refused(tmp_path, capsys, clip):
    import onnx

    path = makers_models.biwi(tmp_path / "m.onnx", size=(48, 64))
    model = onnx.load(path)
    for p in model.metadata_props:
        if p.key == "edge.input_size":
            p.value = "[32, 32]"
    onnx.save(model, path)
    code, _, err = edge_run(tmp_path, capsys, clip, "--model", path, "--out", tmp_path / "out")
    assert code == 4 and "contract says uint8_nhwc at 32x32" in only_line(err)


def test_task_conflict_and_missing_default(tmp_path, capsys, clip, models, monkeypatch):
    code, _, err = edge_run(tmp_path, capsys, clip, "--model", models.planet(), "--task", "camvid")
    assert code == 4 and "--task camvid conflicts with the models' own tasks: planet" in only_line(err)
    monkeypatch.setenv("EDGE_MODEL_DIR", str(tmp_path / "none"))
    code, _, err = edge_run(tmp_path, capsys, clip, "--task", "biwi")
    assert code == 4 and "no default biwi model" in only_line(err)


def test_default_models_come_from_the_model_folder(tmp_path, capsys, clip, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    makers_models.planet(folder / "planet.onnx")
    makers_models.biwi(folder / "biwi.onnx")
    monkeypatch.setenv("EDGE_MODEL_DIR", str(folder))
    code, _, err = edge_run(tmp_path, capsys, clip, "--task", "planet,biwi", "--out", tmp_path / "out")
    assert code == 0
    assert f"--task planet: using the default model {folder / 'planet.onnx'} (EDGE_MODEL_DIR)" in err
    assert "synthetic" not in err  # the user's own default models, not the shipped ones
    assert (tmp_path / "out" / "clip" / "planet" / "timeline.csv").exists()
    assert (tmp_path / "out" / "clip" / "biwi" / "track.csv").exists()


@pytest.mark.parametrize("args,expected", [
    (["--stride", "0"], "stride must be an integer >= 1, got 0"),
    (["--batch", "0"], "--batch must be 1 or more"),
    (["--alpha", "1.5"], "--alpha must be between 0 and 1"),
    (["--start", "2", "--end", "1"], "end must be after start, got start=2.0 end=1.0"),
    (["--sample-fps", "-1"], "sample_fps must be a positive number"),
    (["--task", "pose"], "unknown task 'pose'"),
    (["--preset", "fastest"], "not an x264 preset; allowed: ultrafast"),
    (["--precision", "fp16"], "onnxruntime runs the graph as exported (fp32)"),
    (["--precision", "fp16", "--backend", "torch"], "fp16 needs the GPU"),
])
def test_usage_errors_exit_2(tmp_path, capsys, clip, models, args, expected):
    code, _, err = edge_run(tmp_path, capsys, clip, "--model", models.planet(), "--out", tmp_path / "out", *args)
    assert code == 2 and expected in only_line(err)
    assert written(tmp_path / "out") == []


@pytest.mark.parametrize("flag,value,allowed", [
    ("--decoder", "ffmpeg", ("pyav", "opencv")),
    ("--device", "tpu", ("cpu", "cuda")),
    ("--backend", "tpu", ("auto", "onnxruntime", "torch", "tensorrt")),
    ("--precision", "int8", ("fp32", "fp16")),
])
def test_choices_are_argparses_and_exit_2(tmp_path, capsys, clip, models, flag, value, allowed):
    with pytest.raises(SystemExit) as stopped:
        main([str(clip), "--model", models.planet(), "--out", str(tmp_path / "out"), flag, value])
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "invalid choice" in line]
    assert stopped.value.code == 2 and f"argument {flag}: invalid choice: '{value}'" in line
    assert all(word in line.split("choose from")[1] for word in allowed)
    assert written(tmp_path / "out") == []


@pytest.mark.parametrize("kwargs,expected", [
    ({"decoder": "ffmpeg"}, "decoder must be one of pyav, opencv"),
    ({"device": "tpu"}, "allowed: cpu, cuda"),
    ({"backend": "tpu"}, "unknown backend 'tpu'; allowed: auto, onnxruntime, torch, tensorrt"),
    ({"precision": "int8"}, "unknown precision 'int8'; allowed: fp32, fp16"),
    ({"upload": "wire"}, "upload must be one of auto, planes, rgb"),
    ({"frames_on": "gpu"}, "allowed: auto, host, device"),
])
def test_the_apis_choices_are_checked_too(tmp_path, clip, models, kwargs, expected):
    with pytest.raises(UsageError, match=re.escape(expected)):
        run([str(clip)], RunOptions(models=[models.planet()], out=str(tmp_path / "out"), **kwargs))


def test_no_model_given_is_a_usage_error(tmp_path, capsys, clip):
    code, _, err = edge_run(tmp_path, capsys, clip)
    assert code == 2 and "give --model" in only_line(err)


@pytest.mark.skipif(torch_has_cuda(), reason="this machine has CUDA")
@pytest.mark.parametrize("backend", ["auto", "onnxruntime"])
def test_cuda_without_cuda_is_one_line(tmp_path, capsys, clip, models, backend):
    code, _, err = edge_run(tmp_path, capsys, clip, "--model", models.planet(), "--device", "cuda",
                            "--backend", backend)
    line = only_line(err)
    assert code == 2 and "use --device cpu" in line
    assert ("nothing here runs the model on the GPU" if backend == "auto" else "no CUDA or TensorRT provider") in line


def test_unwritable_output_exits_5(tmp_path, capsys, clip, models):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    code, _, err = edge_run(tmp_path, capsys, clip, "--model", models.planet(), "--out", blocker)
    assert code == 5 and "cannot write to" in only_line(err)


def test_an_empty_time_range_writes_nothing(tmp_path, capsys, clip, models):
    code, _, err = edge_run(tmp_path, capsys, clip, "--model", models.camvid(), "--start", "50",
                            "--out", tmp_path / "out")
    assert code == 3 and "no frames to process" in only_line(err)
    assert written(tmp_path / "out") == [tmp_path / "out" / "jobs.json"]  # which records the failure, and nothing else
    (job,) = json.loads((tmp_path / "out" / "jobs.json").read_text())["jobs"].values()
    assert job["state"] == "failed" and job["exit_code"] == 3 and "no frames to process" in job["error"]


def test_a_failing_stage_is_named_and_leaves_only_its_record(tmp_path, capsys, clip, models):
    import onnx

    path = models.camvid()
    model = onnx.load(path)
    for p in model.metadata_props:  # the graph returns ids up to 3; the contract now lists 2 classes
        if p.key == "edge.classes":
            p.value = '["Void", "Red"]'
        if p.key == "edge.palette":
            p.value = "[[0, 0, 0], [255, 0, 0]]"
    onnx.save(model, path)
    frames = [solid(48, 64, (0, 0, 0))] * 5 + [solid(48, 64, (0, 0, 250))] * 5
    make_clip(tmp_path / "blue.mp4", frames, fps=10)
    code, _, err = edge_run(tmp_path, capsys, tmp_path / "blue.mp4", "--model", path, "--out", tmp_path / "out",
                            "--batch", "1")
    line = only_line(err)
    assert code == 4 and "class id 3" in line and "stage 'postprocess', frame 5" in line
    (record,) = [p for p in written(tmp_path / "out") if p.name != "jobs.json"]
    assert record.name == "run.json"
    stop = json.loads(record.read_text())
    assert stop["status"] == "failed" and "class id 3" in stop["error"] and stop["files"] == []


def test_debug_shows_the_traceback(tmp_path, capsys, models):
    code, _, err = edge_run(tmp_path, capsys, tmp_path / "missing.mp4", "--model", models.planet(), "--debug")
    assert code == 3 and "Traceback" in err


def _spawn(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "edge.cli", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_stops_promptly_and_keeps_no_partial_file(tmp_path, models, signum, code):
    clip = tmp_path / "long.mp4"
    rng = np.random.default_rng(1)
    noise = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(8)]
    make_clip(clip, (noise[i % 8] for i in range(6000)), fps=25, codec="mpeg4")  # quick to make, slow to run
    make_clip(tmp_path / "short.mp4", noise[:4], fps=25)
    out = tmp_path / "out"
    # no checkpoint before the signal, however far the run got: with one, partial files are kept on purpose
    proc = _spawn([tmp_path / "short.mp4", clip, "--model", models.camvid(), "--out", out, "--quiet",
                   "--checkpoint-every", "3600"])
    deadline = time.monotonic() + 30
    while not list(out.glob("*/*/.edge-partial-*/.overlay.mp4*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, proc.communicate()
    sent = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=15)
    assert time.monotonic() - sent < 3
    assert proc.returncode == code and "interrupted" in err and "Traceback" not in err
    # the finished input's outputs stay; the interrupted one leaves only its record
    assert sorted(p.name for p in written(out / "short")) == ["classes.csv", "overlay.mp4", "run.json"]
    (record,) = written(out / "long")
    stop = json.loads(record.read_text())
    assert (record.name, stop["status"], stop["files"]) == ("run.json", "interrupted", [])
    assert stop["error"] == "interrupted; no partial outputs were kept"  # not "KeyboardInterrupt: "
    assert stop["frames"]["in_range"] > 0


def test_runs_without_torch_or_fastai(tmp_path, models):
    """As on a Jetson with only onnxruntime: importing either must not be needed."""
    clip = tmp_path / "c.mp4"
    make_clip(clip, [square(48, 64, 10, 10)] * 4, fps=4)
    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'fastai', 'torchvision'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edge.cli import main\n"
        f"code = main([{str(clip)!r}, '--model', {models.camvid()!r}, '--model', {models.planet()!r},"
        f" '--model', {models.biwi()!r}, '--out', {str(tmp_path / 'out')!r}, '--quiet'])\n"
        "assert not {'torch', 'fastai'} & set(sys.modules), 'torch or fastai was imported'\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "c" / "camvid" / "overlay.mp4").exists()


def test_the_shipped_default_models_run_and_stay_small(tmp_path, capsys, clip, monkeypatch):
    monkeypatch.delenv("EDGE_MODEL_DIR", raising=False)
    shipped = ROOT / "edge" / "models"
    for task in ("camvid", "planet", "biwi"):
        assert (shipped / f"{task}.onnx").stat().st_size <= 10 * 2**20
    code, _, err = edge_run(tmp_path, capsys, clip, "--task", "camvid,planet,biwi", "--out", tmp_path / "out")
    assert code == 0, err
    for task in ("camvid", "planet", "biwi"):
        (line,) = [line for line in err.splitlines() if line.startswith(f"--task {task}: ")]
        assert line.startswith(f"--task {task}: using the default model {shipped / (task + '.onnx')}, trained only on")
        assert "synthetic" in line and f"edge-train {task} --data DIR" in line and "--model FILE.onnx" in line
        record = json.loads((tmp_path / "out" / "clip" / task / "run.json").read_text())
        assert record["model"]["producer"].startswith("edge-export") and record["frames"]["processed"] == 10


def test_the_progress_bar_adds_up_the_inputs_and_knows_the_end_of_a_lone_one():
    from edge.cli import Progress

    bar = Progress(enabled=True)
    update = bar.__enter__()
    try:
        update("a.mp4", 5, 10)
        assert (bar.bar.n, bar.bar.total) == (5, 10)
        update("b.mp4", 3, 20)  # several: their ends do not add up to one
        assert (bar.bar.n, bar.bar.total) == (8, None)
        update("a.mp4", 7, 10)
        assert bar.bar.n == 10
    finally:
        bar.__exit__(None, None, None)
