"""The options that take one of a few words: each a Literal type, which code declares and
argparse offers as its choices, and one check, for callers of the API."""

from typing import Literal, get_args

from .errors import UsageError

Decoder = Literal["pyav", "opencv"]
BackendName = Literal["auto", "onnxruntime", "torch", "tensorrt"]
Device = Literal["cpu", "cuda"]
Precision = Literal["fp32", "fp16"]
Upload = Literal["auto", "planes", "rgb"]  # how frames go to a model's device
FramesOn = Literal["auto", "host", "device"]  # where frames meet the models
Pixels = Literal["all", "selected", "planes", "all_planes"]  # what the decoder hands on
Encoder = Literal["libx264", "h264_nvenc"]


def words(kind) -> tuple[str, ...]:
    """A Literal type's words, in order."""
    return get_args(kind)


def check_choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UsageError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
