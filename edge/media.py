"""Video in and out: probe a file, decode its frames with their real timestamps, and encode
RGB frames to an H.264 mp4 that carries the input's audio.

FFmpeg's own log lines stay off: PyAV 18 installs a silent log callback by default, and
`av.logging.set_level(ERROR)` would route every "error while decoding MB" into Python's
logging, which prints them. Corrupt packets are counted in `DecodeStats` instead.
"""

import collections
import contextlib
import glob
import heapq
import itertools
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av
import cv2
import numpy as np

from edge.errors import InputError, OutputError, UsageError
from edge.frames import Frame

DECODERS = ("pyav", "opencv")
PIXELS = ("all", "selected", "planes")
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast",
    "medium", "slow", "slower", "veryslow", "placebo",
)
# Audio codecs the mp4 muxer takes as they are; anything else is re-encoded to AAC.
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})
TEXT_FORMATS = ("tty",)
TEXT_CODECS = ("ansi", "bintext", "xbin", "idf")
MAX_CORRUPT_TIMES = 1000
REORDER_FRAMES = 4  # how far a file's frame times may be shuffled and still come out right
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
IMAGE_SEQUENCE_FPS = 25  # the rate a folder or glob of images is played at, as frames 0.04 s apart
# A frame time this far past the previous one is damage, not a pause in recording (a flipped
# bit in an MPEG-TS timestamp jumps hours ahead; mp4 cannot even store such a gap at 90 kHz).
# Backwards, more than the reorder window (or 0.1 s) is one too: shuffled times move a frame or two.
MAX_TIME_JUMP_S = 3600.0
# A sample aspect ratio outside this is a damaged header, not a real camera's pixels.
SANE_SAR = (0.25, 4.0)

