"""Video in: probe a file and read its frames with their real timestamps (writer.py encodes).

The pieces are container.py (the file and its streams), decode.py (PyAV and OpenCV) and
images.py (image sequences); what the rest of edge uses of them is named here.
"""

import os
from collections.abc import Iterator
from fractions import Fraction

import av

from .choices import Decoder, Pixels, check_choice, words
from .container import (MAX_CORRUPT_TIMES, DecodeStats, VideoInfo, audio_stream, displayed, first_frame, open_input,
                        quarter_turns, video_stream)
from .decode import Selector, opencv_frames, pyav_frames
from .errors import InputError, UsageError
from .frames import Frame
from .images import IMAGE_SEQUENCE_FPS, image_frames, image_sequence, natural_order, probe_images, sequence_name

# what the rest of edge reads video with, whichever module of the three it lives in
__all__ = ["DECODERS", "IMAGE_SEQUENCE_FPS", "MAX_CORRUPT_TIMES", "PIXELS", "DecodeStats", "VideoInfo",
           "check_read_options", "image_sequence", "natural_order", "probe", "read_frames", "sequence_name"]

DECODERS = words(Decoder)
PIXELS = words(Pixels)


def probe(path: str | os.PathLike, *, stream: int = 0) -> VideoInfo:
    """Describe video stream `stream` of `path`; InputError if it cannot be read as video. A
    folder or a glob of images is a video of those images in name order (see image_sequence)."""
    path, index = os.fspath(path), stream
    images = image_sequence(path)
    if images is not None:
        return probe_images(path, images)
    with open_input(path) as container:
        stream = video_stream(container, path, index)
        # The display matrix only reaches us on decoded frames: PyAV 18 exposes no stream
        # side data, so decode the first frame.
        first = first_frame(container, stream)
        if first is None:
            raise InputError(f"no frame of {path} can be decoded; the file is truncated or corrupt")
        rotation = quarter_turns(first.rotation) * 90
        ctx = stream.codec_context
        width, height = displayed(ctx.width, ctx.height, stream.sample_aspect_ratio, rotation // 90)
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
    every frame does. With "planes" or "selected" and some frames unselected, the PyAV decoder
    decodes only what the selected frames need, where the codec and the file let that be exact
    (decode.sparsely), and `stats.decoded` counts only what it decoded. Frames up to index
    `resume_after` are not yielded nor converted: selection, times and `stats` (but for
    `decoded`) then go on exactly as in a whole read, which a resumed run needs. Options are checked
    here; the file is opened on the first `next()`. `threads` caps PyAV's decoding threads
    (None: FFmpeg's own choice), for several decodes sharing a machine.
    """
    select = check_read_options(decoder=decoder, start_s=start_s, end_s=end_s, stride=stride, sample_fps=sample_fps,
                                stream=stream)
    check_choice("pixels", pixels, PIXELS)
    stats = stats if stats is not None else DecodeStats()
    images = image_sequence(os.fspath(path))
    if images is not None:
        return image_frames(os.fspath(path), images, start_s, end_s, select, pixels, stats, resume_after)
    if decoder == "opencv":
        return _probed_for_opencv(os.fspath(path), start_s, end_s, select, pixels, stats, resume_after)
    return pyav_frames(os.fspath(path), start_s, end_s, select, pixels, stats, stream, resume_after, threads)


def _probed_for_opencv(path: str, *args) -> Iterator[Frame]:
    """OpenCV's frames, the file probed (with PyAV) on the first next(), as PyAV's open it then."""
    yield from opencv_frames(path, probe(path), *args)


def check_read_options(*, decoder: str, start_s: float | None, end_s: float | None, stride: int,
                       sample_fps: float | None, stream: int = 0) -> "Selector":
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
    return Selector(stride, sample_fps)
