"""Video in: probe a file and decode its frames with their real timestamps (writer.py encodes).

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av
import cv2
import numpy as np

from edge.choices import Decoder, Pixels, check_choice, words
from edge.errors import InputError, UsageError
from edge.frames import Frame

DECODERS = words(Decoder)
PIXELS = words(Pixels)
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
    with open_input(path) as container:
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
        audio = audio_stream(container)
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
    resume_after: int = -1,
    threads: int | None = None,
) -> Iterator[Frame]:
    """Yield the frames of `path` with pts in [start_s, end_s), upright RGB.

    Every frame in range is yielded; `stride` (every Nth) or `sample_fps` (at most F per
    second of stream time) marks which are `selected`. With pixels="selected" the others
    come with image=None, which skips their colour conversion, the costly part; with
    pixels="planes" the selected ones also skip it where they can, coming as I420 planes
    (Frame.planes; PyAV decoder, plain BT.601 yuv420p, no rotation), and with "all_planes"
    every frame does. Frames up to index
    `resume_after` are decoded but not yielded nor converted: selection, times and `stats`
    then go on exactly as in a whole read, which a resumed run needs. Options are checked
    here; the file is opened on the first `next()`. `threads` caps PyAV's decoding threads
    (None: FFmpeg's own choice), for several decodes sharing a machine.
    """
    select = check_read_options(decoder=decoder, start_s=start_s, end_s=end_s, stride=stride, sample_fps=sample_fps,
                                stream=stream)
    check_choice("pixels", pixels, PIXELS)
    stats = stats if stats is not None else DecodeStats()
    images = image_sequence(os.fspath(path))
    if images is not None:
        return _image_frames(os.fspath(path), images, start_s, end_s, select, pixels, stats, resume_after)
    if decoder == "opencv":
        return _opencv_frames(os.fspath(path), start_s, end_s, select, pixels, stats, resume_after)
    return _pyav_frames(os.fspath(path), start_s, end_s, select, pixels, stats, stream, resume_after, threads)


def check_read_options(*, decoder: str, start_s: float | None, end_s: float | None, stride: int,
                       sample_fps: float | None, stream: int = 0) -> "_Selector":
    """UsageError for options `read_frames` cannot honour; callers check before any work starts."""
    check_choice("decoder", decoder, DECODERS)
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
    return natural_order(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(n))


def natural_order(names) -> list[str]:
    """Names sorted as people number things: frame2 before frame10."""
    # splitting on a captured group alternates text and digits: odd parts are the numbers
    return sorted(names, key=lambda n: [int(part) if i % 2 else part
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
        where = f"in the folder {path}" if os.path.isdir(path) else f"match {path}"
        raise InputError(f"no videos and no images ({', '.join(IMAGE_EXTENSIONS)}) {where}; pass a video file, a "
                         f"folder holding videos or images, or a glob such as 'frames/*.jpg'")
    first = next((image for image in map(cv2.imread, images) if image is not None), None)
    if first is None:
        raise InputError(f"none of the {len(images)} images in {path} can be read; check they are image files")
    height, width = first.shape[:2]
    return VideoInfo(path=path, stream=0, video_streams=1, width=width, height=height, fps=float(IMAGE_SEQUENCE_FPS),
                     time_base=Fraction(1, IMAGE_SEQUENCE_FPS), start_s=0.0,
                     duration_s=len(images) / IMAGE_SEQUENCE_FPS, frame_count=len(images), codec="images",
                     pix_fmt="bgr24", rotation=0, audio_codec=None)


def _image_frames(path, images, start_s, end_s, select, pixels, stats, resume_after) -> Iterator[Frame]:
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
        if index <= resume_after:
            continue
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if selected or pixels in ("all", "all_planes") else None
        yield Frame(index, pts_s, image, selected)


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


def _pyav_frames(path, start_s, end_s, select, pixels, stats, index, resume_after, threads) -> Iterator[Frame]:
    with open_input(path) as container:
        stream = _video_stream(container, path, index)
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
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
            if frame_index <= resume_after:
                continue
            turns = _quarter_turns(frame.rotation)
            wanted = selected or pixels in ("all", "all_planes")
            if pixels in ("planes", "all_planes") and wanted and sar is None and _plain_i420(frame) and not turns:
                yield Frame(frame_index, pts_s, None, selected, planes=frame.to_ndarray())
                continue
            image = None
            if wanted:
                image = _rgb(frame)
                if sar is not None:
                    image = _resized(image, _displayed(frame.width, frame.height, sar, turns))
            yield Frame(frame_index, pts_s, image, selected)


def _decoded(container, stream, stats) -> Iterator[tuple[av.VideoFrame, float]]:
    """Frames in the decoder's output order with their own times; corrupt packets skipped."""
    rate = stream.average_rate or stream.guessed_rate
    step = 1 / float(rate) if rate else 0.0
    pts_s, offset_s = None, 0.0
    for packet in read_packets(container, stream, stats):
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


def read_packets(container, stream, stats) -> Iterator[av.Packet | None]:
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


def _opencv_frames(path, start_s, end_s, select, pixels, stats, resume_after) -> Iterator[Frame]:
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
            if selected or pixels in ("all", "all_planes"):
                # OpenCV converts as it retrieves, and only then tells a damaged frame: a frame
                # before the resume point is retrieved too, so the counts go on as in a whole read
                ok, bgr = capture.retrieve()
                if not ok:
                    stats.add_corrupt(pts_s)
                    continue
                if frame_index > resume_after:
                    image = _resized(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (info.width, info.height))
            if frame_index > resume_after:
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


def open_input(path: str) -> av.container.InputContainer:
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


def audio_stream(container) -> av.audio.stream.AudioStream | None:
    """The first audio stream that can be carried over; a damaged file can declare one with no
    sample rate or channels, which no muxer takes: that counts as none."""
    for stream in container.streams.audio:
        ctx = stream.codec_context
        if ctx is not None and ctx.sample_rate and ctx.layout.nb_channels:
            return stream
    return None


def _first_frame(container, stream) -> av.VideoFrame | None:
    for packet in read_packets(container, stream, DecodeStats()):
        try:
            for frame in stream.decode(packet):
                return frame
        except av.FFmpegError:
            continue
    return None
