"""Decoding a file's frames with PyAV or OpenCV, in time order and upright, with their real times.

FFmpeg's own log lines stay off: PyAV 18 installs a silent log callback by default, and
`av.logging.set_level(ERROR)` would route every "error while decoding MB" into Python's
logging, which prints them. Corrupt packets are counted in `DecodeStats` instead.
"""

import collections
import contextlib
import copy
import heapq
import itertools
import math
from collections.abc import Iterator

import av
import cv2
import numpy as np

from .errors import InputError, UsageError
from .frames import Frame
from .container import (BT601_SPACES, FULL_RANGE, displayed, groups_of_pictures, open_input, packet_time,
                        quarter_turns, read_packets, stretch, video_stream)


REORDER_FRAMES = 4  # how far a file's frame times may be shuffled and still come out right


# A frame time this far past the previous one is damage, not a pause in recording (a flipped
# bit in an MPEG-TS timestamp jumps hours ahead; mp4 cannot even store such a gap at 90 kHz).
# Backwards, more than the reorder window (or 0.1 s) is one too: shuffled times move a frame or two.
MAX_TIME_JUMP_S = 3600.0


# Codecs whose keyframe packets start a picture that needs none before it, and whose packets
# each hold one picture shown at the packet's time: a group of pictures can then be counted and
# timed from its packets, and decoded only up to the last picture wanted (see sparsely).
SPARSE_CODECS = frozenset({"h264", "hevc", "vp9", "av1", "mjpeg"})


# Frame times closer than this are ones in_time_order would nudge apart: a group holding them is
# decoded whole, so that they come out as a whole read gives them.
MIN_STEP_S = 1e-5


class Selector:
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

    @property
    def sparse(self) -> bool:
        """Whether some frames go unselected, which a reader needing no pixels of those may
        leave undecoded."""
        return self._stride > 1 or self._sample_fps is not None


def in_range(timed, start_s, end_s, select, resume_after: int = -1, usable=None) -> Iterator[tuple]:
    """The read loop every reader shares: of (index, time, picture) in order, those whose time
    is in [start_s, end_s), each with whether it is selected. `usable(picture, time)` may pass a
    damaged picture over (None) before selection; every other frame in range goes through
    `select`, even one up to `resume_after`, which is then passed over: selection goes on as in
    a whole read, which a resumed run needs."""
    for index, pts_s, picture in timed:
        if start_s is not None and pts_s < start_s:
            continue
        if end_s is not None and pts_s >= end_s:
            return
        if usable is not None and (picture := usable(picture, pts_s)) is None:
            continue
        selected = select(pts_s)
        if index > resume_after:
            yield index, pts_s, picture, selected


def pyav_frames(path, start_s, end_s, select, pixels, stats, index, resume_after, threads) -> Iterator[Frame]:
    with open_input(path) as container:
        stream = video_stream(container, path, index)
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        sar = stretch(stream.sample_aspect_ratio)
        packets = read_packets(container, stream, stats)
        skippable = stream.codec_context.codec.canonical_name in SPARSE_CODECS
        # only the selected frames' pixels wanted, and some frames not selected: those need no decoding
        if pixels in ("planes", "selected") and select.sparse and skippable:
            chosen = sparsely(packets, stream, start_s, end_s, select, stats, resume_after)
        else:
            chosen = in_range(fully(packets, stream, stats), start_s, end_s, select, resume_after)
        for frame_index, pts_s, frame, selected in chosen:
            if frame is None:  # passed over undecoded, as no one needs its pixels
                yield Frame(frame_index, pts_s, None, selected)
                continue
            turns = quarter_turns(frame.rotation)
            wanted = selected or pixels in ("all", "all_planes")
            if pixels in ("planes", "all_planes") and wanted and sar is None and plain_i420(frame) and not turns:
                yield Frame(frame_index, pts_s, None, selected, planes=frame.to_ndarray())
                continue
            image = None
            if wanted:
                image = rgb(frame)
                if sar is not None:
                    image = resized(image, displayed(frame.width, frame.height, sar, turns))
            yield Frame(frame_index, pts_s, image, selected)


def fully(packets, stream, stats, first: int = 0, size: tuple[int, int] | None = None) -> Iterator[tuple]:
    """(index, time, frame) of every picture in the packets, decoded: in time order,
    deinterlaced, of one size (`size`, or the first frame's), numbered from `first`."""
    return of_one_size(in_time_order(deinterlaced(decoded(packets, stream, stats), stream)), stats, first, size)


