"""One input through the stages into its output folders: its run, its summary (run.json), the
record of a run that stopped, and what tells a finished run apart (its identity)."""

import dataclasses
import datetime
import json
import os
import platform
import signal
import threading
import time
from pathlib import Path

from .. import __version__, media, tasks
from ..device import DevicePath
from ..errors import EdgeError, InputError, Interrupted, user_line
from ..pipeline import Pipeline, Stage
from ..resume import Checkpoints, fingerprint, key_of
from ..sinks import Staging, write_json
from .models import Model, model_record
from .options import RunOptions
from .signals import signals_deferred
from .summary import FrameCounts, ModelRecord, Resumed, RunSummary, Seconds, StoppedEarly
from .stages import Outputs, Tally, batch_frames, cannot_write, infer, pixels_for, postprocess, write_sinks


TOOL = {"name": "edge", "version": __version__, "python": platform.python_version()}  # in every run.json


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def earlier_differences(folder: Path, models: list[Model], identity: dict) -> list[str] | None:
    """What differs between this run and the earlier finished one whose outputs are in
    `folder` (the options by name, a model, the input, edge's version), or None where no
    finished outputs are there to be replaced."""
    settings, differences = identity["settings"], set()
    for m in models:
        record = run_record(folder / m.folder_name)
        if record is None or record.get("status") != "done":
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


def run_identity(info: media.VideoInfo, models: list[Model], options: RunOptions) -> dict:
    """What must be the same for a run to be resumed, or recognised as already done."""
    return {"input": {**fingerprint(info.path), "stream": info.stream},
            "models": {m.folder_name: {"sha256": m.sha256, "backend": m.backend.name, "device": m.backend.device}
                       for m in models},
            "settings": options.record(), "edge": __version__}


def finished(folder: Path, models: list[Model], *, resume_key: str) -> RunSummary | None:
    """The summary of a finished run with the same identity whose outputs are all in `folder`,
    with the status "skipped"."""
    records = {}
    for m in models:
        record = run_record(folder / m.folder_name)
        if record is None or record.get("status") != "done" or record.get("resume_key") != resume_key:
            return None
        if not all((folder / m.folder_name / name).exists() for name in record["files"]):
            return None
        records[m.folder_name] = record
    summary = {k: v for k, v in next(iter(records.values())).items() if k not in ("model", "files")}
    outputs = {name: str(folder / name) for name in records}
    return RunSummary.from_json({**summary, "status": "skipped", "outputs": outputs,
                                 "models": {name: record["model"] for name, record in records.items()}})


def run_one(info: media.VideoInfo, models: list[Model], checkpoints: Checkpoints, options: RunOptions, *,
            device_path: DevicePath | None, encoder: str, progress, codec_threads: int | None = None,
            cancel: threading.Event | None = None) -> RunSummary:
    """One input through the stages into its output folders; its summary, as in its run.json."""
    started_at = datetime.datetime.now(datetime.timezone.utc)
    clock = (time.perf_counter(), time.process_time())
    s = dataclasses.replace(options, task_options=dataclasses.replace(options.task_options, encoder=encoder))
    resumed = checkpoints.resumed
    tally = Tally(**resumed.position) if resumed else Tally()
    before = Tally(written=tally.written, processed=tally.processed)  # a resumed run's own figures count after
    stagings: dict[str, Staging] = {}
    try:
        for m in models:
            reuse = resumed.models[m.folder_name]["staging"] if resumed else None
            stagings[m.folder_name] = Staging(checkpoints.folder / m.folder_name, reuse=reuse)
        stats = media.DecodeStats()
        stages = input_stages(info, models, s, checkpoints, stagings, tally, stats, device_path, codec_threads)
        run_pipeline(stages, info, s, tally, progress, cancel)
        summary = summary_of(info, models, s, tally, before, stats, stages, checkpoints, device_path, encoder,
                             started_at, clock, stagings)
        write_run_records(stagings, summary, checkpoints.folder)
    except BaseException as err:
        stop(err, stagings, info, tally, started_at, checkpoints)
    # Past here the run is done; a stop waits until every output is in place and the resume
    # state gone, so no half-committed folder is ever left to resume.
    with signals_deferred():
        try:
            for staging in stagings.values():
                staging.commit()
        except OSError as err:
            raise cannot_write(checkpoints.folder, err) from err
        checkpoints.drop()
    return summary


def input_stages(info: media.VideoInfo, models: list[Model], s: RunOptions, checkpoints: Checkpoints,
                 stagings: dict[str, Staging], tally: Tally, stats: media.DecodeStats,
                 device_path: DevicePath | None, codec_threads: int | None) -> list[Stage]:
    """decode → preprocess → infer → postprocess → sinks, for this input and these models."""
    resumed = checkpoints.resumed
    resume_after = tally.last_index  # read before the sinks thread moves it
    # output videos start at 0 even when the input starts later (MPEG-TS) or --start is given
    start_s = max(s.start_s or 0.0, info.start_s)
    pixels = pixels_for((m.contract.task for m in models), on_device=device_path is not None, upload=s.upload)
    outputs = Outputs(info, s, start_s, checkpoints, device_path, codec_threads)
    return [
        Stage("decode", lambda: media.read_frames(
            info.path, decoder=s.decoder, start_s=s.start_s, end_s=s.end_s, stride=s.stride,
            sample_fps=s.sample_fps, stats=stats, pixels=pixels, stream=info.stream, resume_after=resume_after,
            threads=codec_threads)),
        Stage("preprocess", lambda frames: batch_frames(frames, models, s.batch, device_path,
                                                        rgb_first=pixels == "all_planes")),
        Stage("infer", lambda batches: infer(batches, models, device_path)),
        Stage("postprocess", lambda batches: postprocess(batches, models, s.task_options, resumed, device_path)),
        Stage("sinks", lambda batches: write_sinks(batches, models, stagings, tally, outputs)),
    ]


