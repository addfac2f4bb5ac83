"""`edge-run`: argparse in, one `api.run(...)` call, exit codes from the error family."""

import argparse
import json
import sys
import threading
import traceback
from pathlib import Path

from . import __version__, tasks
from .choices import BackendName, Decoder, Device, FramesOn, Precision, Upload, words
from .errors import EdgeError, user_line
from .model import TASKS
from .api import run
from .run.options import CHECKPOINT_S, RunOptions
from .run.summary import RunSummary


OPTION_DEFAULTS = tasks.Options()
SOME_FAILED = 7  # the exit code when some of several inputs failed: each failure is its own input's


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-run",
        description="Run camvid / planet / biwi models over videos; write overlays, tag timelines and tracks.",
        epilog="exit codes: 0 ok, 2 usage, 3 input, 4 model, 5 output, 6 a pipeline stage failed, "
        f"{SOME_FAILED} some of several inputs failed (each with its own line; see OUT/jobs.json), "
        "8 the Ray cluster cannot be reached or lost its workers, 130 Ctrl-C, 143 SIGTERM",
    )
    p.add_argument("inputs", nargs="+", metavar="VIDEO",
                   help="video or image files; folders (their videos, recursively; or, with none, their images as "
                        "a sequence at 25 frames/s); quoted globs; @LIST, a file listing such paths")
    p.add_argument("--model", action="append", default=[], metavar="FILE.onnx",
                   help="a model that honours the contract (repeat for several models on one decode)")
    p.add_argument("--task", default="", metavar="TASKS",
                   help=f"comma-separated tasks ({','.join(TASKS)}): their default models, or a check on --model")
    p.add_argument("--out", default="edge-out", metavar="DIR",
                   help="outputs go to DIR/<video name>/<task, or model file name>/")
    p.add_argument("--batch", type=int, help="frames per inference batch (default: the backend's)")
    p.add_argument("--decoder", default="pyav", choices=words(Decoder), help="pyav (default) or opencv")
    p.add_argument("--stream", type=int, default=0, metavar="N",
                   help="which video stream of a file with several (default 0, the first; pyav only)")
    _model_options(p)
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--stride", type=int, default=1, metavar="N", help="process every Nth frame")
    pick.add_argument("--sample-fps", type=float, metavar="F", help="process F frames per second of video")
    p.add_argument("--start", type=float, metavar="SECONDS", help="first time to process")
    p.add_argument("--end", type=float, metavar="SECONDS", help="time to stop at (exclusive)")
    _task_options(p)
    _scale_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"edge {__version__}")
    return p


def _model_options(p: argparse.ArgumentParser) -> None:
    """How and where the models run."""
    p.add_argument("--backend", default="auto", choices=words(BackendName),
                   help="auto (by file extension: .onnx onnxruntime, .pt2 torch, .engine tensorrt), onnxruntime, "
                        "torch or tensorrt (builds an fp16 engine from an .onnx once, into a cache)")
    p.add_argument("--device", choices=words(Device),
                   help="cpu or cuda (default: cuda for --backend tensorrt, else cpu)")
    p.add_argument("--precision", choices=words(Precision),
                   help="fp16 or fp32 (default: fp16 for tensorrt and torch on cuda, else fp32)")
    p.add_argument("--frames-on", default="auto", choices=words(FramesOn),
                   help="where frames meet the models: host (numpy and OpenCV), device (as torch tensors on the "
                        "models' device), or auto (default: the device for a GPU, else the host)")
    p.add_argument("--upload", default="auto", choices=words(Upload),
                   help="how frames go to the model's device: planes (I420, half the bytes, converted there) or "
                        "rgb (default auto: planes to a GPU, rgb to CPU tensors)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: fit to this machine)")


