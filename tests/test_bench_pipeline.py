"""The pipeline benchmark's machinery on a tiny clip and model: structure and sanity, not speed."""

import json

from bench import pipeline
from tests.makers_clips import make_clip, square


def test_report_has_ratios_cpu_figures_and_memory(tmp_path, models):
    clip = tmp_path / "clip.avi"
    make_clip(clip, [square(48, 64, 10, 2 * i) for i in range(24)], fps=12, codec="mpeg4")
    model = models.biwi()
    pipeline.main([str(clip), "--model", model, "--frames", "12", "--batch", "4", "--repeats", "2",
                   "--memory-model", model, "--loops", "3", "--out", str(tmp_path / "report")])
    report = json.loads((tmp_path / "report" / "pipeline.json").read_text())
    (row,) = report["models"]
    assert row["task"] == "biwi" and row["frames"] == 12 and len(row["pipeline_fps"]) == 2
    assert all(r > 0 for r in row["inference_alone_fps"] + row["pipeline_fps"])
    assert 0 < row["ratio"] and 0 < row["cpu_bound_ratio"] <= 1.5
    assert set(row["stage_busy_s"]) >= {"decode", "preprocess", "infer", "postprocess", "sinks", "total"}
    memory = report["memory"]
    assert memory["short"]["frames"] == 24 and memory["long"]["frames"] == 72
    assert 20 < memory["short"]["peak_rss_mb"] < 2000
    assert report["machine"]["cores"] >= 1 and report["machine"]["onnxruntime"]
    md = (tmp_path / "report" / "pipeline.md").read_text()
    assert "| biwi.onnx (tests) | biwi | 12 | 4 |" in md and "Peak memory" in md
