"""`edge-bench VIDEO --host`: how fast the host side of edge is, against FFmpeg on the same clip.

On a GPU box the model costs almost nothing, so decoding, colour conversion, drawing and
encoding on the CPU decide the speed. This mode measures that here: edge runs free models
(bench/free_models.py: the default models' contracts, trivial graphs), and FFmpeg does the same
decode and encode alone, which is as fast as that work goes on this machine:

- camvid, biwi (an overlay video each) and all three in one run: against FFmpeg decoding the clip
  and encoding it with x264 as edge's overlay does;
- planet (tags, no video): against FFmpeg decoding alone; and planet at --fps 1 beside it, to
  see what sampling saves.

Each work item runs in rounds that alternate FFmpeg and edge, so that a change in the machine's
load falls on both; the median round counts. With --host-sizes, copies of the clip scaled to
each size are made first, and every item runs on each.
"""

import json
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

from edge import api, media
from edge.errors import InputError, OutputError, UsageError
from edge.run.options import RunOptions
from edge.run.summary import RunSummary

from .free_models import free_model
from .measure import machine
from .progress import Progress
from .report import machine_name

FFMPEG_MISSING = "edge-bench --host needs the ffmpeg command: apt-get install ffmpeg"
QUIET = ["-nostdin", "-v", "error", "-y"]
# As edge's overlay encodes on the CPU (edge/writer.py, tasks.Options.preset), audio copied as edge does.
TRANSCODE = ["-map", "0:v:0", "-map", "0:a?", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "20",
             "-c:a", "copy"]
DECODE = ["-map", "0:v:0", "-f", "null", "-"]
# The scaled copies: what a camera or an upload would give, with a keyframe every second or so.
SCALE = ["-map", "0:v:0", "-map", "0:a?", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-g", "25",
         "-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac"]
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


ALL = Item("all", TASKS, "transcode", 0.7)  # the three models in one run, from one decode
ITEMS = (
    Item("camvid", ("camvid",), "transcode", 0.8),
    Item("biwi", ("biwi",), "transcode", 0.8),
    Item("planet", ("planet",), "decode", 0.8),
    ALL,
    Item("planet --fps 1", ("planet",), "decode", None, sample_fps=1.0),
)


@dataclass(frozen=True)
class Clip:
    size: str  # WxH
    path: str
    end_s: float | None  # just after the last frame measured; None: the whole clip


@dataclass(frozen=True)
class Figures:
    """One side's rounds of one item: the median round's wall time, and per frame of video."""

    wall_s: float
    rounds_s: list[float]
    fps: float
    cpu_ms_per_frame: float


@dataclass(frozen=True)
class Row:
    size: str
    item: str
    anchor: str
    frames: int  # of video, decoded by both
    processed: int  # of them, run through the models
    ffmpeg: Figures
    edge: Figures
    edge_run_s: float  # the median edge round's own clock, which starts after the models are loaded
    ratio: float  # FFmpeg wall / edge wall: 1 is as fast as FFmpeg
    goal: float | None
    met: bool | None
    stage_busy_ms_per_frame: dict[str, float]  # each pipeline stage's busy time (queue waits left out)
    thread_cpu_ms_per_frame: dict[str, float]  # each stage thread's CPU, and the native pools' rest


@dataclass(frozen=True)
class Sampling:
    size: str
    every_frame_s: float  # edge's wall time for planet on every frame
    fps1_s: float  # and at --fps 1
    ratio: float  # fps1_s / every_frame_s: the share of the time sampling leaves


@dataclass
class Report:
    command: str
    when: str
    machine: dict  # bench.measure.machine(): host, CPU, cores, versions
    ffmpeg: str  # the first line of `ffmpeg -version`
    video: str
    frames_limit: int | None
    repeat: int
    commands: dict[str, str]  # the FFmpeg commands: each anchor's, and the scaled copies'
    rows: list[Row]
    sampling: list[Sampling]
    plot: str = ""  # fps.png, or why it was not drawn


@dataclass
class Setup:
    ffmpeg: str
    models: dict[str, str]  # task: free model path
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
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        raise UsageError(FFMPEG_MISSING)
    return ffmpeg, wanted


def bench(args, argv: list[str]) -> Path:
    """Measure every item on the clip and each scaled copy; write the report into --out."""
    ffmpeg, wanted = check(args)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write to {out}: {err.strerror}; choose another --out") from None
    info = media.probe(args.video)
    models = {task: str(free_model(task, out / "free-models")) for task in TASKS}
    progress = Progress(total=len(wanted) + (1 + len(wanted)) * len(ITEMS), enabled=not args.quiet)
    rows = []
    with progress, tempfile.TemporaryDirectory(prefix="edge-bench-host-") as work:
        setup = Setup(ffmpeg, models, args.repeat, args.frames, Path(work), progress)
        clips = [Clip(f"{info.width}x{info.height}", args.video, end_after(args.video, args.frames))]
        warm_up(setup, args.video)
        for w, h in wanted:
            progress.step(f"scaling to {w}x{h}")
            clips.append(scaled(setup, args.video, w, h, out))
        for clip in clips:
            for item in ITEMS:
                progress.step(f"{clip.size}: {item.name}")
                rows.append(measure(setup, clip, item))
    report = Report("edge-bench " + " ".join(argv), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine(),
                    ffmpeg_version(ffmpeg), Path(args.video).name, args.frames, args.repeat,
                    commands(Path(args.video).name, args.frames), rows, sampling(rows))
    try:
        return write(report, out)
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


