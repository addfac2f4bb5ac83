"""The stages one input's frames flow through, each a generator over the one before:

decode (media.read_frames) → batch_frames (preprocess the selected frames) → infer →
postprocess → write_sinks. A Batch is the record that flows between them; Tally counts what the
sinks stage wrote.
"""

import dataclasses
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import media, tasks
from ..device import DevicePath, finite_rows, host, host_rgb
from ..errors import EdgeError, OutputError
from ..frames import Frame
from ..geometry import Preprocessor, planes_size
from ..resume import Checkpoint, Checkpoints
from ..sinks import Staging
from .models import Model
from .options import RunOptions




@dataclass(slots=True)
class Batch:
    """Consecutive frames (selected or not) and, per model, what the selected ones became."""

    frames: list[Frame]
    inputs: dict[tuple, np.ndarray] = field(default_factory=dict)
    windows: dict[tuple, list] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    results: dict[str, list] = field(default_factory=dict)
    nonfinite: dict[str, list[float]] = field(default_factory=dict)  # per model, times of frames with NaN/Inf out
    postprocess_state: dict[str, dict] = field(default_factory=dict)  # per model, its postprocessor's after this batch

    @property
    def selected(self) -> list[Frame]:
        return [f for f in self.frames if f.selected]


@dataclass
class Tally:
    """How far the sinks stage got: frames written (every frame in range) and processed, the
    last one's index and time, and per model the times of frames whose output was NaN or Inf.
    Plain values, so a checkpoint stores it as it is."""

    written: int = 0
    processed: int = 0
    last_index: int = -1
    last_time_s: float | None = None
    nonfinite: dict[str, list] = field(default_factory=dict)  # model → [count, first times]

    def add_nonfinite(self, name: str, times: list[float]) -> None:
        count, kept = self.nonfinite.setdefault(name, [0, []])
        self.nonfinite[name][0] = count + len(times)
        kept.extend(times[: media.MAX_CORRUPT_TIMES - len(kept)])

    def nonfinite_record(self, name: str) -> dict:
        count, times = self.nonfinite.get(name, [0, []])
        return {"nonfinite_output": count, "nonfinite_times_s": times}


def pixels_for(task_names, *, on_device: bool = False, upload: str | None = "rgb") -> str:
    """What the decoder must give. On the host: I420 planes, which preprocessing converts at the
    model's size and overlays are drawn on (edge/i420.py), of every frame when a task draws an
    overlay, else of the selected ones. To a device, frames go as planes (half the bytes,
    converted there) or RGB (`upload`), every frame where an overlay is drawn there, but RGB for
    all where one is drawn on the host."""
    task_names = set(task_names)
    overlays = any(map(tasks.writes_overlay, task_names))
    if not on_device:
        return "all_planes" if overlays else "planes"
    if draws_on_host(task_names):
        return "all"
    # what is left draws its overlay on the device, from every frame
    if upload == "planes":
        return "all_planes" if overlays else "planes"
    return "all" if overlays else "selected"


def draws_on_host(task_names) -> bool:
    """Whether a task writes an overlay drawn on the host even when frames go to a device."""
    return any(tasks.writes_overlay(task) and not tasks.module(task).DRAWS_ON_DEVICE for task in task_names)


def batch_frames(frames, models: list[Model], size: int, device_path: DevicePath | None = None, *,
                 rgb_first: bool = False):
    """Group frames so each batch holds `size` selected ones; preprocess those once per distinct
    model input (models that agree on size and normalization share it), on the host or, given
    a device path, on the device. `rgb_first`: a frame's planes are converted whole before
    resizing, as when overlays had every frame decoded to RGB, so that drawing on planes
    (pixels "all_planes") changes no model input; resizing planes first differs within a level
    or two where colours clip."""
    preprocessors = {}
    for model in models:
        preprocessors.setdefault(model.preprocess_key, Preprocessor(model.contract))
    pending: list[Frame] = []
    selected = 0
    for frame in frames:
        pending.append(frame)
        selected += frame.selected
        if selected == size:
            yield _prepare(pending, preprocessors, device_path, rgb_first)
            pending, selected = [], 0
    if pending:
        yield _prepare(pending, preprocessors, device_path, rgb_first)


