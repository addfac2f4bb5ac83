"""`run()`: one call that streams videos through models into output folders.

decode → batch (preprocess the selected frames) → infer → postprocess → sinks, each stage a
thread (see pipeline.py). Several models share one decode; each gets its own output folder.
"""

import datetime
import os
import platform
import signal
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import __version__, backends, media, tasks
from .errors import EdgeError, InputError, Interrupted, ModelError, OutputError, UsageError, user_line
from .frames import Frame
from .geometry import Preprocessor, planes_size
from .model import TASKS, Contract, file_sha256, parse
from .pipeline import Pipeline, Stage
from .sinks import Staging, write_json

MODEL_DIR_ENV = "EDGE_MODEL_DIR"
TOOL = {"name": "edge", "version": __version__, "python": platform.python_version()}  # in every run.json


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Model:
    path: str
    contract: Contract
    backend: backends.Backend
    folder_name: str = ""
    sha256: str = ""

    @property
    def preprocess_key(self) -> tuple:
        """Models that agree on this share one preprocessed batch."""
        c = self.contract
        return (c.input_size, c.input_format, c.resize, c.channel_order, c.mean, c.std)


@dataclass(slots=True)
class Batch:
    """Consecutive frames (selected or not) and, per model, what the selected ones became."""

    frames: list[Frame]
    inputs: dict[tuple, np.ndarray] = field(default_factory=dict)
    windows: dict[tuple, list] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    results: dict[str, list] = field(default_factory=dict)

    @property
    def selected(self) -> list[Frame]:
        return [f for f in self.frames if f.selected]


def default_model(task: str) -> str:
    folder = os.environ.get(MODEL_DIR_ENV) or str(Path(__file__).parent / "models")
    path = os.path.join(folder, f"{task}.onnx")
    if not os.path.isfile(path):
        raise ModelError(
            f"no default {task} model at {path}; pass --model FILE.onnx "
            f"(edge-export writes one) or set {MODEL_DIR_ENV} to a folder holding {task}.onnx"
        )
    return path


def load_models(model_paths, task_names, *, backend: str = "auto", device: str | None, threads: int | None,
                batch: int | None = None, precision: str | None = None, notice=lambda message: None) -> list[Model]:
    """Load and validate every model before any video is opened, so a bad one fails fast."""
    unknown = [t for t in task_names if t not in TASKS]
    if unknown:
        raise UsageError(f"unknown task {unknown[0]!r}; allowed: {', '.join(TASKS)}")
    paths = list(model_paths)
    if not paths:
        paths = [default_model(t) for t in task_names]
        for task, path in zip(task_names, paths):
            notice(f"--task {task}: using the default model {path}")
    if not paths:
        raise UsageError("give --model FILE.onnx or --task with one of: " + ", ".join(TASKS))
    models = []
    for path in paths:
        loaded = backends.load(path, backend=backend, device=device, threads=threads, batch=batch,
                               precision=precision)
        contract = parse(loaded.metadata, source=path)
        check_io(path, loaded, contract)
        models.append(Model(path, contract, loaded, sha256=file_sha256(path)))
    if model_paths and task_names:
        found = sorted({m.contract.task for m in models})
        if found != sorted(set(task_names)):
            raise ModelError(f"--task {','.join(task_names)} conflicts with the models' own tasks: {','.join(found)}")
    counts = {t: sum(m.contract.task == t for m in models) for t in TASKS}
    for model in models:
        task = model.contract.task
        model.folder_name = task if counts[task] == 1 else f"{task}-{Path(model.path).stem}"
    return models


