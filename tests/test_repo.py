"""The clone itself: what the quick start writes stays out of git."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", ["demo/street.mp4", "out/street/camvid/overlay.mp4", "edge-out/clip/biwi/run.json",
                                  "edge-bench/report.md", "build/defaults/camvid.onnx",
                                  "bench/results/host/clip-1280x720.mp4", "bench/results/host/free-models/camvid.onnx"])
def test_what_the_quick_start_writes_is_ignored_by_git(path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git clone")
    assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, f"{path} is not ignored"


@pytest.mark.parametrize("path", ["bench/results/host/report.md", "bench/results/host/report.json",
                                  "bench/results/host/fps.png", "bench/results/gpu/report.md"])
def test_the_committed_reports_are_not_ignored(path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git clone")
    assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 1, f"{path} is ignored"