def anchor_command(ffmpeg: str, video: str, anchor: str, frames: int | None, output: str) -> list[str]:
    """FFmpeg decoding `video` alone, or transcoding it into `output`."""
    head = [ffmpeg, *QUIET, "-i", video, *limit(frames)]
    return [*head, *DECODE] if anchor == "decode" else [*head, *TRANSCODE, output]


def commands(video: str, frames: int | None) -> dict[str, str]:
    """The commands as the report names them: with the input's name, and `ffmpeg` as typed."""
    return {"transcode": " ".join(anchor_command("ffmpeg", video, "transcode", frames, "TMP/transcode.mp4")),
            "decode": " ".join(anchor_command("ffmpeg", video, "decode", frames, "")),
            "scaled copies": " ".join(scale_command("ffmpeg", video, frames, "W:H", "COPY.mp4"))}


def scaled(setup: Setup, video: str, w: int, h: int, out: Path) -> Clip:
    """A copy of `video` scaled to w x h, made into --out (of its first --frames frames where given)."""
    path = out / f"{Path(video).stem}-{w}x{h}.mp4"
    ffmpeg_once(scale_command(setup.ffmpeg, video, setup.frames, f"{w}:{h}", str(path)))
    return Clip(f"{w}x{h}", str(path), end_after(str(path), setup.frames))


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
    options = RunOptions(models=tuple(setup.models[t] for t in item.tasks), out=str(out), force=True,
                         end_s=clip.end_s, sample_fps=item.sample_fps)
    start = time.perf_counter()
    (summary,) = api.run([clip.path], options)
    wall = time.perf_counter() - start
    shutil.rmtree(out)
    return wall, summary


def warm_up(setup: Setup, video: str) -> None:
    """One untimed run of every task over the first frames: what edge imports and sets up once
    per process (the task modules, the timeline's plotting) is not charged to the first item."""
    edge_once(setup, Clip("", video, end_after(video, WARM_UP_FRAMES)), ALL)


def measure(setup: Setup, clip: Clip, item: Item) -> Row:
    """Rounds of FFmpeg then edge; the row of the median rounds."""
    command = anchor_command(setup.ffmpeg, clip.path, item.anchor, setup.frames, str(setup.work / "transcode.mp4"))
    ffmpeg, edge = [], []
    for n in range(setup.repeat):
        setup.progress.detail(f"round {n + 1}/{setup.repeat}: FFmpeg")
        ffmpeg.append(ffmpeg_once(command))
        setup.progress.detail(f"round {n + 1}/{setup.repeat}: edge")
        edge.append(edge_once(setup, clip, item))
    median = sorted(edge, key=lambda run: run[0])[len(edge) // 2][1]  # the summary of the median round
    frames = median.frames.in_range
    mine = figures([wall for wall, _ in edge], [s.seconds.cpu for _, s in edge], frames)
    theirs = figures([wall for wall, _ in ffmpeg], [cpu for _, cpu in ffmpeg], frames)
    ratio = round(theirs.wall_s / mine.wall_s, 3)
    threads = dict(median.stage_cpu_s)
    threads["native pools"] = median.seconds.cpu - sum(threads.values())
    return Row(clip.size, item.name, item.anchor, frames, median.frames.processed, theirs, mine,
               median.seconds.total, ratio, item.goal, None if item.goal is None else ratio >= item.goal,
               per_frame(median.seconds.stages, frames), per_frame(threads, frames))


def figures(walls: list[float], cpus: list[float], frames: int) -> Figures:
    wall = statistics.median(walls)
    return Figures(round(wall, 4), [round(w, 4) for w in walls], round(frames / wall, 2),
                   round(1000 * statistics.median(cpus) / frames, 3))


def per_frame(seconds: dict[str, float], frames: int) -> dict[str, float]:
    return {name: round(1000 * s / frames, 3) for name, s in seconds.items()}


def sampling(rows: list[Row]) -> list[Sampling]:
    """planet at --fps 1 against planet on every frame, for each size."""
    by = {(r.size, r.item): r for r in rows}
    return [Sampling(r.size, r.edge.wall_s, by[(r.size, "planet --fps 1")].edge.wall_s,
                     round(by[(r.size, "planet --fps 1")].edge.wall_s / r.edge.wall_s, 3))
            for r in rows if r.item == "planet"]


def ffmpeg_version(ffmpeg: str) -> str:
    """The first line of `ffmpeg -version`, without its copyright."""
    done = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True)
    return (done.stdout.splitlines() or ["ffmpeg version unknown"])[0].split(" Copyright")[0]