def run_pipeline(stages: list[Stage], info: media.VideoInfo, s: RunOptions, tally: Tally, progress,
                 cancel: threading.Event | None) -> None:
    """The stages run to the end, reporting progress; InputError when no frame came through."""
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


def summary_of(info: media.VideoInfo, models: list[Model], s: RunOptions, tally: Tally, before: Tally,
               stats: media.DecodeStats, stages: list[Stage], checkpoints: Checkpoints,
               device_path: DevicePath | None, encoder: str, started_at: datetime.datetime,
               clock: tuple[float, float], stagings: dict[str, Staging]) -> RunSummary:
    """A finished input's summary: what run.json keeps and edge-run reports."""
    resumed = checkpoints.resumed
    elapsed = time.perf_counter() - clock[0]
    return RunSummary(
        status="done",
        input=os.path.abspath(info.path),
        video={"stream": info.stream, "width": info.width, "height": info.height, "fps": info.fps,
               "codec": info.codec, "duration_s": info.duration_s, "audio_codec": info.audio_codec,
               "rotation": info.rotation},
        frames=FrameCounts(decoded=stats.decoded, in_range=tally.written, processed=tally.processed,
                           not_selected=tally.written - tally.processed, corrupt_skipped=stats.corrupt,
                           corrupt_times_s=stats.corrupt_times_s, last_time_s=tally.last_time_s,
                           read_error=stats.read_error),
        stopped_early=stopped_early(info, tally.last_time_s, s.end_s),
        # a resumed run's own figures below count only the frames it wrote itself
        resumed=Resumed(resumed.position["last_index"], resumed.position["last_time_s"], before.written)
        if resumed else None,
        options=s.record(),
        # where frames met the models: "host" (numpy and OpenCV), or the torch device they went to
        frames_on=device_path.device.type if device_path else "host",
        encoder=encoder if any(tasks.writes_overlay(m.contract.task) for m in models) else None,
        seconds=Seconds(round(elapsed, 3), round(time.process_time() - clock[1], 3),
                        {stage.name: round(stage.busy_s, 3) for stage in stages}),
        # each stage thread's own CPU; the rest of "cpu" ran in native pools (onnxruntime's
        # workers, the decoder's and x264's threads)
        stage_cpu_s={stage.name: round(stage.cpu_s, 3) for stage in stages},
        frames_per_s=round((tally.written - before.written) / elapsed, 2),
        processed_per_s=round((tally.processed - before.processed) / elapsed, 2),
        tool=TOOL,
        resume_key=checkpoints.key,
        started_at=started_at.isoformat(timespec="seconds"),
        finished_at=now_iso(),
        outputs={name: str(staging.out_dir) for name, staging in stagings.items()},
        models={m.folder_name: ModelRecord(**model_record(m), **tally.nonfinite_record(m.folder_name))
                for m in models},
    )


def write_run_records(stagings: dict[str, Staging], summary: RunSummary, folder: Path) -> None:
    """Each output folder's run.json: the summary, with its own model and the files it holds."""
    whole = summary.to_json()
    try:
        for name, staging in stagings.items():
            record = {k: v for k, v in whole.items() if k not in ("outputs", "models")}
            record["model"] = whole["models"][name]
            record["files"] = sorted(p.name for p in staging.dir.iterdir() if not p.name.startswith(".")) + [
                "run.json"]
            write_json(staging.path("run.json"), record)
    except OSError as err:
        raise cannot_write(folder, err) from err


def stop(err: BaseException, stagings: dict[str, Staging], info: media.VideoInfo, tally: Tally,
         started_at: datetime.datetime, checkpoints: Checkpoints) -> None:
    """A run that did not finish: its partial outputs kept for --resume where a checkpoint was
    taken (else discarded), its stop recorded, and the error raised again, as Interrupted for
    Ctrl-C, with where --resume would carry on from."""
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
    raise err


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
            if not earlier or (earlier == ["run.json"] and (run_record(staging.out_dir) or {}).get("status") != "done"):
                write_json(staging.out_dir / "run.json", record)
        except OSError:
            pass  # the record is a courtesy: the error the user sees is the one being raised


def run_record(folder: Path) -> dict | None:
    """The run.json an earlier run left in an output folder, or None where there is none to read."""
    try:
        record = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def stopped_early(info: media.VideoInfo, last_time_s: float | None, end_s: float | None) -> StoppedEarly | None:
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
    return StoppedEarly(round(reached_s, 3), round(expected_s, 3))


def expected_frames(info: media.VideoInfo, start_s: float | None, end_s: float | None) -> int | None:
    """Frames the run should see, for the progress bar's ETA; None when the container won't say."""
    if not (start_s or end_s):
        return info.frame_count
    if not (info.fps and info.duration_s):
        return None
    end = min(end_s, info.duration_s) if end_s is not None else info.duration_s
    return max(0, round((end - (start_s or 0.0)) * info.fps))
