"""Video out: frames (I420 planes or RGB) to H.264 in an mp4 that carries the input's audio
(edge/audio.py), resumable; encoded in a thread of its own (edge/background.py), so the caller
draws the next frame meanwhile.

Encoded packets go first to a log beside the output, and the mp4 is muxed from that log, with
the audio, when the writer closes without an exception. The log is what lets a run resume:
`checkpoint()` ends the encoder's current stretch (the next frame opens a fresh encoder, on a
keyframe), makes the log durable and says where it stands; `VideoWriter(..., resume=that)`, in
another process, cuts the log back there and carries on. x264 is deterministic, so a resumed
file equals, byte for byte, one written in one go with the same checkpoints.
"""

import array
import contextlib
import functools
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
import numpy as np

from . import i420
from .audio import AudioTrack, has_audio
from .background import Background
from .errors import OutputError, UsageError
from .files import durable_size, open_resumable
from .geometry import planes_size
from .choices import Encoder, check_choice, words

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast",
    "medium", "slow", "slower", "veryslow", "placebo",
)
ENCODERS = words(Encoder)
# NVENC's presets, p1 (fastest) to p7 (best), for the x264 preset names edge takes
NVENC_PRESETS = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p4",
                 "medium": "p5", "slow": "p6", "slower": "p7", "veryslow": "p7", "placebo": "p7"}

_SMPTE170M = 6
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG
_GLOBAL_HEADER = 1 << 22  # AV_CODEC_FLAG_GLOBAL_HEADER: parameter sets in the stream header, where mp4 keeps them
_PACKET = struct.Struct("<qqBI")  # a logged packet: pts, duration, keyframe, size; then its bytes


def pick_encoder(requested: str, *, on_gpu: bool, size: tuple[int, int]) -> str:
    """`auto`: the GPU's own H.264 encoder (NVENC) when the run is on a GPU that has one and it
    takes frames of this (width, height), which frees the CPU of the encode; else x264."""
    check_choice("encoder", requested, ("auto", *ENCODERS))
    if requested == "h264_nvenc" and not nvenc_opens(*size):
        raise UsageError(f"--encoder h264_nvenc: NVENC does not open here for {size[0]}x{size[1]} frames (this FFmpeg "
                         "lacks it, there is no NVIDIA GPU with an encoder, or the frames are below its smallest "
                         "size); use --encoder libx264 or auto")
    if requested != "auto":
        return requested
    return "h264_nvenc" if on_gpu and nvenc_opens(*size) else "libx264"


@functools.cache
def nvenc_opens(width: int, height: int) -> bool:
    """Whether this FFmpeg has NVENC, and a GPU and driver it opens an encoder on for frames of
    this size (NVENC has a smallest size, about 145 pixels wide for H.264)."""
    try:
        ctx = av.CodecContext.create("h264_nvenc", "w")
        ctx.width, ctx.height = width + width % 2, height + height % 2
        ctx.pix_fmt, ctx.time_base = "yuv420p", Fraction(1, 25)
        ctx.open()
    except Exception:  # no such encoder in this build, no GPU, an old driver, too small: all mean x264
        return False
    return True