# Matrices cv2's I420 conversion implements (BT.601); "unspecified" is what FFmpeg assumes
# for untagged video too, so only BT.709/BT.2020 or full-range frames need swscale.
_BT601 = frozenset({2, 5, 6})  # AVCOL_SPC_UNSPECIFIED, BT470BG, SMPTE170M
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG
_SMPTE170M = 6
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns about a file's first video stream.

    `width`/`height` are as displayed, after `rotation` (counterclockwise degrees that turn
    the coded picture upright, from the display matrix) is applied. `fps` is the average
    rate, 0.0 when unknown; `frame_count` is the container's count or an estimate.
    """

    path: str
    stream: int  # which of the file's video streams (0: the first)
    video_streams: int  # how many it has
    width: int
    height: int
    fps: float
    time_base: Fraction
    start_s: float
    duration_s: float | None
    frame_count: int | None
    codec: str
    pix_fmt: str
    rotation: int
    audio_codec: str | None
    # where the container says the video itself ends; None where it only gives the whole file's
    # length (mkv) and another stream may outlast the video
    declared_end_s: float | None = None


@dataclass
class DecodeStats:
    """Counts filled in while `read_frames` runs.

    `decoded` counts every frame out of the decoder, in range or not. `corrupt` counts
    packets the decoder rejected (skipped) plus frames it flagged as damaged (still yielded,
    with the errors concealed); `corrupt_times_s` keeps the first MAX_CORRUPT_TIMES times.
    """

    decoded: int = 0
    corrupt: int = 0
    corrupt_times_s: list[float] = field(default_factory=list)
    read_error: str | None = None  # why reading stopped before the end of the file, if it did

    def add_corrupt(self, time_s: float) -> None:
        self.corrupt += 1
        if len(self.corrupt_times_s) < MAX_CORRUPT_TIMES:
            self.corrupt_times_s.append(time_s)


def probe(path: str | os.PathLike, *, stream: int = 0) -> VideoInfo:
    """Describe video stream `stream` of `path`; InputError if it cannot be read as video. A
    folder or a glob of images is a video of those images in name order (see image_sequence)."""
    path, index = os.fspath(path), stream
    images = image_sequence(path)
    if images is not None:
        return _probe_images(path, images)
    with _open_input(path) as container:
        stream = _video_stream(container, path, index)
        # The display matrix only reaches us on decoded frames: PyAV 18 exposes no stream
        # side data, so decode the first frame.
        first = _first_frame(container, stream)
        if first is None:
            raise InputError(f"no frame of {path} can be decoded; the file is truncated or corrupt")
        rotation = _quarter_turns(first.rotation) * 90
        ctx = stream.codec_context
        width, height = _displayed(ctx.width, ctx.height, stream.sample_aspect_ratio, rotation // 90)
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        start_s = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        declared_end_s = None
        if stream.duration is not None:
            duration_s = float(stream.duration * stream.time_base)
            declared_end_s = start_s + duration_s
        elif container.duration is not None:
            duration_s = container.duration / av.time_base
            if len(container.streams) == 1:
                declared_end_s = start_s + duration_s
        else:
            duration_s = None
        if stream.frames:
            frame_count = stream.frames
        elif duration_s and fps:
            frame_count = round(duration_s * fps)
        else:
            frame_count = None
        audio = _audio_stream(container)
        return VideoInfo(
            path=path,
            stream=index,
            video_streams=len(container.streams.video),
            width=width,
            height=height,
            fps=fps,
            time_base=Fraction(stream.time_base),
            start_s=start_s,
            duration_s=duration_s,
            frame_count=frame_count,
            codec=ctx.codec.canonical_name,
            pix_fmt=ctx.pix_fmt or "unknown",
            rotation=rotation,
            audio_codec=audio.codec_context.codec.canonical_name if audio else None,
            declared_end_s=declared_end_s,
        )


def read_frames(
    path: str | os.PathLike,
    *,
    decoder: str = "pyav",
    start_s: float | None = None,
    end_s: float | None = None,
    stride: int = 1,
    sample_fps: float | None = None,
    pixels: str = "all",
    stats: DecodeStats | None = None,
    stream: int = 0,
) -> Iterator[Frame]:
    """Yield the frames of `path` with pts in [start_s, end_s), upright RGB.

    Every frame in range is yielded; `stride` (every Nth) or `sample_fps` (at most F per
    second of stream time) marks which are `selected`. With pixels="selected" the others
    come with image=None, which skips their colour conversion, the costly part; with
    pixels="planes" the selected ones also skip it where they can, coming as I420 planes
    (Frame.planes; PyAV decoder, plain BT.601 yuv420p, no rotation). Options are checked
    here; the file is opened on the first `next()`.
    """
    select = check_read_options(decoder=decoder, start_s=start_s, end_s=end_s, stride=stride, sample_fps=sample_fps,
                                stream=stream)
    _check_choice("pixels", pixels, PIXELS)
    stats = stats if stats is not None else DecodeStats()
    images = image_sequence(os.fspath(path))
    if images is not None:
        return _image_frames(os.fspath(path), images, start_s, end_s, select, pixels, stats)
    if decoder == "opencv":
        return _opencv_frames(os.fspath(path), start_s, end_s, select, pixels, stats)
    return _pyav_frames(os.fspath(path), start_s, end_s, select, pixels, stats, stream)


def check_read_options(*, decoder: str, start_s: float | None, end_s: float | None, stride: int,
                       sample_fps: float | None, stream: int = 0) -> "_Selector":
    """UsageError for options `read_frames` cannot honour; callers check before any work starts."""
    _check_choice("decoder", decoder, DECODERS)
    if not isinstance(stream, int) or stream < 0:
        raise UsageError(f"stream must be a video stream number, 0 or more; got {stream!r}")
    if stream and decoder == "opencv":
        raise UsageError("OpenCV reads only a file's first video stream; use the pyav decoder to choose another")
    if start_s is not None and not start_s >= 0:
        raise UsageError(f"start must be >= 0 seconds, got {start_s}")
    if end_s is not None and not end_s > (start_s or 0.0):
        raise UsageError(f"end must be after start, got start={start_s} end={end_s}")
    return _Selector(stride, sample_fps)


def image_sequence(path: str) -> list[str] | None:
    """The images a folder or a glob pattern names, in natural name order (frame2 before
    frame10); None when `path` is neither, so it is read as a video file."""
    if not _names_images(path):
        return None
    if os.path.isdir(path):
        try:
            names = [os.path.join(path, n) for n in os.listdir(path)]
        except OSError as err:
            raise InputError(f"cannot list the images in {path}: {err.strerror}") from None
    else:
        names = glob.glob(path)
    images = [n for n in names if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(n)]
    # splitting on a captured group alternates text and digits: odd parts are the numbers
    return sorted(images, key=lambda n: [int(part) if i % 2 else part
                                         for i, part in enumerate(re.split(r"([0-9]+)", n))])


def _names_images(path: str) -> bool:
    """Whether `path` is a folder or a glob pattern (a file that exists is a file, magic or not)."""
    return os.path.isdir(path) or (glob.has_magic(path) and not os.path.exists(path))


def sequence_name(path: str) -> str:
    """A name for the outputs of `path`: a video's stem, a folder's name, a glob's folder."""
    if not _names_images(path):
        return os.path.splitext(os.path.basename(path))[0]
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    name = os.path.basename(os.path.abspath(folder or "."))
    return "".join(c for c in name if c not in "*?[]") or "images"


