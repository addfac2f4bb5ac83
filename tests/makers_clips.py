"""Small synthetic clips for tests, written with PyAV into the folder a test gives."""

import itertools
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np

TONE_HZ = 440
AUDIO_RATE = 48000
# Fine enough for the VFR times tests pick, and within mpeg4's 65535 limit.
VFR_TIME_BASE = Fraction(1, 1000)


def solid(h: int, w: int, rgb: tuple[int, int, int]) -> np.ndarray:
    """An HxW frame of one colour."""
    return np.full((h, w, 3), rgb, np.uint8)


def square(h: int, w: int, y: int, x: int, *, size: int = 8, rgb=(255, 255, 255)) -> np.ndarray:
    """A black HxW frame with a size x size square whose top-left corner is at (y, x)."""
    frame = solid(h, w, (0, 0, 0))
    frame[y : y + size, x : x + size] = rgb
    return frame


def ramp(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    """n solid frames whose grey level (16 + 8*i, wrapping) says which frame each is."""
    return [solid(h, w, (16 + 8 * i % 224,) * 3) for i in range(n)]


def make_clip(
    path,
    frames: Iterable[np.ndarray],
    *,
    fps: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    times_s: list[float] | None = None,
    audio: bool = False,
    audio_codec: str = "aac",
    rotation: int = 0,
) -> None:
    """Encode RGB frames to `path` (container from its extension: .mp4, .mkv, .avi, .mov).

    `times_s` gives each frame's time for variable frame rate; `audio` adds a sine tone
    as long as the video; `rotation` (counterclockwise degrees) goes in the display matrix.
    """
    frames = iter(frames)
    first = next(frames)
    time_base = VFR_TIME_BASE if times_s is not None else Fraction(1, fps)
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.height, video.width = first.shape[:2]
        video.pix_fmt = pix_fmt
        video.codec_context.time_base = time_base
        if rotation:
            video.set_display_rotation(rotation)
        tone = out.add_stream(audio_codec, rate=AUDIO_RATE, layout="mono") if audio else None
        end_s = 0.0
        for i, rgb in enumerate(itertools.chain([first], frames)):
            t = times_s[i] if times_s is not None else i / fps
            end_s = t + 1 / fps
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = round(t / time_base)
            frame.time_base = time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if tone:
            # After the video, so frames can stream in: the muxer interleaves what it gets.
            _write_tone(out, tone, end_s)


def make_tone(path, seconds: float, *, codec: str = "aac") -> None:
    """An audio-only file: a sine tone of `seconds`."""
    with av.open(str(path), "w") as out:
        _write_tone(out, out.add_stream(codec, rate=AUDIO_RATE, layout="mono"), seconds)


def _write_tone(out, stream, seconds: float) -> None:
    samples = 0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(round(seconds * AUDIO_RATE)) / AUDIO_RATE)
    samples = samples.astype(np.float32)[None]
    # 1024-sample frames, or PCM would become one packet; PyAV converts them to the
    # encoder's sample format and frame size itself.
    for start in range(0, samples.shape[1], 1024):
        frame = av.AudioFrame.from_ndarray(samples[:, start : start + 1024], format="flt", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def has_encoder(name: str) -> bool:
    """Whether this FFmpeg build has the encoder `name`."""
    try:
        av.codec.Codec(name, "w")
    except Exception:  # PyAV raises several kinds for an encoder this FFmpeg build lacks
        return False
    return True