def _task_options(p: argparse.ArgumentParser) -> None:
    """What each task draws and keeps."""
    p.add_argument("--alpha", type=float, default=OPTION_DEFAULTS.alpha,
                   help=f"camvid overlay opacity, 0..1 (default {OPTION_DEFAULTS.alpha})")
    p.add_argument("--threshold", type=float, help="planet: one threshold for every tag, instead of the model's")
    p.add_argument("--min-duration", type=float, default=OPTION_DEFAULTS.min_duration_s, metavar="SECONDS",
                   help="planet: shortest interval kept, and shortest gap that splits one "
                        f"(default {OPTION_DEFAULTS.min_duration_s})")
    p.add_argument("--preset", default=OPTION_DEFAULTS.preset,
                   help=f"x264 preset of overlay videos (default {OPTION_DEFAULTS.preset}: the least CPU); "
                        "slower ones make smaller files")
    p.add_argument("--encoder", default=OPTION_DEFAULTS.encoder,
                   help="H.264 encoder of overlay videos: auto (default: the GPU's NVENC on a CUDA run where it "
                        "opens, else x264), libx264 or h264_nvenc")
    p.add_argument("--save-masks", action="store_true", help="camvid: also write class-id masks as PNGs")


def _scale_options(p: argparse.ArgumentParser) -> None:
    """Many inputs, clusters, and what a rerun does."""
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="inputs processed side by side (default 1), sharing the loaded models and dividing the "
                        "cores between their decoders and encoders")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="spread the inputs over a Ray cluster (pip install 'edge[ray]'): auto (the one running here, "
                        "else one of this machine alone) or HEAD:PORT; one worker per node, or per GPU on cuda, each "
                        "running --jobs inputs; inputs, models and --out must be on paths every node sees")
    p.add_argument("--ray-cpus", type=int, metavar="N",
                   help="CPUs each Ray worker reserves, as many workers on a node as fit (default: one worker "
                        "taking all of its node's, or with --device cuda its GPU's share)")
    p.add_argument("--force", action="store_true", help="run inputs again that this command already finished")
    p.add_argument("--retry-failed", action="store_true", help="run inputs again that failed before (see jobs.json)")
    p.add_argument("--resume", action="store_true",
                   help="carry on an interrupted run of the same command from its last checkpoint, and skip "
                        "inputs it already finished")
    p.add_argument("--checkpoint-every", type=float, default=CHECKPOINT_S, metavar="SECONDS",
                   help="seconds of video between the checkpoints --resume starts from "
                        f"(default {CHECKPOINT_S:g}; part of what --resume checks is the same)")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # argparse itself exits 2 on a malformed command line
    try:
        summaries = _run(args)
    except EdgeError as err:
        if args.debug:
            traceback.print_exc()
        print(f"edge-run: error: {user_line(err)}", file=sys.stderr)
        return err.exit_code
    for s in summaries:
        for line in warnings(s) if s.status == "done" else []:
            print(f"edge-run: warning: {line}", file=sys.stderr)
    failed = [s for s in summaries if s.status == "failed"]
    for s in failed:
        earlier = " (recorded by an earlier run; --retry-failed runs it again)" if s.earlier else ""
        print(f"edge-run: error: {s.error}{earlier}", file=sys.stderr)
    if args.json:
        json.dump([s.to_json() for s in summaries], sys.stdout, indent=2)
        print()
    elif not args.quiet:
        for s in summaries:
            print(line_of(s))
        if len(summaries) > 1:
            print(totals_line(summaries, Path(args.out) / "jobs.json"))
    return SOME_FAILED if failed else 0


def line_of(s: RunSummary) -> str:
    """One input's outcome, in a line."""
    if s.status == "failed":
        return f"{s.input}: failed (exit {s.exit_code})"
    if s.status == "skipped":
        return f"{s.input}: already done -> {', '.join(s.outputs.values())}"
    f = s.frames
    corrupt = f", {f.corrupt_skipped} corrupt skipped" if f.corrupt_skipped else ""
    resumed = f" ({s.resumed.frames_before} of them before resuming)" if s.resumed else ""
    return (f"{s.input}: {f.in_range} frames{resumed}, {f.processed} processed{corrupt} "
            f"in {s.seconds.total:.1f} s ({s.frames_per_s} frames/s) -> {', '.join(s.outputs.values())}")