def _probe_images(path: str, images: list[str]) -> VideoInfo:
    if not images:
        raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}; pass a video file, a folder of "
                         f"images or a glob such as 'frames/*.jpg'")
    first = next((image for image in map(cv2.imread, images) if image is not None), None)
    if first is None:
        raise InputError(f"none of the {len(images)} images in {path} can be read; check they are image files")
    height, width = first.shape[:2]
    return VideoInfo(path=path, stream=0, video_streams=1, width=width, height=height, fps=float(IMAGE_SEQUENCE_FPS),
                     time_base=Fraction(1, IMAGE_SEQUENCE_FPS), start_s=0.0,
                     duration_s=len(images) / IMAGE_SEQUENCE_FPS, frame_count=len(images), codec="images",
                     pix_fmt="bgr24", rotation=0, audio_codec=None)


def _image_frames(path, images, start_s, end_s, select, pixels, stats) -> Iterator[Frame]:
    """Each image a frame, 1 / IMAGE_SEQUENCE_FPS apart; one that cannot be read, or whose size
    differs from the first readable one (an overlay video has one size), is skipped and counted."""
    first = _probe_images(path, images)  # the size probe reported: the first readable image's
    size = (first.height, first.width, 3)
    for index, name in enumerate(images):
        pts_s = index / IMAGE_SEQUENCE_FPS
        if start_s is not None and pts_s < start_s:
            continue
        if end_s is not None and pts_s >= end_s:
            return
        bgr = cv2.imread(name)  # EXIF orientation applied, as a phone photo is shown
        stats.decoded += 1
        if bgr is None or bgr.shape != size:
            stats.add_corrupt(pts_s)
            continue
        selected = select(pts_s)
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if selected or pixels == "all" else None
        yield Frame(index, pts_s, image, selected)


