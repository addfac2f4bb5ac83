"""`edge-bench VIDEO --model M` (or `--task T`): how fast is this model on this box, where does
the time go, and how much better is it than the obvious way.

On the first N frames of VIDEO it measures each stage of `edge-run` alone (decode, decode with
colour conversion, preprocessing, inference for each backend, precision and batch size,
postprocessing, each sink with its encoding), then the whole pipeline, then two baselines on the
same frames and model: a hand-written OpenCV + onnxruntime loop, and fastai's `learn.predict`
frame by frame (with `--learner`). Writes report.md, report.json and two plots into --out.

`edge-bench VIDEO --host` measures edge's host side instead (decode, colour conversion, drawing,
encoding), with models that cost almost nothing, against FFmpeg on the same clip (bench/host.py).

A figure whose repeats disagree, or during which other work took a share of the cores, is
measured again, and one that stays so is marked unreliable, with why; so is a headline above its
ceiling, or one measured on a machine already busy before the run (see bench/reliability.py).
"""

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from edge import backends, media, tasks, writer
from edge.machine import opencv_threads
from edge.run.models import Model, check_io, default_model
from edge.run.signals import signals_raise
from edge.run.stages import batch_frames, pixels_for
from edge.errors import EdgeError, InputError, ModelError, OutputError, UsageError, last_line, user_line
from edge.model import TASKS, Contract, file_sha256, parse

from . import analysis, baselines, host, memory, remeasure, report, stages
from .measure import LoadMeter, idle_load, machine
from .progress import Progress
from .reliability import RunLoad
from .stages import Unavailable, model_file