def write(report: Report, out: Path) -> Path:
    report.plot = plot(report, out / "fps.png")
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    return out / "report.md"


def markdown(r: Report) -> str:
    v = r.machine["versions"]
    frames = f"the first {r.frames_limit} frames" if r.frames_limit else "every frame"
    lines = [
        "# edge-bench --host: edge's host side against FFmpeg", "",
        f"Machine: {machine_name(r.machine)}. Every figure below is of this machine.", "",
        f"{r.ffmpeg}; edge {v['edge']}, onnxruntime {v['onnxruntime']}, PyAV {v['av']}, OpenCV {v['opencv']}, "
        f"numpy {v['numpy']}. `{r.command}`, {r.when}.", "",
        f"{r.video}, {frames}; {r.repeat} round{'s' if r.repeat > 1 else ''} alternating FFmpeg and edge, the "
        "median round's wall time, after one untimed run of edge over the first frames. "
        "edge runs in-process through `edge.api.run` with free models (bench/free_models.py: the default "
        "models' contracts, inference almost free), so its time is decoding, colour conversion, preprocessing, "
        "drawing, encoding and writing. Its wall time is the whole call's; ratio = FFmpeg wall ÷ edge wall.", "",
        f"- transcode: `{r.commands['transcode']}`",
        f"- decode: `{r.commands['decode']}`",
        f"- scaled copies: `{r.commands['scaled copies']}`", "",
        "| size | work | anchor | frames | FFmpeg s | FFmpeg fps | FFmpeg CPU ms/frame | edge s | edge fps | "
        "edge CPU ms/frame | edge/FFmpeg | goal | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r.rows:
        goal = "—" if row.goal is None else f"≥ {row.goal:.1f}"
        met = "—" if row.met is None else ("met" if row.met else "**not met**")
        lines.append(f"| {row.size} | {row.item} | {row.anchor} | {row.frames} | {row.ffmpeg.wall_s:.3f} | "
                     f"{row.ffmpeg.fps:,.1f} | {row.ffmpeg.cpu_ms_per_frame:.2f} | {row.edge.wall_s:.3f} | "
                     f"{row.edge.fps:,.1f} | {row.edge.cpu_ms_per_frame:.2f} | {row.ratio:.2f} | {goal} | {met} |")
    lines += ["", "Sampling: planet at `--fps 1` against planet on every frame (edge's wall time).", "",
              "| size | every frame s | --fps 1 s | --fps 1 ÷ every frame |", "|---|---|---|---|"]
    lines += [f"| {s.size} | {s.every_frame_s:.3f} | {s.fps1_s:.3f} | {s.ratio:.2f} |" for s in r.sampling]
    lines += ["", *stage_table(r.rows), ""]
    lines.append(f"![frames/s]({r.plot})" if r.plot == "fps.png" else f"Plot: {r.plot}.")
    return "\n".join(lines) + "\n"


def stage_table(rows: list[Row]) -> list[str]:
    """Busy and thread CPU ms per frame of video of each stage, in the median edge round."""
    stages = list(dict.fromkeys(k for row in rows for k in row.stage_busy_ms_per_frame))
    threads = list(dict.fromkeys(k for row in rows for k in row.thread_cpu_ms_per_frame))
    lines = ["edge's pipeline stages in its median round, ms per frame of video: busy (queue waits left out) "
             "and the CPU of each stage's thread (native pools: onnxruntime's, the codecs' own threads).", "",
             "| size | work | " + " | ".join(f"{s} busy" for s in stages) + " | "
             + " | ".join(f"{t} CPU" for t in threads) + " |", "|---|---|" + "---|" * (len(stages) + len(threads))]
    for row in rows:
        busy = [f"{row.stage_busy_ms_per_frame.get(s, 0):.2f}" for s in stages]
        cpu = [f"{row.thread_cpu_ms_per_frame.get(t, 0):.2f}" for t in threads]
        lines.append(f"| {row.size} | {row.item} | " + " | ".join(busy + cpu) + " |")
    return lines


def plot(r: Report, path: Path) -> str:
    """fps.png: frames/s of each item at each size, edge beside FFmpeg; why not, without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "not drawn (matplotlib is not installed)"
    labels = [f"{row.item}\n{row.size}" for row in r.rows]
    x = range(len(r.rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(r.rows)), 4.5))
    ax.bar([i - 0.2 for i in x], [row.ffmpeg.fps for row in r.rows], 0.4, label="FFmpeg (its anchor)")
    ax.bar([i + 0.2 for i in x], [row.edge.fps for row in r.rows], 0.4, label="edge, free models")
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set(ylabel="frames/s", title=f"edge-bench --host on {r.machine.get('host') or 'this machine'}, "
                                    f"{r.machine['cores']} cores of {r.machine['cpu']}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name