class VideoWriter:
    """Encodes RGB frames to H.264 in an mp4 at `path`, with the audio of `audio_from`.

    Use it as a context manager: frames go to a hidden temporary file in the same folder,
    which replaces `path` only when the `with` block ends without an exception; otherwise
    it is deleted, so a half-written file never carries the final name.

    Frame times are kept exactly: `write(rgb, pts_s)` stores pts_s - start_s in `time_base`
    (pass the input stream's). Audio packets of [start_s, end_s) are copied, shifted by
    -start_s, when mp4 accepts their codec, and re-encoded to AAC otherwise; `end_s` only
    bounds the audio, the video is what gets written.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        width: int,
        height: int,
        time_base: Fraction,
        audio_from: str | os.PathLike | None = None,
        start_s: float = 0.0,
        end_s: float | None = None,
        crf: int = 20,
        preset: str = "ultrafast",
    ):
        for name, value in (("width", width), ("height", height)):
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if not Fraction(time_base) > 0:
            raise UsageError(f"time_base must be positive, got {time_base}")
        if not start_s >= 0:
            raise UsageError(f"start_s must be >= 0 seconds, got {start_s}")
        if end_s is not None and not end_s > start_s:
            raise UsageError(f"end_s must be after start_s, got start_s={start_s} end_s={end_s}")
        if not isinstance(crf, int) or not 0 <= crf <= 51:
            raise UsageError(f"crf must be an integer from 0 to 51, got {crf!r}")
        _check_choice("preset", preset, X264_PRESETS)

        self.path = os.fspath(path)
        self._shape = (height, width, 3)
        self._time_base = Fraction(time_base)
        self._start_s = start_s
        self._last_pts = -1
        self._step = 0  # the latest pts interval, in ticks; see _mux_video
        self._audio = None
        folder, name = os.path.split(os.path.abspath(self.path))
        try:
            fd, self._partial = tempfile.mkstemp(prefix=f".{name}.partial-", suffix=".mp4", dir=folder)
        except OSError as err:
            raise OutputError(
                f"cannot create a file in {folder}: {err.strerror}; choose a writable output folder"
            ) from err
        os.close(fd)
        try:
            self._out = av.open(self._partial, "w", format="mp4")
            self._video = self._out.add_stream("libx264")
            # x264's 4:2:0 needs even sizes and H.264 can only crop in 2-pixel steps, so an
            # odd side is padded by one replicated row/column: the output is 1 px larger
            # there, but plays everywhere (4:4:4 would keep the size but not the players).
            self._pad = ((0, height % 2), (0, width % 2), (0, 0))
            self._video.width = width + width % 2
            self._video.height = height + height % 2
            self._video.pix_fmt = "yuv420p"
            self._video.time_base = self._time_base
            ctx = self._video.codec_context
            ctx.time_base = self._time_base
            # Frames are converted with BT.601 limited range (cv2's I420); say so, or
            # players guess BT.709 for HD sizes and shift the colours.
            ctx.colorspace = _SMPTE170M
            ctx.color_range = _LIMITED_RANGE
            ctx.options = {"crf": str(crf), "preset": preset}
            if audio_from is not None:
                self._audio = _AudioTrack.open(self._out, os.fspath(audio_from), start_s, end_s, self._mux)
        except BaseException:
            self._discard()
            raise

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._mux_video(self._video.encode(None))
            if self._audio is not None:
                self._audio.finish()
            try:
                self._out.close()
                os.chmod(self._partial, 0o644)  # mkstemp made it private to its owner
                os.replace(self._partial, self.path)
            except OSError as err:
                raise OutputError(f"cannot write {self.path}: {err}; check the output folder") from err
        except BaseException:
            self._discard()
            raise

    def write(self, rgb: np.ndarray, pts_s: float) -> None:
        """Encode one HxWx3 uint8 RGB frame shown at `pts_s` seconds of the input."""
        if rgb.shape != self._shape or rgb.dtype != np.uint8:
            raise ValueError(f"expected a {self._shape} uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        # mp4 needs strictly increasing times; the first frame starts at 0 at the earliest.
        pts = max(round((pts_s - self._start_s) / self._time_base), self._last_pts + 1)
        if self._last_pts >= 0:
            self._step = pts - self._last_pts
        self._last_pts = pts
        if self._pad[0][1] or self._pad[1][1]:
            rgb = np.pad(rgb, self._pad, mode="edge")
        yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = pts
        frame.time_base = self._time_base
        self._mux_video(self._video.encode(frame))
        if self._audio is not None:
            self._audio.mux_until(float(pts * self._time_base))

    def _mux_video(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            # x264 leaves durations at 0 and mp4 then gives the last frame 1/24 s (PyAV's
            # default rate); the latest interval is the best guess, exact for constant rates.
            if not packet.duration:
                packet.duration = self._step
            self._mux(packet)

    def _mux(self, packet: av.Packet) -> None:
        try:
            self._out.mux(packet)
        except OSError as err:
            raise OutputError(f"cannot write {self.path}: {err.strerror}; check free disk space") from err

    def _discard(self) -> None:
        for closable in (self._audio, getattr(self, "_out", None)):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._partial)


class _AudioTrack:
    """Moves the audio of [start_s, end_s) from an input file into the output, in step with
    the video so the muxer never has to hold more than a moment of either."""

    @classmethod
    def open(cls, out, path: str, start_s: float, end_s: float | None, mux: Callable):
        """The track for the first audio stream of `path`, or None when it has none."""
        source = _open_input(path)
        try:
            if _audio_stream(source) is not None:
                return cls(out, source, start_s, end_s, mux)
        except BaseException:
            source.close()
            raise
        source.close()
        return None

    def __init__(self, out, source, start_s: float, end_s: float | None, mux: Callable):
        self._in = source
        self._mux = mux
        self._start_s = start_s
        self._end_s = end_s
        self._src = _audio_stream(source)
        self._copy = self._src.codec_context.codec.canonical_name in MP4_AUDIO_COPY
        if self._copy:
            self._dst = out.add_stream_from_template(self._src)
            self._shift = round(start_s / self._src.time_base)
        else:
            src = self._src.codec_context
            rates = av.Codec("aac", "w").audio_rates
            rate = src.sample_rate if src.sample_rate in rates else 48000
            layout = "mono" if src.layout.nb_channels == 1 else "stereo"
            self._dst = out.add_stream("aac", rate=rate, layout=layout)
            self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate, frame_size=1024)
            self._samples = None  # output pts in samples, set by the first frame
        self._packets = _packets(self._in, self._src, DecodeStats())  # damage ends the audio, not the run
        self._last_dts = None
        self._next = self._read()

    def mux_until(self, t_s: float | None) -> None:
        """Mux the packets that start at or before output time `t_s` (None: all)."""
        while self._next is not None and (t_s is None or self._time(self._next) - self._start_s <= t_s):
            self._move(self._next)
            self._next = self._read()

    def finish(self) -> None:
        self.mux_until(None)
        if not self._copy:
            self._encode(self._decode(None))
            self._encode([None])  # drain the resampler
            for packet in self._dst.encode(None):
                self._mux(packet)
        self.close()

    def close(self) -> None:
        self._in.close()

    def _read(self) -> av.Packet | None:
        for packet in self._packets:
            if packet is None or packet.pts is None or not packet.size:
                continue
            t = self._time(packet)
            if self._end_s is not None and t >= self._end_s:
                break
            # `<`, not `<=`: AAC's priming packet ends exactly at 0 and the decoder needs it
            # (mp4 hides it again with an edit list).
            if t + float((packet.duration or 0) * self._src.time_base) < self._start_s:
                continue
            return packet
        return None

    def _move(self, packet: av.Packet) -> None:
        if self._copy:
            packet.stream = self._dst
            packet.pts -= self._shift
            if packet.dts is not None:
                packet.dts -= self._shift
            # A damaged file's audio times can go backwards; the muxer refuses those (and then
            # the whole file), so such a packet is dropped: a moment of sound, not the run.
            dts = packet.dts if packet.dts is not None else packet.pts
            if self._last_dts is not None and dts <= self._last_dts:
                return
            self._last_dts = dts
            # A damaged packet the muxer refuses (an ADTS header gone bad) is a moment of sound;
            # a disk that fails arrives as an OutputError, which is no FFmpegError, and stops the run.
            with contextlib.suppress(av.FFmpegError):
                self._mux(packet)
        else:
            self._encode(self._decode(packet))

    def _decode(self, packet: av.Packet | None) -> list[av.AudioFrame]:
        try:
            return self._src.decode(packet)
        except av.FFmpegError:
            return []  # a damaged audio packet costs a moment of sound, not the whole run

    def _encode(self, frames: list[av.AudioFrame | None]) -> None:
        for frame in frames:
            if frame is not None and self._samples is None:
                # Starts at 0 at the earliest: a packet that straddles start_s is kept whole.
                t = frame.time if frame.time is not None else self._start_s
                self._samples = max(0, round((t - self._start_s) * self._dst.rate))
            for chunk in self._resampler.resample(frame):
                # Count samples rather than trust input times: the encoder needs them gapless.
                chunk.pts = self._samples
                chunk.time_base = Fraction(1, self._dst.rate)
                self._samples += chunk.samples
                for out_packet in self._dst.encode(chunk):
                    self._mux(out_packet)

    def _time(self, packet: av.Packet) -> float:
        return float(packet.pts * self._src.time_base)


class _Selector:
    """Decides which in-range frames are selected, called once per frame in order."""

    def __init__(self, stride: int, sample_fps: float | None):
        if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
            raise UsageError(f"stride must be an integer >= 1, got {stride!r}")
        if sample_fps is not None and not 0 < sample_fps < math.inf:
            raise UsageError(f"sample_fps must be a positive number, got {sample_fps!r}")
        if sample_fps is not None and stride != 1:
            raise UsageError("use either stride or sample_fps, not both")
        self._stride = stride
        self._sample_fps = sample_fps
        self._count = 0
        self._t0 = None
        self._due = 0  # the next selection is due at _t0 + _due / sample_fps

    def __call__(self, pts_s: float) -> bool:
        if self._sample_fps is None:
            chosen = self._count % self._stride == 0
            self._count += 1
            return chosen
        if self._t0 is None:
            self._t0 = pts_s
        # Count whole periods from the first frame so rounding never accumulates; the
        # tolerance lets a frame that lands exactly on a due time count as on time.
        periods = (pts_s - self._t0) * self._sample_fps + 1e-6
        if periods < self._due:
            return False
        self._due = math.floor(periods) + 1  # skip periods already passed, no burst
        return True


def _pyav_frames(path, start_s, end_s, select, pixels, stats, index) -> Iterator[Frame]:
    with _open_input(path) as container:
        stream = _video_stream(container, path, index)
        stream.thread_type = "AUTO"
        size = None
        sar = _stretch(stream.sample_aspect_ratio)
        timed = _in_time_order(_deinterlaced(_decoded(container, stream, stats), stream))
        for frame_index, (frame, pts_s) in enumerate(timed):
            size = size or (frame.width, frame.height)
            if (frame.width, frame.height) != size:  # a damaged header, decoded as a picture of another size
                stats.add_corrupt(pts_s)
                continue
            if frame.is_corrupt:
                stats.add_corrupt(pts_s)
            if start_s is not None and pts_s < start_s:
                continue
            if end_s is not None and pts_s >= end_s:
                return
            selected = select(pts_s)
            turns = _quarter_turns(frame.rotation)
            if pixels == "planes" and selected and sar is None and _plain_i420(frame) and not turns:
                yield Frame(frame_index, pts_s, None, selected, planes=frame.to_ndarray())
                continue
            image = None
            if selected or pixels == "all":
                image = _rgb(frame)
                if sar is not None:
                    image = _resized(image, _displayed(frame.width, frame.height, sar, turns))
            yield Frame(frame_index, pts_s, image, selected)


def _decoded(container, stream, stats) -> Iterator[tuple[av.VideoFrame, float]]:
    """Frames in the decoder's output order with their own times; corrupt packets skipped."""
    rate = stream.average_rate or stream.guessed_rate
    step = 1 / float(rate) if rate else 0.0
    pts_s, offset_s = None, 0.0
    for packet in _packets(container, stream, stats):
        try:
            decoded = stream.decode(packet)  # None, after a demuxer failure, flushes the decoder
        except av.FFmpegError:
            known = packet is not None and packet.pts is not None
            stats.add_corrupt(float(packet.pts * packet.time_base) if known else pts_s or 0.0)
            continue
        for frame in decoded:
            time_s = float(frame.time) + offset_s if frame.pts is not None else None
            if time_s is not None and not math.isfinite(time_s):  # a damaged time base
                stats.add_corrupt(pts_s + step if pts_s is not None else 0.0)
                time_s = None
            if pts_s is None:
                pts_s = time_s if time_s is not None else 0.0
            elif time_s is None:
                pts_s += step
            elif time_s - pts_s > MAX_TIME_JUMP_S or pts_s - time_s > max(REORDER_FRAMES * step, 0.1):
                # A discontinuity (damage, or two files joined byte to byte): counted once, and the
                # times from here on shifted to continue one frame after the last good one.
                stats.add_corrupt(pts_s + step)
                offset_s += pts_s + step - time_s
                pts_s += step
            else:
                pts_s = time_s
            stats.decoded += 1
            yield frame, pts_s


