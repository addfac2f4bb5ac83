"""`edge-bench VIDEO --host`: how fast the host side of edge is, against FFmpeg on the same clip.

On a GPU box the model costs almost nothing, so decoding, colour conversion, drawing and
encoding on the CPU decide the speed. This mode measures that here: edge runs free models
(bench/free_models.py: the default models' contracts, trivial graphs), and FFmpeg does the same
decode and encode alone, which is as fast as that work goes on this machine:

- camvid, biwi (an overlay video each) and all three in one run: against FFmpeg decoding the clip
  and encoding it with x264 as edge's overlay does;
- planet (tags, no video): against FFmpeg decoding alone; and planet at --sample-fps 1 beside it, to
  see what sampling saves.

With --host-device cpu|cuda, edge takes its device path instead, as on a GPU box: the free
models' torch programs run on that device, frames go there (camvid blends there), and overlays
use the encoder edge picks (NVENC on a GPU where it opens, else x264); FFmpeg's anchors encode
with that same encoder, so the ratio compares like with like. On cpu it is the same code on CPU
tensors, which is what the tests run.

Each work item runs in rounds that alternate FFmpeg and edge, so that a change in the machine's
load falls on both; the median round counts. With --host-sizes, copies of the clip scaled to
each size are made first, and every item runs on each.
"""

import dataclasses
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from edge import api, media, tasks, writer
from edge.errors import InputError, OutputError, UsageError
from edge.run.options import RunOptions
from edge.run.summary import RunSummary

from . import host_report, report
from .host_report import SAMPLING_GOAL, Figures, Report, Row, Sampling
from .free_models import free_model, program_of
from .measure import machine
from .progress import Progress

FFMPEG_MISSING = "edge-bench --host needs the ffmpeg command: apt-get install ffmpeg"
NEEDS_TORCH = "--host-device runs the free models as torch programs, which needs torch: pip install torch"
NO_CUDA = "--host-device cuda: torch sees no CUDA GPU here; run it on a CUDA machine, or use --host-device cpu"
QUIET = ["-nostdin", "-v", "error", "-y"]
PRESET = tasks.Options().preset  # the overlay's
CRF = 20  # VideoWriter's default, which the overlay sink leaves as it is
DECODE = ["-map", "0:v:0", "-f", "null", "-"]
# An anchor that encodes is named after its encoder where that is not x264, the host path's.
ANCHOR_SUFFIX = {"libx264": "", "h264_nvenc": " nvenc"}
# The scaled copies: what a camera gives, a keyframe every 25 frames (a second at 25 fps) and
# nowhere else, B-frames between.
SCALE = ["-map", "0:v:0", "-map", "0:a?", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-g", "25",
         "-keyint_min", "25", "-sc_threshold", "0", "-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac"]
TASKS = ("camvid", "planet", "biwi")
WARM_UP_FRAMES = 3


@dataclass(frozen=True)
class Item:
    """One piece of work edge does, the FFmpeg command it is held against and the least share
    of FFmpeg's speed it should reach (None: a figure to read, not a goal)."""

    name: str
    tasks: tuple[str, ...]
    anchor: str  # "transcode" or "decode"
    goal: float | None
    sample_fps: float | None = None
    same_work: bool = False  # also against FFmpeg doing what edge does: one decode, two encodes


# the three models in one run, from one decode; the goal is against one transcode, though edge
# encodes two overlay videos
ALL = Item("all", TASKS, "transcode", 0.7, same_work=True)
ITEMS = (
    Item("camvid", ("camvid",), "transcode", 0.8),
    Item("biwi", ("biwi",), "transcode", 0.8),
    Item("planet", ("planet",), "decode", 0.8),
    ALL,
    Item("planet --sample-fps 1", ("planet",), "decode", None, sample_fps=1.0),
)


@dataclass(frozen=True)
class Clip:
    size: str  # WxH
    path: str
    end_s: float | None  # just after the last frame measured; None: the whole clip
    fps: float


