import os
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from edge.errors import InputError, OutputError, UsageError
from edge.media import DecodeStats, probe, read_frames
from edge.writer import VideoWriter
from tests.makers_clips import make_clip, make_tone, ramp, solid, square

DECODERS = ["pyav", "opencv"]
VFR_TIMES = [0.0, 0.04, 0.1, 0.13, 0.3, 0.31, 0.5]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Clips shared by the read-only tests: tiny, so the whole module stays fast."""
    folder = tmp_path_factory.mktemp("clips")
    paths = {
        "cfr": folder / "cfr.mp4",
        "vfr": folder / "vfr.mp4",
        "aac": folder / "aac.mp4",
        "pcm_mkv": folder / "pcm.mkv",
        "pcm_mov": folder / "pcm.mov",
    }
    make_clip(paths["cfr"], ramp(12))
    make_clip(paths["vfr"], ramp(len(VFR_TIMES)), times_s=VFR_TIMES)
    make_clip(paths["aac"], ramp(25), audio=True)
    make_clip(paths["pcm_mkv"], ramp(25), audio=True, audio_codec="pcm_s16le")
    make_clip(paths["pcm_mov"], ramp(25), codec="mpeg4", audio=True, audio_codec="pcm_s16le")
    return paths


def grey(frame) -> float:
    return float(frame.image.mean())


def audio_of(path) -> tuple[str, float, list[int]] | None:
    """(codec, decoded seconds, packet sizes) of the first audio stream, or None."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        sizes = [p.size for p in container.demux(stream) if p.size]
    with av.open(str(path)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    return stream.codec_context.codec.canonical_name, samples / stream.codec_context.sample_rate, sizes


# --- probe ---------------------------------------------------------------------------


def test_probe_reports_size_rate_count_and_audio(clips):
    info = probe(clips["aac"])
    assert (info.width, info.height) == (64, 48)
    assert info.fps == 25.0
    assert info.frame_count == 25
    assert info.duration_s == pytest.approx(1.0, abs=0.05)
    assert (info.codec, info.pix_fmt, info.rotation) == ("h264", "yuv420p", 0)
    assert info.audio_codec == "aac"
    assert info.start_s == 0.0
    assert info.path == str(clips["aac"])


def test_probe_without_audio_and_estimated_count(clips):
    assert probe(clips["cfr"]).audio_codec is None
    mkv = probe(clips["pcm_mkv"])  # Matroska stores no frame count: estimated
    assert (mkv.frame_count, mkv.audio_codec, mkv.time_base) == (25, "pcm_s16le", Fraction(1, 1000))


@pytest.mark.parametrize("decoder", DECODERS)
def test_rotation_is_applied(tmp_path, decoder):
    path = tmp_path / "rot.mp4"
    make_clip(path, [square(48, 64, 0, 0)] * 3, rotation=90)
    info = probe(path)
    assert (info.rotation, info.width, info.height) == (90, 48, 64)
    frame = next(read_frames(path, decoder=decoder))
    # Turned a quarter counterclockwise, the top-left square lands bottom-left.
    assert frame.image.shape == (64, 48, 3) and frame.image.flags.c_contiguous
    assert frame.image[60, 4].min() > 200 and frame.image[4, 4].max() < 50


def _missing(tmp_path):
    return tmp_path / "nope.mp4"


def _folder(tmp_path):
    return tmp_path


def _empty(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    return path


def _random_bytes(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return path


def _audio_only(tmp_path):
    path = tmp_path / "tone.m4a"
    make_tone(path, 0.2)
    return path


BAD_INPUTS = [
    (_missing, "not found"),
    (_folder, "folder"),
    (_empty, "empty"),
    (_random_bytes, "is not a video FFmpeg can read"),
    (_audio_only, "no video stream"),
]


@pytest.mark.parametrize("make, words", BAD_INPUTS)
def test_bad_input_is_an_input_error(tmp_path, make, words):
    path = make(tmp_path)
    with pytest.raises(InputError) as caught:
        probe(path)
    message = str(caught.value)
    assert caught.value.exit_code == 3
    assert words in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("make, words", BAD_INPUTS)
def test_bad_input_fails_reading_the_same_way(tmp_path, make, words, decoder):
    with pytest.raises(InputError, match=words):
        next(read_frames(make(tmp_path), decoder=decoder))


# --- read_frames -----------------------------------------------------------------------


@pytest.mark.parametrize("decoder", DECODERS)
def test_cfr_frames_have_exact_indices_and_times(clips, decoder):
    stats = DecodeStats()
    frames = list(read_frames(clips["cfr"], decoder=decoder, stats=stats))
    assert [f.index for f in frames] == list(range(12))
    assert [f.pts_s for f in frames] == pytest.approx([i / 25 for i in range(12)], abs=1e-6)
    assert all(f.selected for f in frames)
    assert (stats.decoded, stats.corrupt) == (12, 0)
    for frame, level in zip(frames, (16 + 8 * i for i in range(12))):
        assert frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8
        assert frame.image.flags.c_contiguous
        assert grey(frame) == pytest.approx(level, abs=3)


@pytest.mark.parametrize("decoder", DECODERS)
def test_vfr_frames_keep_their_times(clips, decoder):
    frames = list(read_frames(clips["vfr"], decoder=decoder))
    assert [f.pts_s for f in frames] == pytest.approx(VFR_TIMES, abs=1e-3)


@pytest.mark.parametrize("name", ["cfr", "pcm_mov"])
def test_decoders_agree(clips, name):
    pyav = list(read_frames(clips[name], decoder="pyav"))
    opencv = list(read_frames(clips[name], decoder="opencv"))
    assert len(pyav) == len(opencv)
    for a, b in zip(pyav, opencv):
        assert a.pts_s == pytest.approx(b.pts_s, abs=1e-3)
        assert np.abs(a.image.astype(int) - b.image).mean() < 3


@pytest.mark.parametrize("decoder", DECODERS)
def test_stride_selects_every_nth_from_the_range_start(clips, decoder):
    frames = list(read_frames(clips["cfr"], decoder=decoder, stride=3, start_s=0.08, end_s=0.4))
    assert [f.index for f in frames] == list(range(2, 10))  # end is exclusive
    assert [f.index for f in frames if f.selected] == [2, 5, 8]


def test_sample_fps_follows_stream_time(clips):
    frames = list(read_frames(clips["aac"], sample_fps=10))
    assert len(frames) == 25
    # Due at 0, 0.1, 0.2, ...; at 25 fps the first frame at or after each is picked.
    assert [f.index for f in frames if f.selected] == [0, 3, 5, 8, 10, 13, 15, 18, 20, 23]


def test_sample_fps_skips_ahead_after_a_gap(clips):
    # Nothing comes between 0.13 s and 0.3 s, so due time 0.2 is missed: 0.3 is picked
    # and the next is due at 0.4, not 0.3 again, so 0.31 is no catch-up pick.
    frames = list(read_frames(clips["vfr"], sample_fps=10))
    assert [f.pts_s for f in frames if f.selected] == pytest.approx([0.0, 0.1, 0.3, 0.5])


@pytest.mark.parametrize("decoder", DECODERS)
def test_selected_pixels_only(clips, decoder):
    frames = list(read_frames(clips["cfr"], decoder=decoder, stride=4, pixels="selected"))
    assert [f.image is not None for f in frames] == [f.selected for f in frames]
    assert [f.index for f in frames if f.selected] == [0, 4, 8]


def test_planes_come_for_selected_plain_yuv420p_frames(clips, tmp_path):
    frames = list(read_frames(clips["cfr"], stride=4, pixels="planes"))
    assert [f.planes is not None for f in frames] == [f.selected for f in frames]
    assert all(f.image is None for f in frames)
    rgb = next(read_frames(clips["cfr"]))
    assert frames[0].planes.shape == (rgb.image.shape[0] * 3 // 2, rgb.image.shape[1])
    # where the planes would need swscale or a turn, the frame comes as RGB as before
    for name, options in (("444.mp4", dict(pix_fmt="yuv444p")), ("rot.mp4", dict(rotation=90))):
        make_clip(tmp_path / name, [square(48, 64, 0, 0)] * 2, **options)
        frame = next(read_frames(tmp_path / name, pixels="planes"))
        assert frame.planes is None and frame.image is not None
    # OpenCV gives no planes: its frames come as RGB
    frame = next(read_frames(clips["cfr"], decoder="opencv", pixels="planes"))
    assert frame.planes is None and frame.image is not None


@pytest.mark.parametrize(
    "options, words",
    [
        ({"decoder": "ffmpeg"}, "pyav, opencv"),
        ({"pixels": "some"}, "all, selected, planes"),
        ({"stride": 0}, "stride"),
        ({"sample_fps": 0}, "sample_fps"),
        ({"stride": 2, "sample_fps": 5}, "not both"),
        ({"start_s": 1.0, "end_s": 1.0}, "end must be after start"),
    ],
)
def test_bad_options_raise_at_call_time(options, words):
    with pytest.raises(ValueError, match=words):
        read_frames("never-opened.mp4", **options)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("codec, pix_fmt, tolerance", [("ffv1", "yuv444p", 2), ("ffv1", "yuv420p", 110)])
def test_odd_sizes(tmp_path, decoder, codec, pix_fmt, tolerance):
    image = square(17, 33, 3, 20, size=5, rgb=(255, 0, 0))
    path = tmp_path / "odd.mkv"
    make_clip(path, [image] * 3, codec=codec, pix_fmt=pix_fmt)
    assert (probe(path).width, probe(path).height) == (33, 17)
    frames = list(read_frames(path, decoder=decoder))
    assert len(frames) == 3
    assert frames[0].image.shape == (17, 33, 3) and frames[0].image.flags.c_contiguous
    # 4:2:0 smears the square's colour edges; its centre and the background stay put.
    assert np.abs(frames[0].image.astype(int) - image).max() <= tolerance
    assert frames[0].image[5, 22, 0] > 200 and frames[0].image[12, 5].max() < 10


def test_corrupt_bytes_are_counted_not_raised(tmp_path, capfd):
    path = tmp_path / "noise.mp4"
    rng = np.random.default_rng(0)
    make_clip(path, [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(40)])
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(data)

    stats = DecodeStats()
    frames = list(read_frames(path, stats=stats))
    assert len(frames) >= 30
    assert stats.corrupt >= 1 and len(stats.corrupt_times_s) == stats.corrupt
    assert 0 < stats.corrupt_times_s[0] < 1.6
    assert capfd.readouterr().err == ""  # FFmpeg's complaints are counted, not printed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_closing_the_generator_closes_the_file(clips):
    def open_on_clip():
        fds = os.listdir("/proc/self/fd")
        clip = os.path.realpath(clips["cfr"])
        return sum(os.path.realpath(f"/proc/self/fd/{fd}") == clip for fd in fds)

    frames = read_frames(clips["cfr"])
    next(frames)
    assert open_on_clip() == 1
    frames.close()
    assert open_on_clip() == 0


# --- VideoWriter -----------------------------------------------------------------------


def write_clip(path, frames, times, **options):
    with VideoWriter(path, width=64, height=48, time_base=Fraction(1, 1000), **options) as writer:
        for rgb, t in zip(frames, times):
            writer.write(rgb, t)


def test_writer_round_trip_keeps_vfr_times_and_colours(tmp_path):
    path = tmp_path / "out.mp4"
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (128, 128, 128)] * 2
    times = [0.0, 0.033, 0.1, 0.12, 0.3, 0.301, 0.5, 0.64]
    write_clip(path, [solid(48, 64, c) for c in colours], times)

    frames = list(read_frames(path))
    assert len(frames) == len(times)
    assert [f.pts_s for f in frames] == pytest.approx(times, abs=0.001)  # one tick
    for frame, colour in zip(frames, colours):
        assert np.abs(frame.image.reshape(-1, 3).mean(0) - colour).max() < 6
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]
    assert probe(path).frame_count == len(times)


def test_writer_bumps_repeated_times_and_subtracts_start(tmp_path):
    path = tmp_path / "out.mp4"
    write_clip(path, ramp(4), [1.0, 1.0, 0.9, 1.2], start_s=1.0)
    assert [f.pts_s for f in read_frames(path)] == pytest.approx([0.0, 0.001, 0.002, 0.2])


def test_writer_pads_odd_sizes(tmp_path):
    path = tmp_path / "odd.mp4"
    image = square(17, 33, 9, 25, size=8, rgb=(0, 255, 0))  # touches the bottom-right corner
    with VideoWriter(path, width=33, height=17, time_base=Fraction(1, 25)) as writer:
        writer.write(image, 0.0)
    frame = next(read_frames(path))
    # 4:2:0 H.264 has even sizes only: one replicated row and column are added.
    assert frame.image.shape == (18, 34, 3)
    assert frame.image[17, 33, 1] > 200 and frame.image[17, 0].max() < 30


def test_writer_copies_aac(clips, tmp_path):
    path = tmp_path / "out.mp4"
    write_clip(path, ramp(25), [i / 25 for i in range(25)], audio_from=clips["aac"])
    codec, seconds, sizes = audio_of(path)
    assert codec == "aac"
    assert sizes == audio_of(clips["aac"])[2]  # the very same packets: copied, not re-encoded
    assert seconds == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("name", ["pcm_mkv", "pcm_mov"])
def test_writer_reencodes_pcm_to_aac(clips, tmp_path, name):
    path = tmp_path / "out.mp4"
    write_clip(path, ramp(25), [i / 25 for i in range(25)], audio_from=clips[name])
    codec, seconds, _ = audio_of(path)
    assert codec == "aac"
    assert seconds == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("name", ["aac", "pcm_mkv"])
def test_writer_cuts_audio_to_the_range(clips, tmp_path, name):
    path = tmp_path / "out.mp4"
    times = [i / 25 for i in range(10, 20)]
    write_clip(path, ramp(10), times, audio_from=clips[name], start_s=0.4, end_s=0.8)
    assert audio_of(path)[1] == pytest.approx(0.4, abs=0.05)
    assert next(read_frames(path)).pts_s == 0.0


def test_writer_with_a_silent_source_writes_no_audio(clips, tmp_path):
    path = tmp_path / "out.mp4"
    write_clip(path, ramp(3), [0.0, 0.04, 0.08], audio_from=clips["cfr"])
    assert audio_of(path) is None


def test_writer_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError, match="stage blew up"):
        with VideoWriter(tmp_path / "out.mp4", width=64, height=48, time_base=Fraction(1, 25)) as writer:
            writer.write(solid(48, 64, (1, 2, 3)), 0.0)
            assert os.listdir(tmp_path) == [".out.mp4.packets"]
            raise RuntimeError("stage blew up")
    assert os.listdir(tmp_path) == []


def test_writer_keeps_an_existing_file_on_error(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous run")
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(path, width=64, height=48, time_base=Fraction(1, 25)) as writer:
            writer.write(solid(48, 64, (1, 2, 3)), 0.0)
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["out.mp4"] and path.read_bytes() == b"previous run"


def test_a_disk_that_fills_while_encoding_stops_the_writer_with_an_output_error(tmp_path, monkeypatch):
    """x264 runs in the writer's own thread: its failure reaches the caller, as an OutputError,
    at the next frame or at the end, and leaves neither the video nor its packet log."""
    import errno

    import edge.writer

    opened = edge.writer.open_resumable

    def filling(path, **kw):
        log = opened(path, **kw)
        room = [4000]  # bytes before the disk is full

        def write(data, plain=log.write):
            room[0] -= len(data)
            if room[0] < 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            return plain(data)

        log.write = write
        return log

    monkeypatch.setattr(edge.writer, "open_resumable", filling)
    rng = np.random.default_rng(0)
    written = 0
    with pytest.raises(OutputError, match="No space left on device") as caught:
        with VideoWriter(tmp_path / "out.mp4", width=64, height=48, time_base=Fraction(1, 25)) as writer:
            for i in range(200):  # noise: every frame costs x264 hundreds of bytes
                writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), i / 25)
                written += 1
    assert written < 200  # a frame later, not only when the writer closes
    assert caught.value.exit_code == 5
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("where", ["missing folder", "file as folder"])
def test_unwritable_output_is_an_output_error(tmp_path, where):
    (tmp_path / "file").write_text("")
    parent = tmp_path / ("missing" if where == "missing folder" else "file")
    with pytest.raises(OutputError) as caught:
        VideoWriter(parent / "out.mp4", width=64, height=48, time_base=Fraction(1, 25))
    assert caught.value.exit_code == 5 and str(parent) in str(caught.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_is_an_output_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="writable"):
            VideoWriter(tmp_path / "out.mp4", width=64, height=48, time_base=Fraction(1, 25))
    finally:
        tmp_path.chmod(0o700)