def _packets(container, stream, stats) -> Iterator[av.Packet | None]:
    """The stream's packets until the file ends (its last, empty packets flush the decoder), or
    until the demuxer fails on damage: that ends the stream there, and None asks for a flush."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as err:
            stats.read_error = str(err).split(": '")[0]  # without the path, which the user knows
            yield None
            return
        yield packet


def _deinterlaced(timed, stream) -> Iterator[tuple[av.VideoFrame, float]]:
    """Interlaced frames through FFmpeg's yadif, so that models and overlays see whole pictures,
    not two fields a moment apart combed together. It gives one frame per frame, one frame
    late; the times go along in a queue. Progressive frames pass as they are, and so does a
    frame the filter refuses (a damaged one of another size)."""
    graph, times = None, collections.deque()
    for frame, t in timed:
        if graph is None and not frame.interlaced_frame:
            yield frame, t
            continue
        if graph is None:
            graph = av.filter.Graph()
            source, yadif, sink = (graph.add_buffer(template=stream),
                                   graph.add("yadif", "mode=send_frame:parity=auto:deint=interlaced"),
                                   graph.add("buffersink"))
            source.link_to(yadif)
            yadif.link_to(sink)
            graph.configure()
        try:
            graph.push(frame)
        except av.FFmpegError:
            yield frame, t
            continue
        times.append(t)
        yield from _pulled(graph, times)
    if graph is not None:
        with contextlib.suppress(av.FFmpegError):  # the last frame is lost, not the run
            graph.push(None)
            yield from _pulled(graph, times)


def _pulled(graph, times: collections.deque) -> Iterator[tuple[av.VideoFrame, float]]:
    while times:
        try:
            frame = graph.pull()
        except (BlockingIOError, av.EOFError):
            return
        yield frame, times.popleft()


def _in_time_order(timed: Iterator[tuple[av.VideoFrame, float]]) -> Iterator[tuple[av.VideoFrame, float]]:
    """Decoders output frames in display order, but some files carry their times shuffled (AVI
    with packed B-frames, as DivX wrote them, reads 1, 2, 3, 5, 4, 6, …). Holding a few frames
    and handing out the smallest pending time gives each frame its own; a time that still does
    not increase (a duplicate) is nudged a microsecond past the previous one."""
    pending, times, last = collections.deque(), [], -math.inf
    for frame, t in itertools.chain(timed, [(None, None)]):
        if frame is not None:
            pending.append(frame)
            heapq.heappush(times, t)
        while pending and (frame is None or len(pending) > REORDER_FRAMES):
            last = max(heapq.heappop(times), last + 1e-6)
            yield pending.popleft(), last


def _opencv_frames(path, start_s, end_s, select, pixels, stats) -> Iterator[Frame]:
    # OpenCV only reports "not opened"; probing first gives the same errors as PyAV, the start
    # time OpenCV subtracts from its timestamps, and the displayed size it does not apply.
    info = probe(path)
    offset_s = info.start_s
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise InputError(f"OpenCV cannot open {path}; try decoder='pyav'")
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        index = 0
        while capture.grab():
            pts_s = offset_s + capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
            frame_index, index = index, index + 1
            stats.decoded += 1
            if start_s is not None and pts_s < start_s:
                continue
            if end_s is not None and pts_s >= end_s:
                return
            selected = select(pts_s)
            image = None
            if selected or pixels == "all":
                ok, bgr = capture.retrieve()
                if not ok:
                    stats.add_corrupt(pts_s)
                    continue
                image = _resized(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (info.width, info.height))
            yield Frame(frame_index, pts_s, image, selected)
    finally:
        capture.release()


def _plain_i420(frame: av.VideoFrame) -> bool:
    """yuv420p of even size in BT.601 limited range: what cv2's I420 conversion implements."""
    return (
        frame.format.name == "yuv420p"
        and frame.width % 2 == 0
        and frame.height % 2 == 0
        and frame.colorspace in _BT601
        and frame.color_range != _FULL_RANGE
    )


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """The frame as upright HxWx3 uint8 RGB, C-contiguous."""
    if _plain_i420(frame):
        # swscale's colours within rounding, about twice as fast; to_ndarray() gives the
        # I420 planes stacked as one (h*3/2, w) array.
        rgb = cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    else:
        # swscale takes the matrix from the frame but not the range unless told.
        try:
            rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range or None)
        except av.FFmpegError:  # a damaged colour tag swscale does not know: BT.601, as FFmpeg guesses
            rgb = frame.to_ndarray(format="rgb24", src_colorspace=av.video.reformatter.Colorspace.ITU601)
    return np.ascontiguousarray(np.rot90(rgb, _quarter_turns(frame.rotation)))


