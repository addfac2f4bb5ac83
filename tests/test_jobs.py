"""Many inputs in one run: what the arguments name, jobs.json, failures that stop only themselves,
and reruns that skip what is done."""

import json
import os

import cv2
import pytest

from edge.api import run
from edge.cli import main
from edge.errors import Interrupted, UsageError
from edge.inputs import expand
from edge.run.options import RunOptions
from tests.makers_clips import make_clip, ramp, solid


def clip(path, n=6):
    path.parent.mkdir(parents=True, exist_ok=True)
    make_clip(path, ramp(n), fps=25)
    return path


def jobs_of(out):
    return json.loads((out / "jobs.json").read_text())


def test_arguments_expand_to_one_job_per_input_with_its_own_folder(tmp_path):
    folder = tmp_path / "clips"
    for relative in ("day1/a.mp4", "day1/clip10.mkv", "day1/clip2.mkv", "day2/a.mp4", "notes.txt"):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(b"x")
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "f1.png").write_bytes(b"x")
    other = tmp_path / "other" / "a.mp4"
    other.parent.mkdir()
    other.write_bytes(b"x")
    listing = tmp_path / "lists" / "inputs.txt"
    listing.parent.mkdir()
    listing.write_text("# the rest\n\n../other/a.mp4\n" + str(frames) + "\n")

    jobs = expand([str(folder), f"@{listing}", str(folder / "day2" / "a.mp4")])  # the last one is a repeat
    assert [j.name for j in jobs] == ["day1/a", "day1/clip2", "day1/clip10", "day2/a", "a", "frames"]
    assert jobs[4].path.endswith(os.path.join("lists", "..", "other", "a.mp4"))
    assert jobs[5].path == str(frames)  # a folder without videos: its images, as one sequence

    same = expand([str(folder / "day1" / "a.mp4"), str(other)])
    assert len({j.name for j in same}) == 2 and all(j.name.startswith("a-") for j in same)
    assert expand([str(folder / "day1" / "*.mkv")])[0].name == "clip2"  # a quoted glob of videos
    with pytest.raises(UsageError, match="cannot read the list @"):
        expand([f"@{tmp_path / 'missing.txt'}"])


def test_a_failing_input_stops_only_itself_and_reruns_skip_what_is_done(tmp_path, models, capsys):
    inputs = tmp_path / "inputs"
    clip(inputs / "a.mp4")
    clip(inputs / "sub" / "b.mp4")
    broken = inputs / "c.mp4"
    broken.write_bytes(os.urandom(2000))
    out = tmp_path / "out"
    argv = [str(inputs), "--model", models.planet(), "--out", str(out)]

    assert main(argv) == 7
    captured = capsys.readouterr()
    assert captured.err.count("edge-run: error:") == 1 and "c.mp4" in captured.err
    assert "3 inputs: 2 done, 0 already done, 1 failed; 12 frames" in captured.out
    jobs = jobs_of(out)
    states = {os.path.basename(k): j["state"] for k, j in jobs["jobs"].items()}
    assert states == {"a.mp4": "done", "b.mp4": "done", "c.mp4": "failed"}
    failed = jobs["jobs"][str(broken)]
    assert failed["exit_code"] == 3 and "c.mp4" in failed["error"] and failed["output"] == str(out / "c")
    assert jobs["totals"]["done"] == 2 and jobs["totals"]["frames"] == 12
    assert (out / "sub" / "b" / "planet" / "timeline.csv").exists()
    stamp = (out / "a" / "planet" / "scores.csv").stat().st_mtime_ns

    assert main(argv) == 7  # the failure stands; nothing is run again
    err = capsys.readouterr().err
    assert err.count("already done") == 1 and "failed before" in err and "--retry-failed" in err
    assert "2 of 3 inputs already done with these options; skipped (--force runs them again)" in err
    assert (out / "a" / "planet" / "scores.csv").stat().st_mtime_ns == stamp

    clip(broken)  # mended
    assert main(argv + ["--retry-failed"]) == 0
    assert jobs_of(out)["jobs"][str(broken)]["state"] == "done"
    assert main(argv + ["--force", "--quiet"]) == 0
    assert (out / "a" / "planet" / "scores.csv").stat().st_mtime_ns != stamp