def _prepare(frames: list[Frame], preprocessors: dict, device_path: DevicePath | None, rgb_first: bool) -> Batch:
    batch = Batch(frames)
    if device_path is not None:
        _prepare_on_device(batch, preprocessors, device_path)
        return batch
    images = [host_rgb(f) if rgb_first or f.planes is None else f.planes for f in batch.selected]
    if images:
        sizes = [image.shape[:2] if image.ndim == 3 else planes_size(image) for image in images]
        for key, prep in preprocessors.items():
            batch.inputs[key] = prep(images)
            batch.windows[key] = [prep.window(size) for size in sizes]
    return batch


def _prepare_on_device(batch: Batch, preprocessors: dict, device_path: DevicePath) -> None:
    """The selected frames go to the device, as planes or RGB, and stay there for drawing on;
    the others go, if a task draws on them there, one at a time when they are drawn, so the
    device holds a batch of frames however sparse the selection."""
    sent = batch.selected
    if not sent:
        return
    if len({f.planes is None for f in sent}) > 1:  # the colour tags changed mid-stream: RGB for all
        for frame in sent:
            frame.image, frame.planes = host_rgb(frame), None
    with device_path.stage():
        if sent[0].planes is not None:
            uploaded = device_path.rgb(device_path.upload([f.planes for f in sent]))
        else:
            uploaded = device_path.upload([f.image for f in sent])
        for frame, on_device in zip(sent, uploaded):
            frame.on_device = on_device
        for key, prep in preprocessors.items():
            # every frame of a stream has one size: the decoder skips a frame of another as damaged
            window = prep.window(tuple(uploaded.shape[1:3]))
            batch.inputs[key] = device_path.model_input(uploaded, window, prep.contract)
            batch.windows[key] = [window] * len(sent)


def infer(batches, models: list[Model], device_path: DevicePath | None = None):
    for batch in batches:
        if batch.inputs:
            for model in models:
                pixels = batch.inputs[model.preprocess_key]
                if device_path is None:
                    batch.outputs[model.folder_name] = model.backend.run(pixels)
                    continue
                with device_path.stage():
                    batch.outputs[model.folder_name] = model.backend.run_tensor(pixels)
        yield batch


def postprocess(batches, models: list[Model], options: tasks.Options, resumed: Checkpoint | None = None,
                device_path: DevicePath | None = None):
    """Each model's raw output into per-frame results. A frame whose output holds NaN or Inf gets
    no result (its overlay shows the frame as it is, its rows are left out) and is counted by
    time: a broken model or an fp16 overflow must show, never become a plausible overlay. A
    postprocessor with memory along the video leaves its state after each batch in the batch,
    for the checkpoint the sinks stage may take there. Outputs on a device stay there for a
    task that draws on the device; the few numbers of the others come to the host."""
    decoders = {m.folder_name: tasks.module(m.contract.task).postprocessor(m.contract, options) for m in models}
    on_device = {m.folder_name for m in models if tasks.module(m.contract.task).DRAWS_ON_DEVICE}
    if resumed is not None:
        for name, decoder in decoders.items():
            if resumed.models[name]["postprocess"] is not None:
                decoder.restore(resumed.models[name]["postprocess"])
    for batch in batches:
        if batch.inputs:
            selected = batch.selected
            for model in models:
                name = model.folder_name
                raw = batch.outputs.pop(name)
                if name not in on_device:
                    raw = host(raw)
                windows = batch.windows[model.preprocess_key]
                with device_path.stage() if device_path else nullcontext():
                    finite = finite_rows(raw)
                    if finite is None or finite.all():
                        batch.results[name] = decoders[name](raw, selected, windows)
                        continue
                    batch.nonfinite[name] = [f.pts_s for f, ok in zip(selected, finite) if not ok]
                    keep = np.flatnonzero(finite).tolist()
                    good = iter(decoders[name](raw[keep], [selected[i] for i in keep], [windows[i] for i in keep])
                                if keep else [])
                    batch.results[name] = [next(good) if ok else None for ok in finite]
        for name, decoder in decoders.items():
            if hasattr(decoder, "state"):
                batch.postprocess_state[name] = decoder.state()
        batch.inputs.clear()  # the model inputs are dead weight from here on
        yield batch