def check_io(path: str, backend, contract: Contract) -> None:
    """The graph's declared input must be what the contract promises to feed it."""
    dtype = "tensor(uint8)" if contract.input_format == "uint8_nhwc" else "tensor(float)"
    if getattr(backend, "input_type", dtype) != dtype:
        raise ModelError(f"{path}: the graph takes {backend.input_type} but the contract says {contract.input_format}")
    declared = getattr(backend, "input_shape", None)
    if not declared or len(declared) != 4:
        return
    h, w = contract.input_size
    expected = [h, w, 3] if contract.input_format == "uint8_nhwc" else [3, h, w]
    for got, want in zip(declared[1:], expected):
        if isinstance(got, int) and got != want:
            raise ModelError(
                f"{path}: the graph takes input {declared} but the contract says "
                f"{contract.input_format} at {h}x{w}; export it again"
            )


@contextmanager
def signals_raise():
    """SIGTERM becomes an exception in the main thread, like Ctrl-C, so cleanup runs."""
    def on_term(signum, frame):
        raise Interrupted(signum)

    if os.name != "posix" or not _is_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(signal.SIGINT) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run(
    inputs: list[str],
    *,
    models: list[str] = (),
    tasks_: list[str] = (),
    out: str = "edge-out",
    batch: int | None = None,
    decoder: str = "pyav",
    stream: int = 0,
    stride: int = 1,
    sample_fps: float | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    backend: str = "auto",
    device: str | None = None,
    threads: int | None = None,
    precision: str | None = None,
    options: tasks.Options = tasks.Options(),
    progress=None,
    notice=lambda message: None,
) -> list[dict]:
    """Run every model over every input; returns one summary dict per input (also in run.json)."""
    media.check_read_options(decoder=decoder, start_s=start_s, end_s=end_s, stride=stride, sample_fps=sample_fps,
                             stream=stream)
    check_options(batch=batch, options=options)
    with signals_raise():
        loaded = load_models(models, tasks_, backend=backend, device=device, threads=threads, batch=batch,
                             precision=precision, notice=notice)
        infos = [media.probe(path, stream=stream) for path in inputs]  # every input checked before any work
        for info in infos:
            if info.video_streams > 1:
                notice(f"{info.path} has {info.video_streams} video streams; reading stream {info.stream} (--stream)")
        return [
            run_one(info, loaded, out=Path(out), batch=batch or loaded[0].backend.default_batch, decoder=decoder,
                    stride=stride, sample_fps=sample_fps, start_s=start_s, end_s=end_s, options=options,
                    progress=progress)
            for info in infos
        ]


def check_options(*, batch, options) -> None:
    if batch is not None and batch < 1:
        raise UsageError(f"--batch must be 1 or more, got {batch}")
    if not 0 <= options.alpha <= 1:
        raise UsageError(f"--alpha must be between 0 and 1, got {options.alpha}")
    if options.threshold is not None and not 0 <= options.threshold <= 1:
        raise UsageError(f"--threshold must be between 0 and 1, got {options.threshold}")
    if options.preset not in media.X264_PRESETS:
        raise UsageError(f"--preset {options.preset!r} is not an x264 preset; allowed: {', '.join(media.X264_PRESETS)}")
    if options.min_duration_s < 0:
        raise UsageError(f"--min-duration must be 0 or more seconds, got {options.min_duration_s}")


