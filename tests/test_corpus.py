"""The reliability corpus: odd and damaged media made here, each run through `edge-run` with the
three default models in a separate process (tests/isolated.py) under a timeout. Every case must
end in success, with what was damaged counted, or in one clean error line: never a traceback,
a hang or a crash of the interpreter. The fuzz test flips and cuts bytes of real encoded clips
at random. README "Reliability" keeps the count of cases and their outcomes."""

import json
import random

import av
import cv2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.isolated import Worker
from tests.makers_clips import has_encoder, make_clip, make_tone, square

TASKS = "camvid,planet,biwi"
# real encoded clips to damage: a streaming container, one with an index, an old codec, and two
# with audio, whose track is read (and copied into overlays) separately from the video
SOURCES = {"clip.ts": dict(codec="mpeg2video"), "clip.mkv": {}, "clip.avi": dict(codec="mpeg4"), "clip.mp4": {},
           "audio.ts": dict(codec="mpeg2video", audio=True), "audio.mp4": dict(audio=True)}


def moving(n: int, h: int = 48, w: int = 64) -> list:
    return [square(h, w, (2 * i) % max(1, h - 8), (3 * i) % max(1, w - 8), size=min(8, h // 2, w // 2))
            for i in range(n)]


# name: (frames, make_clip options); every one must process every frame
GOOD = {
    "yuv444p.mp4": (moving(12), dict(pix_fmt="yuv444p")),
    "gray.mkv": (moving(12), dict(codec="ffv1", pix_fmt="gray")),
    "rgb.mkv": (moving(12), dict(codec="ffv1", pix_fmt="bgr0")),
    "10bit.mkv": (moving(12), dict(pix_fmt="yuv420p10le")),
    "tiny16.mp4": (moving(8, 16, 16), {}),
    "odd33x47.mkv": (moving(8, 33, 47), dict(codec="ffv1")),
    "uhd.mp4": (moving(2, 2160, 3840), {}),
    "mjpeg.avi": (moving(8), dict(codec="mjpeg", pix_fmt="yuvj420p")),
    "msmpeg4.avi": (moving(8), dict(codec="msmpeg4")),
    "mpeg4.mov": (moving(8), dict(codec="mpeg4")),
    "mpeg2.ts": (moving(12), dict(codec="mpeg2video")),
    "rotated.mp4": (moving(6), dict(rotation=90)),
    "vfr.mkv": (moving(6), dict(times_s=[0.0, 0.05, 0.3, 0.31, 0.9, 1.0])),
    "vp9.webm": (moving(8), dict(codec="libvpx-vp9")),
    "cinepak.avi": (moving(8), dict(codec="cinepak", pix_fmt="rgb24")),
}
ENCODER = {"vp9.webm": "libvpx-vp9", "cinepak.avi": "cinepak"}


@pytest.fixture(scope="module")
def worker():
    w = Worker(timeout_s=90)
    yield w
    w.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    made = {}
    for name, (frames, options) in GOOD.items():
        if name in ENCODER and not has_encoder(ENCODER[name]):
            continue
        make_clip(folder / name, frames, fps=12, **options)
        made[name] = folder / name
    cv2.imwrite(str(folder / "image.png"), square(48, 64, 10, 10))
    made["image.png"] = folder / "image.png"
    return made


def summary_of(outcome) -> dict:
    (summary,) = json.loads(outcome.stdout)
    return summary


@pytest.mark.parametrize("name", [*GOOD, "image.png"])
def test_odd_media_process_every_frame(corpus, worker, tmp_path, name):
    if name not in corpus:
        pytest.skip(f"this FFmpeg build has no {ENCODER[name]} encoder")
    outcome = worker.run([corpus[name], "--task", TASKS, "--out", tmp_path, "--json"])
    assert outcome.code == 0, outcome.failure or outcome.stderr
    summary = summary_of(outcome)
    frames = 1 if name == "image.png" else len(GOOD[name][0])
    assert summary["frames"]["processed"] == frames and summary["frames"]["corrupt_skipped"] == 0
    with av.open(summary["outputs"]["camvid"] + "/overlay.mp4") as c:
        stream = c.streams.video[0]
        shown = [f.to_ndarray(format="rgb24").shape for f in c.decode(stream)]
    assert len(shown) == frames
    # upright, the input's displayed size (H.264 pads an odd side by one pixel)
    h, w = summary["video"]["height"], summary["video"]["width"]
    assert shown[0][:2] == (h + h % 2, w + w % 2)
    if name == "rotated.mp4":
        assert (h, w) == (64, 48)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    made = {}
    for name, options in SOURCES.items():
        make_clip(folder / name, moving(24), fps=12, **options)
        made[name] = (folder / name).read_bytes()
    return made


def damaged(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / f"damaged-{name}"
    path.write_bytes(data)
    return str(path)


def check_damaged_run(outcome, frames_in_source: int) -> None:
    assert outcome.code is not None, outcome.failure
    assert outcome.clean, outcome.stderr
    if outcome.code == 0:
        f = summary_of(outcome)["frames"]
        assert 0 < f["in_range"] <= frames_in_source + 2  # a concealed frame may be duplicated
    else:
        assert outcome.code == 3  # an input error: the file, not the tool


@pytest.mark.parametrize("name, data", [
    ("zero.mp4", b""),
    ("random.mp4", random.Random(0).randbytes(20000)),
    ("text.mp4", b"not a video\n" * 100),
])
def test_files_that_are_not_video_fail_in_one_line(worker, tmp_path, name, data):
    outcome = worker.run([damaged(tmp_path, name, data), "--task", TASKS, "--out", tmp_path / "out", "--json"])
    assert outcome.code == 3 and outcome.clean, outcome.failure or outcome.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.mp4"))


def test_an_audio_only_file_fails_in_one_line(worker, tmp_path):
    make_tone(tmp_path / "tone.m4a", 1.0)
    outcome = worker.run([tmp_path / "tone.m4a", "--task", "planet", "--out", tmp_path / "out", "--quiet"])
    assert outcome.code == 3 and outcome.clean and "has no video stream (found: audio)" in outcome.stderr


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("keep", [0.2, 0.5, 0.8, 0.97])
def test_truncated_files_keep_what_came_before(sources, worker, tmp_path, source, keep):
    data = sources[source]
    outcome = worker.run([damaged(tmp_path, source, data[: int(len(data) * keep)]), "--task", TASKS,
                          "--out", tmp_path / "out", "--json"])
    check_damaged_run(outcome, 24)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(source=st.sampled_from(list(SOURCES)),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)), min_size=1,
                      max_size=40),
       cut=st.one_of(st.none(), st.floats(0.05, 1.0)))
