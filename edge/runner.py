"""`run()`: one call that streams videos through models into output folders.

decode → batch (preprocess the selected frames) → infer → postprocess → sinks, each stage a
thread (see pipeline.py). Several models share one decode; each gets its own output folder.
"""

import concurrent.futures
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import signal
import threading
import time
from collections import Counter
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import __version__, backends, media, tasks, writer
from .machine import opencv_threads, usable_cores
from .device import DevicePath, finite_rows, for_models, host, host_rgb
from .errors import EdgeError, InputError, Interrupted, ModelError, OutputError, StageError, UsageError, user_line
from .frames import Frame
from .geometry import Preprocessor, planes_size
from .inputs import Job as InputJob
from .inputs import check_some_exist
from .inputs import expand as expand_inputs
from .inputs import short_hash
from .manifest import Manifest
from .model import TASKS, Contract, file_sha256, parse
from .pipeline import POLL_S, Pipeline, Stage
from .resume import Checkpoint, Checkpoints, fingerprint, key_of
from .sinks import Staging, write_json

MODEL_DIR_ENV = "EDGE_MODEL_DIR"
# How much video an interrupted run may have to do again; each checkpoint also starts the
# overlay's encoder afresh on a keyframe, as x264 does every 250 frames anyway.
CHECKPOINT_S = 10.0
UPLOADS = ("auto", "planes", "rgb")
OVERLAY_TASKS = ("camvid", "biwi")  # the tasks that write overlay.mp4
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
    nonfinite: dict[str, list[float]] = field(default_factory=dict)  # per model, times of frames with NaN/Inf out
    postprocess_state: dict[str, dict] = field(default_factory=dict)  # per model, its postprocessor's after this batch

    @property
    def selected(self) -> list[Frame]:
        return [f for f in self.frames if f.selected]


SHIPPED_MODELS = str(Path(__file__).parent / "models")


def default_model(task: str) -> str:
    folder = os.environ.get(MODEL_DIR_ENV) or SHIPPED_MODELS
    path = os.path.join(folder, f"{task}.onnx")
    if not os.path.isfile(path):
        raise ModelError(
            f"no default {task} model at {path}; pass --model FILE.onnx "
            f"(edge-export writes one) or set {MODEL_DIR_ENV} to a folder holding {task}.onnx"
        )
    return path


def default_model_notice(task: str, path: str) -> str:
    if os.path.dirname(path) != SHIPPED_MODELS:  # the user's own, from EDGE_MODEL_DIR
        return f"--task {task}: using the default model {path} ({MODEL_DIR_ENV})"
    return (f"--task {task}: using the default model {path}, trained only on {tasks.module(task).SHIPPED_MODEL_SAW}: "
            f"it shows the pipeline, not real-world accuracy; for real video train your own (edge-train {task} "
            f"--data DIR, then edge-export) and give --model FILE.onnx")


def load_models(model_paths, task_names, *, backend: str = "auto", device: str | None, threads: int | None,
                batch: int | None = None, precision: str | None = None, notice=lambda message: None) -> list[Model]:
    """Load and validate every model before any video is opened, so a bad one fails fast."""
    unknown = [t for t in task_names if t not in TASKS]
    if unknown:
        raise UsageError(f"unknown task {unknown[0]!r}; allowed: {', '.join(TASKS)}")
    paths = list(model_paths)
    twice = next((p for p, n in Counter(os.path.realpath(p) for p in paths).items() if n > 1), None)
    if twice is not None:
        raise UsageError(f"--model {twice} given twice; give each model once")
    if not paths:
        paths = [default_model(t) for t in task_names]
        for task, path in zip(task_names, paths):
            notice(default_model_notice(task, path))
    if not paths:
        raise UsageError("give --model FILE.onnx or --task with one of: " + ", ".join(TASKS))
    models = []
    for path in paths:
        loaded = backends.load(path, backend=backend, device=device, threads=threads, batch=batch,
                               precision=precision, notice=notice)
        contract = parse(loaded.metadata, source=loaded.path)
        check_io(loaded.path, loaded, contract)
        models.append(Model(loaded.path, contract, loaded, sha256=file_sha256(loaded.path)))
    if model_paths and task_names:
        found = sorted({m.contract.task for m in models})
        if found != sorted(set(task_names)):
            raise ModelError(f"--task {','.join(task_names)} conflicts with the models' own tasks: {','.join(found)}")
    for model, name in zip(models, output_names(paths) if model_paths else task_names):
        model.folder_name = name
    return models


def output_names(model_paths: list[str]) -> list[str]:
    """Each model's output folder: named after its file (two models of one task never share
    one), with a short hash of its path added where two files share a name."""
    stems = [Path(path).stem for path in model_paths]
    counts = Counter(stems)
    return [stem if counts[stem] == 1 else f"{stem}-{short_hash(path)}" for stem, path in zip(stems, model_paths)]


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