def sparsely(packets, stream, start_s, end_s, select, stats, resume_after) -> Iterator[tuple]:
    """in_range's (index, time, frame, selected) for every frame, where only the frames yielded
    selected are decoded, the others coming as None. Each group of pictures (a keyframe to the
    next) is planned from its packets' times, then decoded up to the last picture it needs in
    decode order (no picture refers to one decoded after it), or not at all. The stream's first
    picture is always decoded: it tells the size, and whether the stream is interlaced (the
    deinterlacer needs every frame). Where a group or the one after it is not what exact
    skipping needs (see decode_times: the one after may refer back), or the decoder's frames are
    not what its packets promised (see pictures_at), the rest is decoded whole from that group's
    keyframe on: its times rise from the last group's, so a whole read's time checks hold
    nothing there that a fresh start lacks. Damage inside a picture never decoded goes unseen:
    a whole read would count it, and might drop that frame."""
    groups = groups_of_pictures(packets)
    group, index, last_s, size = next(groups, None), 0, None, None
    while group is not None:
        following = next(groups, None)
        times = decode_times(group, last_s)
        if times is None or (following is not None and decode_times(following, max(times)) is None):
            break
        before = copy.copy(select)  # to plan this group again in a whole read, should that be needed
        shown = sorted(times)
        planned = list(in_range(zip(itertools.count(index), shown, itertools.repeat(None)), start_s, end_s,
                                select, resume_after))
        needed = {t for _, t, _, chosen in planned if chosen} | ({shown[0]} if index == 0 else set())
        pictures = pictures_at(stream, group, times, needed, size, stats)
        if pictures is None:
            select = before
            break
        size = size or (pictures[shown[0]].width, pictures[shown[0]].height)
        yield from ((i, t, pictures[t] if chosen else None, chosen) for i, t, _, chosen in planned)
        if end_s is not None and shown[-1] >= end_s:
            return
        group, index, last_s = following, index + len(times), shown[-1]
    if group is not None:
        rest = itertools.chain(group, following or [], itertools.chain.from_iterable(groups))
        yield from in_range(fully(rest, stream, stats, index, size), start_s, end_s, select, resume_after)


def decode_times(group: list, last_s: float | None) -> list[float] | None:
    """Each picture's time in a group, in decode order, where its packets alone tell them: the
    group starts at a keyframe that is shown first (so that none of its pictures refers to the
    group before), no packet is damaged, discarded or without a time, and the times once sorted
    rise from `last_s` by steps a whole read keeps as they are (see decoded and in_time_order).
    Else None, and so after a demuxer failure (None), which a whole read decodes up to."""
    coded = [p for p in group if p is not None and p.size]  # the stream's flush packets left out
    if any(p is None for p in group) or not coded or not coded[0].is_keyframe:
        return None
    if any(p.pts is None or p.is_corrupt or p.is_discard for p in coded):
        return None
    times = [packet_time(p) for p in coded]
    shown = sorted(times)
    if shown[0] != times[0] or not all(map(math.isfinite, times)):
        return None
    rises = [b - a for a, b in itertools.pairwise(([] if last_s is None else [last_s]) + shown)]
    return times if all(MIN_STEP_S < rise <= MAX_TIME_JUMP_S for rise in rises) else None


def pictures_at(stream, group: list, times: list[float], needed: set[float], size: tuple[int, int] | None,
                stats) -> dict[float, av.VideoFrame] | None:
    """The group's pictures at the `needed` times, its packets decoded up to the last of those
    in decode order, the decoder then drained and reset for the next group's keyframe. None
    where the decoder does not give one whole progressive frame per packet sent, at the
    packet's time, all of `size` (or of the first one's)."""
    if not needed:
        return {}
    last = max(i for i, t in enumerate(times) if t in needed)
    frames = []
    try:
        for packet in [p for p in group if p.size][: last + 1]:
            frames += stream.decode(packet)
        frames += stream.decode(None)
    except av.FFmpegError:
        return None
    finally:
        stream.codec_context.flush_buffers()
    shown = sorted(times[: last + 1])
    if [f.time for f in frames] != shown or any(f.is_corrupt or f.interlaced_frame for f in frames):
        return None
    size = size or (frames[0].width, frames[0].height)
    if any((f.width, f.height) != size for f in frames):
        return None
    stats.decoded += len(frames)
    return dict(zip(shown, frames))