@dataclass(frozen=True)
class Outputs:
    """What the sinks stage needs to know besides the models and their staging folders."""

    video: media.VideoInfo
    options: RunOptions
    start_s: float  # output times are input times minus this
    checkpoints: Checkpoints
    device_path: DevicePath | None = None
    codec_threads: int | None = None  # the encoder's


def write_sinks(batches, models: list[Model], stagings: dict[str, Staging], tally: Tally, outputs: Outputs):
    try:
        yield from _write_sinks(batches, models, stagings, tally, outputs)
    except EdgeError:
        raise
    except OSError as err:  # a full disk, or the output folder removed under the run
        raise cannot_write(next(iter(stagings.values())).out_dir.parent, err) from err


def cannot_write(folder: Path, err: OSError) -> OutputError:
    return OutputError(f"cannot write the outputs in {folder}: {err.strerror or err}; check the free disk space "
                       f"and that the output folder still exists")


def _write_sinks(batches, models, stagings, tally: Tally, outputs: Outputs):
    video, options, checkpoints = outputs.video, outputs.options, outputs.checkpoints
    resumed = checkpoints.resumed
    # unselected frames show the latest result
    held = dict(resumed.held) if resumed else {m.folder_name: None for m in models}
    # checkpoints fall after the batch that reaches each multiple of this many frames
    every = max(1, round(options.checkpoint_s * (video.fps or media.IMAGE_SEQUENCE_FPS)))
    next_checkpoint = (tally.written // every + 1) * every
    with ExitStack() as stack:
        sinks = {}
        for model in models:
            name = model.folder_name
            ctx = tasks.SinkContext(stagings[name].dir, model.contract, video, options.task_options, outputs.start_s,
                                    options.end_s, outputs.device_path.device if outputs.device_path else None,
                                    outputs.codec_threads)
            sinks[name] = tasks.module(model.contract.task).sinks(ctx)
            if resumed:
                for sink, state in zip(sinks[name], resumed.models[name]["sinks"], strict=True):
                    sink.restore(state)
            for sink in sinks[name]:
                stack.enter_context(sink)
        for batch in batches:
            results = {name: iter(rs) for name, rs in batch.results.items()}
            for frame in batch.frames:
                for name, model_sinks in sinks.items():
                    if frame.selected:
                        held[name] = next(results[name])
                    for sink in model_sinks:
                        sink.write(frame, held[name])
                tally.processed += frame.selected
                tally.written += 1
                tally.last_index, tally.last_time_s = frame.index, frame.pts_s
            for name, times in batch.nonfinite.items():
                tally.add_nonfinite(name, times)
            if tally.written >= next_checkpoint:
                checkpoints.save(
                    dataclasses.asdict(tally),
                    {name: {"staging": stagings[name].dir.name, "sinks": [sink.checkpoint() for sink in model_sinks],
                            "postprocess": batch.postprocess_state.get(name)} for name, model_sinks in sinks.items()},
                    held)
                next_checkpoint = (tally.written // every + 1) * every
        yield from ()  # the last stage yields nothing, but every stage is a generator


def sinks_alone(batches: list[Batch], model: Model, folder: Path, video: media.VideoInfo, options: tasks.Options,
                *, end_s: float | None = None) -> None:
    """The sinks stage by itself, as a run takes it (checkpoints included), over one model's
    postprocessed batches, into `folder`: what edge-bench times of it."""
    run_options = RunOptions(batch=len(batches[0].frames), end_s=end_s, task_options=options)
    checkpoints = Checkpoints(folder, {}, {model.folder_name: model.contract.task})
    outputs = Outputs(video, run_options, max(0.0, video.start_s), checkpoints)
    for _ in write_sinks(iter(batches), [model], {model.folder_name: Staging(folder / model.folder_name)}, Tally(),
                         outputs):
        pass
