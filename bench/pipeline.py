"""Pipeline throughput against inference alone, and peak memory on a 10x longer clip.

    python -m bench.pipeline VIDEO --model M.onnx [--model ...] [--frames 120] [--batch 4]
                             [--memory-model M.onnx] [--out bench/results]

For each model: the same first N frames are decoded once and preprocessed into batches, then
timed through the backend alone (inference alone); then `edge-run` processes the same N frames
with every stage running (decode, preprocess, infer, postprocess, sinks with encoding). The
ratio is pipeline frames/s over inference-alone frames/s: 1.0 means the other stages cost
nothing. Both are measured in this one process, several times, median reported, because this
machine is noisy. Memory: peak RSS of `edge-run` on VIDEO and on VIDEO looped 10 times, each in
a fresh process.
"""

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import onnxruntime

import edge
from edge import backends, media, runner
from edge.geometry import Preprocessor
from edge.model import parse


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def inference_alone(model_path: str, frames: list[np.ndarray], batch: int, repeats: int) -> list[tuple]:
    """(frames/s, CPU ms per frame) of each timed repeat."""
    backend = backends.load(model_path)
    prep = Preprocessor(parse(backend.metadata))
    batches = [prep(frames[i : i + batch]) for i in range(0, len(frames), batch)]
    backend.run(batches[0])  # warm-up: first-run allocations and graph optimisation
    results = []
    for _ in range(repeats):
        t, c = time.perf_counter(), cpu_s()
        for b in batches:
            backend.run(b)
        results.append((len(frames) / (time.perf_counter() - t), (cpu_s() - c) / len(frames) * 1000))
    return results


def pipeline(video: str, model_path: str, end_s: float, batch: int, repeats: int, out: str) -> list[tuple]:
    """(summary, CPU ms per processed frame) of each repeat; model loading is not counted."""
    runs = []
    for _ in range(repeats):
        (summary,) = runner.run([video], models=[model_path], out=out, batch=batch, end_s=end_s)
        runs.append((summary, summary["seconds"]["cpu"] / summary["frames"]["processed"] * 1000))
    return runs