@contextmanager
def signals_deferred():
    """SIGINT and SIGTERM are held until the block ends, then raised as Interrupted."""
    if os.name != "posix" or not _is_main_thread():
        yield
        return
    caught = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise Interrupted(caught[0])


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@dataclass(frozen=True)
class Settings:
    """Everything besides the inputs and models that shapes a run's outputs."""

    batch: int
    decoder: str = "pyav"
    stride: int = 1
    sample_fps: float | None = None
    start_s: float | None = None
    end_s: float | None = None
    precision: str | None = None
    checkpoint_s: float = CHECKPOINT_S
    upload: str | None = None  # how frames go to a device: I420 planes or RGB; None: they stay on the host
    frames_on: str = "auto"  # where frames meet the models (device.for_models)
    options: tasks.Options = tasks.Options()

    def record(self) -> dict:
        return {"decoder": self.decoder, "batch": self.batch, "stride": self.stride, "sample_fps": self.sample_fps,
                "start_s": self.start_s, "end_s": self.end_s, **dataclasses.asdict(self.options),
                "precision": self.precision, "checkpoint_s": self.checkpoint_s, "upload": self.upload,
                "frames_on": self.frames_on}


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
    resume: bool = False,
    force: bool = False,
    retry_failed: bool = False,
    checkpoint_s: float = CHECKPOINT_S,
    upload: str = "auto",
    frames_on: str = "auto",
    jobs: int = 1,
    ray: str | None = None,
    ray_cpus: int | None = None,
    progress=None,
    notice=lambda message: None,
) -> list[dict]:
    """Run every model over every input (see inputs.py for what an input can be); returns one
    summary dict per input (as in its run.json), and keeps OUT/jobs.json (manifest.py).

    An input already done by the same command is skipped (`force` runs it again), as is one that
    failed (`retry_failed` runs it again); with `resume`, one whose run was interrupted carries on
    from its last checkpoint, taken every `checkpoint_s` seconds of video. With several inputs,
    one that fails is recorded and the others go on; a lone input's error is raised. `jobs`
    inputs run side by side; `ray` (auto, or a cluster's address) spreads them over a Ray
    cluster's nodes instead (cluster.py), each worker reserving `ray_cpus` CPUs, or its node's.
    `progress(input, frames written, frames expected)` is called as each input goes."""
    media.check_read_options(decoder=decoder, start_s=start_s, end_s=end_s, stride=stride, sample_fps=sample_fps,
                             stream=stream)
    check_options(batch=batch, options=options, checkpoint_s=checkpoint_s)
    media.check_choice("upload", upload, UPLOADS)
    if not isinstance(jobs, int) or jobs < 1:
        raise UsageError(f"--jobs must be 1 or more, got {jobs!r}")
    if ray_cpus is not None and ray is None:
        raise UsageError("--ray-cpus goes with --ray: it is the CPUs each Ray worker reserves")
    if ray_cpus is not None and (not isinstance(ray_cpus, int) or ray_cpus < 1):
        raise UsageError(f"--ray-cpus must be 1 or more, got {ray_cpus!r}")
    check_some_exist(inputs)
    setup = Setup(models=tuple(models), tasks_=tuple(tasks_), batch=batch, decoder=decoder, stream=stream,
                  stride=stride, sample_fps=sample_fps, start_s=start_s, end_s=end_s, backend=backend, device=device,
                  threads=threads, precision=precision, options=options, checkpoint_s=checkpoint_s, upload=upload,
                  frames_on=frames_on)
    if ray is not None:
        from .cluster import run_on_ray

        return run_on_ray(ray, inputs, setup, out=out, jobs=jobs, cpus=ray_cpus, force=force,
                          retry_failed=retry_failed, resume=resume, progress=progress, notice=notice)
    out = os.path.abspath(out)  # jobs.json records output folders that a run from another folder finds too
    with signals_raise():
        batch_run = setup.jobs(Manifest(Path(out)), progress=progress, notice=notice)
        inputs_jobs = expand_inputs(inputs, outputs=out)
        if not inputs_jobs:
            raise UsageError("the inputs name no video or image; check the paths and @LIST files")
        batch_run.lone = len(inputs_jobs) == 1
        # every input checked, and every resume, before any work
        folders = output_folders(batch_run.manifest, Path(out), inputs_jobs)
        plans = [batch_run.plan(job, folder=folders[job.key], force=force, retry_failed=retry_failed or resume)
                 for job in inputs_jobs]
        if not batch_run.lone:
            skipped_notice([plan.known for plan in plans if plan.known is not None], len(plans), notice)
        runnable = [plan for plan in plans if plan.known is None]
        replacing_notice(plans, notice)
        jobs = max(1, min(jobs, len(runnable)))
        # jobs side by side divide the cores between their decoders and encoders
        batch_run.threads = None if jobs == 1 else max(1, usable_cores() // jobs)
        for plan in runnable:
            batch_run.prepare(plan, resume=resume)
        batch_run.register(runnable)
        with batch_run.opencv_threads():
            return batch_run.execute_all(plans, jobs)


@dataclass(frozen=True)
class Setup:
    """What a run loads and how it processes, besides its inputs and where outputs go: all a
    Ray worker is given to load the same models and run inputs as this process would."""

    models: tuple[str, ...] = ()
    tasks_: tuple[str, ...] = ()
    batch: int | None = None
    decoder: str = "pyav"
    stream: int = 0
    stride: int = 1
    sample_fps: float | None = None
    start_s: float | None = None
    end_s: float | None = None
    backend: str = "auto"
    device: str | None = None
    threads: int | None = None  # onnxruntime's intra-op threads; None: fit to the machine
    precision: str | None = None
    options: tasks.Options = tasks.Options()
    checkpoint_s: float = CHECKPOINT_S
    upload: str = "auto"
    frames_on: str = "auto"

    def jobs(self, manifest, *, progress, notice, threads: int | None = None) -> "Jobs":
        """The models loaded (`threads`: onnxruntime's, where --threads left them open), the
        settings they imply, and a Jobs to run inputs with them."""
        loaded = load_models(self.models, self.tasks_, backend=self.backend, device=self.device,
                             threads=self.threads or threads, batch=self.batch, precision=self.precision,
                             notice=notice)
        device_path = for_models([m.backend for m in loaded], self.frames_on)
        upload = self.upload
        if device_path is None:
            upload = None
        elif draws_on_host(m.contract.task for m in loaded):
            upload = "rgb"  # its overlay is drawn on the host, from the frame's RGB there (biwi's trail)
        elif upload == "auto":
            # On CPU tensors, cv2's conversion on the host beat torch's (720p camvid: 21.3 against
            # 13.3 frames/s); on a GPU, planes halve the bytes and spare the host the conversion.
            upload = "planes" if device_path.cuda else "rgb"
        settings = Settings(batch=self.batch or loaded[0].backend.default_batch, decoder=self.decoder,
                            stride=self.stride, sample_fps=self.sample_fps, start_s=self.start_s, end_s=self.end_s,
                            precision=self.precision, checkpoint_s=self.checkpoint_s, upload=upload,
                            frames_on=self.frames_on, options=self.options)
        return Jobs(loaded, settings, manifest, stream=self.stream, lone=False, device_path=device_path,
                    progress=progress, notice=notice)

    @property
    def cuda(self) -> bool:
        """Whether its models run on a GPU."""
        engines = any(str(path).endswith(".engine") for path in self.models)
        return backends.default_device("tensorrt" if engines else self.backend, self.device).startswith("cuda")


@dataclass
class Plan:
    """One input's part in a run: what to do, or what was already known of it."""

    job: InputJob
    folder: Path
    info: media.VideoInfo | None = None
    identity: dict | None = None
    checkpoints: Checkpoints | None = None
    encoder: str = "libx264"
    known: dict | None = None  # the summary of an input not to run: done before, or failed
    replaces: list[str] | None = None  # what differs in the earlier run whose finished outputs this one replaces


# Failures that are the input's own (a damaged file, a stream that breaks a stage): of several
# inputs, one that failed so is not tried again while it is unchanged, unless asked.
INPUT_FAILURES = (InputError.exit_code, StageError.exit_code)


@dataclass
class Jobs:
    """The inputs of one run, each planned, then run, with the manifest kept up to date."""

    models: list[Model]
    settings: Settings
    manifest: Manifest
    stream: int
    lone: bool  # a lone input's error is the run's error; of several, each fails on its own
    device_path: DevicePath | None
    progress: object
    notice: object
    threads: int | None = None  # each job's decoder and encoder threads; None: theirs to choose
    cancel: threading.Event = field(default_factory=threading.Event)

    def plan(self, job: InputJob, *, folder: Path, force: bool, retry_failed: bool) -> Plan:
        """Probe the input and see what is known of it: done before, or failed and unchanged
        (`retry_failed`: tried again all the same, as --resume does too). `folder`: its outputs'."""
        before = self.manifest.get(job.key)
        if (before.get("state") == "failed" and not self.lone and not retry_failed
                and before.get("command") == self.command_key and before.get("exit_code") in INPUT_FAILURES
                and before.get("fingerprint") == _fingerprint(job.path)):
            self.notice(f"{job.path} failed before ({before.get('error')}); skipped while it is unchanged: "
                        f"--retry-failed runs it again")
            return Plan(job, folder, known=failed_summary(job, before, earlier=True))
        try:
            info = media.probe(job.path, stream=self.stream)
        except EdgeError as err:
            known = self.failed(job, folder, err)
            if self.lone:
                raise
            return Plan(job, folder, known=known)
        if info.video_streams > 1:
            self.notice(f"{info.path} has {info.video_streams} video streams; reading stream {info.stream} (--stream)")
        identity = run_identity(info, self.models, self.settings)
        done = None if force else finished(folder, self.models, resume_key=key_of(identity))
        if done is not None:
            if self.lone:  # of several, they are counted in one line (skipped_notice)
                self.notice(f"{info.path}: already done with these options, in {folder}; skipped (--force runs it again)")
            self.manifest.update(job.key, input=job.key, output=str(folder), state="done",
                                 command=self.command_key, error=None, exit_code=None, **figures(done))
            return Plan(job, folder, known=done)
        return Plan(job, folder, info, identity, replaces=earlier_differences(folder, self.models, identity))

    def prepare(self, plan: Plan, *, resume: bool) -> None:
        """Its encoder and its checkpoints (resumed or replaced); a UsageError is the whole run's."""
        info = plan.info
        on_gpu = any(m.backend.device.startswith("cuda") for m in self.models)
        plan.encoder = writer.pick_encoder(self.settings.options.encoder, on_gpu=on_gpu, size=(info.width, info.height))
        x264 = plan.encoder == "libx264" and any(m.contract.task in OVERLAY_TASKS for m in self.models)
        plan.checkpoints = Checkpoints(plan.folder, plan.identity, {m.folder_name: m.contract.task for m in self.models},
                                       encoder_threads=self.threads if x264 else None)
        plan.checkpoints.open(resume=resume, notice=self.notice)

    def register(self, plans: list[Plan]) -> None:
        """Record the prepared plans as pending, all in one writing of jobs.json."""
        self.manifest.update_many({plan.job.key: {"input": plan.job.key, "output": str(plan.folder), "state": "pending",
                                                  "command": self.command_key, "error": None, "exit_code": None,
                                                  "replaces": plan.replaces}
                                   for plan in plans})

    def execute_all(self, plans: list[Plan], jobs: int) -> list[dict]:
        """Every plan, `jobs` at a time. Each job's pipeline waits in its own worker thread;
        Ctrl-C and SIGTERM arrive in this one, which then stops them all and waits for them to
        record where they got before raising."""
        if jobs == 1:
            return [self.execute(plan) for plan in plans]
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="edge-job") as pool:
            futures = [pool.submit(self.execute, plan) for plan in plans]
            try:
                while not all(f.done() for f in futures):
                    concurrent.futures.wait(futures, timeout=POLL_S * 4, return_when=concurrent.futures.FIRST_EXCEPTION)
                    if any(f.done() and f.exception() for f in futures):
                        break
            except BaseException as err:
                self.stop(futures)
                if isinstance(err, (Interrupted, KeyboardInterrupt)):
                    raise self.interrupted(err, plans) from None
                raise
            self.stop(futures)
            errors = [f.exception() for f in futures if not f.cancelled() and f.exception()]
            if errors:  # the first cause, rather than the stops it caused
                raise next((e for e in errors if not isinstance(e, Interrupted)), errors[0])
            return [f.result() for f in futures]

    def stop(self, futures) -> None:
        """Jobs not started stay pending; running ones stop at their next tick and record it."""
        if all(f.done() for f in futures):
            return
        self.cancel.set()
        for future in futures:
            future.cancel()
        concurrent.futures.wait(futures)

    def interrupted(self, err: BaseException, plans: list[Plan]) -> Interrupted:
        """The run's interruption, saying how many of its inputs kept a checkpoint to resume from."""
        stopped = err if isinstance(err, Interrupted) else Interrupted(signal.SIGINT)
        stopped.resumable_inputs = sum(
            1 for p in plans if p.checkpoints is not None and p.checkpoints.serial
            and self.manifest.get(p.job.key).get("state") == "interrupted")
        return stopped

    def execute(self, plan: Plan) -> dict:
        if plan.known is not None:
            return plan.known
        if self.cancel.is_set():
            raise Interrupted(signal.SIGINT)
        key = plan.job.key
        self.manifest.update(key, state="running", started_at=now_iso(), finished_at=None)
        try:
            summary = run_one(plan.info, self.models, plan.checkpoints, self.settings, device_path=self.device_path,
                              encoder=plan.encoder, progress=self.report(key), threads=self.threads,
                              cancel=self.cancel)
        except (Interrupted, KeyboardInterrupt):
            # a signal held back while the outputs moved into place arrives once they all are
            done = finished(plan.folder, self.models, resume_key=plan.checkpoints.key)
            self.manifest.update(key, state="done" if done else "interrupted", finished_at=now_iso())
            raise
        except Exception as err:  # one input's failure, even a bug's, stops only that input
            known = self.failed(plan.job, plan.folder, err)
            if self.lone:
                raise
            return known
        self.manifest.update(key, state="done", finished_at=now_iso(), **figures(summary))
        return summary

    def report(self, key: str):
        """The progress callback of one input's run."""
        if self.progress is None:
            return None
        return lambda written, expected: self.progress(key, written, expected)

    def opencv_threads(self):
        return opencv_threads(1 if all(m.backend.device == "cpu" for m in self.models) else None)

    @functools.cached_property
    def command_key(self) -> str:
        """What, besides the input, makes a run the same run, as a key."""
        return key_of({"models": {m.folder_name: m.sha256 for m in self.models}, "settings": self.settings.record(),
                       "edge": __version__})

    def failed(self, job: InputJob, folder: Path, err: Exception) -> dict:
        line, code = (user_line(err), err.exit_code) if isinstance(err, EdgeError) else (
            f"internal error, {type(err).__name__}: {err} (please report it)", 1)
        self.manifest.update(job.key, input=job.key, output=str(folder), state="failed", command=self.command_key,
                             error=line, exit_code=code, fingerprint=_fingerprint(job.path), finished_at=now_iso())
        return failed_summary(job, self.manifest.get(job.key))