def of_one_size(timed, stats, first: int = 0,
                size: tuple[int, int] | None = None) -> Iterator[tuple[int, float, av.VideoFrame]]:
    """(index, time, frame) of the decoder's frames, numbered from `first`, the damaged ones
    counted; one of another size than `size` or the first (a damaged header, decoded as a
    picture of another size) is left out."""
    for index, (frame, pts_s) in enumerate(timed, first):
        size = size or (frame.width, frame.height)
        if (frame.width, frame.height) != size:
            stats.add_corrupt(pts_s)
            continue
        if frame.is_corrupt:
            stats.add_corrupt(pts_s)
        yield index, pts_s, frame


def decoded(packets, stream, stats) -> Iterator[tuple[av.VideoFrame, float]]:
    """The packets' frames in the decoder's output order with their own times; corrupt packets skipped."""
    rate = stream.average_rate or stream.guessed_rate
    step = 1 / float(rate) if rate else 0.0
    pts_s, offset_s = None, 0.0
    for packet in packets:
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


def deinterlaced(timed, stream) -> Iterator[tuple[av.VideoFrame, float]]:
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
        yield from pulled(graph, times)
    if graph is not None:
        with contextlib.suppress(av.FFmpegError):  # the last frame is lost, not the run
            graph.push(None)
            yield from pulled(graph, times)


def pulled(graph, times: collections.deque) -> Iterator[tuple[av.VideoFrame, float]]:
    while times:
        try:
            frame = graph.pull()
        except (BlockingIOError, av.EOFError):
            return
        yield frame, times.popleft()


def in_time_order(timed: Iterator[tuple[av.VideoFrame, float]]) -> Iterator[tuple[av.VideoFrame, float]]:
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


def opencv_frames(path, info, start_s, end_s, select, pixels, stats, resume_after) -> Iterator[Frame]:
    """`info`, as probe gives it: OpenCV only reports "not opened"; probing first gives the same
    errors as PyAV, the start time OpenCV subtracts from its timestamps, and the displayed size
    it does not apply."""
    offset_s = info.start_s
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise InputError(f"OpenCV cannot open {path}; try decoder='pyav'")
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        for frame_index, pts_s, _, selected in in_range(grabbed(capture, offset_s, stats), start_s, end_s, select):
            image = None
            if selected or pixels in ("all", "all_planes"):
                # OpenCV converts as it retrieves, and only then tells a damaged frame: a frame
                # before the resume point is retrieved too, so the counts go on as in a whole read
                ok, bgr = capture.retrieve()
                if not ok:
                    stats.add_corrupt(pts_s)
                    continue
                if frame_index > resume_after:
                    image = resized(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (info.width, info.height))
            if frame_index > resume_after:
                yield Frame(frame_index, pts_s, image, selected)
    finally:
        capture.release()


def grabbed(capture, offset_s: float, stats) -> Iterator[tuple[int, float, None]]:
    """(index, time, None) of each frame OpenCV grabs, which it retrieves only when asked."""
    index = 0
    while capture.grab():
        stats.decoded += 1
        yield index, offset_s + capture.get(cv2.CAP_PROP_POS_MSEC) / 1000, None
        index += 1


def plain_i420(frame: av.VideoFrame) -> bool:
    """yuv420p of even size in BT.601 limited range: what cv2's I420 conversion implements."""
    return (
        frame.format.name == "yuv420p"
        and frame.width % 2 == 0
        and frame.height % 2 == 0
        and frame.colorspace in BT601_SPACES
        and frame.color_range != FULL_RANGE
    )


def rgb(frame: av.VideoFrame) -> np.ndarray:
    """The frame as upright HxWx3 uint8 RGB, C-contiguous."""
    if plain_i420(frame):
        # swscale's colours within rounding, about twice as fast; to_ndarray() gives the
        # I420 planes stacked as one (h*3/2, w) array.
        rgb = cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    else:
        # swscale takes the matrix from the frame but not the range unless told.
        try:
            rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range or None)
        except av.FFmpegError:  # a damaged colour tag swscale does not know: BT.601, as FFmpeg guesses
            rgb = frame.to_ndarray(format="rgb24", src_colorspace=av.video.reformatter.Colorspace.ITU601)
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns(frame.rotation)))


def resized(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The picture at its displayed (width, height), so that models, overlays and point
    coordinates all see what a player shows."""
    width, height = size
    if rgb.shape[:2] == (height, width):
        return rgb
    interpolation = cv2.INTER_AREA if width * height < rgb.shape[0] * rgb.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interpolation)
