"""--resume: a run stopped part way (a failure, Ctrl-C, SIGTERM, SIGKILL) carries on from its last
checkpoint, and its outputs equal, byte for byte, those of a run never stopped."""

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from edge import resume as resume_module
from edge.cli import main
from edge.run.signals import signals_deferred
from edge.errors import Interrupted, StageError, UsageError
from edge.api import run
from edge.run.options import RunOptions
from edge.tasks.biwi import OneEuro
from edge.timeline import TimelineBuilder
from edge.writer import VideoWriter
from tests.makers_clips import make_clip, solid

H, W = 96, 128
FPS = 25
EVERY_S = 0.4  # a checkpoint every 10 frames


def scene(n: int = 80) -> list[np.ndarray]:
    """A white square wandering over a background whose colour changes, so every task's results
    (classes, tags that come and go, a moving point) change along the clip."""
    frames = []
    for i in range(n):
        background = (200 if 20 <= i < 45 else 40, 180 if i >= 50 else 30, 60 + i)
        frame = solid(H, W, background)
        x, y = 10 + (i * 7) % (W - 30), 15 + (i * 3) % (H - 30)
        frame[y : y + 16, x : x + 16] = 255
        frames.append(frame)
    return frames


def contents(folder: Path) -> dict:
    """Every file under `folder` (hidden ones too: nothing may be left over) but the records
    with times in them, run.json and jobs.json."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("run.json", "jobs.json")}


def fail_at_checkpoint(monkeypatch, number: int):
    """The run fails in its sinks stage when it is about to record checkpoint `number`: the
    sinks have already written past the previous one, as a crash would leave them."""
    real = resume_module.Checkpoints.save
    calls = []

    def save(self, *args):
        calls.append(1)
        if len(calls) == number:
            raise KeyboardInterrupt  # any exception: the worst kind, which nothing catches by type
        real(self, *args)

    monkeypatch.setattr(resume_module.Checkpoints, "save", save)
    return calls


SCENARIOS = {
    # camvid with audio and masks, batches of 4
    "camvid": dict(clip=dict(audio=True), tasks=["camvid"], run=dict(batch=4, options_masks=True)),
    # biwi every 3rd frame (held points, the trail, the smoother), OpenCV decoding, odd batches
    "biwi-stride": dict(clip={}, tasks=["biwi"], run=dict(batch=3, stride=3, decoder="opencv")),
    # planet at 10 frames/s of a variable-rate clip, a tag interval open across checkpoints
    "planet-vfr": dict(clip=dict(times_s=[i * 0.04 + (0.3 if i >= 40 else 0) for i in range(80)]),
                       tasks=["planet"], run=dict(batch=2, sample_fps=10.0)),
    # a folder of images, every other one
    "images": dict(clip=dict(images=True), tasks=["biwi"], run=dict(batch=2, stride=2)),
    # all three on one decode, from --start, x264's medium preset (B-frames across the cuts)
    "all-three": dict(clip=dict(audio=True), tasks=["camvid", "planet", "biwi"],
                      run=dict(batch=4, start_s=0.2, preset="medium")),
}


def make_models(models, names):
    return [{"camvid": models.camvid, "planet": models.planet, "biwi": models.biwi}[t]() for t in names]


def run_scenario(clip, model_paths, out, spec, notice=lambda line: None, **extra):
    from edge.tasks import Options

    options = spec["run"].copy()
    opts = Options(save_masks=options.pop("options_masks", False), preset=options.pop("preset", "ultrafast"),
                   min_duration_s=0.2)
    return run([str(clip)], RunOptions(models=model_paths, out=str(out), task_options=opts, checkpoint_s=EVERY_S,
                                       **options, **extra), notice=notice)


@pytest.mark.parametrize("name", SCENARIOS)
def test_resumed_outputs_equal_an_uninterrupted_run(tmp_path, models, monkeypatch, name):
    spec = SCENARIOS[name]
    if spec["clip"].get("images"):
        clip = tmp_path / "walk"
        clip.mkdir()
        for i, frame in enumerate(scene(40)):
            cv2.imwrite(str(clip / f"frame{i}.png"), frame[:, :, ::-1])
    else:
        clip = tmp_path / "walk.mp4"
        make_clip(clip, scene(), fps=FPS, **spec["clip"])
    paths = make_models(models, spec["tasks"])
    (whole,) = run_scenario(clip, paths, tmp_path / "whole", spec)

    calls = fail_at_checkpoint(monkeypatch, 4)
    with pytest.raises(StageError) as failed:
        run_scenario(clip, paths, tmp_path / "cut", spec)
    assert failed.value.stage == "sinks" and len(calls) == 4
    folder = tmp_path / "cut" / "walk"
    saved = json.loads((folder / ".edge-resume" / "+".join(sorted(spec["tasks"])) / "checkpoint.json").read_text())
    assert saved["serial"] == 3 and saved["position"]["written"] > 0
    monkeypatch.undo()

    notices = []
    (resumed,) = run_scenario(clip, paths, tmp_path / "cut", spec, resume=True, notice=notices.append)
    assert any("resuming after" in n for n in notices), notices
    assert 0 < resumed.resumed.frames_before < whole.frames.in_range
    # a resumed run need not decode what comes before the resume point: where sparse selection lets
    # it pass frames over (decode.sparsely), it decodes fewer, and counts only those
    assert dataclasses.replace(resumed.frames, decoded=0) == dataclasses.replace(whole.frames, decoded=0)
    assert resumed.frames.decoded <= whole.frames.decoded
    assert contents(tmp_path / "cut") == contents(tmp_path / "whole")
    for task in spec["tasks"]:
        record = json.loads((folder / task / "run.json").read_text())
        assert record["status"] == "done" and record["resumed"]["after_frame"] == saved["position"]["last_index"]


CHILD = r"""
import sys, time
from edge import sinks
from edge.tasks import biwi
slow_down = lambda write: lambda self, frame, result: (time.sleep(0.02), write(self, frame, result))[1]
sinks.OverlaySink.write = slow_down(sinks.OverlaySink.write)  # slow enough to be stopped part way
biwi.TrackSink.write = slow_down(biwi.TrackSink.write)
from edge.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_run_killed_by_a_signal_resumes_to_the_same_outputs(tmp_path, models, how, capsys):
    clip = tmp_path / "long.mp4"
    make_clip(clip, scene(120), fps=FPS, audio=True)
    argv = [str(clip), "--model", models.biwi(), "--model", models.camvid(), "--batch", "4",
            "--checkpoint-every", str(EVERY_S), "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "whole")]) == 0

    checkpoint = tmp_path / "cut" / "long" / ".edge-resume" / "biwi+camvid" / "checkpoint.json"
    child = subprocess.Popen([sys.executable, "-c", CHILD, *argv, "--out", str(tmp_path / "cut")],
                             stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 60
    while not (checkpoint.exists() and json.loads(checkpoint.read_text())["serial"] >= 2):
        assert child.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline, "no second checkpoint within a minute"
        time.sleep(0.02)
    child.send_signal(how)
    _, stderr = child.communicate(timeout=60)
    if how == signal.SIGTERM:
        assert child.returncode == 143
        assert "--resume" in stderr and "edge-run: error: interrupted" in stderr
        record = json.loads((tmp_path / "cut" / "long" / "biwi" / "run.json").read_text())
        assert record["status"] == "interrupted" and record["resumable_after_s"] >= 0.36
        assert "--resume" in record["error"] and "no partial outputs" not in record["error"]
    else:
        assert child.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "long" / "biwi" / "overlay.mp4").exists()

    capsys.readouterr()
    assert main([a for a in argv if a != "--quiet"] + ["--out", str(tmp_path / "cut"), "--resume"]) == 0
    assert contents(tmp_path / "cut") == contents(tmp_path / "whole")
    assert "resuming after" in capsys.readouterr().err


def camvid_command(tmp_path, models):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, scene(60), fps=FPS)
    argv = [str(clip), "--model", models.camvid(), "--out", str(tmp_path / "out"), "--batch", "4",
            "--checkpoint-every", str(EVERY_S)]
    return clip, argv


