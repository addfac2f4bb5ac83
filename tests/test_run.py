"""edge-run end to end: generated clips through the known-function models, asserting content."""

import csv
import json

import av
import cv2
import numpy as np
import pytest

from edge.cli import main
from edge.inputs import short_hash
from edge.media import read_frames
from tests.makers_clips import make_clip, solid, square

H, W = 96, 128


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def decoded(path):
    with av.open(str(path)) as c:
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
        audio = [s.codec_context.codec.canonical_name for s in c.streams.audio]
    return frames, audio


def run(*args):
    return main([str(a) for a in args])


def test_camvid_overlay_blends_the_palette_where_the_model_says(tmp_path, models):
    frames = []
    for i in range(20):
        frame = solid(H, W, (0, 0, 0))
        frame[20:60, 10 + i : 50 + i] = (220, 0, 0)  # a red block drifting right: class Red
        frame[70:90, 80:120] = (0, 0, 230)  # a blue block: class Blue
        frames.append(frame)
    clip = tmp_path / "street.mp4"
    make_clip(clip, frames, fps=25, audio=True)
    assert run(clip, "--model", models.camvid(size=(48, 64)), "--out", tmp_path / "out", "--alpha", "0.5",
               "--save-masks", "--quiet") == 0

    folder = tmp_path / "out" / "street" / "camvid"
    out, audio = decoded(folder / "overlay.mp4")
    assert len(out) == 20 and audio == ["aac"]
    assert [round(t, 3) for t, _ in out] == [round(i / 25, 3) for i in range(20)]
    t, image = out[10]
    palette_red, palette_blue = np.array((255, 255, 0)), np.array((255, 0, 255))
    red_blend = 0.5 * np.array((220, 0, 0)) + 0.5 * palette_red
    blue_blend = 0.5 * np.array((0, 0, 230)) + 0.5 * palette_blue
    assert np.abs(image[55, 45].astype(int) - red_blend).max() <= 16  # below the legend
    assert np.abs(image[80, 100].astype(int) - blue_blend).max() <= 16
    assert image[92, 20].max() <= 16  # black stays black: Void's colour is black

    table = rows(folder / "classes.csv")
    assert len(table) == 20 and list(table[0]) == ["time_s", "frame", "Void", "Red", "Green", "Blue"]
    assert float(table[0]["Red"]) == pytest.approx(40 * 40 / (H * W), abs=0.02)
    assert float(table[0]["Blue"]) == pytest.approx(20 * 40 / (H * W), abs=0.02)
    mask = cv2.imread(str(folder / "masks" / "0000010.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (H, W) and mask[40, 40] == 1 and mask[80, 100] == 3 and mask[5, 5] == 0

    record = json.loads((folder / "run.json").read_text())
    assert record["frames"]["decoded"] == 20 and record["model"]["task"] == "camvid"
    assert len(record["model"]["sha256"]) == 64
    assert set(record["files"]) == {"overlay.mp4", "classes.csv", "masks", "run.json"}
    assert not list(folder.parent.glob("**/.edge-partial-*"))


@pytest.mark.parametrize("output", ["probabilities", "logits"])
def test_planet_intervals_match_the_planted_events(tmp_path, models, output):
    # 4 s at 25 fps: red from 1.0 to 2.0 s, green from 2.6 s to the end, one noisy red frame at 3.0 s
    def colour(i):
        t = i / 25
        rgb = [30, 30, 30]
        if 1.0 <= t < 2.0 or i == 75:
            rgb[0] = 250
        if t >= 2.6:
            rgb[1] = 250
        return solid(H, W, tuple(rgb))

    clip = tmp_path / "tiles.mkv"
    make_clip(clip, [colour(i) for i in range(100)], fps=25)
    assert run(clip, "--model", models.planet(output=output), "--out", tmp_path / "out", "--quiet",
               "--min-duration", "0.2") == 0
    folder = tmp_path / "out" / "tiles" / "planet"
    timeline = rows(folder / "timeline.csv")
    got = [(r["tag"], float(r["start_s"]), float(r["end_s"])) for r in timeline]
    assert got == [("red", 1.0, 2.0), ("green", 2.6, 4.0)]
    intervals = json.loads((folder / "timeline.json").read_text())["intervals"]
    assert intervals[0]["peak"] == pytest.approx(250 / 255, abs=0.03)
    vtt = (folder / "tags.vtt").read_text()
    assert vtt.startswith("WEBVTT") and "00:00:01.000 --> 00:00:02.000\nred" in vtt
    scores = rows(folder / "scores.csv")
    assert len(scores) == 100 and float(scores[40]["red"]) > 0.9 and float(scores[10]["red"]) < 0.2
    image = cv2.imread(str(folder / "timeline.png"))
    assert image is not None and image.shape[1] == 1200


def test_planet_threshold_override(tmp_path, models):
    clip = tmp_path / "dim.mp4"
    make_clip(clip, [solid(H, W, (100, 30, 30))] * 20, fps=10)  # red ≈ 0.39: under 0.5, over 0.3
    assert run(clip, "--model", models.planet(), "--out", tmp_path / "a", "--quiet") == 0
    assert rows(tmp_path / "a" / "dim" / "planet" / "timeline.csv") == []
    assert run(clip, "--model", models.planet(), "--out", tmp_path / "b", "--quiet", "--threshold", "0.3") == 0
    assert [r["tag"] for r in rows(tmp_path / "b" / "dim" / "planet" / "timeline.csv")] == ["red"]


def test_biwi_track_follows_a_moving_dot(tmp_path, models):
    centres = [(20 + 3 * i, 30 + i) for i in range(30)]  # (x, y) in frame pixels
    frames = [square(H, W, y - 4, x - 4, size=8) for x, y in centres]
    clip = tmp_path / "face.mp4"
    make_clip(clip, frames, fps=30)
    assert run(clip, "--model", models.biwi(), "--out", tmp_path / "out", "--quiet") == 0
    folder = tmp_path / "out" / "face" / "biwi"
    track = rows(folder / "track.csv")
    assert len(track) == 30
    for row, (x, y) in zip(track, centres):
        assert abs(float(row["x"]) - x) < 2.5 and abs(float(row["y"]) - y) < 2.5
    smooth = np.array([[float(r["x_smooth"]), float(r["y_smooth"])] for r in track])
    assert np.abs(smooth[-1] - centres[-1]).max() < 6  # the filter lags a little, never wanders
    doc = json.loads((folder / "track.json").read_text())
    assert len(doc["points"]) == 30 and doc["points"][5]["frame"] == 5
    out, _ = decoded(folder / "overlay.mp4")
    assert len(out) == 30
    x, y = centres[20]
    assert out[20][1][y, x, 0] > 150 and out[20][1][y, x, 1] < 100  # the red dot is drawn at the face


def test_variable_frame_rate_times_are_kept(tmp_path, models):
    times = [0.0, 0.04, 0.1, 0.5, 0.52, 1.3, 1.35, 2.0]
    clip = tmp_path / "vfr.mkv"
    make_clip(clip, [solid(H, W, (40 * i % 255, 0, 0)) for i in range(len(times))], times_s=times)
    assert run(clip, "--model", models.camvid(), "--out", tmp_path / "out", "--quiet") == 0
    folder = tmp_path / "out" / "vfr" / "camvid"
    assert [float(r["time_s"]) for r in rows(folder / "classes.csv")] == pytest.approx(times, abs=1e-3)
    out, _ = decoded(folder / "overlay.mp4")
    assert [t for t, _ in out] == pytest.approx(times, abs=1e-3)


def test_stride_keeps_every_frame_in_the_overlay_and_processes_some(tmp_path, models):
    clip = tmp_path / "c.mp4"
    make_clip(clip, [square(H, W, 40, 4 * i, size=8) for i in range(24)], fps=24)
    assert run(clip, "--model", models.biwi(), "--model", models.planet(), "--out", tmp_path / "out",
               "--stride", "5", "--quiet", "--batch", "2") == 0
    track = rows(tmp_path / "out" / "c" / "biwi" / "track.csv")
    assert [int(r["frame"]) for r in track] == [0, 5, 10, 15, 20]
    assert [int(r["frame"]) for r in rows(tmp_path / "out" / "c" / "planet" / "scores.csv")] == [0, 5, 10, 15, 20]
    out, _ = decoded(tmp_path / "out" / "c" / "biwi" / "overlay.mp4")
    assert len(out) == 24
    record = json.loads((tmp_path / "out" / "c" / "biwi" / "run.json").read_text())
    assert record["frames"] | {"corrupt_times_s": []} == {
        "decoded": 24, "in_range": 24, "processed": 5, "not_selected": 19, "corrupt_skipped": 0,
        "corrupt_times_s": [], "last_time_s": pytest.approx(23 / 24), "read_error": None}
    assert record["stopped_early"] is None


def test_sample_fps_and_time_range(tmp_path, models):
    clip = tmp_path / "c.mp4"
    make_clip(clip, [solid(H, W, (0, 200, 0))] * 50, fps=25, audio=True)  # 2 s
    assert run(clip, "--model", models.camvid(), "--out", tmp_path / "out", "--sample-fps", "5",
               "--start", "0.4", "--end", "1.6", "--quiet") == 0
    folder = tmp_path / "out" / "c" / "camvid"
    times = [float(r["time_s"]) for r in rows(folder / "classes.csv")]
    assert times == pytest.approx([0.4, 0.6, 0.8, 1.0, 1.2, 1.4], abs=1e-3)
    out, audio = decoded(folder / "overlay.mp4")
    assert len(out) == 30 and out[0][0] == pytest.approx(0.0) and audio == ["aac"]


def test_several_models_share_one_decode_and_json_summary(tmp_path, models, capsys):
    clip = tmp_path / "c.mp4"
    make_clip(clip, [square(H, W, 10, 10)] * 6, fps=6)
    code = run(clip, "--model", models.camvid(), "--model", models.planet(), "--model", models.biwi(),
               "--model", models.camvid("second.onnx", output="logits"), "--out", tmp_path / "out", "--json")
    assert code == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["frames"]["decoded"] == 6
    assert sorted(summary["outputs"]) == ["biwi", "camvid", "planet", "second"]  # each model's file's name
    a = rows(tmp_path / "out" / "c" / "camvid" / "classes.csv")
    b = rows(tmp_path / "out" / "c" / "second" / "classes.csv")
    assert a == b  # class ids and logits agree
    stages = {"decode", "preprocess", "infer", "postprocess", "sinks"}
    assert set(summary["stage_cpu_s"]) == stages and all(v >= 0 for v in summary["stage_cpu_s"].values())
    # stage threads are part of the process: their CPU cannot exceed the process's
    assert sum(summary["stage_cpu_s"].values()) <= summary["seconds"]["cpu"] + 0.01


def test_outputs_go_into_a_folder_named_after_the_model_file(tmp_path, models, capsys):
    clip = tmp_path / "c.mp4"
    make_clip(clip, [square(H, W, 10, 10)] * 4, fps=4)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = models.planet("a/multi.onnx"), models.planet("b/multi.onnx", thresholds=(0.1,) * 4)
    tags = models.planet("tags.onnx")
    assert run(clip, "--model", first, "--model", second, "--model", tags, "--out", tmp_path / "out", "--json") == 0
    (summary,) = json.loads(capsys.readouterr().out)
    names = sorted(summary["outputs"])
    assert len(names) == 3 and "tags" in names and not any(name.startswith("planet") for name in names)
    assert sorted(n for n in names if n != "tags") == sorted(f"multi-{short_hash(p)}" for p in (first, second))
    for name in names:
        assert (tmp_path / "out" / "c" / name / "timeline.csv").is_file()
    assert run(clip, "--task", "planet", "--out", tmp_path / "defaults") == 0  # --task keeps the task's name
    assert (tmp_path / "defaults" / "c" / "planet" / "run.json").is_file()


def test_a_model_given_twice_is_a_usage_error(tmp_path, models, capsys):
    clip = tmp_path / "c.mp4"
    make_clip(clip, [square(H, W, 10, 10)] * 2, fps=4)
    assert run(clip, "--model", models.planet(), "--model", str(tmp_path / "planet.onnx")) == 2
    assert "given twice" in capsys.readouterr().err


def test_opencv_threads_are_off_during_a_cpu_run_and_restored_after(tmp_path, models):
    from edge.api import run as run_api
    from edge.run.options import RunOptions

    seen = set()
    clip = tmp_path / "c.mp4"
    make_clip(clip, [square(H, W, 10, 10)] * 3, fps=3)
    previous = cv2.getNumThreads()
    cv2.setNumThreads(3)  # what the run must put back, whatever this machine's cores
    try:
        run_api([str(clip)], RunOptions(models=[models.biwi()], out=str(tmp_path / "out")),
                progress=lambda key, written, expected: seen.add(cv2.getNumThreads()))
        assert seen == {1} and cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(previous)


def test_fixed_batch_graph_gets_padded_chunks(tmp_path, models):
    clip = tmp_path / "c.mp4"
    make_clip(clip, [square(H, W, 2 * i, 3 * i) for i in range(7)], fps=7)
    assert run(clip, "--model", models.biwi(batch=1), "--batch", "4", "--out", tmp_path / "out", "--quiet") == 0
    assert len(rows(tmp_path / "out" / "c" / "biwi" / "track.csv")) == 7


def test_corrupt_packets_are_skipped_and_counted(tmp_path, models, capsys):
    clip = tmp_path / "noise.mp4"
    rng = np.random.default_rng(0)
    make_clip(clip, [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(40)])
    data = bytearray(clip.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    clip.write_bytes(data)
    assert run(clip, "--model", models.planet(), "--out", tmp_path / "out") == 0
    line = capsys.readouterr().out
    assert "corrupt skipped" in line
    record = json.loads((tmp_path / "out" / "noise" / "planet" / "run.json").read_text())
    assert record["frames"]["corrupt_skipped"] >= 1


def test_frames_match_between_decoders(tmp_path, models):
    clip = tmp_path / "c.avi"
    make_clip(clip, [square(H, W, 30, 5 * i) for i in range(10)], codec="mpeg4", fps=10)
    for decoder in ("pyav", "opencv"):
        assert run(clip, "--model", models.biwi(), "--decoder", decoder, "--out", tmp_path / decoder, "--quiet") == 0
    a = rows(tmp_path / "pyav" / "c" / "biwi" / "track.csv")
    b = rows(tmp_path / "opencv" / "c" / "biwi" / "track.csv")
    assert len(a) == len(b) == 10
    assert all(abs(float(p["x"]) - float(q["x"])) < 1.5 for p, q in zip(a, b))


def test_reading_frames_back_from_an_overlay(tmp_path, models):
    """The overlay is a normal input again: same size and count through our own reader."""
    clip = tmp_path / "c.mp4"
    make_clip(clip, [square(H, W, 30, 30)] * 5, fps=5)
    assert run(clip, "--model", models.camvid(), "--out", tmp_path / "out", "--quiet") == 0
    again = list(read_frames(tmp_path / "out" / "c" / "camvid" / "overlay.mp4"))
    assert len(again) == 5 and again[0].image.shape == (H, W, 3)


@pytest.mark.parametrize("name,codec,size,audio", [
    ("odd.mkv", "ffv1", (37, 53), None),
    ("old.avi", "mpeg4", (48, 64), "mp3"),
    ("pcm.mov", "libx264", (48, 64), "pcm_s16le"),
])
def test_containers_codecs_sizes_and_audio(tmp_path, models, name, codec, size, audio):
    h, w = size
    frames = [square(h, w, 10, 2 * i, size=6, rgb=(250, 0, 0)) for i in range(12)]
    clip = tmp_path / name
    make_clip(clip, frames, fps=12, codec=codec, pix_fmt="yuv420p" if codec != "ffv1" else "bgr0",
              audio=audio is not None, audio_codec=audio or "aac")
    assert run(clip, "--model", models.camvid(), "--out", tmp_path / "out", "--quiet") == 0
    out, audio_out = decoded(tmp_path / "out" / clip.stem / "camvid" / "overlay.mp4")
    assert len(out) == 12
    # 4:2:0 H.264 cannot be odd-sized: an odd side gains one replicated pixel
    assert out[0][1].shape[:2] == (h + h % 2, w + w % 2)
    assert audio_out == ([] if audio is None else ["mp3" if audio == "mp3" else "aac"])
    table = rows(tmp_path / "out" / clip.stem / "camvid" / "classes.csv")
    assert float(table[0]["Red"]) == pytest.approx(36 / (h * w), abs=0.03)


def test_rotated_phone_video_is_processed_upright(tmp_path, models):
    """A portrait phone clip: stored landscape with a 90° display matrix. Points come back in
    the displayed (upright) frame and the overlay is upright."""
    stored = square(48, 64, 8, 40, size=8)  # dot centred at x=44, y=12 in the stored picture
    clip = tmp_path / "phone.mp4"
    make_clip(clip, [stored] * 6, fps=6, rotation=90)
    assert run(clip, "--model", models.biwi(size=(64, 48)), "--out", tmp_path / "out", "--quiet") == 0
    upright = np.rot90(stored)  # what a player shows for a 90° counterclockwise display matrix
    ys, xs = np.nonzero(upright[..., 0])
    track = rows(tmp_path / "out" / "phone" / "biwi" / "track.csv")
    assert abs(float(track[0]["x"]) - (xs.mean() + 0.5)) < 2 and abs(float(track[0]["y"]) - (ys.mean() + 0.5)) < 2
    out, _ = decoded(tmp_path / "out" / "phone" / "biwi" / "overlay.mp4")
    assert out[0][1].shape[:2] == (64, 48)


def test_nan_outputs_get_no_result_and_are_counted(tmp_path, models, capsys):
    """A broken model (0/0 on black frames) must show as such, never as a plausible track."""
    clip = tmp_path / "c.mp4"
    frames = [square(H, W, 10, 10) if i % 3 else solid(H, W, (0, 0, 0)) for i in range(9)]
    make_clip(clip, frames, fps=9)
    code = run(clip, "--model", models.biwi(eps=0.0), "--out", tmp_path / "out", "--batch", "4")
    assert code == 0
    err = capsys.readouterr().err
    assert "the biwi model gave NaN or Inf for 3 frames (the first at 0.000 s)" in err
    record = json.loads((tmp_path / "out" / "c" / "biwi" / "run.json").read_text())
    assert record["model"]["nonfinite_output"] == 3
    assert record["model"]["nonfinite_times_s"] == pytest.approx([0, 3 / 9, 6 / 9])
    track = rows(tmp_path / "out" / "c" / "biwi" / "track.csv")
    assert [int(r["frame"]) for r in track] == [1, 2, 4, 5, 7, 8]
    out, _ = decoded(tmp_path / "out" / "c" / "biwi" / "overlay.mp4")
    assert len(out) == 9 and out[0][1].max() < 40  # a NaN frame is written as it is: black, no marker


def test_a_file_cut_short_says_where_it_stopped(tmp_path, models, capsys):
    full = tmp_path / "full.mkv"
    make_clip(full, [square(H, W, i, i) for i in range(40)], fps=10, codec="ffv1")
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    assert run(cut, "--model", models.biwi(), "--out", tmp_path / "out", "--quiet") == 0
    err = capsys.readouterr().err
    assert "cut.mkv ends at" in err and "of the 4.0 s its container declares" in err
    record = json.loads((tmp_path / "out" / "cut" / "biwi" / "run.json").read_text())
    early = record["stopped_early"]
    assert 0.5 < early["at_s"] < 3.5 and early["expected_end_s"] == 4.0
    assert record["frames"]["last_time_s"] == pytest.approx(early["at_s"] - 0.1)
    assert len(rows(tmp_path / "out" / "cut" / "biwi" / "track.csv")) == record["frames"]["processed"]


def two_stream_clip(path, n=4):
    """An mkv with two video streams: red frames, then (stream 1) green frames of another size."""
    with av.open(str(path), "w") as out:
        streams = []
        for size in ((H, W), (32, 48)):
            s = out.add_stream("libx264", rate=4)
            s.height, s.width = size
            s.pix_fmt = "yuv420p"
            streams.append(s)
        for i in range(n):
            for s, rgb in zip(streams, ((220, 20, 20), (20, 220, 20))):
                frame = av.VideoFrame.from_ndarray(solid(s.height, s.width, rgb), format="rgb24")
                frame.pts = i
                out.mux(s.encode(frame))
        for s in streams:
            out.mux(s.encode(None))


def test_stream_chooses_among_several_video_streams(tmp_path, models, capsys):
    clip = tmp_path / "two.mkv"
    two_stream_clip(clip)
    planet = models.planet()
    assert run(clip, "--model", planet, "--out", tmp_path / "first") == 0
    assert "has 2 video streams; reading stream 0 (--stream)" in capsys.readouterr().err
    assert run(clip, "--model", planet, "--stream", "1", "--out", tmp_path / "second", "--quiet") == 0
    first = rows(tmp_path / "first" / "two" / "planet" / "scores.csv")
    second = rows(tmp_path / "second" / "two" / "planet" / "scores.csv")
    red, green = list(first[0])[2:4]  # the model's first two tags are the red and green channel means
    assert float(first[0][red]) > 0.7 > float(first[0][green])
    assert float(second[0][green]) > 0.7 > float(second[0][red])
    record = json.loads((tmp_path / "second" / "two" / "planet" / "run.json").read_text())
    assert (record["video"]["stream"], record["video"]["width"], record["video"]["height"]) == (1, 48, 32)


def test_a_stream_that_is_not_there_is_one_line(tmp_path, models, capsys):
    clip = tmp_path / "two.mkv"
    two_stream_clip(clip, n=2)
    assert run(clip, "--model", models.planet(), "--stream", "2", "--out", tmp_path / "out") == 3
    assert "has 2 video streams; --stream takes 0 to 1" in capsys.readouterr().err
    assert run(clip, "--model", models.planet(), "--stream", "1", "--decoder", "opencv", "--out", tmp_path / "o") == 2


def write_images(folder, frames, ext=".png"):
    folder.mkdir()
    for i, rgb in enumerate(frames):
        cv2.imwrite(str(folder / f"frame{i}{ext}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def test_a_folder_of_images_is_a_sequence_in_natural_order(tmp_path, models):
    frames = [square(H, W, 10, 8 * i) for i in range(12)]  # moving right: frame10 must come after frame9
    write_images(tmp_path / "shots", frames)
    (tmp_path / "shots" / "notes.txt").write_text("not an image")
    assert run(tmp_path / "shots", "--model", models.biwi(), "--out", tmp_path / "out", "--quiet") == 0
    track = rows(tmp_path / "out" / "shots" / "biwi" / "track.csv")
    assert [float(r["time_s"]) for r in track] == pytest.approx([i / 25 for i in range(12)])
    xs = [float(r["x"]) for r in track]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 60
    out, _ = decoded(tmp_path / "out" / "shots" / "biwi" / "overlay.mp4")
    assert len(out) == 12


def test_a_glob_of_images_and_the_ones_that_cannot_be_used(tmp_path, models):
    frames = [square(H, W, 10, 8 * i) for i in range(6)]
    write_images(tmp_path / "shots", frames, ext=".jpg")
    (tmp_path / "shots" / "frame2.jpg").write_bytes(b"not a jpeg")  # unreadable: skipped, counted
    cv2.imwrite(str(tmp_path / "shots" / "frame4.jpg"), np.zeros((10, 10, 3), np.uint8))  # another size
    assert run(tmp_path / "shots" / "*.jpg", "--model", models.biwi(), "--out", tmp_path / "out", "--json") == 0
    record = json.loads((tmp_path / "out" / "shots" / "biwi" / "run.json").read_text())
    assert record["frames"]["processed"] == 4 and record["frames"]["corrupt_skipped"] == 2
    assert record["frames"]["corrupt_times_s"] == pytest.approx([2 / 25, 4 / 25])


def test_no_images_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--task", "biwi", "--out", str(tmp_path / "out")]) == 3
    assert "no videos and no images (.jpg, .jpeg, .png" in capsys.readouterr().err


@pytest.mark.parametrize("decoder", ["pyav", "opencv"])
def test_non_square_pixels_are_shown_as_a_player_shows_them(tmp_path, models, decoder):
    """A sample aspect ratio of 2 (coded 64x48, shown 128x48): outputs are in displayed pixels."""
    from fractions import Fraction

    clip = tmp_path / "sar.mp4"
    with av.open(str(clip), "w") as out:
        s = out.add_stream("libx264", rate=4)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.sample_aspect_ratio = Fraction(2, 1)
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(square(H, W, 20, 30), format="rgb24")  # centre (34, 24)
            frame.pts = i
            out.mux(s.encode(frame))
        out.mux(s.encode(None))
    assert run(clip, "--model", models.biwi(), "--decoder", decoder, "--out", tmp_path / "out", "--quiet") == 0
    record = json.loads((tmp_path / "out" / "sar" / "biwi" / "run.json").read_text())
    assert (record["video"]["width"], record["video"]["height"]) == (2 * W, H)
    point = rows(tmp_path / "out" / "sar" / "biwi" / "track.csv")[0]
    assert float(point["x"]) == pytest.approx(68, abs=2) and float(point["y"]) == pytest.approx(24, abs=2)
    out_frames, _ = decoded(tmp_path / "out" / "sar" / "biwi" / "overlay.mp4")
    assert out_frames[0][1].shape == (H, 2 * W, 3)


def test_interlaced_frames_are_deinterlaced(tmp_path, models):
    """Two fields a moment apart (a bar moved between them) comb a frame; the overlay must show
    whole pictures, as every frame count and time of the input."""
    def combed(i):
        img = np.zeros((H, W, 3), np.uint8)
        x = 10 + 6 * i
        img[0::2, x : x + 20] = 255  # top field
        img[1::2, x + 8 : x + 28] = 255  # bottom field, later
        return img

    clip = tmp_path / "interlaced.mp4"
    with av.open(str(clip), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.options = {"flags": "+ilme+ildct", "x264-params": "interlaced=1:tff=1", "crf": "10"}
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(combed(i), format="rgb24")
            frame.pts = i
            out.mux(s.encode(frame))
        out.mux(s.encode(None))
    assert run(clip, "--model", models.biwi(), "--out", tmp_path / "out", "--quiet") == 0
    written, _ = decoded(tmp_path / "out" / "interlaced" / "biwi" / "overlay.mp4")
    source, _ = decoded(clip)

    def combing(rgb):  # how much each row differs from the next: fields apart make it large
        grey = rgb.astype(int).mean(axis=2)
        return np.abs(grey[1:] - grey[:-1]).mean()

    assert [round(t, 3) for t, _ in written] == [round(t, 3) for t, _ in source]
    assert max(combing(rgb) for _, rgb in written) < 0.25 * min(combing(rgb) for _, rgb in source)


def test_the_summary_is_typed_and_reads_back_from_its_json(tmp_path, models):
    from edge.api import run as run_api
    from edge.run.options import RunOptions
    from edge.run.summary import RunSummary

    clip = tmp_path / "c.mp4"
    make_clip(clip, [square(H, W, 10, 10)] * 4, fps=4)
    (summary,) = run_api([str(clip)], RunOptions(models=[models.biwi()], out=str(tmp_path / "out")))
    assert isinstance(summary, RunSummary) and summary.status == "done" and summary.frames.processed == 4
    assert summary.models["biwi"].task == "biwi" and summary.seconds.stages.keys() >= {"decode", "sinks"}
    assert RunSummary.from_json(json.loads(json.dumps(summary.to_json()))) == summary
    record = json.loads((tmp_path / "out" / "c" / "biwi" / "run.json").read_text())
    whole = summary.to_json()
    assert record == {**{k: v for k, v in whole.items() if k not in ("outputs", "models")},
                      "model": whole["models"]["biwi"], "files": record["files"]}
    (again,) = run_api([str(clip)], RunOptions(models=[models.biwi()], out=str(tmp_path / "out")))
    assert again.status == "skipped" and again.frames == summary.frames and again.models == summary.models
