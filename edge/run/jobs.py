"""Many inputs: each planned (skipped when done, or failed and unchanged), registered in jobs.json,
and run one at a time or `--jobs` side by side, sharing the loaded models."""

import concurrent.futures
import dataclasses
import functools
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__, media, tasks, writer
from ..device import DevicePath, for_models
from ..errors import EdgeError, InputError, Interrupted, StageError, UsageError, user_line
from ..inputs import Job as InputJob
from ..inputs import expand as expand_inputs
from ..inputs import short_hash
from ..machine import opencv_threads, usable_cores
from ..manifest import Manifest
from ..pipeline import POLL_S
from ..resume import Checkpoints, fingerprint, key_of
from .models import Model, load_models
from .one import earlier_differences, finished, now_iso, run_identity, run_one
from .options import RunOptions
from .signals import signals_raise
from .summary import RunSummary
from .stages import draws_on_host


def load_jobs(options: RunOptions, manifest, *, progress, notice, ort_threads: int | None = None) -> "Jobs":
    """The models loaded (`ort_threads`: onnxruntime's, where the options leave them open), the
    options with the batch and upload they imply, and a Jobs to run inputs with them."""
    o = options
    loaded = load_models(o.models, o.task_names, backend=o.backend, device=o.device, threads=o.ort_threads or ort_threads,
                         batch=o.batch, precision=o.precision, notice=notice)
    device_path = for_models([m.backend for m in loaded], o.frames_on)
    upload = o.upload
    if device_path is None:
        upload = None
    elif draws_on_host(m.contract.task for m in loaded):
        upload = "rgb"  # its overlay is drawn on the host, from the frame's RGB there (biwi's trail)
    elif upload == "auto":
        # On CPU tensors, cv2's conversion on the host beat torch's (720p camvid: 21.3 against
        # 13.3 frames/s); on a GPU, planes halve the bytes and spare the host the conversion.
        upload = "planes" if device_path.cuda else "rgb"
    resolved = dataclasses.replace(o, batch=o.batch or loaded[0].backend.default_batch, upload=upload)
    return Jobs(loaded, resolved, manifest, stream=o.stream, lone=False, device_path=device_path,
                progress=progress, notice=notice)


@dataclass
class Plan:
    """One input's part in a run: what to do, or what was already known of it."""

    job: InputJob
    folder: Path
    info: media.VideoInfo | None = None
    identity: dict | None = None
    checkpoints: Checkpoints | None = None
    encoder: str = "libx264"
    known: RunSummary | None = None  # the summary of an input not to run: done before, or failed
    replaces: list[str] | None = None  # what differs in the earlier run whose finished outputs this one replaces


# Failures that are the input's own (a damaged file, a stream that breaks a stage): of several
# inputs, one that failed so is not tried again while it is unchanged, unless asked.
INPUT_FAILURES = (InputError.exit_code, StageError.exit_code)


@dataclass
class Jobs:
    """The inputs of one run, each planned, then run, with the manifest kept up to date."""

    models: list[Model]
    options: RunOptions  # with the batch and upload the models imply
    manifest: Manifest
    stream: int
    lone: bool  # a lone input's error is the run's error; of several, each fails on its own
    device_path: DevicePath | None
    progress: object
    notice: object
    codec_threads: int | None = None  # each job's decoder's and encoder's threads; None: theirs to choose
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
        identity = run_identity(info, self.models, self.options)
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
        plan.encoder = writer.pick_encoder(self.options.task_options.encoder, on_gpu=on_gpu, size=(info.width, info.height))
        x264 = plan.encoder == "libx264" and any(tasks.writes_overlay(m.contract.task) for m in self.models)
        plan.checkpoints = Checkpoints(plan.folder, plan.identity, {m.folder_name: m.contract.task for m in self.models},
                                       encoder_threads=self.codec_threads if x264 else None)
        plan.checkpoints.open(resume=resume, notice=self.notice)

    def register(self, plans: list[Plan]) -> None:
        """Record the prepared plans as pending, all in one writing of jobs.json."""
        self.manifest.update_many({plan.job.key: {"input": plan.job.key, "output": str(plan.folder), "state": "pending",
                                                  "command": self.command_key, "error": None, "exit_code": None,
                                                  "replaces": plan.replaces}
                                   for plan in plans})

    def execute_all(self, plans: list[Plan], jobs: int) -> list[RunSummary]:
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

    def execute(self, plan: Plan) -> RunSummary:
        if plan.known is not None:
            return plan.known
        if self.cancel.is_set():
            raise Interrupted(signal.SIGINT)
        key = plan.job.key
        self.manifest.update(key, state="running", started_at=now_iso(), finished_at=None)
        try:
            summary = run_one(plan.info, self.models, plan.checkpoints, self.options, device_path=self.device_path,
                              encoder=plan.encoder, progress=self.report(key), codec_threads=self.codec_threads,
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
        return key_of({"models": {m.folder_name: m.sha256 for m in self.models}, "settings": self.options.record(),
                       "edge": __version__})

    def failed(self, job: InputJob, folder: Path, err: Exception) -> RunSummary:
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


def figures(summary: RunSummary) -> dict:
    """A finished input's figures, as jobs.json keeps them."""
    return {"seconds": summary.seconds.total, "frames": summary.frames.in_range, "frames_per_s": summary.frames_per_s}


def _fingerprint(path: str) -> dict | None:
    try:
        return fingerprint(path)
    except OSError:
        return None


def skipped_notice(summaries: list[RunSummary], inputs: int, notice) -> None:
    """One line for the inputs of several that were done before, rather than one each."""
    skipped = sum(s.status == "skipped" for s in summaries)
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


def failed_summary(job: InputJob, record: dict, *, earlier: bool = False) -> RunSummary:
    """An input's failure as a summary, from its jobs.json record; `earlier`: recorded by an
    earlier run, not tried again."""
    return RunSummary("failed", job.key, error=record.get("error"), exit_code=record.get("exit_code"), earlier=earlier)


def run_here(options: RunOptions, inputs: list[str], *, progress, notice) -> list[RunSummary]:
    """api.run's work on this machine: every input planned and checked (and every resume)
    before any work, then `options.jobs` at a time."""
    out = os.path.abspath(options.out)  # jobs.json records output folders that a run from another folder finds too
    force, retry_failed, resume = options.force, options.retry_failed, options.resume
    with signals_raise():
        batch_run = load_jobs(options, Manifest(Path(out)), progress=progress, notice=notice)
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
        jobs = max(1, min(options.jobs, len(runnable)))
        # jobs side by side divide the cores between their decoders and encoders
        batch_run.codec_threads = None if jobs == 1 else max(1, usable_cores() // jobs)
        for plan in runnable:
            batch_run.prepare(plan, resume=resume)
        batch_run.register(runnable)
        with batch_run.opencv_threads():
            return batch_run.execute_all(plans, jobs)
