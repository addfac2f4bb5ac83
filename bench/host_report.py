"""The report of `edge-bench --host` (bench/host.py): report.md, report.json and fps.png."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .report import machine_name

SAMPLING_GOAL = 3.0  # planet at --sample-fps 1 against every frame, on a 25 fps clip with a keyframe a second
ANCHOR_NOTES = {"two encodes": " (what `all` does: one decode, two overlay videos)"}


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
    frames_on: str  # RunSummary.frames_on: "host", or the torch device frames went to
    encoder: str | None  # of edge's overlays (RunSummary.encoder); None where it writes none
    anchor: str  # the FFmpeg command's name in Report.commands, which encodes as edge did
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
    same_work: Figures | None = None  # FFmpeg decoding once and encoding twice, for "all"
    same_work_ratio: float | None = None


@dataclass(frozen=True)
class Sampling:
    size: str
    fps: float  # of the clip
    every_frame_s: float  # edge's wall time for planet on every frame
    fps1_s: float  # and at --sample-fps 1
    speedup: float  # every_frame_s / fps1_s
    goal: float | None  # SAMPLING_GOAL, on a clip of about 25 fps; None on others
    met: bool | None


@dataclass
class Report:
    command: str
    when: str
    machine: dict  # bench.measure.machine(): host, CPU, cores, versions
    ffmpeg: str  # the first line of `ffmpeg -version`
    video: str
    frames_limit: int | None
    repeat: int
    host_device: str | None  # --host-device: edge's device path on that torch device; None: the host path
    commands: dict[str, str]  # the FFmpeg commands: each anchor's, and the scaled copies'
    rows: list[Row]
    sampling: list[Sampling]
    plot: str = ""  # fps.png, or why it was not drawn


def write(report: Report, out: Path) -> Path:
    report.plot = plot(report, out / "fps.png")
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    return out / "report.md"


def markdown(r: Report) -> str:
    v = r.machine["versions"]
    frames = f"the first {r.frames_limit} frames" if r.frames_limit else "every frame"
    runtime = f"torch {v['torch']}" if r.host_device else f"onnxruntime {v['onnxruntime']}"
    lines = [
        "# edge-bench --host: edge's host side against FFmpeg"
        + (f", edge on its device path ({r.host_device})" if r.host_device else ""), "",
        f"Machine: {machine_name(r.machine)}. Every figure below is of this machine.", "",
        f"{r.ffmpeg}; edge {v['edge']}, {runtime}, PyAV {v['av']}, OpenCV {v['opencv']}, numpy {v['numpy']}. "
        f"`{r.command}`, {r.when}.", "",
        f"{r.video}, {frames}; {r.repeat} round{'s' if r.repeat > 1 else ''} alternating FFmpeg and edge, the "
        "median round's wall time, after one untimed run of edge over the first frames of each clip. "
        "edge runs in-process through `edge.api.run` with free models (bench/free_models.py: the default "
        "models' contracts, inference almost free), so its time is decoding, colour conversion, preprocessing, "
        "drawing, encoding and writing. Its wall time is the whole call's; ratio = FFmpeg wall ÷ edge wall.", "",
        path_sentence(r.host_device), "",
        *(f"- {name}{ANCHOR_NOTES.get(name.removesuffix(' nvenc'), '')}: `{command}`"
          for name, command in r.commands.items()), "",
        "| size | work | frames on | encoder | anchor | frames | FFmpeg s | FFmpeg fps | FFmpeg CPU ms/frame | "
        "edge s | edge fps | edge CPU ms/frame | edge/FFmpeg | goal | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r.rows:
        goal = "—" if row.goal is None else f"≥ {row.goal:.1f}"
        met = "—" if row.met is None else ("met" if row.met else "**not met**")
        lines.append(f"| {row.size} | {row.item} | {row.frames_on} | {row.encoder or '—'} | {row.anchor} | "
                     f"{row.frames} | {row.ffmpeg.wall_s:.3f} | "
                     f"{row.ffmpeg.fps:,.1f} | {row.ffmpeg.cpu_ms_per_frame:.2f} | {row.edge.wall_s:.3f} | "
                     f"{row.edge.fps:,.1f} | {row.edge.cpu_ms_per_frame:.2f} | {row.ratio:.2f} | {goal} | {met} |")
    lines += ["", "`all` against FFmpeg doing the same work, one decode and two encodes with edge's encoder (no "
              "goal: the goal above is against one transcode):", "",
              "| size | FFmpeg s | FFmpeg CPU ms/frame | edge s | edge/FFmpeg |", "|---|---|---|---|---|"]
    lines += [f"| {row.size} | {row.same_work.wall_s:.3f} | {row.same_work.cpu_ms_per_frame:.2f} | "
              f"{row.edge.wall_s:.3f} | {row.same_work_ratio:.2f} |" for row in r.rows if row.same_work]
    lines += ["", f"Sampling: planet at `--sample-fps 1` against planet on every frame (edge's wall time); the goal, "
              f"{SAMPLING_GOAL:g}x, is for a clip of about 25 fps.", "",
              "| size | clip fps | every frame s | --sample-fps 1 s | speedup | goal | met |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {s.size} | {s.fps:g} | {s.every_frame_s:.3f} | {s.fps1_s:.3f} | {s.speedup:.2f}x | "
              + ("— | — |" if s.goal is None else f"≥ {s.goal:g}x | {'met' if s.met else '**not met**'} |")
              for s in r.sampling]
    lines += ["", *stage_table(r.rows), ""]
    lines.append(f"![frames/s]({r.plot})" if r.plot == "fps.png" else f"Plot: {r.plot}.")
    return "\n".join(lines) + "\n"


def path_sentence(host_device: str | None) -> str:
    """How edge ran: the host path, or the device path that --host-device takes."""
    if host_device is None:
        return ("edge takes its host path: onnxruntime on the CPU, frames on the host, overlays with x264 "
                "(`frames on`: host).")
    return (f"edge takes its device path (`--host-device {host_device}`): the free models' torch programs "
            f"(.pt2) run on {host_device}, frames go there (`frames on`, edge's `frames_on`) and camvid blends "
            "there; overlays use the encoder edge picks (`encoder`: NVENC on a GPU where it opens, else x264), "
            "and FFmpeg's anchors encode with that same encoder, as edge's writer sets it.")


def stage_table(rows: list[Row]) -> list[str]:
    """Busy and thread CPU ms per frame of video of each stage, in the median edge round."""
    stages = list(dict.fromkeys(k for row in rows for k in row.stage_busy_ms_per_frame))
    threads = list(dict.fromkeys(k for row in rows for k in row.thread_cpu_ms_per_frame))
    lines = ["edge's pipeline stages in its median round, ms per frame of video: busy (queue waits left out) and the "
             "CPU of each stage's thread (native pools: onnxruntime's or torch's, the codecs' own threads).", "",
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
    ax.set(ylabel="frames/s", title=f"edge-bench --host{f' --host-device {r.host_device}' if r.host_device else ''} "
                                    f"on {r.machine.get('host') or 'this machine'}, "
                                    f"{r.machine['cores']} cores of {r.machine['cpu']}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name

