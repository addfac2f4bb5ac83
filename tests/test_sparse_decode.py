"""Sparse selection decodes less: with --stride or --sample-fps and no task needing every frame's
pixels (pixels "planes" or "selected"), PyAV decodes only what the selected frames need, a group
of pictures at a time. Each case reads a clip both ways: sparsely, and with pixels "all_planes",
which decodes every frame as a read always did; the frames (index, time, selected), the selected
frames' pixels and an edge-run's outputs must be the same, and the sparse read decode fewer."""

import json
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import pytest

from edge import container, decode
from edge.cli import main
from edge.media import DecodeStats, read_frames
from tests.makers_clips import has_encoder

H, W = 120, 160
# uneven steps, and a pause of 0.4 s
VFR_TIMES = [round(sum(0.031 + 0.02 * (k % 7 == 3) + 0.4 * (k == 40) for k in range(i)), 3) for i in range(80)]


def moving(i: int) -> np.ndarray:
    """Frame i: a block that moves and changes colour, so that every frame's pixels differ."""
    frame = np.full((H, W, 3), (30, 60 + i % 50, 90), np.uint8)
    frame[40:70, (3 * i) % (W - 30):(3 * i) % (W - 30) + 30] = (250, 200 - 2 * (i % 40), 40)
    return frame


def noise(i: int) -> np.ndarray:
    """Frame i: noise, which costs every frame many bytes, where damage then lands."""
    return np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)


def make_gop_clip(path, n: int, *, codec: str = "libx264", gop: int = 25, bframes: int = 3, picture=moving,
                  times_s: list[float] | None = None, pix_fmt: str = "yuv420p", options: dict | None = None):
    """A 25 fps clip of n `picture(i)`, whose keyframes come every `gop` frames, with B-frames where
    the codec has them."""
    time_base = Fraction(1, 1000) if times_s else Fraction(1, 25)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25, options=options or {})
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        stream.codec_context.time_base = time_base
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = bframes
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(picture(i), format="rgb24")
            frame.pts, frame.time_base = round((times_s[i] if times_s else i / 25) / time_base), time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


X264 = {"sc_threshold": "0"}  # keyframes every `gop` frames, as a camera's encoder places them