def run_one(info: media.VideoInfo, models: list[Model], *, out: Path, batch: int, decoder: str, stride: int,
            sample_fps: float | None, start_s: float | None, end_s: float | None, options: tasks.Options,
            progress) -> dict:
    started_at = datetime.datetime.now(datetime.timezone.utc)
    wall, cpu = time.perf_counter(), time.process_time()
    stats = media.DecodeStats()
    counts = {"written": 0, "processed": 0, "last_time_s": None}
    nonfinite = Nonfinite()
    stagings: dict[str, Staging] = {}
    folder = out / media.sequence_name(info.path)
    try:
        for m in models:
            stagings[m.folder_name] = Staging(folder / m.folder_name)
        stages = [
            Stage("decode", lambda: media.read_frames(
                info.path, decoder=decoder, start_s=start_s, end_s=end_s, stride=stride, sample_fps=sample_fps,
                pixels=pixels_for(m.contract.task for m in models), stats=stats, stream=info.stream)),
            Stage("preprocess", lambda frames: batch_frames(frames, models, batch)),
            Stage("infer", lambda batches: infer(batches, models)),
            Stage("postprocess", lambda batches: postprocess(batches, models, options, nonfinite)),
            # output videos start at 0 even when the input starts later (MPEG-TS) or --start is given
            Stage("sinks", lambda batches: write_sinks(batches, models, stagings, info, options,
                                                      max(start_s or 0.0, info.start_s), end_s, counts)),
        ]
        pipeline = Pipeline(stages)
        expected = expected_frames(info, start_s, end_s)
        with opencv_threads(1 if all(m.backend.device == "cpu" for m in models) else None):
            pipeline.start()
            pipeline.wait(on_tick=(lambda: progress(counts["written"], expected)) if progress else (lambda: None))
        if counts["written"] == 0:
            if start_s is not None or end_s is not None:
                raise InputError(f"{info.path}: no frames to process between --start and --end; check the times")
            raise InputError(f"{info.path}: no frame could be decoded; the file is damaged, or try --decoder pyav")
        elapsed = time.perf_counter() - wall
        summary = {
            "status": "done",
            "input": os.path.abspath(info.path),
            "video": {"stream": info.stream, "width": info.width, "height": info.height, "fps": info.fps,
                      "codec": info.codec, "duration_s": info.duration_s, "audio_codec": info.audio_codec,
                      "rotation": info.rotation},
            "frames": {"decoded": stats.decoded, "in_range": counts["written"], "processed": counts["processed"],
                       "not_selected": counts["written"] - counts["processed"], "corrupt_skipped": stats.corrupt,
                       "corrupt_times_s": stats.corrupt_times_s, "last_time_s": counts["last_time_s"],
                       "read_error": stats.read_error},
            "stopped_early": stopped_early(info, counts["last_time_s"], end_s),
            "options": {"decoder": decoder, "batch": batch, "stride": stride, "sample_fps": sample_fps,
                        "start_s": start_s, "end_s": end_s, "alpha": options.alpha, "threshold": options.threshold,
                        "min_duration_s": options.min_duration_s, "save_masks": options.save_masks,
                        "preset": options.preset},
            "seconds": {"total": round(elapsed, 3), "cpu": round(time.process_time() - cpu, 3),
                        **{s.name: round(s.busy_s, 3) for s in stages}},
            # each stage thread's own CPU; the rest of "cpu" ran in native pools (onnxruntime's
            # workers, the decoder's and x264's threads)
            "stage_cpu_s": {s.name: round(s.cpu_s, 3) for s in stages},
            "frames_per_s": round(counts["written"] / elapsed, 2),
            "processed_per_s": round(counts["processed"] / elapsed, 2),
            "tool": TOOL,
            "started_at": started_at.isoformat(timespec="seconds"),
            "finished_at": now_iso(),
            "outputs": {name: str(staging.out_dir) for name, staging in stagings.items()},
            "models": {m.folder_name: {**model_record(m), **nonfinite.record(m.folder_name)} for m in models},
        }
        try:
            for name, staging in stagings.items():
                record = {k: v for k, v in summary.items() if k not in ("outputs", "models")}
                record["model"] = summary["models"][name]
                record["files"] = sorted(p.name for p in staging.dir.iterdir()) + ["run.json"]
                write_json(staging.path("run.json"), record)
            for staging in stagings.values():
                staging.commit()
        except OSError as err:
            raise cannot_write(folder, err) from err
        return summary
    except BaseException as err:
        for staging in stagings.values():
            staging.discard()
        if counts["written"] or isinstance(err, (Interrupted, KeyboardInterrupt)):
            record_stop(stagings, info, err, counts, started_at)
        raise