def _stretch(sar) -> Fraction | None:
    """The sample aspect ratio a picture must be stretched by (non-square pixels, as DV and DVD
    have); None for square pixels, or a ratio no camera makes (a damaged header)."""
    if not sar or sar == 1 or not SANE_SAR[0] <= sar <= SANE_SAR[1]:
        return None
    return sar


def _displayed(width: int, height: int, sar, turns: int) -> tuple[int, int]:
    """(width, height) as a player shows a coded picture: stretched by its sample aspect ratio
    (see _stretch), then turned."""
    if _stretch(sar) is not None:
        width = max(1, round(width * sar))
    return (height, width) if turns % 2 else (width, height)


def _resized(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The picture at its displayed (width, height), so that models, overlays and point
    coordinates all see what a player shows."""
    width, height = size
    if rgb.shape[:2] == (height, width):
        return rgb
    interpolation = cv2.INTER_AREA if width * height < rgb.shape[0] * rgb.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interpolation)


def _quarter_turns(rotation: float) -> int:
    """Counterclockwise quarter turns (0-3) for a display-matrix angle, as np.rot90 takes."""
    return round(rotation / 90) % 4


def _open_input(path: str) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise InputError(f"input video not found: {path}; check the path")
    if os.path.getsize(path) == 0:
        raise InputError(f"input video is empty (0 bytes): {path}; copy or download it again")
    try:
        # a damaged file's metadata may not be text; that must not stop the frames being read
        return av.open(path, metadata_errors="replace")
    except (av.FFmpegError, OSError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise InputError(
            f"{path} is not a video FFmpeg can read ({reason}); check it is a video file, copied whole"
        ) from err


def _video_stream(container, path: str, index: int = 0) -> av.video.stream.VideoStream:
    videos = container.streams.video
    if not videos:
        found = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
        raise InputError(f"{path} has no video stream (found: {found}); pass a video file")
    if index >= len(videos):
        raise InputError(f"{path} has {len(videos)} video stream{'s' if len(videos) > 1 else ''}; "
                         f"--stream takes 0 to {len(videos) - 1}")
    stream = videos[index]
    if stream.codec_context is None:
        raise InputError(f"{path}: FFmpeg knows no decoder for its video stream; the file is damaged or uses "
                         f"a codec this FFmpeg build lacks")
    # FFmpeg renders any text file as video (its tty demuxer): that is never what a user meant.
    if container.format.name in TEXT_FORMATS or stream.codec_context.name in TEXT_CODECS:
        raise InputError(f"{path} is not a video (FFmpeg reads it as text); pass a video file")
    return stream


def _audio_stream(container) -> av.audio.stream.AudioStream | None:
    """The first audio stream that can be carried over; a damaged file can declare one with no
    sample rate or channels, which no muxer takes: that counts as none."""
    for stream in container.streams.audio:
        ctx = stream.codec_context
        if ctx is not None and ctx.sample_rate and ctx.layout.nb_channels:
            return stream
    return None


def _first_frame(container, stream) -> av.VideoFrame | None:
    for packet in _packets(container, stream, DecodeStats()):
        try:
            for frame in stream.decode(packet):
                return frame
        except av.FFmpegError:
            continue
    return None


def _check_choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UsageError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