BENCH_BACKENDS = tuple(b for b in backends.BACKENDS if b != "auto")
BEFORE_S = 0.5  # how long the machine is watched, idle, before the first measurement
FRAMES = 200  # the model benchmark's --frames; --host's is the whole clip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", metavar="VIDEO")
    p.add_argument("--model", action="append", default=[], metavar="FILE",
                   help="model to measure (repeat for several); the torch backend runs FILE.pt2 beside it")
    p.add_argument("--task", default="", metavar="TASKS", help=f"the default model of each task ({','.join(TASKS)})")
    p.add_argument("--learner", action="append", default=[], metavar="FILE.pkl",
                   help="the fastai learner each model was exported from, in the same order, for the "
                        "learn.predict baseline (needs fastai)")
    p.add_argument("--backends", default=",".join(BENCH_BACKENDS), help="comma-separated; missing ones are "
                   "reported as unavailable with the reason")
    p.add_argument("--batch", default="1,2,4,8", help="comma-separated batch sizes")
    p.add_argument("--precision", default=",".join(backends.PRECISIONS), help="comma-separated: fp32,fp16")
    p.add_argument("--device", help="cpu or cuda (default: each backend's own: cuda for tensorrt, else cpu)")
    p.add_argument("--threads", type=int, help="onnxruntime/torch intra-op threads (default: edge's)")
    p.add_argument("--frames", type=int, help=f"first N frames of VIDEO (default {FRAMES}; with --host, every frame)")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats per figure (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before them (default 1)")
    p.add_argument("--memory-loops", type=int, default=0, metavar="K",
                   help="also measure peak memory over the whole VIDEO and VIDEO looped K times")
    p.add_argument("--compare", metavar="OLD.json", help="show the change against an earlier report.json")
    p.add_argument("--host", action="store_true",
                   help="measure edge's host side with free models against FFmpeg on VIDEO, instead of a model")
    p.add_argument("--host-sizes", default="", metavar="WxH,...",
                   help="with --host, also on copies of VIDEO scaled to these sizes (e.g. 1280x720,1920x1080)")
    p.add_argument("--host-device", choices=("cpu", "cuda"), help="with --host, edge's device path instead: the free "
                   "models' torch programs on this device, frames sent there, overlays with NVENC where it opens")
    p.add_argument("--out", default="edge-bench", metavar="DIR", help="where the report goes (default edge-bench/)")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


@dataclass
class Plan:
    backends: list[str]
    precisions: list[str]
    batches: list[int]

    def steps(self, s: "Subject") -> int:
        """The steps of measuring one model: each decode, preprocess and postprocess per batch,
        inference and pipeline per batch of each backend and precision that runs here, sinks,
        the headline, two baselines, memory."""
        runs = len(self.backends) * len(self.precisions) - len(s.unavailable)
        decoding = len(decodes(pixels_for([s.contract.task])))
        return decoding + 2 * len(self.batches) + 2 * runs * len(self.batches) + 1 + 1 + 2 + 1


@dataclass
class Subject:
    """One model to measure, with everything checked before the first measurement."""

    path: str
    contract: Contract
    sha256: str
    hand_loop: tuple | str  # (frame_to_result, device), or why it cannot run
    learn_predict: object  # frame_to_result, or why it cannot run
    unavailable: dict[tuple[str, str], str]  # why each (backend, precision) that cannot run here cannot

    @property
    def name(self) -> str:
        return Path(self.path).name


def listed(name: str, value: str, allowed: tuple | None = None, kind=str) -> list:
    items = [v.strip() for v in value.split(",") if v.strip()]
    try:
        items = [kind(v) for v in items]
    except ValueError:
        raise UsageError(f"{name} takes comma-separated numbers, got {value!r}") from None
    bad = [v for v in items if (allowed and v not in allowed) or (kind is int and v < 1)]
    if not items or bad:
        what = f"one or more of {', '.join(allowed)}" if allowed else "whole numbers of 1 or more"
        raise UsageError(f"{name} takes {what}, got {value!r}")
    return list(dict.fromkeys(items))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with signals_raise():
            path = (host.bench if args.host else bench)(args, argv if argv is not None else sys.argv[1:])
    except EdgeError as err:
        if args.debug:
            traceback.print_exc()
        print(f"edge-bench: error: {user_line(err)}", file=sys.stderr)
        return err.exit_code
    print(f"wrote {path}", file=sys.stderr)
    return 0


def check(args) -> Plan:
    for given in ("--host-sizes", "--host-device"):
        if getattr(args, given[2:].replace("-", "_")):
            raise UsageError(f"{given} goes with --host")
    if args.frames is None:
        args.frames = FRAMES
    plan = Plan(listed("--backends", args.backends, BENCH_BACKENDS),
                listed("--precision", args.precision, backends.PRECISIONS), listed("--batch", args.batch, kind=int))
    for name, value, least in (("--frames", args.frames, 1), ("--repeat", args.repeat, 1),
                               ("--warmup", args.warmup, 0), ("--memory-loops", args.memory_loops, 0),
                               ("--threads", args.threads or 1, 1)):
        if value < least:
            raise UsageError(f"{name} must be {least} or more, got {value}")
    if args.device not in (None, *backends.DEVICES):
        raise UsageError(f"unknown device {args.device!r}; allowed: {', '.join(backends.DEVICES)}")
    return plan


def bench(args, argv: list[str]) -> Path:
    plan = check(args)
    task_names = [t.strip() for t in args.task.split(",") if t.strip()]
    if not args.model and not task_names:
        raise UsageError("give --model FILE or --task with one of: " + ", ".join(TASKS))
    bad = [t for t in task_names if t not in TASKS]
    if bad:
        raise UsageError(f"unknown task {bad[0]!r}; allowed: {', '.join(TASKS)}")
    models = args.model or [default_model(t) for t in task_names]
    if args.learner and len(args.learner) != len(models):
        raise UsageError(f"{len(args.learner)} --learner for {len(models)} models: give one per model, in order")
    old = read_old(args.compare) if args.compare else None
    out = report.output_folder(args.out)
    info = media.probe(args.video)
    learners = args.learner or [None] * len(models)
    subjects = [subject(path, learners[n], args, plan) for n, path in enumerate(models)]
    about = machine()
    load = RunLoad(about["cores"], idle_load(BEFORE_S), os.getloadavg()[0] if hasattr(os, "getloadavg") else None)

    progress = Progress(total=sum(plan.steps(s) for s in subjects), enabled=not args.quiet)
    with progress, tempfile.TemporaryDirectory(prefix="edge-bench-") as work, LoadMeter() as during:
        results = [bench_model(s, args, info, plan, Path(work), progress, load) for s in subjects]
    load.during_others_cores = during.others_cores
    document = {
        "video": os.path.basename(args.video), "frames": min(r["frames"] for r in results), "repeats": args.repeat,
        "warmup": args.warmup, "machine": about, "load": asdict(load),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": "edge-bench " + " ".join(argv),
        "models": results,
    }
    try:
        path = report.write(document, out, old=old, old_name=Path(args.compare).name if old else "")
    except OSError as err:
        raise OutputError(f"cannot write the report into {out}: {err.strerror}; choose another --out") from None
    for r in results:  # the report says it too; a run left to itself should not hide it in a file
        reasons = analysis.reasons_of(r["headline"] or {})
        if reasons:
            print(f"edge-bench: warning: {r['model']}: unreliable: {'; '.join(reasons)}", file=sys.stderr)
    return path


def read_old(path: str) -> dict:
    try:
        old = json.loads(Path(path).read_text())
    except OSError as err:
        raise InputError(f"--compare {path}: {err.strerror}") from None
    except ValueError:
        raise InputError(f"--compare {path}: not JSON; give a report.json written by edge-bench") from None
    if not isinstance(old, dict) or "models" not in old:
        raise InputError(f"--compare {path}: not an edge-bench report.json")
    return old


def subject(path: str, learner: str | None, args, plan: Plan) -> Subject:
    """Read the model's contract, make both baselines ready and find the backends that cannot run
    it, so that nothing the user can fix fails after minutes of measuring."""
    try:
        loaded = backends.load(path, threads=args.threads)
    except ImportError as err:
        raise ModelError(f"{path}: its backend needs {err.name}, which is not installed") from None
    contract = parse(loaded.metadata, source=path)
    check_io(path, loaded, contract)
    del loaded
    try:
        frame_to_result, baseline_contract, device = baselines.hand_loop(model_file(path, "onnxruntime"),
                                                                          args.device or "cpu")
        hand = (frame_to_result, device) if baseline_contract == contract else "its .onnx carries another contract"
    except Unavailable as why:
        hand = str(why)
    except Exception as err:  # onnxruntime raises untyped errors for a file it cannot open
        hand = f"onnxruntime cannot open the .onnx ({last_line(err)})"
    predict = "no --learner given"
    if learner:
        try:
            predict = baselines.learn_predict(learner, contract)
        except ImportError as err:
            predict = f"fastai is not installed ({err.name})"
    return Subject(path, contract, file_sha256(path), hand, predict, unavailable(path, contract, args, plan))


def unavailable(path: str, contract: Contract, args, plan: Plan) -> dict[tuple[str, str], str]:
    """Why each backend and precision that cannot run the model here cannot, found by loading
    each once: the progress counts only what will be measured, and a model no backend can run
    fails at once."""
    why = {}
    for backend in plan.backends:
        for precision in plan.precisions:
            try:
                _, load, first = loader(path, contract, args, plan, backend, precision)
                load(batch=first)
            except Unavailable as err:
                why[(backend, precision)] = str(err)
            stages.release_gpu_cache()
    if len(why) == len(plan.backends) * len(plan.precisions):
        reasons = "; ".join(f"{backend} {precision}: {reason}" for (backend, precision), reason in why.items())
        raise UsageError(f"no backend of --backends {args.backends} can run {Path(path).name} here ({reasons})")
    return why


def loader(path: str, contract: Contract, args, plan: Plan, backend: str,
           precision: str) -> tuple[str, partial, int]:
    """The file `backend` runs, its loader at a batch size, and the batch size to load first: a
    TensorRT engine is built for one batch size (the first measured), the others take any."""
    file = model_file(path, backend)
    load = partial(stages.load_backend, file, backend=backend, device=args.device, precision=precision,
                   threads=args.threads, contract=contract)
    return file, load, plan.batches[0] if backend == "tensorrt" else max(plan.batches)


def bench_model(s: Subject, args, info, plan: Plan, work: Path, progress: Progress, load: RunLoad) -> dict:
    model = Model(s.path, s.contract, backend=None, folder_name=s.contract.task, sha256=s.sha256)
    pixels = pixels_for([s.contract.task])
    frames = stages.first_frames(args.video, args.frames, pixels)  # as the pipeline's decoder gives them
    if not frames:
        raise InputError(f"{args.video}: no frame could be decoded")
    on_cpu = backends.default_device(plan.backends[0], args.device) == "cpu"
    options = tasks.Options(encoder=writer.pick_encoder("auto", on_gpu=not on_cpu, size=(info.width, info.height)))
    setup = stages.Setup(args.video, info, frames, model, options, args.repeat, args.warmup, work, load.cores,
                         progress)
    result = {"model": s.name, "path": os.path.abspath(s.path), "sha256": s.sha256, "task": s.contract.task,
              "producer": s.contract.producer or "unknown", "input_size": list(s.contract.input_size),
              "frames": len(frames), "decode": {}, "preprocess": {}, "inference": [], "postprocess": {},
              "sinks": {}, "pipeline": [], "baselines": {},
              # what the pipeline's decoder gives: on a GPU frames go there as planes where they can
              "pipeline_decode": "decode + RGB" if pixels_for(
                  [s.contract.task], on_device=not on_cpu, upload="rgb" if on_cpu else "planes") in ("all", "selected")
              else "decode + planes"}
    # Stages alone run with OpenCV's threads as edge.api.run sets them on the first backend's device.
    opencv = 1 if on_cpu else None
    result["opencv_threads"] = opencv or "default"

    with opencv_threads(opencv):
        for decoder, kind in decodes(pixels):
            progress.step(f"{s.name}: {kind} ({decoder})")
            result["decode"].setdefault(decoder, {})[kind] = stages.decode(setup, decoder=decoder, kind=kind)
        for b in plan.batches:
            progress.step(f"{s.name}: preprocess batch {b}")
            result["preprocess"][str(b)], _ = stages.preprocess(setup, b)
    ran = inference(setup, s, args, plan, result, progress, opencv)

    for backend, precision, file, b in ran:
        progress.step(f"{s.name}: pipeline {backend} {precision} batch {b}")
        result["pipeline"].append(stages.pipeline_row(setup, file, backend=backend, device=args.device,
                                                      precision=precision, batch=b, threads=args.threads))

    progress.step(f"{s.name}: hand-written loop")
    result["baselines"]["hand loop"] = baselines.measured(setup, s.hand_loop, "hand loop")
    progress.step(f"{s.name}: learn.predict")
    result["baselines"]["learn.predict"] = baselines.measured(setup, s.learn_predict, "learn.predict")
    progress.step(f"{s.name}: headline")
    result["headline"] = remeasure.settled_headline(setup, s.contract, result, load.reasons(), device=args.device,
                                                     threads=args.threads)
    progress.step(f"{s.name}: peak memory")
    result["memory"] = peak_memory(setup, result, args)
    return result


def decodes(pixels: str) -> list[tuple[str, str]]:
    """(decoder, kind) measured: each decoder without and with RGB, and PyAV the way the
    pipeline reads on the host, as planes."""
    kinds = [(decoder, kind) for decoder in media.DECODERS for kind in ("decode", "decode + RGB")]
    return kinds + [("pyav", "decode + planes")] if pixels in ("planes", "all_planes") else kinds


def inference(setup, s: Subject, args, plan: Plan, result: dict, progress, opencv) -> list[tuple]:
    """Each backend and precision at each batch size, one batch size's data in memory at a time;
    postprocessing and the sinks measured on the first outputs of each size. Returns the
    (backend, precision, file, batch) that ran, for the pipeline."""
    ran, finished = [], None
    for backend in plan.backends:
        for precision in plan.precisions:
            head = {"stage": "inference alone", "backend": backend, "precision": precision}
            if (backend, precision) in s.unavailable:  # not counted in the progress
                result["inference"].append({**head, "unavailable": s.unavailable[(backend, precision)]})
                continue
            try:
                file, load, first = loader(s.path, s.contract, args, plan, backend, precision)
                loaded = load(batch=first)
            except Unavailable as why:  # it loaded a moment ago: the machine changed since (GPU memory taken)
                result["inference"].append({**head, "unavailable": str(why)})
                progress.drop(2 * len(plan.batches))
                continue
            for b in plan.batches:
                progress.step(f"{s.name}: {backend} {precision} batch {b}")
                row = {**head, "batch": b}
                try:
                    runs = load(batch=b) if b != first and backend == "tensorrt" else loaded
                    batches = list(batch_frames(setup.frames, [setup.model], b))
                    row.update(stages.inference(setup, runs, batches))
                except Unavailable as why:
                    row["unavailable"] = str(why)
                except Exception as err:  # a backend failing at one size (out of GPU memory) is a finding
                    row["failed"] = f"{type(err).__name__}: {last_line(err)}"
                result["inference"].append(row)
                if "fps" not in row:
                    progress.drop(1)  # its pipeline step
                    continue
                ran.append((backend, precision, file, b))
                if str(b) not in result["postprocess"]:
                    progress.step(f"{s.name}: postprocess batch {b}")
                    with opencv_threads(opencv):
                        result["postprocess"][str(b)], done = stages.postprocess(
                            setup, batches, stages.outputs(setup, runs, batches))
                    finished = finished or done
            loaded = runs = None
            stages.release_gpu_cache()
    if not ran:
        reasons = "; ".join(f"{r['backend']} {r['precision']}: {r.get('unavailable') or r.get('failed')}"
                            for r in result["inference"])
        raise UsageError(f"no backend of --backends {args.backends} can run {s.name} here ({reasons})")
    progress.drop(len(plan.batches) - len(result["postprocess"]))
    progress.step(f"{s.name}: sinks")
    with opencv_threads(opencv):
        result["sinks"] = stages.sinks(setup, finished)
    return ran


def peak_memory(setup, result: dict, args) -> dict:
    """Peak RSS of edge-run on the N frames with the best configuration; with --memory-loops,
    also on the whole video and on it looped, to show memory stays flat over a long run."""
    h = analysis.best_pipeline(result)
    if h is None:
        return {"runs": []}
    common = ["--model", model_file(result["path"], h["backend"]), "--backend", h["backend"],
              "--precision", h["precision"], "--batch", str(h["batch"]), "--out", str(setup.scratch())]
    common += ["--device", args.device] if args.device else []
    common += ["--threads", str(args.threads)] if args.threads else []
    mb, frames = memory.peak_rss_mb([setup.video, "--end", f"{setup.end_s:.6f}", *common])
    runs = [{"frames": frames, "peak_rss_mb": round(mb, 1)}]
    if not args.memory_loops:
        return {"runs": runs}
    looped = memory.loop_video(setup.video, args.memory_loops, str(setup.scratch() / f"looped{Path(setup.video).suffix}"))
    for video in (setup.video, looped):
        mb, frames = memory.peak_rss_mb([video, *common])
        runs.append({"frames": frames, "peak_rss_mb": round(mb, 1)})
    return {"runs": runs, "growth": round(runs[-1]["peak_rss_mb"] / runs[-2]["peak_rss_mb"] - 1, 4)}


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
