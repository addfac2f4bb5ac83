"""`edge-bench VIDEO --model M` (or `--task T`): how fast is this model on this box, where does
the time go, and how much better is it than the obvious way.

On the first N frames of VIDEO it measures each stage of `edge-run` alone (decode, decode with
colour conversion, preprocessing, inference for each backend, precision and batch size,
postprocessing, each sink with its encoding), then the whole pipeline, then two baselines on the
same frames and model: a hand-written OpenCV + onnxruntime loop, and fastai's `learn.predict`
frame by frame (with `--learner`). Writes report.md, report.json and two plots into --out.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from edge import backends, media, runner, tasks
from edge.errors import EdgeError, InputError, UsageError
from edge.model import TASKS, file_sha256, parse

from . import analysis, baselines, memory, report, stages
from .measure import machine
from .stages import Unavailable

BENCH_BACKENDS = tuple(b for b in backends.BACKENDS if b != "auto")
FILES = {"onnxruntime": (".onnx",), "torch": (".pt2",), "tensorrt": (".engine", ".onnx")}
WARM_FRAMES = 8  # a baseline's warm-up: enough frames to load and allocate everything


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
    p.add_argument("--frames", type=int, default=200, help="first N frames of VIDEO (default 200)")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats per figure (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before them (default 1)")
    p.add_argument("--memory-loops", type=int, default=0, metavar="K",
                   help="also measure peak memory over the whole VIDEO and VIDEO looped K times")
    p.add_argument("--compare", metavar="OLD.json", help="show the change against an earlier report.json")
    p.add_argument("--out", default="edge-bench", metavar="DIR", help="where the report goes (default edge-bench/)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


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
        path = bench(args, argv if argv is not None else sys.argv[1:])
    except EdgeError as err:
        if args.debug:
            traceback.print_exc()
        print(f"edge-bench: error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"wrote {path}", file=sys.stderr)
    return 0


def bench(args, argv: list[str]) -> Path:
    plan = {
        "backends": listed("--backends", args.backends, BENCH_BACKENDS),
        "precisions": listed("--precision", args.precision, backends.PRECISIONS),
        "batches": listed("--batch", args.batch, kind=int),
    }
    for name, value, least in (("--frames", args.frames, 1), ("--repeat", args.repeat, 1),
                               ("--warmup", args.warmup, 0), ("--memory-loops", args.memory_loops, 0)):
        if value < least:
            raise UsageError(f"{name} must be {least} or more, got {value}")
    if args.device not in (None, *backends.DEVICES):
        raise UsageError(f"unknown device {args.device!r}; allowed: {', '.join(backends.DEVICES)}")
    task_names = [t.strip() for t in args.task.split(",") if t.strip()]
    if not args.model and not task_names:
        raise UsageError("give --model FILE or --task with one of: " + ", ".join(TASKS))
    bad = [t for t in task_names if t not in TASKS]
    if bad:
        raise UsageError(f"unknown task {bad[0]!r}; allowed: {', '.join(TASKS)}")
    models = args.model or [runner.default_model(t) for t in task_names]
    if args.learner and len(args.learner) != len(models):
        raise UsageError(f"{len(args.learner)} --learner for {len(models)} models: give one per model, in order")
    old = read_old(args.compare) if args.compare else None
    info = media.probe(args.video)

    cores = machine()["cores"]
    progress = Progress(total=len(models) * steps_per_model(plan), enabled=not args.quiet)
    with progress, tempfile.TemporaryDirectory(prefix="edge-bench-") as work:
        results = []
        for n, path in enumerate(models):
            learner = args.learner[n] if args.learner else None
            result = bench_model(path, learner, args, info, plan, Path(work), progress)
            result["headline"] = analysis.headline(result, cores)
            results.append(result)
    out = {
        "video": os.path.basename(args.video), "frames": len_frames(results), "repeats": args.repeat,
        "warmup": args.warmup, "machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "edge-bench " + " ".join(argv), "models": results,
    }
    return report.write(out, Path(args.out), compare_with=args.compare if old else None)


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


def len_frames(results: list[dict]) -> int:
    return min(r["frames"] for r in results)


def steps_per_model(plan: dict) -> int:
    combos = len(plan["backends"]) * len(plan["precisions"])
    # 4 decode figures, preprocess + postprocess per batch, inference and pipeline per combo and
    # batch, sinks, two baselines, memory
    return 4 + 2 * len(plan["batches"]) + 2 * combos * len(plan["batches"]) + 1 + 2 + 1


def model_file(path: str, backend: str) -> str:
    """The file `backend` runs for the model at `path`: itself, or a sibling with its extension."""
    stem, ext = os.path.splitext(path)
    wanted = FILES[backend]
    if ext.lower() in wanted:
        return path
    for other in wanted:
        if os.path.isfile(stem + other):
            return stem + other
    hint = " (edge-export --torch-program writes one)" if backend == "torch" else ""
    raise Unavailable(f"{backend} runs {' or '.join(wanted)} files; there is no {Path(stem).name}{wanted[0]} "
                      f"beside {Path(path).name}{hint}")


def bench_model(path: str, learner: str | None, args, info, plan: dict, work: Path, progress) -> dict:
    loaded = backends.load(path, threads=args.threads)  # the model's contract; a bad file fails here
    contract = parse(loaded.metadata, source=path)
    runner.check_io(path, loaded, contract)
    del loaded
    frames = stages.first_frames(args.video, args.frames)
    if not frames:
        raise InputError(f"{args.video}: no frame could be decoded")
    model = runner.Model(path, contract, backend=None, folder_name=contract.task, sha256=file_sha256(path))
    setup = stages.Setup(args.video, info, frames, model, tasks.Options(), args.repeat, args.warmup, work)
    name = Path(path).name
    result = {"model": name, "path": os.path.abspath(path), "sha256": model.sha256, "task": contract.task,
              "producer": contract.producer or "unknown", "input_size": list(contract.input_size),
              "frames": len(frames), "decode": {}, "preprocess": {}, "inference": [], "postprocess": {},
              "sinks": {}, "pipeline": [], "baselines": {}}

    # the stages alone run with OpenCV's threads as runner.run sets them for this device
    opencv = 1 if (args.device or "cpu") == "cpu" else None
    result["opencv_threads"] = opencv or "default"
    with runner.opencv_threads(opencv):
        batches = stages_before_inference(setup, plan, result, progress)
    outputs, available = inference(setup, path, args, plan, batches, result, progress)
    with runner.opencv_threads(opencv):
        finished = None
        for b in plan["batches"]:
            progress.step(f"{name}: postprocess batch {b}")
            result["postprocess"][str(b)], done = stages.postprocess(setup, batches[b], outputs[b])
            finished = finished or done
        progress.step(f"{name}: sinks")
        result["sinks"] = stages.sinks(setup, finished)

    for backend, precision, file in available:
        for b in plan["batches"]:
            progress.step(f"{name}: pipeline {backend} {precision} batch {b}")
            fig = stages.pipeline(setup, file, backend=backend, device=args.device, precision=precision, batch=b,
                                  threads=args.threads)
            result["pipeline"].append({"stage": "pipeline", "backend": backend, "precision": precision,
                                       "batch": b, **fig})

    progress.step(f"{name}: hand-written loop")
    result["baselines"]["hand loop"] = hand_loop(setup, path)
    progress.step(f"{name}: learn.predict")
    result["baselines"]["learn.predict"] = learn_predict(setup, learner, contract)
    progress.step(f"{name}: peak memory")
    result["memory"] = peak_memory(setup, result, args)
    return result


def stages_before_inference(setup, plan: dict, result: dict, progress) -> dict[int, list]:
    """Decode figures for each decoder, with and without colour conversion; preprocessing
    figures and batches for each batch size."""
    name = result["model"]
    for decoder in media.DECODERS:
        for kind, convert in (("decode", False), ("decode + RGB", True)):
            progress.step(f"{name}: {kind} ({decoder})")
            result["decode"].setdefault(decoder, {})[kind] = stages.decode(setup, decoder=decoder, convert=convert)
    batches = {}
    for b in plan["batches"]:
        progress.step(f"{name}: preprocess batch {b}")
        result["preprocess"][str(b)], batches[b] = stages.preprocess(setup, b)
    return batches


def inference(setup, path: str, args, plan: dict, batches: dict, result: dict, progress) -> tuple[dict, list]:
    """Each backend and precision at each batch size; the outputs of the first that ran (for
    postprocessing), and which (backend, precision, file) ran."""
    name = result["model"]
    outputs, available = {}, []
    for backend in plan["backends"]:
        for precision in plan["precisions"]:
            head = {"stage": "inference alone", "backend": backend, "precision": precision}
            try:
                file = model_file(path, backend)
                loaded = stages.load_backend(file, backend=backend, device=args.device, precision=precision,
                                             batch=max(plan["batches"]), threads=args.threads)
            except Unavailable as why:
                result["inference"].append({**head, "unavailable": str(why)})
                progress.skip(2 * len(plan["batches"]))
                continue
            available.append((backend, precision, file))
            for b in plan["batches"]:
                progress.step(f"{name}: {backend} {precision} batch {b}")
                fig, out = stages.inference(setup, loaded, batches[b])
                outputs.setdefault(b, out)
                result["inference"].append({**head, "batch": b, **fig})
            del loaded
    if not available:
        reasons = "; ".join(f"{r['backend']} {r['precision']}: {r['unavailable']}" for r in result["inference"])
        raise UsageError(f"no backend of --backends {args.backends} can run {name} here ({reasons})")
    return outputs, available


def hand_loop(setup, path: str) -> dict:
    try:
        onnx_file = model_file(path, "onnxruntime")
    except Unavailable as why:
        return {"unavailable": str(why)}
    frame_to_result, contract = baselines.hand_loop(onnx_file)
    return baseline(setup, contract, frame_to_result)


def learn_predict(setup, learner: str | None, contract) -> dict:
    if learner is None:
        return {"unavailable": "no --learner given"}
    try:
        frame_to_result = baselines.learn_predict(learner, contract)
    except ImportError as err:
        return {"unavailable": f"fastai is not installed ({err.name})"}
    return baseline(setup, contract, frame_to_result)


def baseline(setup, contract, frame_to_result) -> dict:
    def run(frames: int):
        folder = setup.scratch()
        done = baselines.over_video(setup.video, frames, str(folder), contract, frame_to_result)
        if done != frames:
            raise InputError(f"{setup.video}: OpenCV read {done} frames, not {frames}; the baselines need the same")

    return setup.measure(lambda: run(len(setup.frames)), warm=lambda: run(min(WARM_FRAMES, len(setup.frames))))


def peak_memory(setup, result: dict, args) -> dict:
    """Peak RSS of edge-run on the N frames with the best configuration; with --memory-loops,
    also on the whole video and on it looped, to show memory stays flat over a long run."""
    h = analysis.best_pipeline(result)
    common = ["--model", model_file(result["path"], h["backend"]), "--backend", h["backend"],
              "--precision", h["precision"], "--batch", str(h["batch"]), "--out", str(setup.scratch())]
    if args.device:
        common += ["--device", args.device]
    mb, frames = memory.peak_rss_mb([setup.video, "--end", f"{setup.end_s:.6f}", *common])
    runs = [{"frames": frames, "peak_rss_mb": round(mb, 1)}]
    if args.memory_loops:
        looped = memory.loop_video(setup.video, args.memory_loops, str(setup.scratch() / f"looped{Path(setup.video).suffix}"))
        for video in (setup.video, looped):
            mb, frames = memory.peak_rss_mb([video, *common])
            runs.append({"frames": frames, "peak_rss_mb": round(mb, 1)})
        return {"runs": runs, "growth": round(runs[-1]["peak_rss_mb"] / runs[-2]["peak_rss_mb"] - 1, 4)}
    return {"runs": runs}


class Progress:
    """A tqdm bar over the measurement steps, on stderr when it is a terminal."""

    def __init__(self, *, total: int, enabled: bool):
        self.total, self.enabled, self.bar = total, enabled, None

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="step", file=sys.stderr, dynamic_ncols=True, disable=None)
        return self

    def step(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(label[:60])
            self.bar.update(1)

    def skip(self, steps: int) -> None:
        if self.bar is not None and steps > 0:
            self.bar.update(steps)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