def test_a_lone_input_that_failed_before_is_run_again(tmp_path, models, capsys):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not yet a video")
    argv = [str(video), "--model", models.planet(), "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 3
    clip(video)
    assert main(argv) == 0
    (job,) = jobs_of(tmp_path / "out")["jobs"].values()
    assert job["state"] == "done" and job["frames"] == 6 and job["error"] is None
    capsys.readouterr()
    assert main(argv[:-1]) == 0  # done: a lone input is named in its notice
    assert f"{video}: already done with these options, in {tmp_path / 'out' / 'v'}; skipped" in capsys.readouterr().err


def stopping_at(name: str, error: type[BaseException]):
    """A progress callback (edge.api.run's) that raises `error` as soon as input `name` runs:
    Ctrl-C, or a bug, arriving in the middle of that input."""
    def progress(key, written, expected):
        if os.path.basename(key) == name:
            raise error
    return progress


def test_an_interrupted_input_is_recorded_and_the_rest_stay_pending(tmp_path, models):
    for name in ("a", "b", "c"):
        clip(tmp_path / "in" / f"{name}.mp4")
    with pytest.raises(Interrupted):
        run([str(tmp_path / "in")], RunOptions(models=[models.planet()], out=str(tmp_path / "out")),
            progress=stopping_at("b.mp4", KeyboardInterrupt))
    states = {os.path.basename(k): j["state"] for k, j in jobs_of(tmp_path / "out")["jobs"].items()}
    assert states == {"a.mp4": "done", "b.mp4": "interrupted", "c.mp4": "pending"}


def test_images_in_a_folder_of_videos_are_left_alone(tmp_path, models):
    clip(tmp_path / "in" / "a.mp4")
    cv2.imwrite(str(tmp_path / "in" / "cover.png"), solid(48, 64, (1, 2, 3)))
    assert main([str(tmp_path / "in"), "--model", models.planet(), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert [os.path.basename(k) for k in jobs_of(tmp_path / "out")["jobs"]] == ["a.mp4"]


def test_jobs_side_by_side_give_every_input_its_outputs(tmp_path, models):
    for name in ("a", "b", "c"):
        make_clip(tmp_path / "in" / f"{name}.mp4", [solid(48, 64, (40 * i, 0, 0)) for i in range(8)], fps=25,
                  audio=True) if (tmp_path / "in").mkdir(exist_ok=True) is None else None
    common = [str(tmp_path / "in"), "--model", models.camvid(), "--model", models.planet(), "--quiet"]
    assert main(common + ["--out", str(tmp_path / "one")]) == 0
    assert main(common + ["--out", str(tmp_path / "three"), "--jobs", "3"]) == 0
    for name in ("a", "b", "c"):
        for table in ("camvid/classes.csv", "planet/scores.csv", "planet/timeline.csv"):
            assert (tmp_path / "three" / name / table).read_bytes() == (tmp_path / "one" / name / table).read_bytes()
        record = json.loads((tmp_path / "three" / name / "camvid" / "run.json").read_text())
        assert record["frames"]["in_range"] == 8
    assert jobs_of(tmp_path / "three")["totals"]["done"] == 3


def test_a_signal_stops_every_job_promptly_and_each_records_where_it_got(tmp_path, models, monkeypatch, capsys):
    import signal
    import threading
    import time

    from edge import sinks

    for name in "abcd":
        clip(tmp_path / "in" / f"{name}.mp4", n=60)
    real = sinks.CsvSink.write
    monkeypatch.setattr(sinks.CsvSink, "write", lambda self, frame, result: (time.sleep(0.02), real(self, frame,
                                                                                                       result)))
    def stop_once_running():  # not on a clock: a slow machine could still be loading the model
        deadline = time.monotonic() + 60
        while '"running"' not in read(tmp_path / "out" / "jobs.json") and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # each input takes over a second: two are running, two pending
        os.kill(os.getpid(), signal.SIGTERM)

    def read(path):
        return path.read_text() if path.exists() else ""

    threading.Thread(target=stop_once_running, daemon=True).start()
    started = time.monotonic()
    code = main([str(tmp_path / "in"), "--model", models.planet(), "--out", str(tmp_path / "out"), "--jobs", "2",
                 "--checkpoint-every", "0.2", "--quiet"])
    assert code == 143 and time.monotonic() - started < 10
    states = [j["state"] for j in jobs_of(tmp_path / "out")["jobs"].values()]
    assert "running" not in states and states.count("interrupted") >= 1 and "pending" in states
    line = capsys.readouterr().err
    assert "edge-run: error: interrupted; 2 of the inputs keep their outputs so far" in line and "--resume" in line


def test_links_back_up_and_the_output_folder_are_not_inputs(tmp_path, models, capsys):
    source = tmp_path / "src"
    clip(source / "a.mp4")
    os.symlink(source, source / "again")  # a loop, as a backup link in a recordings tree can be
    (source / ".hidden").mkdir()
    clip(source / ".hidden" / "b.mp4")
    assert [j.name for j in expand([str(source)])] == ["a"]
    argv = [str(source), "--model", models.planet(), "--out", str(source / "edge-out")]
    assert main(argv) == 0 and main(argv) == 0  # the second time, its own outputs are no inputs
    assert "already done" in capsys.readouterr().err
    assert list(jobs_of(source / "edge-out")["jobs"]) == [str(source / "a.mp4")]


def test_an_unexpected_error_in_one_input_stops_only_that_input(tmp_path, models):
    for name in "ab":
        clip(tmp_path / "in" / f"{name}.mp4")
    summaries = run([str(tmp_path / "in")], RunOptions(models=[models.planet()], out=str(tmp_path / "out")),
                    progress=stopping_at("a.mp4", ZeroDivisionError))
    assert [s.status for s in summaries] == ["failed", "done"]
    assert summaries[0].error.startswith("internal error, ZeroDivisionError") and summaries[0].exit_code == 1
    jobs = jobs_of(tmp_path / "out")["jobs"]
    assert [j["state"] for j in jobs.values()] == ["failed", "done"]
    assert "internal error, ZeroDivisionError" in jobs[str(tmp_path / "in" / "a.mp4")]["error"]


def test_reruns_rebuild_the_manifest_and_keep_each_inputs_folder(tmp_path, models, capsys):
    first, second = clip(tmp_path / "x" / "v.mp4"), clip(tmp_path / "y" / "v.mp4", n=4)
    out = tmp_path / "out"
    common = ["--model", models.planet(), "--out", str(out), "--quiet"]
    assert main([str(first)] + common) == 0
    assert main([str(second)] + common) == 0  # same name, another input: its own folder
    folders = {k: j["output"] for k, j in jobs_of(out)["jobs"].items()}
    assert folders[str(first)] == str(out / "v") and folders[str(second)].startswith(str(out / "v-"))
    assert len(json.loads((out / "v" / "planet" / "run.json").read_text())["input"]) > 0
    (out / "jobs.json").unlink()
    assert main([str(first), str(second)] + common) == 0  # both already done: recorded again as done
    assert [j["state"] for j in jobs_of(out)["jobs"].values()] == ["done", "done"]


def test_lists_nest_and_an_empty_one_is_a_usage_error(tmp_path, models, capsys):
    clip(tmp_path / "a.mp4")
    (tmp_path / "inner.txt").write_text("a.mp4\n")
    (tmp_path / "outer.txt").write_text("@inner.txt\n")
    assert [j.name for j in expand([f"@{tmp_path / 'outer.txt'}"])] == ["a"]
    (tmp_path / "empty.txt").write_text("# nothing yet\n")
    assert main([f"@{tmp_path / 'empty.txt'}", "--model", models.planet(), "--out", str(tmp_path / "out")]) == 2
    assert "name no video" in capsys.readouterr().err


def test_a_failed_input_that_changed_is_tried_again(tmp_path, models):
    clip(tmp_path / "in" / "a.mp4")
    broken = tmp_path / "in" / "b.mp4"
    broken.write_bytes(b"half a file")
    argv = [str(tmp_path / "in"), "--model", models.planet(), "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 7
    clip(broken)  # copied again, whole
    assert main(argv) == 0
    assert jobs_of(tmp_path / "out")["totals"]["done"] == 2


def test_many_records_change_in_one_writing_and_keep_another_runs(tmp_path, monkeypatch):
    from edge import manifest as manifest_module
    from edge.manifest import Manifest

    ours, theirs = Manifest(tmp_path), Manifest(tmp_path)  # two runs into one OUT
    theirs.update("/c.mp4", state="running")
    writes = []
    real_replace = manifest_module.os.replace
    monkeypatch.setattr(manifest_module.os, "replace", lambda *a: writes.append(a) or real_replace(*a))
    ours.update_many({f"/{n}.mp4": {"state": "pending", "output": f"out/{n}"} for n in range(1000)})
    assert len(writes) == 1
    jobs = jobs_of(tmp_path)
    assert len(jobs["jobs"]) == 1001 and jobs["jobs"]["/c.mp4"]["state"] == "running"
    assert jobs["totals"]["pending"] == 1000 and jobs["jobs"]["/7.mp4"]["output"] == "out/7"

    # each reads the file again only when the other wrote it since
    reads = []
    real_read = Manifest._read
    monkeypatch.setattr(Manifest, "_read", lambda self: reads.append(self) or real_read(self))
    ours.update("/7.mp4", state="running")
    ours.update("/8.mp4", state="running")
    assert reads == []
    theirs.update("/c.mp4", state="done")
    ours.update("/7.mp4", state="done")
    assert reads == [theirs, ours]
    jobs = jobs_of(tmp_path)["jobs"]
    assert (jobs["/c.mp4"]["state"], jobs["/7.mp4"]["state"], jobs["/8.mp4"]["state"]) == ("done", "done", "running")
    assert jobs == Manifest(tmp_path).jobs == ours.jobs

    writes.clear()
    ours.update_many({"/7.mp4": {"state": "done"}, "/8.mp4": {"state": "running"}})  # as they are: nothing to write
    assert writes == []


def test_a_run_registers_all_its_inputs_in_one_writing(tmp_path, models, monkeypatch):
    """Then each input changes its own record as it starts and as it ends: a folder of thousands
    of inputs would otherwise rewrite a growing jobs.json thousands of times before any work."""
    from edge.manifest import Manifest

    for n in range(5):
        clip(tmp_path / "in" / f"{n}.mp4", 2)
    writes = []
    real_write = Manifest._write
    monkeypatch.setattr(Manifest, "_write", lambda self: writes.append(dict(self.jobs)) or real_write(self))
    assert main([str(tmp_path / "in"), "--model", models.planet(), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert [job["state"] for job in writes[0].values()] == ["pending"] * 5
    assert len(writes) == 1 + 2 * 5 and jobs_of(tmp_path / "out")["totals"]["done"] == 5


def test_reruns_find_the_outputs_from_another_folder_and_after_out_was_moved(tmp_path, models, monkeypatch, capsys):
    clip(tmp_path / "in" / "a.mp4")
    (tmp_path / "elsewhere").mkdir()
    model = models.planet()
    monkeypatch.chdir(tmp_path)
    assert main(["in", "--model", model, "--out", "out", "--quiet"]) == 0  # relative paths
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main([str(tmp_path / "in"), "--model", model, "--out", str(tmp_path / "out")]) == 0
    assert "already done with these options" in capsys.readouterr().err
    assert list((tmp_path / "elsewhere").iterdir()) == []  # nothing written where a relative record would point

    (tmp_path / "out").rename(tmp_path / "moved")
    assert main([str(tmp_path / "in"), "--model", model, "--out", str(tmp_path / "moved")]) == 0
    assert "already done with these options" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    (job,) = jobs_of(tmp_path / "moved")["jobs"].values()
    assert job["output"] == str(tmp_path / "moved" / "a")


def test_a_rerun_with_other_options_says_it_replaces_the_outputs_and_records_it(tmp_path, models, capsys):
    one, two = clip(tmp_path / "in" / "one.mp4"), clip(tmp_path / "in" / "two.mp4")
    out, planet = tmp_path / "out", models.planet()

    def rerun(*args) -> list[str]:
        assert main([*args, "--model", planet, "--out", str(out)]) == 0
        return [line for line in capsys.readouterr().err.splitlines() if "replace" in line]

    assert rerun(str(one)) == []
    assert rerun(str(one), "--threshold", "0.3") == [
        f"{one}: the outputs in {out / 'one'} are from a run with other threshold; this run replaces them when it "
        f"finishes (another --out keeps both)"]
    assert jobs_of(out)["jobs"][str(one)]["replaces"] == ["threshold"]
    # the same options again: skipped; --force with them replaces nothing that differs
    assert rerun(str(one), "--threshold", "0.3") == []
    assert rerun(str(one), "--threshold", "0.3", "--force") == []
    assert jobs_of(out)["jobs"][str(one)]["replaces"] is None
    # of several inputs, a lone one replacing is named; more are counted in one line; each record says what differs
    assert rerun(str(tmp_path / "in"), "--batch", "3", "--threshold", "0.3") == [
        f"{one}: the outputs in {out / 'one'} are from a run with other batch; this run replaces them when it "
        f"finishes (another --out keeps both)"]
    records = jobs_of(out)["jobs"]
    assert records[str(one)]["replaces"] == ["batch"] and records[str(two)]["replaces"] is None
    assert rerun(str(tmp_path / "in"), "--batch", "2") == [
        "2 of 2 inputs have outputs from a run with other batch, threshold; this run replaces them as each finishes "
        "(another --out keeps both; jobs.json says which)"]
    assert [jobs_of(out)["jobs"][str(p)]["replaces"] for p in (one, two)] == [["batch", "threshold"]] * 2