class VideoWriter:
    """Encodes RGB frames to H.264 (x264, or NVENC on a GPU) in an mp4 at `path`, with the
    audio of `audio_from`.

    Use it as a context manager: `path` is written only when the `with` block ends without an
    exception, through a temporary file that replaces it, so a half-written file never carries
    the final name. On an exception the packet log is deleted too, unless a checkpoint was taken
    (or the writer resumed one): then it stays, for the run to be resumed.

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
        encoder: str = "libx264",
        threads: int | None = None,
        resume: dict | None = None,
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
        check_choice("preset", preset, X264_PRESETS)
        check_choice("encoder", encoder, ENCODERS)

        self.path = os.fspath(path)
        self._shape = (height, width, 3)
        # x264's 4:2:0 needs even sizes and H.264 can only crop in 2-pixel steps, so an odd side
        # is padded by one replicated row/column: the output is 1 px larger there, but plays
        # everywhere (4:4:4 would keep the size but not the players).
        self._size = (width + width % 2, height + height % 2)
        self._planes_shape = (self._size[1] * 3 // 2, self._size[0])
        self._time_base = Fraction(time_base)
        self._start_s, self._end_s = start_s, end_s
        self._encoder_name = encoder
        # x264's threads change its output, so a resumed run must use the same number (None: x264's own)
        self._options = ({"crf": str(crf), "preset": preset, **({"threads": str(threads)} if threads else {})}
                         if encoder == "libx264"
                         # constant quality, as x264's crf: without b=0 FFmpeg caps NVENC at 2 Mb/s
                         else {"preset": NVENC_PRESETS[preset], "rc": "vbr", "cq": str(crf), "b": "0"})
        self._audio_from = os.fspath(audio_from) if audio_from is not None and has_audio(os.fspath(audio_from)) else None
        self._encoder = None  # opened by the first frame after the start or a checkpoint
        self._background = None  # the encoding thread, started by the first frame
        self._resumable = resume is not None
        state = resume or {"bytes": 0, "last_pts": -1, "step": 0}
        self._last_pts = state["last_pts"]
        self._step = state["step"]  # the latest pts interval, in ticks; see _log_packets
        folder, name = os.path.split(os.path.abspath(self.path))
        self._log_path = os.path.join(folder, f".{name}.packets")
        self._log = open_resumable(self._log_path, resume_bytes=state["bytes"] if resume else None, binary=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._end_encoder()
                self._log.close()
                self._mux()
        except BaseException:
            self._stop_encoding()
            self._drop_log()
            raise
        self._stop_encoding()
        if exc_type is None:
            os.unlink(self._log_path)
        else:
            self._drop_log()

    def write(self, picture: np.ndarray, pts_s: float) -> None:
        """Encode one frame shown at `pts_s` seconds of the input: HxWx3 uint8 RGB, or the I420
        planes x264 takes (edge/i420.py; of the size grown to even sides, as RGB is), which
        spares a colour conversion."""
        if picture.dtype != np.uint8 or picture.shape not in (self._shape, self._planes_shape):
            raise ValueError(f"expected a {self._shape} uint8 RGB image or {self._planes_shape} uint8 I420 planes, "
                             f"got {picture.shape} {picture.dtype}")
        # mp4 needs strictly increasing times; the first frame starts at 0 at the earliest.
        pts = max(round((pts_s - self._start_s) / self._time_base), self._last_pts + 1)
        if self._last_pts >= 0:
            self._step = pts - self._last_pts
        self._last_pts = pts
        if self._background is None:
            self._background = Background(self._encode, name="edge-encoder")
        # the caller draws the next frame while this one is encoded; it never changes a picture
        # it handed on (drawing makes a new one)
        self._background.put((picture, pts, self._step))

    def _encode(self, item: tuple[np.ndarray, int, int]) -> None:
        picture, pts, step = item
        frame = _video_frame(picture if picture.ndim == 2 else i420.from_rgb(picture))
        frame.pts = pts
        frame.time_base = self._time_base
        if self._encoder is None:
            self._encoder = self._configure(av.CodecContext.create(self._encoder_name, "w"))
            self._encoder.flags |= _GLOBAL_HEADER
        self._log_packets(self._encoder.encode(frame), step)

    def checkpoint(self) -> dict:
        """End the encoder's stretch and make everything so far durable; returns the `resume=`
        that continues from here."""
        self._end_encoder()
        self._resumable = True
        return {"bytes": durable_size(self._log, self._log_path), "last_pts": self._last_pts, "step": self._step}

    def _configure(self, ctx):
        ctx.width, ctx.height = self._size
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = self._time_base
        # Frames are converted with BT.601 limited range (cv2's I420); say so, or players guess
        # BT.709 for HD sizes and shift the colours.
        ctx.colorspace = _SMPTE170M
        ctx.color_range = _LIMITED_RANGE
        ctx.options = dict(self._options)
        return ctx

    def _end_encoder(self) -> None:
        if self._background is not None:
            self._background.drain()
        if self._encoder is not None:
            self._log_packets(self._encoder.encode(None), self._step)
            self._encoder = None

    def _stop_encoding(self) -> None:
        """The encoding thread stops, dropping what it still holds (after a failure)."""
        if self._background is not None:
            self._background.close()

    def _log_packets(self, packets: list[av.Packet], step: int) -> None:
        """`step`: the pts interval up to the frame whose encoding gave these packets."""
        try:
            for packet in packets:
                # x264 leaves durations at 0 and mp4 then gives the last frame 1/24 s (PyAV's
                # default rate); the latest interval is the best guess, exact for constant rates.
                self._log.write(_PACKET.pack(packet.pts, packet.duration or step, packet.is_keyframe,
                                             packet.size))
                self._log.write(bytes(packet))
        except OSError as err:
            raise OutputError(f"cannot write {self.path}: {err.strerror or err}; check free disk space") from err

    def _mux(self) -> None:
        folder, name = os.path.split(os.path.abspath(self.path))
        try:
            fd, partial = tempfile.mkstemp(prefix=f".{name}.partial-", suffix=".mp4", dir=folder)
            os.close(fd)
        except OSError as err:
            raise OutputError(f"cannot create a file in {folder}: {err.strerror}; check the output folder") from err
        out = audio = None
        try:
            out = av.open(partial, "w", format="mp4")
            video = out.add_stream(self._encoder_name)  # never encodes: it gives mp4 the same parameter sets
            self._configure(video.codec_context)
            video.time_base = self._time_base
            if self._audio_from is not None:
                audio = AudioTrack.open(out, self._audio_from, self._start_s, self._end_s, self._mux_packet(out))
            for packet in _logged_packets(self._log_path, self._time_base):
                packet.stream = video
                self._mux_packet(out)(packet)
                if audio is not None:
                    audio.mux_until(float(packet.dts * self._time_base))
            if audio is not None:
                audio.finish()
                audio = None
            out.close()
            os.chmod(partial, 0o644)  # mkstemp made it private to its owner
            os.replace(partial, self.path)
        except OSError as err:
            raise OutputError(f"cannot write {self.path}: {err.strerror or err}; check the output folder") from err
        finally:
            for closable in (audio, out):
                if closable is not None:
                    with contextlib.suppress(Exception):
                        closable.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)

    def _mux_packet(self, out) -> Callable[[av.Packet], None]:
        def mux(packet: av.Packet) -> None:
            try:
                out.mux(packet)
            except OSError as err:
                raise OutputError(f"cannot write {self.path}: {err.strerror}; check free disk space") from err

        return mux

    def _drop_log(self) -> None:
        """Close the log; delete it unless a checkpoint made it worth resuming."""
        with contextlib.suppress(OSError):
            self._log.close()
        if not self._resumable:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._log_path)


def _video_frame(planes: np.ndarray) -> av.VideoFrame:
    """I420 planes as a frame for the encoder: copied a plane at a time where FFmpeg's rows are
    as wide as the picture (twice as fast as from_ndarray, which copies row by row)."""
    height, width = planes_size(planes)
    frame = av.VideoFrame(width, height, "yuv420p")
    if any(plane.line_size != plane.width for plane in frame.planes):
        return av.VideoFrame.from_ndarray(planes, format="yuv420p")
    for plane, values in zip(frame.planes, i420.planes(planes)):
        plane.update(values)
    return frame


def _logged_packets(path: str, time_base: Fraction) -> Iterator[av.Packet]:
    """The log's packets, with decode times made anew for the whole file: each stretch's encoder
    starts its own afresh, and with B-frames on a coarse time base (one tick a frame) its first
    could fall on or before the previous stretch's last. The k-th packet in decode order gets
    the k-th smallest presentation time, less the largest shift that keeps every decode time at
    or before its presentation time: strictly increasing, and the same for the same log."""
    with open(path, "rb") as log:
        shown = array.array("q")
        while header := log.read(_PACKET.size):
            pts, _, _, size = _PACKET.unpack(header)
            shown.append(pts)
            log.seek(size, os.SEEK_CUR)
        ordered = sorted(shown)
        shift = max((t - pts for t, pts in zip(ordered, shown)), default=0)
        log.seek(0)
        for decode_time in ordered:
            pts, duration, keyframe, size = _PACKET.unpack(log.read(_PACKET.size))
            packet = av.Packet(log.read(size))
            packet.pts, packet.dts, packet.duration, packet.time_base = pts, decode_time - shift, duration, time_base
            packet.is_keyframe = bool(keyframe)
            yield packet