def test_fuzz_damaged_clips_end_cleanly(sources, worker, tmp_path_factory, source, flips, cut):
    data = bytearray(sources[source])
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    if cut is not None:
        data = data[: max(1, int(cut * len(data)))]
    folder = tmp_path_factory.mktemp("fuzz")
    outcome = worker.run([damaged(folder, source, bytes(data)), "--task", TASKS, "--out", folder / "out", "--json"])
    check_damaged_run(outcome, 24)


# --- what the fuzzing found, made on purpose ----------------------------------------------------

def test_metadata_that_is_not_text_does_not_stop_the_frames(worker, tmp_path):
    clip = tmp_path / "meta.mkv"
    with av.open(str(clip), "w") as out:
        out.metadata["title"] = "ZZZZZZZZ"
        stream = out.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i, rgb in enumerate(moving(4)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    clip.write_bytes(clip.read_bytes().replace(b"ZZZZZZZZ", bytes(range(0xF8, 0x100))[::-1]))
    outcome = worker.run([clip, "--task", TASKS, "--out", tmp_path / "out", "--json"])
    assert outcome.code == 0 and summary_of(outcome)["frames"]["processed"] == 4, outcome.stderr


def test_a_stream_of_an_unknown_codec_fails_in_one_line(worker, tmp_path):
    clip = tmp_path / "clip.mkv"
    make_clip(clip, moving(6), fps=12)
    clip.write_bytes(clip.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/AVC"))
    outcome = worker.run([clip, "--task", TASKS, "--out", tmp_path / "out", "--json"])
    assert outcome.code == 3 and outcome.clean and "knows no decoder for its video stream" in outcome.stderr


def test_a_wild_timestamp_is_counted_as_damage_and_the_overlay_stays_short(worker, tmp_path):
    """A flipped bit in a timestamp threw one frame 16 hours ahead, which mp4 cannot store."""
    clip = tmp_path / "jump.mkv"
    make_clip(clip, moving(5), fps=10, times_s=[0.0, 0.1, 0.2, 0.3, 50000.0])
    outcome = worker.run([clip, "--task", "biwi", "--out", tmp_path / "out", "--json"])
    assert outcome.code == 0, outcome.stderr
    summary = summary_of(outcome)
    assert summary["frames"]["processed"] == 5 and summary["frames"]["corrupt_skipped"] == 1
    with av.open(summary["outputs"]["biwi"] + "/overlay.mp4") as c:
        assert [round(f.time, 3) for f in c.decode(video=0)] == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_frames_of_another_size_are_skipped_as_damage(worker, tmp_path):
    """Two MPEG-TS files joined byte to byte: the stream's picture size changes half way, as a
    damaged sequence header makes it; the overlay cannot change size, so those frames are counted."""
    first, second = tmp_path / "a.ts", tmp_path / "b.ts"
    make_clip(first, moving(6), fps=12, codec="mpeg2video")
    make_clip(second, moving(6, 32, 32), fps=12, codec="mpeg2video")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    outcome = worker.run([joined, "--task", TASKS, "--out", tmp_path / "out", "--json"])
    assert outcome.code == 0, outcome.failure or outcome.stderr
    f = summary_of(outcome)["frames"]
    assert 5 <= f["processed"] <= 6 and f["corrupt_skipped"] >= 6  # the join may cost one frame


# --- the output side ------------------------------------------------------------------------------

def test_a_full_disk_is_one_line_and_leaves_no_final_file(worker, tmp_path):
    import numpy as np

    noise = [np.random.default_rng(i).integers(0, 256, (96, 128, 3), dtype=np.uint8) for i in range(24)]
    make_clip(tmp_path / "noise.mp4", noise, fps=12)  # noise makes a large overlay
    out = tmp_path / "out"
    outcome = worker.run([tmp_path / "noise.mp4", "--task", "biwi", "--out", out, "--json"],
                         file_size_limit=60_000)
    assert outcome.code == 5 and outcome.clean, outcome.failure or outcome.stderr
    assert "cannot write" in outcome.stderr
    # not even a staged partial file: only the failed run's record
    records = [p for p in out.rglob("*") if p.is_file() and p.name not in ("jobs.json", ".jobs.json.lock")]
    assert [p.name for p in records] == ["run.json"]
    assert json.loads(records[0].read_text())["status"] == "failed"


def test_an_output_folder_removed_during_the_run_is_one_line(tmp_path, monkeypatch, capsys):
    import shutil

    from edge.cli import main
    from edge.sinks import CsvSink

    write = CsvSink.write

    def write_then_remove(self, frame, result):
        write(self, frame, result)
        if frame.index == 3:
            shutil.rmtree(tmp_path / "out")

    monkeypatch.setattr(CsvSink, "write", write_then_remove)
    make_clip(tmp_path / "c.mp4", moving(12), fps=12)
    code = main([str(tmp_path / "c.mp4"), "--task", "planet", "--out", str(tmp_path / "out"), "--quiet"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 5 and len(lines) == 1
    assert lines[0].startswith("edge-run: error: cannot write the outputs in") and "still exists" in lines[0]


def test_audio_outlasting_the_video_is_not_a_file_cut_short(worker, tmp_path):
    """mkv gives only the whole file's length; here the audio runs 3 s past the video."""
    from tests.makers_clips import _write_tone

    clip = tmp_path / "long-audio.mkv"
    with av.open(str(clip), "w") as out:
        video = out.add_stream("libx264", rate=12)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        tone = out.add_stream("aac", rate=48000, layout="mono")
        for i, rgb in enumerate(moving(12)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        _write_tone(out, tone, 4.0)
    outcome = worker.run([clip, "--task", "biwi", "--out", tmp_path / "out", "--json"])
    assert outcome.code == 0 and outcome.stderr == "", outcome.stderr
    assert summary_of(outcome)["stopped_early"] is None


def test_joined_files_continue_in_time(worker, tmp_path):
    """A second file's times start again at zero: one discontinuity, counted once, and the times go on."""
    first, second = tmp_path / "a.ts", tmp_path / "b.ts"
    make_clip(first, moving(12), fps=12, codec="mpeg2video")
    make_clip(second, moving(12), fps=12, codec="mpeg2video")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    outcome = worker.run([joined, "--task", "biwi", "--out", tmp_path / "out", "--json"])
    assert outcome.code == 0, outcome.stderr
    summary = summary_of(outcome)
    assert summary["frames"]["corrupt_skipped"] == 1 and summary["frames"]["processed"] >= 23
    with av.open(summary["outputs"]["biwi"] + "/overlay.mp4") as c:
        times = [f.time for f in c.decode(video=0)]
    assert times[-1] > 1.8 and all(b - a == pytest.approx(1 / 12, abs=1e-3) for a, b in zip(times, times[1:]))