def output_folders(manifest, out: Path, jobs: list[InputJob]) -> dict[str, Path]:
    """Where each input's outputs go, by its key: where jobs.json says they went before (if that
    is in OUT: not where OUT was before it was moved), else OUT/NAME, with its path's hash added
    where another input's outputs are already there (the inputs of one run have names of their
    own: inputs.py)."""
    inside = os.path.abspath(out) + os.sep
    recorded = {key: folder for key, folder in manifest.outputs().items()
                if os.path.abspath(folder).startswith(inside)}
    taken = set(recorded.values())
    folders = {}
    for job in jobs:
        folder = Path(recorded[job.key]) if job.key in recorded else Path(out) / job.name
        if job.key not in recorded and str(folder) in taken:
            folder = Path(out) / f"{job.name}-{short_hash(job.path)}"
        folders[job.key] = folder
    return folders


def figures(summary: dict) -> dict:
    """A finished input's figures, as jobs.json keeps them."""
    return {"seconds": summary["seconds"]["total"], "frames": summary["frames"]["in_range"],
            "frames_per_s": summary["frames_per_s"]}


def _fingerprint(path: str) -> dict | None:
    try:
        return fingerprint(path)
    except OSError:
        return None


def skipped_notice(summaries: list[dict], inputs: int, notice) -> None:
    """One line for the inputs of several that were done before, rather than one each."""
    skipped = sum(s["status"] == "skipped" for s in summaries)
    if skipped:
        notice(f"{skipped} of {inputs} inputs already done with these options; skipped (--force runs them again)")