CLIPS = {
    "bframes.mp4": dict(n=100, options=X264),
    "long_gop.mp4": dict(n=100, gop=60, options=X264),
    "vfr.mkv": dict(n=80, times_s=VFR_TIMES, options=X264),
    "hevc.mp4": dict(n=60, codec="libx265", options={"x265-params": "log-level=none:open-gop=0:scenecut=0"}),
    "vp9.webm": dict(n=60, codec="libvpx-vp9", bframes=0),
    "av1.mp4": dict(n=60, codec="libsvtav1", bframes=0),
    "mjpeg.avi": dict(n=30, codec="mjpeg", bframes=0, pix_fmt="yuvj420p"),
    # what the reader must decode whole
    "open_gop.mp4": dict(n=100, options={"x264-params": "open-gop=1:scenecut=0"}),
    "hevc_open_gop.mp4": dict(n=60, codec="libx265", options={"x265-params": "log-level=none"}),
    "interlaced.mp4": dict(n=60, options={"flags": "+ilme+ildct", **X264}),
    "mpeg4.mp4": dict(n=60, codec="mpeg4"),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The clips' folder; one whose encoder this FFmpeg lacks is not there, and its tests skip."""
    folder = tmp_path_factory.mktemp("sparse")
    for name, options in CLIPS.items():
        if has_encoder(options.get("codec", "libx264")):
            make_gop_clip(folder / name, **options)
    return folder


@dataclass
class Read:
    frames: list[tuple[int, float, bool]]  # (index, time, selected) of every frame
    pixels: dict[int, np.ndarray]  # the selected ones', by index
    stats: DecodeStats


def read_both(path, **options) -> tuple[Read, Read]:
    """A sparse read (pixels "planes"), and a whole one ("all_planes": every frame decoded)."""
    if not path.exists():
        pytest.skip(f"this FFmpeg cannot encode {path.name}")
    reads = []
    for pixels in ("planes", "all_planes"):
        stats = DecodeStats()
        frames = list(read_frames(path, pixels=pixels, stats=stats, **options))
        chosen = {f.index: f.planes if f.planes is not None else f.image for f in frames if f.selected}
        reads.append(Read([(f.index, f.pts_s, f.selected) for f in frames], chosen, stats))
    return reads[0], reads[1]


def assert_same(sparse: Read, whole: Read):
    assert sparse.frames == whole.frames
    assert sparse.pixels.keys() == whole.pixels.keys() and sparse.pixels
    assert all(np.array_equal(sparse.pixels[i], whole.pixels[i]) for i in whole.pixels)


CASES = [
    ("bframes.mp4", dict(stride=25)),  # the keyframes
    ("bframes.mp4", dict(stride=7)),  # across group boundaries
    ("bframes.mp4", dict(sample_fps=1)),  # the keyframes
    ("bframes.mp4", dict(sample_fps=3)),
    ("bframes.mp4", dict(sample_fps=0.4)),  # groups with no frame selected
    ("bframes.mp4", dict(stride=4, start_s=0.3, end_s=2.7)),  # the range starts and ends inside a group
    ("bframes.mp4", dict(sample_fps=2, start_s=1.1, end_s=3.3)),
    ("bframes.mp4", dict(stride=5, resume_after=37)),
    ("long_gop.mp4", dict(sample_fps=1)),  # a group longer than the sampling period
    ("long_gop.mp4", dict(stride=10, start_s=0.5)),
    ("vfr.mkv", dict(sample_fps=5)),
    ("vfr.mkv", dict(stride=6, start_s=0.3)),
    ("hevc.mp4", dict(stride=6)),
    ("vp9.webm", dict(sample_fps=2)),
    ("av1.mp4", dict(stride=8)),
    ("mjpeg.avi", dict(stride=4)),
]


@pytest.mark.parametrize("name, options", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_a_sparse_read_gives_what_a_whole_read_gives_and_decodes_less(clips, name, options):
    sparse, whole = read_both(clips / name, **options)
    assert_same(sparse, whole)
    assert sparse.stats.decoded < whole.stats.decoded


def test_sampling_at_the_keyframes_decodes_only_them(clips):
    sparse, whole = read_both(clips / "bframes.mp4", sample_fps=1)
    assert [i for i, _, selected in sparse.frames if selected] == [0, 25, 50, 75]
    assert (sparse.stats.decoded, whole.stats.decoded) == (4, 100)


@pytest.mark.parametrize("name", ["open_gop.mp4", "hevc_open_gop.mp4", "interlaced.mp4", "mpeg4.mp4"])
def test_what_cannot_be_skipped_exactly_is_decoded(clips, name):
    """Open groups of pictures (pictures shown before their keyframe may refer back to the group
    before) are decoded from the group before them, here the first; interlaced video (its
    deinterlacer needs every frame) and codecs not known to be safe, whole."""
    sparse, whole = read_both(clips / name, stride=6)
    assert_same(sparse, whole)
    assert sparse.stats.decoded == whole.stats.decoded


def test_a_group_past_the_cap_is_decoded_whole(clips, monkeypatch):
    monkeypatch.setattr(container, "MAX_GOP_PACKETS", 10)
    sparse, whole = read_both(clips / "bframes.mp4", sample_fps=1)
    assert_same(sparse, whole)
    assert sparse.stats.decoded == whole.stats.decoded == 100


def test_opencv_decodes_every_frame(clips):
    stats = DecodeStats()
    frames = list(read_frames(clips / "bframes.mp4", decoder="opencv", sample_fps=1, pixels="planes", stats=stats))
    assert len(frames) == stats.decoded == 100


@pytest.mark.parametrize("name", ["damaged.mp4", "damaged.ts", "damaged.mkv"])
def test_damaged_bytes_read_as_a_whole_read_reads_them(tmp_path, name):
    """Damage the demuxer sees (MPEG-TS's counters, Matroska's failing) makes the reader decode
    from the group before it; damage inside pictures never decoded goes uncounted."""
    path = tmp_path / name
    make_gop_clip(path, 75, gop=10, picture=noise, options=X264)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for at in (len(data) // 3, len(data) // 2):
        data[at : at + 1500] = rng.integers(0, 256, 1500, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    sparse, whole = read_both(path, stride=10)
    assert_same(sparse, whole)
    assert sparse.stats.decoded < whole.stats.decoded
    assert sparse.stats.corrupt <= whole.stats.corrupt and sparse.stats.read_error == whole.stats.read_error


def test_a_cut_stream_reads_as_a_whole_read_does(tmp_path):
    """The same frames; only the cut picture's pixels differ, as the decoder conceals what is
    missing from the pictures it holds, which a sparse read has not all decoded. (Whether FFmpeg
    flags that picture corrupt varies from read to read, whole or not, with its threads.)"""
    path = tmp_path / "cut.ts"
    make_gop_clip(path, 75, gop=10, picture=noise, options=X264)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    sparse, whole = read_both(path, stride=5)
    assert sparse.frames == whole.frames and whole.frames[-1] == (50, 2.08, True)  # 2.08: the cut picture
    assert sparse.pixels.keys() == whole.pixels.keys()
    assert all(np.array_equal(sparse.pixels[i], whole.pixels[i]) for i in whole.pixels.keys() - {50})
    assert sparse.stats.decoded < whole.stats.decoded


def test_a_planet_run_writes_what_it_writes_decoding_every_frame(tmp_path, models, monkeypatch):
    """planet at --sample-fps decodes sparsely; the same run where no codec may be skipped in (as
    runs were before) decodes every frame, and must write the same bytes."""
    clip = tmp_path / "clip.mp4"
    make_gop_clip(clip, 100, options=X264)
    planet = str(models.planet())
    options = ["--sample-fps", "1.5", "--start", "0.3", "--quiet"]
    assert main([str(clip), "--model", planet, "--out", str(tmp_path / "sparse"), *options]) == 0
    monkeypatch.setattr(decode, "SPARSE_CODECS", frozenset())
    assert main([str(clip), "--model", planet, "--out", str(tmp_path / "whole"), *options]) == 0
    sparse, whole = tmp_path / "sparse" / "clip" / "planet", tmp_path / "whole" / "clip" / "planet"
    for name in ("scores.csv", "timeline.csv", "timeline.json", "tags.vtt", "timeline.png"):
        assert (sparse / name).read_bytes() == (whole / name).read_bytes(), name
    counts = json.loads((sparse / "run.json").read_text())["frames"]
    assert (counts["in_range"], counts["processed"]) == (92, 6) and counts["decoded"] < 100
    assert json.loads((whole / "run.json").read_text())["frames"] == counts | {"decoded": 100}