def test_bad_audio_source_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        VideoWriter(
            tmp_path / "out.mp4", width=64, height=48, time_base=Fraction(1, 25), audio_from=tmp_path / "x.mp4"
        )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "options, words",
    [
        ({"crf": 60}, "crf"),
        ({"preset": "fastest"}, "veryfast"),
        ({"width": 0}, "width"),
        ({"start_s": -1.0}, "start_s"),
        ({"end_s": 0.0}, "end_s"),
    ],
)
def test_bad_writer_options(tmp_path, options, words):
    kwargs = {"width": 64, "height": 48, "time_base": Fraction(1, 25)} | options
    with pytest.raises(ValueError, match=words):
        VideoWriter(tmp_path / "out.mp4", **kwargs)
    assert os.listdir(tmp_path) == []


def test_write_rejects_a_wrong_image(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        with VideoWriter(tmp_path / "out.mp4", width=64, height=48, time_base=Fraction(1, 25)) as writer:
            writer.write(np.zeros((48, 64, 3), np.float32), 0.0)
    assert os.listdir(tmp_path) == []


def test_shuffled_frame_times_come_out_in_order_and_strictly_increasing():
    """AVI with packed B-frames (DivX) hands the decoder's display-ordered frames times in the
    order 1, 2, 3, 5, 4, …; each frame must get its own, and duplicates must still increase."""
    from edge.decode import in_time_order

    shuffled = [0.04, 0.08, 0.12, 0.2, 0.16, 0.24, 0.32, 0.28, 0.36, 0.36]
    frames = [object() for _ in shuffled]
    out = list(in_time_order(zip(frames, shuffled)))
    assert [f for f, _ in out] == frames  # display order is kept
    times = [t for _, t in out]
    assert times[:9] == [0.04, 0.08, 0.12, 0.16, 0.2, 0.24, 0.28, 0.32, 0.36]
    assert times[9] == pytest.approx(0.36 + 1e-6)


def test_a_damaged_colour_tag_falls_back_to_bt601():
    """swscale refuses a colorspace value it does not know (a damaged header); the frame is still
    converted, as BT.601, which is what FFmpeg assumes for untagged video."""
    from edge.decode import rgb

    picture = square(48, 64, 10, 10, rgb=(200, 100, 50))
    frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
    frame.colorspace = 65  # no such matrix
    with pytest.raises(av.FFmpegError):
        frame.to_ndarray(format="rgb24", src_color_range=None)
    out = rgb(frame)
    assert out.shape == picture.shape and np.abs(out.astype(int) - picture).mean() < 4


# --- the encoder ---------------------------------------------------------------------------------


def test_auto_encoder_is_nvenc_only_on_a_gpu_run_where_it_opens(monkeypatch):
    from edge import writer

    monkeypatch.setattr(writer, "nvenc_opens", lambda width, height: width >= 146)  # NVENC's smallest H.264 frame
    assert writer.pick_encoder("auto", on_gpu=True, size=(1280, 720)) == "h264_nvenc"
    assert writer.pick_encoder("auto", on_gpu=True, size=(128, 96)) == "libx264"
    assert writer.pick_encoder("auto", on_gpu=False, size=(1280, 720)) == "libx264"
    assert writer.pick_encoder("libx264", on_gpu=True, size=(1280, 720)) == "libx264"
    with pytest.raises(UsageError, match="NVENC does not open here for 128x96 frames"):
        writer.pick_encoder("h264_nvenc", on_gpu=True, size=(128, 96))
    with pytest.raises(UsageError, match="auto, libx264, h264_nvenc"):
        writer.pick_encoder("x265", on_gpu=False, size=(1280, 720))


def test_nvenc_writes_a_playable_file_with_every_frame(tmp_path):
    from edge import writer

    if not writer.nvenc_opens(256, 256):
        if os.environ.get("EDGE_REQUIRE_GPU") == "1":
            pytest.fail("EDGE_REQUIRE_GPU=1 but NVENC does not open here")
        pytest.skip("NVENC does not open here (no NVIDIA GPU, or this FFmpeg lacks it)")
    path = tmp_path / "out.mp4"
    with VideoWriter(path, width=256, height=256, time_base=Fraction(1, 25), encoder="h264_nvenc") as out:
        for i, rgb in enumerate(ramp(20, 256, 256)):
            out.write(rgb, i / 25)
            if i == 9:
                out.checkpoint()
    frames = list(read_frames(path))
    assert len(frames) == 20 and probe(path).codec == "h264"