def replacing_notice(plans: list["Plan"], notice) -> None:
    """One line for the inputs whose finished outputs a run with other options will replace."""
    replacing = [plan for plan in plans if plan.known is None and plan.replaces]
    if len(replacing) == 1:
        plan = replacing[0]
        notice(f"{plan.job.path}: the outputs in {plan.folder} are from a run with other "
               f"{', '.join(plan.replaces)}; this run replaces them when it finishes (another --out keeps both)")
    elif replacing:
        differences = sorted({d for plan in replacing for d in plan.replaces})
        notice(f"{len(replacing)} of {len(plans)} inputs have outputs from a run with other {', '.join(differences)}; "
               f"this run replaces them as each finishes (another --out keeps both; jobs.json says which)")


def earlier_differences(folder: Path, models: list[Model], identity: dict) -> list[str] | None:
    """What differs between this run and the earlier finished one whose outputs are in
    `folder` (the options by name, a model, the input, edge's version), or None where no
    finished outputs are there to be replaced."""
    settings, differences = identity["settings"], set()
    for m in models:
        try:
            record = json.loads((folder / m.folder_name / "run.json").read_text())
        except (OSError, ValueError):
            continue
        if record.get("status") != "done":
            continue
        earlier = record.get("options", {})
        # "auto" was resolved when the earlier run picked its encoder
        differences |= {name for name, value in settings.items()
                        if earlier.get(name) != value and not (name == "encoder" and value == "auto")}
        model = record.get("model", {})
        if any(model.get(k) != v for k, v in identity["models"][m.folder_name].items()):
            differences.add("model")
        if record.get("tool", {}).get("version") != identity["edge"]:
            differences.add("edge version")
        if not differences and record.get("resume_key") != key_of(identity):
            differences.add("input")  # the same options over a changed input
    return sorted(differences) or None