def record_stop(stagings: dict, info: media.VideoInfo, err: BaseException, counts: dict,
                started_at: datetime.datetime) -> None:
    """A run that did not finish leaves run.json with its status, the error and how far it got,
    in each output folder that holds no earlier run's outputs (those, with their own run.json,
    stay as they were). Nothing else: no output carries a final name unfinished."""
    interrupted = isinstance(err, (Interrupted, KeyboardInterrupt))
    record = {
        "status": "interrupted" if interrupted else "failed",
        "error": user_line(err) if isinstance(err, EdgeError) else f"{type(err).__name__}: {err}",
        "input": os.path.abspath(info.path),
        "frames": {"in_range": counts["written"], "processed": counts["processed"],
                   "last_time_s": counts["last_time_s"]},
        "tool": TOOL,
        "started_at": started_at.isoformat(timespec="seconds"),
        "stopped_at": now_iso(),
        "files": [],
    }
    for staging in stagings.values():
        try:
            if not any(not p.name.startswith(".") for p in staging.out_dir.iterdir()):
                write_json(staging.out_dir / "run.json", record)
        except OSError:
            pass  # the record is a courtesy: the error the user sees is the one being raised


@contextmanager
def opencv_threads(threads: int | None):
    """OpenCV's own thread pool set to `threads` (None: left alone) for the duration. With the
    model on the CPU, inference and the pipeline's stage threads already keep every core busy;
    OpenCV waking its pool for each resize, conversion and blend on top only adds switching
    (measured on 2 cores: 0.7 ms less CPU a frame, about 4% more frames/s, with it off)."""
    if threads is None:
        yield
        return
    previous = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def model_record(m: Model) -> dict:
    return {"path": os.path.abspath(m.path), "sha256": m.sha256, "task": m.contract.task,
            "backend": m.backend.name, "device": m.backend.device,
            "producer": m.contract.producer, "producer_version": m.contract.producer_version}


def stopped_early(info: media.VideoInfo, last_time_s: float | None, end_s: float | None) -> dict | None:
    """Where the frames ran out, when that is well before the end the container declares: a
    file cut short (an interrupted copy or recording). None when the run reached the end, or
    when the container declares none (MPEG-TS estimates its duration from what is there)."""
    if last_time_s is None or info.declared_end_s is None or not info.fps:
        return None
    expected_s = info.declared_end_s
    if end_s is not None:
        expected_s = min(expected_s, end_s)
    reached_s = last_time_s + 1 / info.fps
    # lenient: a variable-rate file's last frame may be shown long; only a clear gap counts
    if reached_s >= expected_s - max(2 / info.fps, 0.5):
        return None
    return {"at_s": round(reached_s, 3), "expected_end_s": round(expected_s, 3)}


def pixels_for(task_names) -> str:
    """What the decoder must give: every frame's RGB when a task draws an overlay, else only the
    selected frames' I420 planes, which preprocessing converts at the model's size."""
    return "all" if any(task in ("camvid", "biwi") for task in task_names) else "planes"


def expected_frames(info: media.VideoInfo, start_s: float | None, end_s: float | None) -> int | None:
    """Frames the run should see, for the progress bar's ETA; None when the container won't say."""
    if not (start_s or end_s):
        return info.frame_count
    if not (info.fps and info.duration_s):
        return None
    end = min(end_s, info.duration_s) if end_s is not None else info.duration_s
    return max(0, round((end - (start_s or 0.0)) * info.fps))


def batch_frames(frames, models: list[Model], size: int):
    """Group frames so each batch holds `size` selected ones; preprocess those once per distinct
    model input (models that agree on size and normalization share it)."""
    preprocessors = {}
    for model in models:
        preprocessors.setdefault(model.preprocess_key, Preprocessor(model.contract))
    pending: list[Frame] = []
    selected = 0
    for frame in frames:
        pending.append(frame)
        selected += frame.selected
        if selected == size:
            yield _prepare(pending, preprocessors)
            pending, selected = [], 0
    if pending:
        yield _prepare(pending, preprocessors)