def interrupted_run(tmp_path, models, monkeypatch, capsys):
    """A camvid run of clip.mp4 into tmp_path/out that failed at its third checkpoint."""
    clip, argv = camvid_command(tmp_path, models)
    fail_at_checkpoint(monkeypatch, 3)
    assert main(argv + ["--quiet"]) == 6
    monkeypatch.undo()
    assert "carry on from there" in capsys.readouterr().err
    return clip, argv


def test_resuming_with_other_options_is_refused_and_keeps_the_state(tmp_path, models, monkeypatch, capsys):
    clip, argv = interrupted_run(tmp_path, models, monkeypatch, capsys)
    assert main([*argv, "--batch", "8", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot resume" in err and "batch was 4, now 8" in err
    assert main(argv + ["--resume"]) == 0
    assert "resuming after" in capsys.readouterr().err
    assert (tmp_path / "out" / "clip" / "camvid" / "overlay.mp4").exists()
    assert not list((tmp_path / "out").rglob(".edge-*"))


def test_a_changed_input_is_not_resumed(tmp_path, models, monkeypatch, capsys):
    clip, argv = interrupted_run(tmp_path, models, monkeypatch, capsys)
    make_clip(clip, scene(61), fps=FPS)
    assert main(argv + ["--resume"]) == 2
    assert "input.bytes was" in capsys.readouterr().err


def test_without_resume_a_run_starts_over_and_replaces_the_old_state(tmp_path, models, monkeypatch, capsys):
    clip, argv = interrupted_run(tmp_path, models, monkeypatch, capsys)
    stale = list((tmp_path / "out" / "clip" / "camvid").glob(".edge-partial-*"))
    assert len(stale) == 1 and (stale[0] / ".overlay.mp4.packets").exists()

    assert main(argv) == 0
    assert "this run starts over (add --resume to continue it)" in capsys.readouterr().err
    assert not list((tmp_path / "out").rglob(".edge-*")), "the old partial outputs are gone"
    record = json.loads((tmp_path / "out" / "clip" / "camvid" / "run.json").read_text())
    assert record["resumed"] is None and record["frames"]["in_range"] == 60


def test_resume_skips_finished_inputs_and_carries_on_the_interrupted_one(tmp_path, models, monkeypatch, capsys):
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    make_clip(first, scene(30), fps=FPS)
    make_clip(second, scene(60), fps=FPS)
    argv = [str(first), str(second), "--model", models.planet(), "--out", str(tmp_path / "out"),
            "--checkpoint-every", str(EVERY_S), "--batch", "2"]
    real = resume_module.Checkpoints.save

    def save(self, *args):
        if "second" in str(self.folder) and self.serial == 2:
            raise RuntimeError("power cut")
        real(self, *args)

    monkeypatch.setattr(resume_module.Checkpoints, "save", save)
    assert main(argv) == 7  # one of several inputs failed
    monkeypatch.undo()
    done = tmp_path / "out" / "first" / "planet" / "timeline.csv"
    stamp = done.stat().st_mtime_ns
    capsys.readouterr()

    assert main(argv + ["--resume"]) == 0
    captured = capsys.readouterr()
    assert "1 of 2 inputs already done with these options" in captured.err
    assert "second.mp4: resuming after 0.76 s (20 frames done)" in captured.err
    assert "first.mp4: already done -> " in captured.out
    assert "second.mp4: 60 frames (20 of them before resuming), 60 processed" in captured.out
    record = json.loads((tmp_path / "out" / "second" / "planet" / "run.json").read_text())
    assert record["resumed"]["frames_before"] == 20 and record["frames"]["in_range"] == 60
    assert done.stat().st_mtime_ns == stamp  # the finished input was not run again

    # once everything is done, --resume runs nothing
    assert main(argv + ["--resume", "--quiet"]) == 0
    assert done.stat().st_mtime_ns == stamp


def test_resume_with_nothing_to_resume_runs_from_the_start(tmp_path, models, capsys):
    clip, argv = camvid_command(tmp_path, models)
    assert main(argv + ["--resume"]) == 0
    assert "nothing to resume; starting at the beginning" in capsys.readouterr().err


def test_a_lost_partial_folder_starts_over(tmp_path, models, monkeypatch, capsys):
    clip, argv = interrupted_run(tmp_path, models, monkeypatch, capsys)
    for partial in (tmp_path / "out" / "clip" / "camvid").glob(".edge-partial-*"):
        shutil.rmtree(partial)
    assert main(argv + ["--resume"]) == 0
    assert "is gone or cut short; starting at the beginning" in capsys.readouterr().err
    assert not list((tmp_path / "out").rglob(".edge-*"))


def test_a_partial_file_cut_short_starts_over(tmp_path, models, monkeypatch, capsys):
    clip, argv = interrupted_run(tmp_path, models, monkeypatch, capsys)
    (log,) = (tmp_path / "out" / "clip" / "camvid").glob(".edge-partial-*/.overlay.mp4.packets")
    with open(log, "r+b") as file:
        file.truncate(100)
    assert main(argv + ["--resume"]) == 0
    assert f"{log} is gone or cut short; starting at the beginning" in capsys.readouterr().err


def test_a_damaged_held_result_starts_over(tmp_path, models, monkeypatch, capsys):
    clip, argv = interrupted_run(tmp_path, models, monkeypatch, capsys)
    (held,) = (tmp_path / "out" / "clip" / ".edge-resume" / "camvid").glob("held-*.npz")
    held.write_bytes(b"not a zip")
    assert main(argv + ["--resume"]) == 0
    assert "its checkpoint is damaged" in capsys.readouterr().err
    assert not list((tmp_path / "out").rglob(".edge-*"))


def test_a_resumed_run_stopped_again_records_the_later_stop(tmp_path, models, monkeypatch, capsys):
    clip, argv = interrupted_run(tmp_path, models, monkeypatch, capsys)
    record = tmp_path / "out" / "clip" / "camvid" / "run.json"
    first = json.loads(record.read_text())
    real = resume_module.Checkpoints.save

    def save(self, *args):
        if self.serial == 4:
            raise RuntimeError("stopped again")
        real(self, *args)

    monkeypatch.setattr(resume_module.Checkpoints, "save", save)
    assert main(argv + ["--resume", "--quiet"]) == 6
    later = json.loads(record.read_text())
    assert later["status"] == "failed" and "stopped again" in later["error"]
    assert later["resumable_after_s"] > first["resumable_after_s"]
    assert "up to 1.56 s are kept" in capsys.readouterr().err


def test_other_models_over_the_same_input_leave_the_state_alone(tmp_path, models, monkeypatch, capsys):
    clip, argv = interrupted_run(tmp_path, models, monkeypatch, capsys)
    other = [str(clip), "--model", models.planet(), "--out", str(tmp_path / "out"), "--checkpoint-every", str(EVERY_S)]
    assert main(other) == 0 and main(other + ["--resume"]) == 0
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 0
    assert "resuming after" in capsys.readouterr().err
    assert not list((tmp_path / "out").rglob(".edge-*"))


def test_a_signal_while_outputs_move_into_place_waits_for_them():
    with pytest.raises(Interrupted) as caught:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            done = True  # reached: the signal did not cut the block short
    assert done and caught.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_no_checkpoint_lands_after_the_run_was_abandoned(tmp_path):
    checkpoints = resume_module.Checkpoints(tmp_path, {"input": {"path": "x"}}, {"planet": "planet"})
    checkpoints.abandon()
    checkpoints.save({"last_time_s": 1.0}, {}, {})
    assert checkpoints.serial == 0 and not (tmp_path / ".edge-resume").exists()


def test_checkpoint_every_is_checked(tmp_path, models):
    with pytest.raises(UsageError, match="checkpoint-every"):
        run([str(tmp_path / "x.mp4")], RunOptions(models=[models.planet()], checkpoint_s=0))


# --- the pieces, each stopped and restored -------------------------------------------------------


def test_writer_resumed_from_a_checkpoint_writes_the_same_file(tmp_path):
    times = [i * 0.04 if i < 30 else 1.2 + (i - 30) * 0.1 for i in range(60)]  # the rate changes
    frames = [solid(48, 64, (i * 4, 255 - i * 4, 90)) for i in range(60)]

    def write(folder, stop_at=None, resume=None, first=0):
        state = None
        with VideoWriter(folder / "o.mp4", width=64, height=48, time_base=Fraction(1, 1000), preset="medium",
                         resume=resume) as writer:
            for i in range(first, 60):
                writer.write(frames[i], times[i])
                if i in (19, 39):
                    state = writer.checkpoint()
                if i == stop_at:
                    raise KeyboardInterrupt(state)

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    write(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt) as stopped:
        write(tmp_path / "b", stop_at=45)
    assert os.listdir(tmp_path / "b") == [".o.mp4.packets"]  # kept: a checkpoint was taken
    write(tmp_path / "b", resume=stopped.value.args[0], first=40)
    assert (tmp_path / "a" / "o.mp4").read_bytes() == (tmp_path / "b" / "o.mp4").read_bytes()
    assert os.listdir(tmp_path / "b") == ["o.mp4"]


def test_timeline_builder_restored_mid_interval_gives_the_same_intervals():
    rng = np.random.default_rng(3)
    probs = rng.random((200, 3)) ** 0.5
    times = np.cumsum(rng.uniform(0.02, 0.08, 200))

    def builder():
        return TimelineBuilder(["a", "b", "c"], thresholds=[0.6, 0.7, 0.8], min_duration_s=0.3)

    whole = builder()
    for t, p in zip(times, probs):
        whole.update(t, p)
    first = builder()
    for t, p in zip(times[:117], probs[:117]):
        first.update(t, p)
    state = json.loads(json.dumps(first.state()))  # as a checkpoint stores it
    second = builder()
    second.restore(state)
    for t, p in zip(times[117:], probs[117:]):
        second.update(t, p)
    expected = whole.finish(times[-1] + 0.04)
    assert expected and second.finish(times[-1] + 0.04) == expected


def test_one_euro_restored_goes_on_the_same():
    whole, first, second = OneEuro(), OneEuro(), OneEuro()
    points = [np.array([i * 1.5, 40 - i]) for i in range(30)]
    expected = [whole(i / 30, p) for i, p in enumerate(points)]
    for i, p in enumerate(points[:12]):
        first(i / 30, p)
    second.restore(json.loads(json.dumps(first.state())))
    got = [second(i / 30, p) for i, p in enumerate(points[12:], 12)]
    assert all((a == b).all() for a, b in zip(got, expected[12:]))


@pytest.mark.parametrize("damage", ['{"serial": 3', '[]'])
def test_a_damaged_checkpoint_starts_over(tmp_path, models, monkeypatch, capsys, damage):
    clip, argv = interrupted_run(tmp_path, models, monkeypatch, capsys)
    (tmp_path / "out" / "clip" / ".edge-resume" / "camvid" / "checkpoint.json").write_text(damage)
    assert main(argv + ["--resume"]) == 0
    assert "nothing to resume (its checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [5, 10])  # cases where each stretch's own decode times collided
def test_checkpoints_with_b_frames_on_a_coarse_time_base_keep_every_frame(tmp_path, seed):
    # one tick a frame, times that repeat (bumped a tick) or jump, B-frames, checkpoints anywhere
    rng = random.Random(seed)
    ticks, times = 0, []
    for _ in range(80):
        times.append(ticks / 25)
        ticks += rng.choice([1] * 8 + [0, 0, 5, 12])
    checkpoints = sorted(rng.sample(range(5, 79), 4))
    preset = rng.choice(["medium", "fast", "veryfast"])
    with VideoWriter(tmp_path / "o.mp4", width=64, height=48, time_base=Fraction(1, 25), preset=preset) as writer:
        for i, t in enumerate(times):
            frame = np.full((48, 64, 3), (i * 4 % 255, 255 - i * 3 % 255, 90), np.uint8)
            frame[(i * 2) % 30 : (i * 2) % 30 + 10, (i * 3) % 50 : (i * 3) % 50 + 10] = 255
            writer.write(frame, t)
            if i in checkpoints:
                writer.checkpoint()
    with av.open(str(tmp_path / "o.mp4")) as container:
        shown = [frame.pts for frame in container.decode(video=0)]
    assert len(shown) == 80 and shown == sorted(set(shown))