def failed_summary(job: InputJob, record: dict, *, earlier: bool = False) -> dict:
    """An input's failure as a summary; `earlier`: recorded by an earlier run, not tried again."""
    return {"status": "failed", "input": job.key, "error": record.get("error"), "exit_code": record.get("exit_code"),
            "earlier": earlier, "outputs": {}}


def check_options(*, batch, options, checkpoint_s=CHECKPOINT_S) -> None:
    if batch is not None and batch < 1:
        raise UsageError(f"--batch must be 1 or more, got {batch}")
    if not 0 <= options.alpha <= 1:
        raise UsageError(f"--alpha must be between 0 and 1, got {options.alpha}")
    if options.threshold is not None and not 0 <= options.threshold <= 1:
        raise UsageError(f"--threshold must be between 0 and 1, got {options.threshold}")
    if options.preset not in writer.X264_PRESETS:
        raise UsageError(f"--preset {options.preset!r} is not an x264 preset; "
                         f"allowed: {', '.join(writer.X264_PRESETS)}")
    if options.min_duration_s < 0:
        raise UsageError(f"--min-duration must be 0 or more seconds, got {options.min_duration_s}")
    if not 0 < checkpoint_s < math.inf:
        raise UsageError(f"--checkpoint-every must be a positive number of seconds, got {checkpoint_s}")


