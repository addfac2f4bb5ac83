"""Throughput of several inputs at once: `edge-run --jobs N` against one input at a time.

    python -m bench.jobs VIDEO (--model M ... | --task T) [--copies K] [--jobs 1,2] [--seconds S]
                         [--repeat R] [--ray] [--out DIR]

Runs K copies of VIDEO (its first S seconds each, so the inputs are alike) through edge-run's
own `run()` at each --jobs, into a fresh folder each time, and reports the whole's frames per
second (every frame written, over the wall time of the run) and the process's CPU seconds, as
the median of R repeats, with each --jobs against the first. `--ray` adds a row for `--ray` on a
cluster of this machine alone (one node of all its cores, started once): its wall time holds
what Ray adds, the worker's start and model loading included; its CPU seconds are the
driver's alone. Writes DIR/jobs.md and jobs.json.
"""

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.measure import machine
from edge.api import run
from edge.run.options import RunOptions
from edge.machine import usable_cores


def measure(video: str, models: list[str], tasks: list[str], *, copies: int, jobs: int | str, seconds: float,
            work: Path, ray: str | None = None) -> dict:
    inputs = work / "inputs"
    if not inputs.exists():
        inputs.mkdir()
        for n in range(copies):
            shutil.copyfile(video, inputs / f"copy{n + 1}{Path(video).suffix}")
    out = work / f"out-{jobs}"
    shutil.rmtree(out, ignore_errors=True)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    summaries = run([str(inputs)], RunOptions(models=models, task_names=tasks, out=str(out), end_s=seconds,
                                              jobs=1 if ray else jobs, ray=ray))
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    frames = sum(s.frames.in_range for s in summaries)
    return {"jobs": jobs, "inputs": len(summaries), "frames": frames, "wall_s": round(wall, 3),
            "frames_per_s": round(frames / wall, 2),
            "cpu_s": round(after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime, 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video")
    p.add_argument("--model", action="append", default=[])
    p.add_argument("--task", default="")
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--jobs", default="1,2")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--ray", action="store_true", help="add a row for --ray on a cluster of this machine alone")
    p.add_argument("--out", type=Path, default=Path("bench/results/jobs"))
    args = p.parse_args(argv)
    tasks = [t for t in args.task.split(",") if t]
    levels = [int(j) for j in args.jobs.split(",")] + (["ray"] if args.ray else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-jobs-") as work, local_cluster(args.ray) as address:
        runs = {n: [] for n in levels}
        for _ in range(args.repeat):  # interleaved, so a slow spell of the machine hits every level alike
            for n in levels:
                runs[n].append(measure(args.video, args.model, tasks, copies=args.copies, jobs=n,
                                       seconds=args.seconds, work=Path(work), ray=address if n == "ray" else None))
        for n in levels:
            typical = sorted(runs[n], key=lambda r: r["frames_per_s"])[len(runs[n]) // 2]
            rows.append({**typical, "frames_per_s_all": [r["frames_per_s"] for r in runs[n]]})
    base = rows[0]["frames_per_s"]
    for row in rows:
        row["against_first"] = round(row["frames_per_s"] / base, 2)
    report = {"command": "python -m bench.jobs " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine(), "video": os.path.abspath(args.video), "copies": args.copies,
              "seconds_each": args.seconds, "repeats": args.repeat, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "jobs.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Several inputs at once: `--jobs`", "", f"`{report['command']}`", "",
             f"{args.copies} copies of {Path(args.video).name}, the first {args.seconds:g} s of each; the median of "
             f"{args.repeat} runs. Machine: {report['machine'].get('cpu', 'unknown')}, "
             f"{report['machine'].get('cores', '?')} cores.", "",
             "| --jobs | frames | wall s | frames/s | against --jobs " + str(levels[0]) + " | CPU s | all runs, frames/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['jobs']} | {r['frames']} | {r['wall_s']} | {r['frames_per_s']} | {r['against_first']} | "
                     f"{r['cpu_s']} | {', '.join(map(str, r['frames_per_s_all']))} |")
    if args.ray:
        lines += ["", "`ray`: `--ray` on a Ray cluster of this machine alone, one worker of all its cores; its wall time "
                      "holds the worker's start and model loading, and its CPU seconds are the driver's alone."]
    (args.out / "jobs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


@contextlib.contextmanager
def local_cluster(wanted: bool):
    """A Ray cluster of one node with this machine's cores, for as long as the benchmark runs."""
    if not wanted:
        yield None
        return
    from ray.cluster_utils import Cluster

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # a Ray node sets its own
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": usable_cores(), "include_dashboard": False})
    try:
        yield cluster.address
    finally:
        cluster.remove_node(cluster.head_node, allow_graceful=False)
        cluster.shutdown()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
