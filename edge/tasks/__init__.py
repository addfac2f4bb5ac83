"""One module per task: how to read a model's raw output and which sinks it writes.

Each module defines `postprocessor(contract, options)` returning a callable that turns one
batch's raw output and the frames' windows into one result per frame (in frame pixels; one
with memory along the video also has `state()` and `restore(state)`), `sinks(ctx)` returning
the context-manager sinks for an output folder, `Result`, the type of a frame's result, and
`WRITES_OVERLAY`: whether it writes an overlay video (drawn on every frame);
`DRAWS_ON_DEVICE`: whether, when frames go to the model's device (edge/device.py), the task's
postprocessor takes the raw output there and its overlay is drawn there; and
`SHIPPED_MODEL_SAW`: what the task's default model, shipped in edge/models/, was trained on,
which a run with it says.
"""

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..device import host

from ..container import VideoInfo
from ..model import Contract


@dataclass(frozen=True)
class Options:
    """The per-task knobs from the command line; None means the model's own value."""

    alpha: float = 0.5
    threshold: float | None = None
    min_duration_s: float = 0.5
    save_masks: bool = False
    # ultrafast: on a 2-core box the overlay's H.264 encode otherwise costs as much CPU as a
    # small model (4.6 ms a 768x576 frame at veryfast, 2.2 at ultrafast); files are ~2.5x larger
    preset: str = "ultrafast"
    encoder: str = "auto"  # of overlay videos: libx264, h264_nvenc, or auto (writer.pick_encoder)


@dataclass(frozen=True)
class SinkContext:
    folder: Path  # the staging folder the sinks write into
    contract: Contract
    video: VideoInfo
    options: Options
    start_s: float  # output video times are shifted by this (the --start of the run)
    end_s: float | None
    device: object = None  # the torch device frames went to, for a task that draws there
    encoder_threads: int | None = None  # x264's, where several jobs share the machine


def module(task: str):
    return importlib.import_module(f"{__name__}.{task}")


def writes_overlay(task: str) -> bool:
    return module(task).WRITES_OVERLAY


def result_arrays(result) -> dict[str, np.ndarray]:
    """A frame's result as named arrays, for np.savez (a checkpoint keeps the result that the
    next unselected frames show)."""
    if isinstance(result, np.ndarray):
        return {"array": result}
    return {f.name: host(getattr(result, f.name)) for f in dataclasses.fields(result)}


def result_from_arrays(task: str, arrays) -> object:
    kind = module(task).Result
    if kind is np.ndarray:
        return np.asarray(arrays["array"])
    return kind(**{f.name: arrays[f.name].item() if arrays[f.name].ndim == 0 else np.asarray(arrays[f.name])
                   for f in dataclasses.fields(kind)})