def run_identity(info: media.VideoInfo, models: list[Model], settings: Settings) -> dict:
    """What must be the same for a run to be resumed, or recognised as already done."""
    return {"input": {**fingerprint(info.path), "stream": info.stream},
            "models": {m.folder_name: {"sha256": m.sha256, "backend": m.backend.name, "device": m.backend.device}
                       for m in models},
            "settings": settings.record(), "edge": __version__}


def finished(folder: Path, models: list[Model], *, resume_key: str) -> dict | None:
    """The summary of a finished run with the same identity whose outputs are all in `folder`,
    with the status "skipped"."""
    records = {}
    for m in models:
        try:
            record = json.loads((folder / m.folder_name / "run.json").read_text())
        except (OSError, ValueError):
            return None
        if record.get("status") != "done" or record.get("resume_key") != resume_key:
            return None
        if not all((folder / m.folder_name / name).exists() for name in record["files"]):
            return None
        records[m.folder_name] = record
    summary = {k: v for k, v in next(iter(records.values())).items() if k not in ("model", "files")}
    return {**summary, "status": "skipped", "outputs": {name: str(folder / name) for name in records},
            "models": {name: record["model"] for name, record in records.items()}}


def run_one(info: media.VideoInfo, models: list[Model], checkpoints: Checkpoints, settings: Settings, *,
            device_path: DevicePath | None, encoder: str, progress, threads: int | None = None,
            cancel: threading.Event | None = None) -> dict:
    started_at = datetime.datetime.now(datetime.timezone.utc)
    wall, cpu = time.perf_counter(), time.process_time()
    stats = media.DecodeStats()
    resumed = checkpoints.resumed
    tally = Tally(**resumed.position) if resumed else Tally()
    written_before, processed_before = tally.written, tally.processed  # a resumed run's own figures count after
    stagings: dict[str, Staging] = {}
    folder = checkpoints.folder
    s = dataclasses.replace(settings, options=dataclasses.replace(settings.options, encoder=encoder))
    resume_after = tally.last_index  # read before the sinks thread moves it
    try:
        for m in models:
            reuse = resumed.models[m.folder_name]["staging"] if resumed else None
            stagings[m.folder_name] = Staging(folder / m.folder_name, reuse=reuse)
        # output videos start at 0 even when the input starts later (MPEG-TS) or --start is given
        start_s = max(s.start_s or 0.0, info.start_s)
        stages = [
            Stage("decode", lambda: media.read_frames(
                info.path, decoder=s.decoder, start_s=s.start_s, end_s=s.end_s, stride=s.stride,
                sample_fps=s.sample_fps, stats=stats,
                pixels=pixels_for((m.contract.task for m in models), on_device=device_path is not None,
                                  upload=s.upload),
                stream=info.stream, resume_after=resume_after, threads=threads)),
            Stage("preprocess", lambda frames: batch_frames(frames, models, s.batch, device_path)),
            Stage("infer", lambda batches: infer(batches, models, device_path)),
            Stage("postprocess", lambda batches: postprocess(batches, models, s.options, resumed, device_path)),
            Stage("sinks", lambda batches: write_sinks(batches, models, stagings, tally, Outputs(
                info, s, start_s, checkpoints, device_path, threads))),
        ]
        pipeline = Pipeline(stages)
        expected = expected_frames(info, s.start_s, s.end_s)
        pipeline.start()

        def tick() -> None:
            if cancel is not None and cancel.is_set():  # the run is stopping: another job was interrupted
                raise Interrupted(signal.SIGINT)
            if progress:
                progress(tally.written, expected)

        pipeline.wait(on_tick=tick)
        if tally.written == 0:
            if s.start_s is not None or s.end_s is not None:
                raise InputError(f"{info.path}: no frames to process between --start and --end; check the times")
            raise InputError(f"{info.path}: no frame could be decoded; the file is damaged, or try --decoder pyav")
        elapsed = time.perf_counter() - wall
        summary = {
            "status": "done",
            "input": os.path.abspath(info.path),
            "video": {"stream": info.stream, "width": info.width, "height": info.height, "fps": info.fps,
                      "codec": info.codec, "duration_s": info.duration_s, "audio_codec": info.audio_codec,
                      "rotation": info.rotation},
            "frames": {"decoded": stats.decoded, "in_range": tally.written, "processed": tally.processed,
                       "not_selected": tally.written - tally.processed, "corrupt_skipped": stats.corrupt,
                       "corrupt_times_s": stats.corrupt_times_s, "last_time_s": tally.last_time_s,
                       "read_error": stats.read_error},
            "stopped_early": stopped_early(info, tally.last_time_s, s.end_s),
            # a resumed run's own figures below count only the frames it wrote itself
            "resumed": {"after_frame": resumed.position["last_index"], "after_s": resumed.position["last_time_s"],
                        "frames_before": written_before} if resumed else None,
            "options": s.record(),
            # where frames met the models: "host" (numpy and OpenCV), or the torch device they went to
            "frames_on": device_path.device.type if device_path else "host",
            "encoder": encoder if any(m.contract.task in OVERLAY_TASKS for m in models) else None,
            "seconds": {"total": round(elapsed, 3), "cpu": round(time.process_time() - cpu, 3),
                        **{stage.name: round(stage.busy_s, 3) for stage in stages}},
            # each stage thread's own CPU; the rest of "cpu" ran in native pools (onnxruntime's
            # workers, the decoder's and x264's threads)
            "stage_cpu_s": {stage.name: round(stage.cpu_s, 3) for stage in stages},
            "frames_per_s": round((tally.written - written_before) / elapsed, 2),
            "processed_per_s": round((tally.processed - processed_before) / elapsed, 2),
            "tool": TOOL,
            "resume_key": checkpoints.key,
            "started_at": started_at.isoformat(timespec="seconds"),
            "finished_at": now_iso(),
            "outputs": {name: str(staging.out_dir) for name, staging in stagings.items()},
            "models": {m.folder_name: {**model_record(m), **tally.nonfinite_record(m.folder_name)} for m in models},
        }
        try:
            for name, staging in stagings.items():
                record = {k: v for k, v in summary.items() if k not in ("outputs", "models")}
                record["model"] = summary["models"][name]
                record["files"] = sorted(p.name for p in staging.dir.iterdir() if not p.name.startswith(".")) + [
                    "run.json"]
                write_json(staging.path("run.json"), record)
        except OSError as err:
            raise cannot_write(folder, err) from err
    except BaseException as err:
        checkpoints.abandon()
        stopped = err
        if not checkpoints.serial:
            for staging in stagings.values():
                staging.discard()
        elif isinstance(err, (EdgeError, KeyboardInterrupt)):  # the partial outputs stay, for --resume
            stopped = err if isinstance(err, EdgeError) else Interrupted(signal.SIGINT)
            stopped.resume_from_s = checkpoints.reached_s
        if tally.written or isinstance(err, (Interrupted, KeyboardInterrupt)):
            record_stop(stagings, info, stopped, tally, started_at, checkpoints)
        if stopped is not err:
            raise stopped from None
        raise
    # Past here the run is done; a stop waits until every output is in place and the resume
    # state gone, so no half-committed folder is ever left to resume.
    with signals_deferred():
        try:
            for staging in stagings.values():
                staging.commit()
        except OSError as err:
            raise cannot_write(folder, err) from err
        checkpoints.drop()
    return summary