def totals_line(summaries: list[RunSummary], manifest: Path) -> str:
    """The run as a whole: inputs by outcome, and the frames this run wrote, per second of its inputs' time."""
    ran = [s for s in summaries if s.status == "done"]
    frames = sum(s.frames.in_range - (s.resumed.frames_before if s.resumed else 0) for s in ran)
    seconds = sum(s.seconds.total for s in ran)
    counts = {state: sum(s.status == state for s in summaries) for state in ("done", "skipped", "failed")}
    rate = f" ({frames / seconds:.1f} frames/s)" if seconds else ""
    return (f"{len(summaries)} inputs: {counts['done']} done, {counts['skipped']} already done, "
            f"{counts['failed']} failed; {frames} frames in {seconds:.1f} s{rate}; see {manifest}")


def warnings(summary: RunSummary) -> list[str]:
    """What a finished run must not keep quiet about."""
    out, f = [], summary.frames
    early = summary.stopped_early
    if f.read_error:
        where = f"after {f.last_time_s:.3f} s" if f.last_time_s is not None else "before the range"
        out.append(f"{summary.input}: reading stopped {where} on damage ({f.read_error}); "
                   f"every frame before was processed")
    elif early:
        out.append(f"{summary.input} ends at {early.at_s} s of the {early.expected_end_s} s its container "
                   f"declares: the file is cut short or damaged; every frame before was processed")
    for name, model in summary.models.items():
        if model.nonfinite_output:
            out.append(f"{summary.input}: the {name} model gave NaN or Inf for {model.nonfinite_output} frames "
                       f"(the first at {model.nonfinite_times_s[0]:.3f} s), which have no result; check the model "
                       f"with edge-export's parity gate, or run it in fp32")
    return out


def _run(args) -> list[RunSummary]:
    task_options = tasks.Options(alpha=args.alpha, threshold=args.threshold, min_duration_s=args.min_duration,
                                 save_masks=args.save_masks, preset=args.preset, encoder=args.encoder)
    options = RunOptions(
        models=args.model, task_names=[t.strip() for t in args.task.split(",") if t.strip()], out=args.out,
        batch=args.batch, decoder=args.decoder, stream=args.stream, stride=args.stride, sample_fps=args.sample_fps,
        start_s=args.start, end_s=args.end, backend=args.backend, device=args.device, ort_threads=args.threads,
        precision=args.precision, task_options=task_options, checkpoint_s=args.checkpoint_every, upload=args.upload,
        frames_on=args.frames_on, jobs=args.jobs, ray=args.ray, ray_cpus=args.ray_cpus, resume=args.resume,
        force=args.force, retry_failed=args.retry_failed)
    with Progress(enabled=not args.quiet and not args.json and sys.stderr.isatty()) as progress:
        return run(args.inputs, options, progress=progress,
                   notice=lambda m: None if args.quiet or args.json else print(m, file=sys.stderr))


class Progress:
    """A tqdm bar on stderr, fed with the frames written so far by each input: one input's
    bar knows its end, several inputs' counts add up."""

    def __init__(self, *, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.written: dict[str, int] = {}
        self.total = 0  # of self.written, kept rather than summed over thousands of inputs at every tick
        self.lock = threading.Lock()

    def __enter__(self):
        if not self.enabled:
            return None
        from tqdm import tqdm

        self.bar = tqdm(unit="frame", file=sys.stderr, dynamic_ncols=True, leave=False)
        return self.update

    def update(self, key: str, written: int, expected: int | None) -> None:
        with self.lock:  # jobs side by side report from their own threads
            self.total += written - self.written.get(key, 0)
            self.written[key] = written
            total = expected if len(self.written) == 1 else None
            if self.bar.total != total:
                self.bar.total = total
            self.bar.update(self.total - self.bar.n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
