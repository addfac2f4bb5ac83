"""edge-bench on a tiny clip and tiny models: the report's structure and the sanity of its
numbers (never their speed), the comparison, the unavailable-backend path, and the errors."""

import importlib.util
import json
import os
import stat
import time

import pytest

from bench import analysis, cli, measure, reliability, report, stages
from bench.measure import Sample
from tests.makers_clips import make_clip, square

FRAMES = 12


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.avi"
    make_clip(path, [square(48, 64, 10, 2 * i) for i in range(16)], fps=12, codec="mpeg4")
    return str(path)


def bench(args) -> int:
    return cli.main([*args, "--quiet"])


def check_figure(fig: dict, frames: int = FRAMES) -> None:
    assert fig["fps_min"] <= fig["fps"] <= fig["fps_max"] and fig["fps"] > 0
    assert fig["ms_per_frame"] == pytest.approx(1000 / fig["fps"], rel=1e-2)
    assert fig["cpu_ms_per_frame"] >= 0 and fig["cpu_cores_used"] >= 0
    assert fig["repeats"] == 2
    if "latency_ms_p50" in fig:
        assert 0 < fig["latency_ms_p50"] <= fig["latency_ms_p95"]


def test_report_measures_every_stage_the_pipeline_and_the_hand_loop(tmp_path, clip, models):
    model = models.biwi()
    out = tmp_path / "report"
    code = bench([clip, "--model", model, "--frames", str(FRAMES), "--batch", "1,4", "--repeat", "2",
                  "--backends", "onnxruntime,torch,tensorrt", "--device", "cpu", "--out", str(out)])
    assert code == 0
    r = json.loads((out / "report.json").read_text())
    assert r["frames"] == FRAMES and r["repeats"] == 2 and r["machine"]["cores"] >= 1
    assert r["machine"]["host"] and r["machine"]["cpus"] >= r["machine"]["cores"]
    assert r["machine"]["versions"]["onnxruntime"] and r["machine"]["versions"]["av"]
    (m,) = r["models"]
    assert m["task"] == "biwi" and m["frames"] == FRAMES
    for decoder in ("pyav", "opencv"):
        for kind in ("decode", "decode + RGB"):
            check_figure(m["decode"][decoder][kind])
    for table in ("preprocess", "postprocess"):
        assert set(m[table]) == {"1", "4"}
        for fig in m[table].values():
            check_figure(fig)
    assert set(m["sinks"]) == {"track.csv, track.json", "overlay.mp4", "all sinks"}
    for fig in m["sinks"].values():
        check_figure(fig)

    ran = [row for row in m["inference"] if "fps" in row]
    assert [(row["backend"], row["precision"], row["batch"]) for row in ran] == [
        ("onnxruntime", "fp32", 1), ("onnxruntime", "fp32", 4)]
    for row in ran:
        check_figure(row)
        assert row["latency_ms_p50"] > 0 and row["device"] == "cpu"
    unavailable = {(row["backend"], row["precision"]): row["unavailable"] for row in m["inference"] if "fps" not in row}
    assert set(unavailable) == {("onnxruntime", "fp16"), ("torch", "fp32"), ("torch", "fp16"),
                                ("tensorrt", "fp32"), ("tensorrt", "fp16")}
    assert "no biwi.pt2 beside biwi.onnx" in unavailable[("torch", "fp32")]
    assert "GPU" in unavailable[("tensorrt", "fp16")]

    assert [(row["backend"], row["batch"]) for row in m["pipeline"]] == [("onnxruntime", 1), ("onnxruntime", 4)]
    for row in m["pipeline"]:
        check_figure(row)
        assert set(row["busy_s"]) == {"decode", "preprocess", "infer", "postprocess", "sinks"}
        assert all(0 <= s <= row["total_s"] * 1.5 for s in row["busy_s"].values())
    check_figure(m["baselines"]["hand loop"])
    assert m["baselines"]["learn.predict"] == {"unavailable": "no --learner given"}
    (run,) = m["memory"]["runs"]
    assert run["frames"] == FRAMES and 20 < run["peak_rss_mb"] < 4000

    h = m["headline"]
    best = max(m["pipeline"], key=lambda row: row["fps"])
    assert (h["batch"], h["pipeline_fps"]) == (best["batch"], best["fps"])
    assert h["ratios"]["inference_alone"] == pytest.approx(best["fps"] / h["inference_alone_fps"], rel=1e-2)
    assert h["ratios"]["hand_loop"] == pytest.approx(best["fps"] / m["baselines"]["hand loop"]["fps"], rel=1e-2)
    assert "learn_predict" not in h["ratios"]
    assert 0 < h["ceiling_fps"] <= h["slowest_stage_fps"] and h["limited_by"] in (
        "cpu", "decode", "preprocess", "inference", "postprocess", "sinks")

    md = (out / "report.md").read_text()
    assert "| biwi.onnx | biwi |" in md and "unavailable: torch runs .pt2 files" in md
    assert md.count(f"on {report.machine_name(r['machine'])}") == 2  # at the top, and beside the headline
    assert "| hand loop |" in md and "Peak resident memory" in md
    assert (out / "fps_vs_batch.png").stat().st_size > 1000 and (out / "stages.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def exported_camvid(tmp_path_factory):
    """A tiny fastai camvid learner, its ONNX file and, beside it, its torch program."""
    pytest.importorskip("fastai")
    from export import exporter
    from tests.test_exporter import build_learners

    folder = tmp_path_factory.mktemp("bench-learners")
    learner = build_learners(folder)["camvid"]
    exporter.export(learner, folder / "camvid.onnx", torch_program=folder / "camvid.pt2")
    return learner, folder / "camvid.onnx"


def test_learn_predict_and_the_torch_program_are_measured_on_the_same_frames(tmp_path, clip, exported_camvid):
    learner, onnx = exported_camvid
    out = tmp_path / "report"
    assert bench([clip, "--model", str(onnx), "--learner", str(learner), "--frames", str(FRAMES), "--batch", "2",
                  "--repeat", "2", "--backends", "onnxruntime,torch", "--precision", "fp32",
                  "--out", str(out)]) == 0
    (m,) = json.loads((out / "report.json").read_text())["models"]
    assert {row["backend"] for row in m["inference"] if "fps" in row} == {"onnxruntime", "torch"}
    assert {row["backend"] for row in m["pipeline"]} == {"onnxruntime", "torch"}
    check_figure(m["baselines"]["learn.predict"])
    assert m["headline"]["ratios"]["learn_predict"] > 0
    assert "| learn.predict |" in (out / "report.md").read_text()


def test_a_learner_of_another_task_is_refused(tmp_path, clip, exported_camvid, models, capsys):
    learner, _ = exported_camvid
    code = bench([clip, "--model", models.biwi(), "--learner", str(learner), "--frames", "4", "--batch", "1",
                  "--repeat", "1", "--backends", "onnxruntime", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "is a camvid learner but the model is biwi" in capsys.readouterr().err


def test_compare_shows_the_change_against_an_earlier_report(tmp_path, clip, models):
    model = models.planet()
    common = [clip, "--model", model, "--frames", "8", "--batch", "2", "--repeat", "2", "--backends", "onnxruntime"]
    assert bench([*common, "--out", str(tmp_path / "old")]) == 0
    assert bench([*common, "--out", str(tmp_path / "new"), "--compare", str(tmp_path / "old" / "report.json")]) == 0
    md = (tmp_path / "new" / "report.md").read_text()
    assert "## Against report.json" in md
    old = json.loads((tmp_path / "old" / "report.json").read_text())
    new = json.loads((tmp_path / "new" / "report.json").read_text())
    rows = report.compare(old, new)
    names = [name for name, *_ in rows]
    assert "planet.onnx: pipeline onnxruntime fp32 b2 fps" in names
    assert "planet.onnx: pipeline ÷ inference alone" in names
    for name, before, after, change in rows:
        assert change == pytest.approx(after / before - 1)
        assert f"| {name} | {before:,.2f} | {after:,.2f} |" in md


def test_compare_of_a_file_that_is_not_a_report_is_one_line_exit_3(tmp_path, clip, models, capsys):
    bad = tmp_path / "old.json"
    bad.write_text("{not json")
    code = bench([clip, "--model", models.planet(), "--compare", str(bad), "--out", str(tmp_path / "r")])
    assert code == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not JSON" in err


def test_when_no_backend_can_run_the_reasons_are_listed(tmp_path, clip, models, capsys):
    code = bench([clip, "--model", models.biwi(), "--backends", "torch,tensorrt", "--device", "cpu",
                  "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no backend of --backends torch,tensorrt can run biwi.onnx here" in err
    assert "no biwi.pt2 beside biwi.onnx" in err and err.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "--batch takes whole numbers of 1 or more"),
    (["--batch", "two"], "--batch takes comma-separated numbers"),
    (["--backends", "onnxruntime,openvino"], "--backends takes one or more of onnxruntime, torch, tensorrt"),
    (["--precision", "int8"], "--precision takes one or more of fp32, fp16"),
    (["--repeat", "0"], "--repeat must be 1 or more"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--learner", "a.pkl", "--learner", "b.pkl"], "2 --learner for 1 models"),
])
def test_bad_options_are_usage_errors(tmp_path, clip, models, capsys, args, message):
    assert bench([clip, "--model", models.biwi(), *args, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_memory_over_the_whole_clip_and_the_clip_looped(tmp_path, clip, models):
    out = tmp_path / "report"
    assert bench([clip, "--model", models.biwi(), "--frames", "6", "--batch", "2", "--repeat", "2",
                  "--backends", "onnxruntime", "--memory-loops", "3", "--out", str(out)]) == 0
    (m,) = json.loads((out / "report.json").read_text())["models"]
    assert [run["frames"] for run in m["memory"]["runs"]] == [6, 16, 48]
    assert m["memory"]["growth"] == pytest.approx(m["memory"]["runs"][2]["peak_rss_mb"]
                                                  / m["memory"]["runs"][1]["peak_rss_mb"] - 1, abs=1e-3)


def test_figures_are_medians_with_their_spread():
    samples = [Sample(wall_s=1.0, cpu_s=2.0, frames=100, latencies_s=[0.01, 0.02]),
               Sample(wall_s=0.5, cpu_s=0.5, frames=100, latencies_s=[0.03]),
               Sample(wall_s=2.0, cpu_s=2.0, frames=100)]
    fig = measure.figures(samples)
    assert (fig["fps"], fig["fps_min"], fig["fps_max"]) == (100, 50, 200)
    assert fig["ms_per_frame"] == 10 and fig["cpu_ms_per_frame"] == 20 and fig["cpu_cores_used"] == 1
    assert (fig["latency_ms_p50"], fig["latency_ms_p95"]) == (20, 29)


def fig(fps, low=None, high=None, others=None):
    return {"fps": fps, "fps_min": low or fps, "fps_max": high or fps, "others_cores": others}


def test_a_figure_is_unreliable_by_its_spread_or_the_load_of_other_work():
    assert reliability.problems(fig(41, 40, 43, others=0.1), cores=2) == []
    assert reliability.problems(fig(24, 5.8, 42.9), cores=2) == ["repeats spread 5.8–42.9 frames/s"]
    busy = "other work took 1.1 of the 2 cores during it"
    assert reliability.problems(fig(41, 40, 43, others=1.1), cores=2) == [busy]
    assert reliability.problems(fig(41, 40, 43, others=None), cores=2) == []  # a load not told is no reason
    assert reliability.ceiling_problem(1.59, 1.0) == "ratio 1.59 above its ceiling 1.00"
    assert reliability.ceiling_problem(0.99, 1.0) is None and reliability.ceiling_problem(0.74, 0.85) is None


def rounds_of(*figs):
    """A test double of a measurement: each round gives the next figure; the warm-ups asked are kept."""
    warmups = []

    def measure_round(warmup):
        warmups.append(warmup)
        return figs[len(warmups) - 1]

    return measure_round, warmups


def test_an_unreliable_figure_is_measured_again_and_kept_once_it_can_be_trusted():
    measure_round, warmups = rounds_of(fig(24, 5.8, 42.9), fig(41, 40, 43))
    told = []
    out = reliability.until_reliable(measure_round, warmup=1, cores=2, again=lambda *heard: told.append(heard))
    assert out["fps"] == 41 and out["reliability"] == {"rounds": 2, "reasons": []}
    assert warmups == [1, 0]  # the rounds after the first run warm
    assert told == [(2, 3, ["repeats spread 5.8–42.9 frames/s"])]


def test_a_clean_figure_is_measured_once():
    measure_round, warmups = rounds_of(fig(41, 40, 43, others=0.2))
    out = reliability.until_reliable(measure_round, warmup=1, cores=2)
    assert warmups == [1] and out["reliability"] == {"rounds": 1, "reasons": []}


def test_a_figure_that_stays_unreliable_keeps_its_narrowest_round_and_says_why():
    measure_round, warmups = rounds_of(fig(24, 5.8, 42.9), fig(30, 15, 40), fig(20, 10, 41, others=1.2))
    out = reliability.until_reliable(measure_round, warmup=1, cores=2)
    assert len(warmups) == 1 + reliability.EXTRA_ROUNDS == 3
    assert out["fps"] == 30
    assert out["reliability"] == {"rounds": 3, "reasons": ["repeats spread 15.0–40.0 frames/s"]}


def test_a_load_that_lasts_two_rounds_is_not_measured_a_third_time():
    measure_round, warmups = rounds_of(fig(30, 27, 33, others=1.2), fig(31, 30, 32, others=1.1), fig(40, 39, 41))
    out = reliability.until_reliable(measure_round, warmup=1, cores=2)
    assert warmups == [1, 0]
    assert out["fps"] == 31 and out["reliability"] == {"rounds": 2,
                                                       "reasons": ["other work took 1.1 of the 2 cores during it"]}


def test_the_load_of_other_work_is_not_guessed_where_it_cannot_be_told(monkeypatch):
    if os.path.exists("/proc/stat"):
        assert measure.busy_cpu_s() > 0
    with measure.LoadMeter() as short:  # a window too short for /proc/stat's ticks to tell
        pass
    assert short.others_cores is None
    monkeypatch.setattr(measure, "busy_cpu_s", lambda: None)  # a machine without /proc/stat
    assert measure.idle_load(0.25) is None


def test_gpu_use_is_read_from_nvidia_smi_while_a_measurement_runs(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n# a test double of nvidia-smi: three samples, then waits to be stopped\n"
                    "echo '40, 1000'\necho '60, 1200'\necho 'garbage'\necho '80, 1100'\nexec sleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with measure.GpuSampler(enabled=True) as gpu:
        import time

        deadline = time.monotonic() + 10
        while len(gpu.lines) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert gpu.figures() == {"gpu_util_pct": 60.0, "gpu_memory_mb": 1200, "gpu_samples": 3}
    assert measure.GpuSampler(enabled=False).figures() == {}


def _result(stage_fps: dict, stage_cpu_ms: dict, pipeline_fps: float, hand_fps: float) -> dict:
    def fig(fps, cpu):
        return {"fps": fps, "cpu_ms_per_frame": cpu, "cpu_cores_used": fps * cpu / 1000}

    config = {"backend": "onnxruntime", "precision": "fp32", "batch": 4}
    return {
        "decode": {"pyav": {"decode + RGB": fig(stage_fps["decode"], stage_cpu_ms["decode"])}},
        "pipeline_decode": "decode + RGB",
        "preprocess": {"4": fig(stage_fps["preprocess"], stage_cpu_ms["preprocess"])},
        "postprocess": {"4": fig(stage_fps["postprocess"], stage_cpu_ms["postprocess"])},
        "sinks": {"all sinks": fig(stage_fps["sinks"], stage_cpu_ms["sinks"])},
        "inference": [{**config, **fig(stage_fps["inference"], stage_cpu_ms["inference"])}],
        "pipeline": [{**config, "fps": pipeline_fps}],
        "baselines": {"hand loop": {"fps": hand_fps, "cpu_ms_per_frame": 30, "cpu_cores_used": 1.8},
                      "learn.predict": {"unavailable": "no --learner given"}},
    }


def test_the_ceiling_is_the_slowest_stage_or_the_cores():
    fps = {"decode": 1000, "preprocess": 2000, "inference": 100, "postprocess": 5000, "sinks": 500}
    cpu = {"decode": 1, "preprocess": 0.5, "inference": 10, "postprocess": 0.1, "sinks": 2}
    h = analysis.headline(_result(fps, cpu, pipeline_fps=90, hand_fps=60), cores=8)
    assert h["slowest_stage"] == "inference"
    assert h["limited_by"] == "inference" and h["ceiling_fps"] == 100 and h["ceiling_ratio"] == 1
    assert h["ratios"] == {"inference_alone": 0.9, "hand_loop": 1.5}
    assert h["goals_met"] == {"inference_alone": True, "hand_loop": False}
    assert h["ceiling_ratios"] == {"hand_loop": pytest.approx(100 / 60, rel=1e-3)}
    text = analysis.explain(h, fps, 8)
    assert "Against hand loop the goal of 2× is out of reach: even at its ceiling" in text
    assert "The hand loop baseline itself keeps 1.8 of 8 cores busy" in text and "need 13.60 ms against its 30.00" in text

    h = analysis.headline(_result(fps, cpu, pipeline_fps=70, hand_fps=60), cores=1)
    assert h["limited_by"] == "cpu" and h["cpu_ceiling_fps"] == pytest.approx(1000 / 13.6, rel=1e-3)
    assert h["share_of_ceiling"] == pytest.approx(70 / h["cpu_ceiling_fps"], rel=1e-2)
    text = analysis.explain(h, fps, 1)
    assert "the CPU is the limit" in text and "is out of reach here: inference alone already keeps 1.0 of 1" in text
    assert "3.60 ms of CPU a frame the other stages need" in text


def test_the_headline_above_its_ceiling_is_unreliable_and_has_no_tick():
    fps = {"decode": 1000, "preprocess": 2000, "inference": 100, "postprocess": 5000, "sinks": 500}
    cpu = {"decode": 1, "preprocess": 0.5, "inference": 10, "postprocess": 0.1, "sinks": 2}
    h = analysis.headline(_result(fps, cpu, pipeline_fps=159, hand_fps=60), cores=8)
    assert (h["ratios"]["inference_alone"], h["ceiling_ratio"]) == (1.59, 1)
    assert h["unreliable"] == {"inference_alone": ["ratio 1.59 above its ceiling 1.00"],
                               "hand_loop": ["ratio 2.65 above its ceiling 1.67"]}
    assert h["goals_met"] == {"inference_alone": None, "hand_loop": None}
    row = report.headline_row({"model": "m.onnx", "task": "camvid", "headline": h})
    assert "✓" not in row and "✗" not in row and "| **1.59** unreliable |" in row
    assert row.endswith("| **unreliable**: ratio 1.59 above its ceiling 1.00; ratio 2.65 above its ceiling 1.67 |")
    text = analysis.explain(h, fps, 8)
    assert text.startswith("**Unreliable:** ratio 1.59") and "159% of that ceiling, which it cannot" in text


def test_a_headline_names_the_figures_it_cannot_trust_and_why():
    fps = {"decode": 1000, "preprocess": 2000, "inference": 100, "postprocess": 5000, "sinks": 500}
    cpu = {"decode": 1, "preprocess": 0.5, "inference": 10, "postprocess": 0.1, "sinks": 2}
    result = _result(fps, cpu, pipeline_fps=90, hand_fps=60)
    h = analysis.headline(result, cores=8)
    assert h["unreliable"] == {} and h["goals_met"] == {"inference_alone": True, "hand_loop": False}
    row = report.headline_row({"model": "m.onnx", "task": "camvid", "headline": h})
    assert "| **0.90** ✓ |" in row and row.endswith("| reliable |")

    spread = "repeats spread 5.8–42.9 frames/s"
    result["inference"][0]["reliability"] = {"rounds": 3, "reasons": [spread]}
    busy = "other work took 1.2 of the 8 cores during it"
    result["sinks"]["all sinks"]["reliability"] = {"rounds": 3, "reasons": [busy]}
    result["pipeline"].append({"backend": "torch", "precision": "fp32", "batch": 4, "fps": 80,
                               "reliability": {"rounds": 3, "reasons": [spread]}})
    before = "other work took 3.1 of the 8 cores just before the run"
    h = analysis.headline(result, cores=8, before=[before])
    config = "1 other pipeline figure unreliable, so the fastest configuration may be another"
    assert h["unreliable"] == {"inference_alone": [before, f"inference alone: {spread}"], "hand_loop": [before],
                               "ceiling": [f"inference alone: {spread}", f"sinks alone: {busy}"],
                               "config": [config]}
    row = report.headline_row({"model": "m.onnx", "task": "camvid", "headline": h})
    assert "| onnxruntime fp32 batch 4 unreliable | **0.90** unreliable |" in row and "| 1.00 unreliable |" in row
    assert row.endswith(f"| **unreliable**: {before}; inference alone: {spread}; sinks alone: {busy}; {config} |")


def test_a_run_on_a_busy_machine_says_unreliable_in_its_headline(tmp_path, clip, models, monkeypatch, capsys):
    # a test double of the cores' busy time: every core busy ten times over, whatever this process does
    monkeypatch.setattr(measure, "busy_cpu_s", lambda: 10 * len(measure.cpu_set()) * time.perf_counter())
    out = tmp_path / "report"
    assert bench([clip, "--model", models.biwi(), "--frames", "4", "--batch", "1", "--repeat", "1",
                  "--backends", "onnxruntime", "--out", str(out)]) == 0
    r = json.loads((out / "report.json").read_text())
    cores = r["machine"]["cores"]
    assert r["load"]["before_others_cores"] > reliability.OTHERS_LIMIT * cores
    reason = f"other work took {r['load']['before_others_cores']:.1f} of the {cores} cores just before the run"
    h = r["models"][0]["headline"]
    assert h["unreliable"]["inference_alone"][0] == reason and h["goals_met"]["inference_alone"] is None
    row = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| biwi.onnx |"))
    assert "✓" not in row and "✗" not in row and f"| **unreliable**: {reason}" in row
    assert f"edge-bench: warning: biwi.onnx: unreliable: {reason}" in capsys.readouterr().err


def test_a_headline_above_its_ceiling_is_measured_again(tmp_path, clip, models, monkeypatch, capsys):
    measured = []

    def inference(*args):
        fig = real(*args)
        measured.append(fig["fps"])
        if len(measured) == 1:  # the first reads a thousand times slow, as on a core other work took
            fig = {**fig, **{k: fig[k] / 1000 for k in ("fps", "fps_min", "fps_max")}}
        return fig

    real = stages.inference
    monkeypatch.setattr(stages, "inference", inference)
    out = tmp_path / "report"
    assert cli.main([clip, "--model", models.biwi(), "--frames", "8", "--batch", "2", "--repeat", "1",
                     "--backends", "onnxruntime", "--precision", "fp32", "--out", str(out)]) == 0
    assert "biwi.onnx: headline, inference alone and the pipeline: measuring again, round 2 of 3 (ratio " in (
        capsys.readouterr().err)
    assert len(measured) == 2
    (m,) = json.loads((out / "report.json").read_text())["models"]
    (alone,) = [row for row in m["inference"] if "fps" in row]
    assert alone["fps"] == measured[1] == m["headline"]["inference_alone_fps"]
    assert not any("above its ceiling" in reason for reasons in m["headline"]["unreliable"].values()
                   for reason in reasons)


def test_progress_counts_each_step_once_without_jumps(tmp_path, clip, models, capsys):
    code = cli.main([clip, "--model", models.biwi(), "--frames", "4", "--batch", "1,2", "--repeat", "1",
                     "--backends", "onnxruntime,tensorrt", "--precision", "fp32", "--device", "cpu",
                     "--out", str(tmp_path / "r")])
    assert code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[")]
    steps = [line for line in lines if "measuring again" not in line]
    # tensorrt, unavailable here, is found so before the first step: its inference and pipeline are not counted
    assert steps[0] == "[1/18] biwi.onnx: decode (pyav)" and steps[-1] == "[18/18] biwi.onnx: peak memory"
    assert [int(line[1:line.index("/")]) for line in steps] == list(range(1, 19))
    step = None
    for line in lines:  # a figure measured again is told under its step's number and name
        if "measuring again" in line:
            assert line.startswith((f"{step}:", f"{step},"))
        else:
            step = line


def test_a_clip_shorter_than_frames_is_measured_whole(tmp_path, clip, models):
    out = tmp_path / "report"
    assert bench([clip, "--model", models.planet(), "--frames", "100", "--batch", "4", "--repeat", "1",
                  "--backends", "onnxruntime", "--out", str(out)]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["frames"] == 16 and r["models"][0]["memory"]["runs"][0]["frames"] == 16
    # planet draws nothing, so the pipeline decodes to planes, and its decode figure is that one
    m = r["models"][0]
    assert m["pipeline_decode"] == "decode + planes" and "decode + planes" in m["decode"]["pyav"]
    assert m["headline"]["limited_by"] in ("cpu", "decode", "preprocess", "inference", "postprocess", "sinks")


def test_a_torch_program_is_measured_with_its_onnx_sibling(tmp_path, clip, exported_camvid):
    _, onnx = exported_camvid
    out = tmp_path / "report"
    assert bench([clip, "--model", str(onnx.with_suffix(".pt2")), "--frames", "6", "--batch", "2", "--repeat", "1",
                  "--backends", "torch,onnxruntime", "--precision", "fp32", "--out", str(out)]) == 0
    (m,) = json.loads((out / "report.json").read_text())["models"]
    assert m["model"] == "camvid.pt2"
    assert [(row["backend"], "fps" in row) for row in m["pipeline"]] == [("torch", True), ("onnxruntime", True)]
    assert "fps" in m["baselines"]["hand loop"]  # the loop runs the .onnx beside the program


def test_cuda_on_a_machine_without_it_lists_every_reason(tmp_path, clip, models, capsys):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    code = bench([clip, "--model", models.biwi(), "--device", "cuda", "--backends", "onnxruntime",
                  "--precision", "fp32", "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime fp32: --device cuda: this onnxruntime has no CUDA" in err


def test_a_baseline_that_reads_fewer_frames_is_reported_not_timed(tmp_path, clip, models, monkeypatch):
    monkeypatch.setattr(cli.baselines, "over_video", lambda video, frames, *a: frames - 1)
    out = tmp_path / "report"
    assert bench([clip, "--model", models.biwi(), "--frames", "8", "--batch", "4", "--repeat", "1",
                  "--backends", "onnxruntime", "--out", str(out)]) == 0
    (m,) = json.loads((out / "report.json").read_text())["models"]
    assert m["baselines"]["hand loop"] == {
        "unavailable": "OpenCV read only 7 of the 8 frames PyAV read, so hand loop would not run on the same frames"}
    assert "hand_loop" not in m["headline"]["ratios"]


@pytest.mark.parametrize("container, codec", [("clip.mp4", "libx264"), ("clip.avi", "mpeg4"), ("clip.mkv", "libx264")])
def test_looping_keeps_every_frame_and_its_spacing(tmp_path, container, codec):
    import av

    from bench.memory import loop_video

    src = tmp_path / container
    make_clip(src, [square(48, 64, 10, 2 * i) for i in range(10)], fps=10, codec=codec)
    looped = loop_video(str(src), 3, str(tmp_path / f"looped{src.suffix}"))
    with av.open(looped) as c:
        times = sorted(float(f.time) for f in c.decode(video=0))
    assert len(times) == 30
    assert times == pytest.approx([i / 10 for i in range(30)], abs=1e-3)


def test_a_gpu_report_renders_its_gpu_figures_fp16_gain_and_failures(tmp_path):
    """The report of a CUDA machine, made here from figures (no GPU needed to check the writing)."""
    def fig(fps, **extra):
        return {"fps": fps, "fps_min": fps * 0.9, "fps_max": fps * 1.1, "ms_per_frame": 1000 / fps,
                "cpu_ms_per_frame": 0.5, "cpu_cores_used": 0.3, "repeats": 3, **extra}

    gpu = dict(device="cuda (TensorRT fp16)", gpu_util_pct=87.5, gpu_memory_mb=1536, gpu_samples=40,
               latency_ms_p50=4.0, latency_ms_p95=4.5)
    config = {"stage": "inference alone", "backend": "tensorrt"}
    model = {
        "model": "camvid.onnx", "path": "/m/camvid.onnx", "sha256": "0" * 64, "task": "camvid", "producer": "x",
        "input_size": [360, 480], "frames": 100, "opencv_threads": "default", "pipeline_decode": "decode + RGB",
        "decode": {"pyav": {"decode": fig(900), "decode + RGB": fig(600)}},
        "preprocess": {"8": fig(700)}, "postprocess": {"8": fig(800)},
        "sinks": {"overlay.mp4": fig(400), "all sinks": fig(380)},
        "inference": [{**config, "precision": "fp16", "batch": 8, **fig(300, **gpu)},
                      {**config, "precision": "fp32", "batch": 8, **fig(150, **gpu)},
                      {**config, "precision": "fp16", "batch": 16, "failed": "RuntimeError: out of memory"}],
        "pipeline": [{"stage": "pipeline", "backend": "tensorrt", "precision": "fp16", "batch": 8,
                      **fig(270, device="cuda (TensorRT fp16)", gpu_util_pct=80.0, gpu_memory_mb=1600),
                      "busy_s": {k: 0.1 for k in ("decode", "preprocess", "infer", "postprocess", "sinks")},
                      "total_s": 0.4, "thread_cpu_ms_per_frame": {k: 0.1 for k in (
                          "decode", "preprocess", "infer", "postprocess", "sinks", "native pools")}}],
        "baselines": {"hand loop": fig(50, device="cuda"), "learn.predict": {"unavailable": "no --learner given"}},
        "memory": {"runs": [{"frames": 100, "peak_rss_mb": 900.0}]},
    }
    model["headline"] = analysis.headline(model, cores=8)
    document = {"video": "v.mp4", "frames": 100, "repeats": 3, "warmup": 1, "when": "now", "command": "edge-bench v.mp4",
                "machine": {"cpu": "x", "cores": 8, "memory_gb": 32, "os": "linux", "python": "3.11",
                            "versions": {"tensorrt": "10.3"}, "gpus": [{"name": "RTX 4090", "driver": "550.1",
                                                                        "memory": "24564 MiB"}]},
                "models": [model]}
    md = report.write(document, tmp_path).read_text()
    assert "RTX 4090 (driver 550.1, 24564 MiB)" in md and "tensorrt 10.3" in md
    assert "88% busy, 1536 MB" in md and "failed: RuntimeError: out of memory" in md
    assert "fp16 ÷ fp32, inference alone: tensorrt batch 8 2.00×" in md
    assert model["headline"]["ratios"]["inference_alone"] == pytest.approx(0.9)
    assert (tmp_path / "fps_vs_batch.png").exists() and (tmp_path / "stages.png").exists()


def test_the_jobs_benchmark_reports_each_level_against_the_first(tmp_path, models):
    from bench import jobs
    from tests.makers_clips import make_clip, ramp

    video = tmp_path / "v.mp4"
    make_clip(video, ramp(12), fps=25)
    ray = ["--ray"] if importlib.util.find_spec("ray") else []  # a cluster of this machine, in CI
    assert jobs.main([str(video), "--model", models.planet(), "--copies", "3", "--jobs", "1,2", "--seconds", "0.3",
                      "--repeat", "1", "--out", str(tmp_path / "report"), *ray]) == 0
    report = json.loads((tmp_path / "report" / "jobs.json").read_text())
    assert [r["jobs"] for r in report["rows"]] == [1, 2] + (["ray"] if ray else [])
    assert all(r["inputs"] == 3 and r["frames"] == 3 * 8 for r in report["rows"])  # 0.3 s of 25 frames/s, 3 times
    assert report["rows"][0]["against_first"] == 1.0 and "| 2 | 24 |" in (tmp_path / "report" / "jobs.md").read_text()