def record_stop(stagings: dict, info: media.VideoInfo, err: BaseException, tally: Tally,
                started_at: datetime.datetime, checkpoints: Checkpoints) -> None:
    """A run that did not finish leaves run.json with its status, the error, how far it got and
    from where --resume would carry on, in each output folder that holds no earlier run's
    outputs (those, with their own run.json, stay as they were; the record of an earlier stop is
    replaced). Nothing else: no output carries a final name unfinished."""
    if isinstance(err, KeyboardInterrupt):  # Ctrl-C before the signal handlers were in place
        err = Interrupted(signal.SIGINT)
    record = {
        "status": "interrupted" if isinstance(err, Interrupted) else "failed",
        "error": user_line(err) if isinstance(err, EdgeError) else f"{type(err).__name__}: {err}",
        "input": os.path.abspath(info.path),
        "frames": {"in_range": tally.written, "processed": tally.processed, "last_time_s": tally.last_time_s},
        "resumable_after_s": checkpoints.reached_s if checkpoints.serial else None,
        "tool": TOOL,
        "started_at": started_at.isoformat(timespec="seconds"),
        "stopped_at": now_iso(),
        "files": [],
    }
    for staging in stagings.values():
        try:
            earlier = [p.name for p in staging.out_dir.iterdir() if not p.name.startswith(".")]
            if not earlier or (earlier == ["run.json"] and _status(staging.out_dir / "run.json") != "done"):
                write_json(staging.out_dir / "run.json", record)
        except OSError:
            pass  # the record is a courtesy: the error the user sees is the one being raised