@dataclass
class Setup:
    ffmpeg: str
    models: dict[str, str]  # task: free model path (the .pt2 on the device path)
    device: str | None  # --host-device: the torch device of edge's device path; None: the host path
    repeat: int
    frames: int | None
    work: Path
    progress: Progress


def sizes(value: str) -> list[tuple[int, int]]:
    """--host-sizes: comma-separated WxH, even (x264's yuv420p halves both)."""
    out = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        w, _, h = item.lower().partition("x")
        if not (w.isdigit() and h.isdigit() and int(w) >= 2 and int(h) >= 2 and int(w) % 2 == int(h) % 2 == 0):
            raise UsageError(f"--host-sizes takes comma-separated WIDTHxHEIGHT, even, like 1280x720, got {item!r}")
        out.append((int(w), int(h)))
    return list(dict.fromkeys(out))


def check(args) -> tuple[str, list[tuple[int, int]]]:
    """FFmpeg's path and the sizes; UsageError for options that do not go with --host."""
    given = [name for name, value in (("--model", args.model), ("--task", args.task), ("--learner", args.learner))
             if value]
    if given:
        raise UsageError(f"--host measures free models of every task; it takes no {', '.join(given)}")
    for name, value in (("--frames", args.frames), ("--repeat", args.repeat)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be 1 or more, got {value}")
    wanted = sizes(args.host_sizes)
    if args.host_device is not None:
        try:
            import torch
        except ImportError:
            raise UsageError(NEEDS_TORCH) from None
        if args.host_device == "cuda" and not torch.cuda.is_available():
            raise UsageError(NO_CUDA)
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        raise UsageError(FFMPEG_MISSING)
    return ffmpeg, wanted


def bench(args, argv: list[str]) -> Path:
    """Measure every item on the clip and each scaled copy; write the report into --out."""
    ffmpeg, wanted = check(args)
    out = report.output_folder(args.out)
    info = media.probe(args.video)
    built = {task: free_model(task, out / "free-models") for task in TASKS}
    # check() found torch, so free_model wrote each program (.pt2) beside its graph
    models = {task: str(program_of(path) if args.host_device else path) for task, path in built.items()}
    progress = Progress(total=len(wanted) + (1 + len(wanted)) * len(ITEMS), enabled=not args.quiet)
    rows, encoders = [], []
    with progress, tempfile.TemporaryDirectory(prefix="edge-bench-host-") as work:
        setup = Setup(ffmpeg, models, args.host_device, args.repeat, args.frames, Path(work), progress)
        clips = [Clip(f"{info.width}x{info.height}", args.video, end_after(args.video, args.frames), info.fps)]
        for w, h in wanted:
            progress.step(f"scaling to {w}x{h}")
            clips.append(scaled(setup, args.video, w, h, out))
        for clip in clips:
            encoders.append(warm_up(setup, clip))
            for item in ITEMS:
                progress.step(f"{clip.size}: {item.name}")
                rows.append(measure(setup, clip, item, encoders[-1]))
    result = Report("edge-bench " + " ".join(argv), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine(),
                    ffmpeg_version(ffmpeg), Path(args.video).name, args.frames, args.repeat, args.host_device,
                    commands(Path(args.video).name, args.frames, encoders), rows, sampling(rows, clips))
    try:
        return host_report.write(result, out)
    except OSError as err:
        raise OutputError(f"cannot write the report into {out}: {err.strerror}; choose another --out") from None


def end_after(video: str, frames: int | None) -> float | None:
    """Just after frame `frames` of `video` (as `edge-bench --frames` stops), None for the whole
    clip. Only the first frame's pixels are converted: the rest are only counted."""
    if frames is None:
        return None
    last = None
    with closing(media.read_frames(video, pixels="selected", stride=frames)) as read:
        for last in read:
            if last.index == frames - 1:
                break
    if last is None:
        raise InputError(f"{video}: no frame could be decoded")
    return last.pts_s + 1e-3


def limit(frames: int | None) -> list[str]:
    return ["-frames:v", str(frames)] if frames else []


def scale_command(ffmpeg: str, video: str, frames: int | None, size: str, output: str) -> list[str]:
    return [ffmpeg, *QUIET, "-i", video, *limit(frames), "-vf", f"scale={size}", *SCALE, output]


def encode(encoder: str) -> list[str]:
    """FFmpeg's options for H.264 as edge's overlay writer sets `encoder` (edge/writer.py VideoWriter)."""
    if encoder == "h264_nvenc":
        # constant quality, as x264's crf: without -b:v 0 FFmpeg caps NVENC at 2 Mb/s
        return ["-c:v", "h264_nvenc", "-preset", writer.NVENC_PRESETS[PRESET], "-rc", "vbr", "-cq", str(CRF),
                "-b:v", "0"]
    return ["-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF)]


def anchor_name(anchor: str, encoder: str) -> str:
    """The anchor as the report names it: `transcode`, `two encodes nvenc`, `decode`."""
    return anchor if anchor == "decode" else anchor + ANCHOR_SUFFIX[encoder]


def anchor_command(ffmpeg: str, video: str, anchor: str, frames: int | None, output: str,
                   encoder: str | None) -> list[str]:
    """FFmpeg decoding `video` alone, transcoding it into `output` with `encoder` (audio copied,
    as edge does), or into two (`two encodes`: what all three tasks do from one decode)."""
    head = [ffmpeg, *QUIET, "-i", video, *limit(frames)]
    if anchor == "decode":
        return [*head, *DECODE]
    if anchor == "two encodes":
        return [*head, *(part for n in (1, 2) for part in ("-map", "0:v:0", *encode(encoder), f"{output}.{n}.mp4"))]
    return [*head, "-map", "0:v:0", "-map", "0:a?", *encode(encoder), "-c:a", "copy", output]


def commands(video: str, frames: int | None, encoders: list[str]) -> dict[str, str]:
    """The commands as the report names them, for each encoder edge used: with the input's name,
    and `ffmpeg` as typed."""
    out = {}
    for encoder in dict.fromkeys(encoders):
        for anchor, output in (("transcode", "TMP/transcode.mp4"), ("two encodes", "TMP/out")):
            out[anchor_name(anchor, encoder)] = " ".join(anchor_command("ffmpeg", video, anchor, frames, output,
                                                                        encoder))
    return {**out, "decode": " ".join(anchor_command("ffmpeg", video, "decode", frames, "", None)),
            "scaled copies": " ".join(scale_command("ffmpeg", video, frames, "W:H", "COPY.mp4"))}


def scaled(setup: Setup, video: str, w: int, h: int, out: Path) -> Clip:
    """A copy of `video` scaled to w x h, made into --out (of its first --frames frames where given)."""
    path = out / f"{Path(video).stem}-{w}x{h}.mp4"
    ffmpeg_once(scale_command(setup.ffmpeg, video, setup.frames, f"{w}:{h}", str(path)))
    return Clip(f"{w}x{h}", str(path), end_after(str(path), setup.frames), media.probe(str(path)).fps)


def ffmpeg_once(command: list[str]) -> tuple[float, float]:
    """Run FFmpeg: its wall time and CPU time (of the child process, user and system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise InputError(f"ffmpeg failed on {command[command.index('-i') + 1]}: {why}")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def edge_once(setup: Setup, clip: Clip, item: Item) -> tuple[float, RunSummary]:
    """Run edge in this process, as `edge-run` would: its wall time, the whole call's (FFmpeg's
    includes its start too), and the run's summary."""
    out = Path(tempfile.mkdtemp(dir=setup.work))
    # the device path: frames to the torch device even on cpu, where edge's `auto` keeps them on
    # the host; the encoder left to edge (NVENC on a GPU where it opens)
    device = {} if setup.device is None else {"backend": "torch", "device": setup.device, "frames_on": "device"}
    options = RunOptions(models=tuple(setup.models[t] for t in item.tasks), out=str(out), force=True,
                         end_s=clip.end_s, sample_fps=item.sample_fps, **device)
    start = time.perf_counter()
    (summary,) = api.run([clip.path], options)
    wall = time.perf_counter() - start
    shutil.rmtree(out)
    return wall, summary


def warm_up(setup: Setup, clip: Clip) -> str:
    """One untimed run of every task over the clip's first frames: what edge imports and sets up
    once per process (the task modules, the timeline's plotting, CUDA) is not charged to the
    first item. Returns the encoder edge picked for the clip's overlays, which FFmpeg's anchors use."""
    _, summary = edge_once(setup, dataclasses.replace(clip, end_s=end_after(clip.path, WARM_UP_FRAMES)), ALL)
    return summary.encoder


def measure(setup: Setup, clip: Clip, item: Item, encoder: str) -> Row:
    """Rounds of FFmpeg then edge; the row of the median rounds."""
    command = anchor_command(setup.ffmpeg, clip.path, item.anchor, setup.frames, str(setup.work / "transcode.mp4"),
                             encoder)
    both = anchor_command(setup.ffmpeg, clip.path, "two encodes", setup.frames, str(setup.work / "out"), encoder)
    ffmpeg, edge, same = [], [], []
    for n in range(setup.repeat):
        setup.progress.detail(f"round {n + 1}/{setup.repeat}: FFmpeg")
        ffmpeg.append(ffmpeg_once(command))
        if item.same_work:
            same.append(ffmpeg_once(both))
        setup.progress.detail(f"round {n + 1}/{setup.repeat}: edge")
        edge.append(edge_once(setup, clip, item))
    median = sorted(edge, key=lambda run: run[0])[len(edge) // 2][1]  # the summary of the median round
    frames = median.frames.in_range
    mine = figures([wall for wall, _ in edge], [s.seconds.cpu for _, s in edge], frames)
    theirs = figures([wall for wall, _ in ffmpeg], [cpu for _, cpu in ffmpeg], frames)
    ratio = round(theirs.wall_s / mine.wall_s, 3)
    threads = dict(median.stage_cpu_s)
    threads["native pools"] = median.seconds.cpu - sum(threads.values())
    alike = figures([wall for wall, _ in same], [cpu for _, cpu in same], frames) if same else None
    return Row(clip.size, item.name, median.frames_on, median.encoder, anchor_name(item.anchor, encoder), frames,
               median.frames.processed, theirs, mine, median.seconds.total, ratio, item.goal,
               None if item.goal is None else ratio >= item.goal,
               per_frame(median.seconds.stages, frames), per_frame(threads, frames), alike,
               round(alike.wall_s / mine.wall_s, 3) if alike else None)


def figures(walls: list[float], cpus: list[float], frames: int) -> Figures:
    wall = statistics.median(walls)
    return Figures(round(wall, 4), [round(w, 4) for w in walls], round(frames / wall, 2),
                   round(1000 * statistics.median(cpus) / frames, 3))


def per_frame(seconds: dict[str, float], frames: int) -> dict[str, float]:
    return {name: round(1000 * s / frames, 3) for name, s in seconds.items()}


def sampling(rows: list[Row], clips: list[Clip]) -> list[Sampling]:
    """planet at --sample-fps 1 against planet on every frame, for each size; the goal holds for a clip
    of about 25 fps (a slower clip has fewer frames a second to leave out)."""
    by = {(r.size, r.item): r for r in rows}
    out = []
    for clip in clips:
        every, sampled = by[(clip.size, "planet")].edge.wall_s, by[(clip.size, "planet --sample-fps 1")].edge.wall_s
        speedup = round(every / sampled, 2)
        goal = SAMPLING_GOAL if 24 <= clip.fps <= 30 else None
        out.append(Sampling(clip.size, round(clip.fps, 3), every, sampled, speedup, goal,
                            None if goal is None else speedup >= goal))
    return out


def ffmpeg_version(ffmpeg: str) -> str:
    """The first line of `ffmpeg -version`, without its copyright."""
    done = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True)
    return (done.stdout.splitlines() or ["ffmpeg version unknown"])[0].split(" Copyright")[0]
