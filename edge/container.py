"""A video file as FFmpeg opens it: the container and its streams, what probing and decoding
count, and how a picture is shown (sample aspect ratio, rotation)."""

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av

from .errors import InputError


TEXT_FORMATS = ("tty",)


TEXT_CODECS = ("ansi", "bintext", "xbin", "idf")


MAX_CORRUPT_TIMES = 1000


# Reading ahead to the next keyframe holds a group of pictures in memory: a group longer than
# this (a stream with few or no keyframes) is cut there, which makes it one the reader decodes whole.
MAX_GOP_PACKETS = 600


# A sample aspect ratio outside this is a damaged header, not a real camera's pixels.
SANE_SAR = (0.25, 4.0)


# Matrices cv2's I420 conversion implements (BT.601); "unspecified" is what FFmpeg assumes
# for untagged video too, so only BT.709/BT.2020 or full-range frames need swscale.
BT601_SPACES = frozenset({2, 5, 6})  # AVCOL_SPC_UNSPECIFIED, BT470BG, SMPTE170M


FULL_RANGE = 2  # AVCOL_RANGE_JPEG


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

    `decoded` counts every frame out of the decoder, in range or not; where sparse selection let
    the reader pass frames over undecoded (decode.sparsely), only those it decoded. `corrupt` counts
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


def groups_of_pictures(packets) -> Iterator[list]:
    """The packets in groups that each start at a keyframe, in decode order, at most
    MAX_GOP_PACKETS to a group (the rest of a longer one comes as the next group). What comes
    before the first keyframe and what ends the stream (the flush packets, or None after a
    demuxer failure) stay in the groups, so that the groups chained give back the packets as
    they came."""
    group = []
    for packet in packets:
        starts = packet is not None and packet.is_keyframe and packet.size
        if group and (starts or len(group) >= MAX_GOP_PACKETS):
            yield group
            group = []
        group.append(packet)
    if group:
        yield group


def packet_time(packet: av.Packet) -> float:
    """A packet's pts in seconds, computed as PyAV computes its decoded frame's `time`, so that
    the two compare equal."""
    return float(packet.pts) * packet.time_base.numerator / packet.time_base.denominator


def stretch(sar) -> Fraction | None:
    """The sample aspect ratio a picture must be stretched by (non-square pixels, as DV and DVD
    have); None for square pixels, or a ratio no camera makes (a damaged header)."""
    if not sar or sar == 1 or not SANE_SAR[0] <= sar <= SANE_SAR[1]:
        return None
    return sar


def displayed(width: int, height: int, sar, turns: int) -> tuple[int, int]:
    """(width, height) as a player shows a coded picture: stretched by its sample aspect ratio
    (see stretch), then turned."""
    if stretch(sar) is not None:
        width = max(1, round(width * sar))
    return (height, width) if turns % 2 else (width, height)


def quarter_turns(rotation: float) -> int:
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


def video_stream(container, path: str, index: int = 0) -> av.video.stream.VideoStream:
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


def first_frame(container, stream) -> av.VideoFrame | None:
    for packet in read_packets(container, stream, DecodeStats()):
        try:
            for frame in stream.decode(packet):
                return frame
        except av.FFmpegError:
            continue
    return None