def _status(run_json: Path) -> str | None:
    try:
        return json.loads(run_json.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


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


def pixels_for(task_names, *, on_device: bool = False, upload: str | None = "rgb") -> str:
    """What the decoder must give. On the host: every frame's RGB when a task draws an overlay,
    else only the selected frames', as I420 planes that preprocessing converts at the model's
    size. To a device, frames go as planes (half the bytes, converted there) or RGB (`upload`),
    every frame where an overlay is drawn there, but RGB for all where one is drawn on the host."""
    task_names = set(task_names)
    if draws_on_host(task_names) or (task_names & set(OVERLAY_TASKS) and not on_device):
        return "all"
    if not on_device:
        return "planes"
    every = bool(task_names & set(OVERLAY_TASKS))  # what is left draws on the device
    if upload == "planes":
        return "all_planes" if every else "planes"
    return "all" if every else "selected"


def draws_on_host(task_names) -> bool:
    """Whether a task writes an overlay drawn on the host even when frames go to a device."""
    return any(task in OVERLAY_TASKS and not tasks.module(task).DRAWS_ON_DEVICE for task in task_names)


def expected_frames(info: media.VideoInfo, start_s: float | None, end_s: float | None) -> int | None:
    """Frames the run should see, for the progress bar's ETA; None when the container won't say."""
    if not (start_s or end_s):
        return info.frame_count
    if not (info.fps and info.duration_s):
        return None
    end = min(end_s, info.duration_s) if end_s is not None else info.duration_s
    return max(0, round((end - (start_s or 0.0)) * info.fps))


def batch_frames(frames, models: list[Model], size: int, device_path: DevicePath | None = None):
    """Group frames so each batch holds `size` selected ones; preprocess those once per distinct
    model input (models that agree on size and normalization share it), on the host or, given
    a device path, on the device."""
    preprocessors = {}
    for model in models:
        preprocessors.setdefault(model.preprocess_key, Preprocessor(model.contract))
    pending: list[Frame] = []
    selected = 0
    for frame in frames:
        pending.append(frame)
        selected += frame.selected
        if selected == size:
            yield _prepare(pending, preprocessors, device_path)
            pending, selected = [], 0
    if pending:
        yield _prepare(pending, preprocessors, device_path)


def _prepare(frames: list[Frame], preprocessors: dict, device_path: DevicePath | None) -> Batch:
    batch = Batch(frames)
    if device_path is not None:
        _prepare_on_device(batch, preprocessors, device_path)
        return batch
    images = [f.image if f.image is not None else f.planes for f in batch.selected]
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
    settings: Settings
    start_s: float  # output times are input times minus this
    checkpoints: Checkpoints
    device_path: DevicePath | None = None
    threads: int | None = None  # the encoder's


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
    video, settings, checkpoints = outputs.video, outputs.settings, outputs.checkpoints
    resumed = checkpoints.resumed
    # unselected frames show the latest result
    held = dict(resumed.held) if resumed else {m.folder_name: None for m in models}
    # checkpoints fall after the batch that reaches each multiple of this many frames
    every = max(1, round(settings.checkpoint_s * (video.fps or media.IMAGE_SEQUENCE_FPS)))
    next_checkpoint = (tally.written // every + 1) * every
    with ExitStack() as stack:
        sinks = {}
        for model in models:
            name = model.folder_name
            ctx = tasks.SinkContext(stagings[name].dir, model.contract, video, settings.options, outputs.start_s,
                                    settings.end_s, outputs.device_path.device if outputs.device_path else None,
                                    outputs.threads)
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