def peak_rss_mb(video: str, model_path: str, out: str) -> tuple[float, int]:
    """Peak resident memory of one `edge-run` in a fresh process, and the frames it processed."""
    code = (
        "import json, sys\n"
        "from edge.cli import main\n"
        "import io, contextlib\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        f"    rc = main([{video!r}, '--model', {model_path!r}, '--out', {out!r}, '--json'])\n"
        "frames = json.loads(buf.getvalue())[0]['frames']['decoded']\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked parent (this benchmark)
        "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "print(json.dumps([rc, frames, int(hwm.split()[1])]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rc, frames, rss_kb = json.loads(result.stdout.strip().splitlines()[-1])
    if rc != 0:
        raise RuntimeError(f"edge-run failed: {result.stderr}")
    return rss_kb / 1024, frames


def loop_video(video: str, times: int, path: str) -> str:
    """The same packets `times` over, timestamps shifted: a long clip without re-encoding."""
    with av.open(video) as src, av.open(path, "w") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        packets = [p for p in src.demux(stream) if p.size]
        span = max(p.pts for p in packets) + (packets[1].pts - packets[0].pts)
        for n in range(times):
            for p in packets:
                p.pts, p.dts = p.pts + (span if n else 0), p.dts + (span if n else 0)
                p.stream = out
                dst.mux(p)
    return path


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "edge": edge.__version__,
            "onnxruntime": onnxruntime.__version__, "av": av.__version__,
            "opencv": __import__("cv2").__version__, "numpy": np.__version__}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video")
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-model", help="model for the memory check (a fast one: it runs 11x the clip)")
    p.add_argument("--loops", type=int, default=10)
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="edge-bench-") as work:
        report = measure(args, argv, work)
    os.makedirs(args.out, exist_ok=True)
    text = markdown(report)
    Path(args.out, "pipeline.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(args.out, "pipeline.md").write_text(text)
    print(text)


def measure(args, argv, work: str) -> dict:
    frames = list(itertools.islice(media.read_frames(args.video), args.frames))
    images = [f.image for f in frames]
    end_s = frames[-1].pts_s + 1e-3
    rows = []
    for model_path in args.model:
        infer = inference_alone(model_path, images, args.batch, args.repeats)
        runs = pipeline(args.video, model_path, end_s, args.batch, args.repeats, work)
        rates = [r["processed_per_s"] for r, _ in runs]
        best, pipeline_cpu_ms = runs[rates.index(statistics.median_low(rates))]
        infer_fps = statistics.median(r for r, _ in infer)
        infer_cpu_ms = statistics.median(c for _, c in infer)
        (model,) = best["models"].values()
        row = {
            "model": Path(model_path).name,
            "task": model["task"],
            "producer": model["producer"],
            "frames": len(images),
            "batch": args.batch,
            "inference_alone_fps": [round(r, 2) for r, _ in infer],
            "pipeline_fps": rates,
            "ratio": round(statistics.median(rates) / infer_fps, 3),
            # The physical limit on a small machine: every stage shares the same cores, so the
            # ratio cannot beat inference CPU / pipeline CPU per frame, whatever the overlap.
            "inference_cpu_ms_per_frame": round(infer_cpu_ms, 2),
            "pipeline_cpu_ms_per_frame": round(pipeline_cpu_ms, 2),
            "cpu_bound_ratio": round(infer_cpu_ms / pipeline_cpu_ms, 3),
            "pipeline_cpu_use": round(pipeline_cpu_ms * statistics.median(rates) / 1000 / os.cpu_count(), 3),
            "stage_busy_s": best["seconds"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    memory = None
    if args.memory_model:
        long_clip = loop_video(args.video, args.loops, os.path.join(work, f"looped{Path(args.video).suffix}"))
        short_mb, short_frames = peak_rss_mb(args.video, args.memory_model, work)
        long_mb, long_frames = peak_rss_mb(long_clip, args.memory_model, work)
        memory = {"model": Path(args.memory_model).name, "short": {"frames": short_frames, "peak_rss_mb": round(short_mb, 1)},
                  "long": {"frames": long_frames, "peak_rss_mb": round(long_mb, 1)},
                  "growth": round(long_mb / short_mb - 1, 4)}
        print(json.dumps(memory), flush=True)

    return {"video": os.path.basename(args.video), "machine": machine(),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python -m bench.pipeline " + " ".join(argv or sys.argv[1:]),
            "models": rows, "memory": memory}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Pipeline vs inference alone on {report['video']}",
        "",
        f"{report['when']}; {m['cpu']}, {m['cores']} cores; onnxruntime {m['onnxruntime']}, PyAV {m['av']}, "
        f"OpenCV {m['opencv']}, edge {m['edge']}.",
        f"Command: `{report['command']}`",
        "",
        "| model | task | frames | batch | inference alone (frames/s) | pipeline (frames/s) | ratio | "
        "CPU ms/frame: inference alone / pipeline | CPU-bound ratio | pipeline CPU use | "
        "busy s: decode / preprocess / infer / postprocess / sinks |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["models"]:
        s = r["stage_busy_s"]
        busy = " / ".join(f"{s[k]:.2f}" for k in ("decode", "preprocess", "infer", "postprocess", "sinks"))
        lines.append(f"| {r['model']} ({r['producer']}) | {r['task']} | {r['frames']} | {r['batch']} | "
                     f"{statistics.median(r['inference_alone_fps']):.2f} | {statistics.median(r['pipeline_fps']):.2f} | "
                     f"**{r['ratio']:.2f}** | {r['inference_cpu_ms_per_frame']:.1f} / {r['pipeline_cpu_ms_per_frame']:.1f} | "
                     f"{r['cpu_bound_ratio']:.2f} | {r['pipeline_cpu_use']:.0%} | {busy} |")
    lines += ["", "*ratio*: pipeline ÷ inference alone. *CPU-bound ratio*: inference-alone CPU time per frame ÷ "
              "the pipeline's; on a machine whose cores are all busy the ratio cannot exceed it, since decode, "
              "preprocessing, drawing and encoding need the same cores. *pipeline CPU use*: the share of all "
              "cores the pipeline kept busy."]
    if report["memory"]:
        mem = report["memory"]
        lines += ["", f"Peak memory ({mem['model']}): {mem['short']['frames']} frames → "
                  f"{mem['short']['peak_rss_mb']} MB; {mem['long']['frames']} frames → {mem['long']['peak_rss_mb']} MB "
                  f"(**{mem['growth']:+.1%}**)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