def _prepare(frames: list[Frame], preprocessors: dict) -> Batch:
    batch = Batch(frames)
    images = [f.image if f.image is not None else f.planes for f in batch.selected]
    if images:
        sizes = [image.shape[:2] if image.ndim == 3 else planes_size(image) for image in images]
        for key, prep in preprocessors.items():
            batch.inputs[key] = prep(images)
            batch.windows[key] = [prep.window(size) for size in sizes]
    return batch


def infer(batches, models: list[Model]):
    for batch in batches:
        if batch.inputs:
            for model in models:
                batch.outputs[model.folder_name] = model.backend.run(batch.inputs[model.preprocess_key])
        yield batch


class Nonfinite:
    """Per model, how many processed frames had NaN or Inf in its output, and the first times."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.times: dict[str, list[float]] = {}

    def add(self, name: str, times: list[float]) -> None:
        self.counts[name] = self.counts.get(name, 0) + len(times)
        kept = self.times.setdefault(name, [])
        kept.extend(times[: media.MAX_CORRUPT_TIMES - len(kept)])

    def record(self, name: str) -> dict:
        return {"nonfinite_output": self.counts.get(name, 0), "nonfinite_times_s": self.times.get(name, [])}


def postprocess(batches, models: list[Model], options: tasks.Options, nonfinite: Nonfinite):
    """Each model's raw output into per-frame results. A frame whose output holds NaN or Inf gets
    no result (its overlay shows the frame as it is, its rows are left out) and is counted by
    time: a broken model or an fp16 overflow must show, never become a plausible overlay."""
    decoders = {m.folder_name: tasks.module(m.contract.task).postprocessor(m.contract, options) for m in models}
    for batch in batches:
        if batch.inputs:
            selected = batch.selected
            for model in models:
                name = model.folder_name
                raw = batch.outputs.pop(name)
                windows = batch.windows[model.preprocess_key]
                finite = np.isfinite(raw.reshape(len(raw), -1)).all(axis=1) if raw.dtype.kind == "f" else None
                if finite is None or finite.all():
                    batch.results[name] = decoders[name](raw, selected, windows)
                    continue
                nonfinite.add(name, [f.pts_s for f, ok in zip(selected, finite) if not ok])
                keep = np.flatnonzero(finite)
                good = iter(decoders[name](raw[keep], [selected[i] for i in keep], [windows[i] for i in keep])
                            if len(keep) else [])
                batch.results[name] = [next(good) if ok else None for ok in finite]
        batch.inputs.clear()  # the model inputs are dead weight from here on
        yield batch


def write_sinks(batches, models, stagings, info, options, start_s, end_s, counts):
    try:
        yield from _write_sinks(batches, models, stagings, info, options, start_s, end_s, counts)
    except EdgeError:
        raise
    except OSError as err:  # a full disk, or the output folder removed under the run
        raise cannot_write(next(iter(stagings.values())).out_dir.parent, err) from err


def cannot_write(folder: Path, err: OSError) -> OutputError:
    return OutputError(f"cannot write the outputs in {folder}: {err.strerror or err}; check the free disk space "
                       f"and that the output folder still exists")


def _write_sinks(batches, models, stagings, info, options, start_s, end_s, counts):
    held = {m.folder_name: None for m in models}  # unselected frames show the latest result
    with ExitStack() as stack:
        sinks = {}
        for model in models:
            name = model.folder_name
            ctx = tasks.SinkContext(stagings[name].dir, model.contract, info, options, start_s, end_s)
            sinks[name] = [stack.enter_context(s) for s in tasks.module(model.contract.task).sinks(ctx)]
        for batch in batches:
            results = {name: iter(rs) for name, rs in batch.results.items()}
            for frame in batch.frames:
                for name, model_sinks in sinks.items():
                    if frame.selected:
                        held[name] = next(results[name])
                    for sink in model_sinks:
                        sink.write(frame, held[name])
                counts["processed"] += frame.selected
                counts["written"] += 1
                counts["last_time_s"] = frame.pts_s
        yield from ()  # the last stage yields nothing, but every stage is a generator
