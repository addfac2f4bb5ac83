"""Peak resident memory of `edge-run`, each run in a fresh process, and long clips to show it
stays flat: the same packets looped, so a clip 10x longer costs no re-encoding."""

import json
import subprocess
import sys

import av

from edge.errors import InputError, StageError


def peak_rss_mb(edge_run_args: list[str]) -> tuple[float, int]:
    """Peak resident memory (MB) of `edge-run ARGS --json` and the frames it processed."""
    code = (
        "import contextlib, io, json, sys\n"
        "from edge.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        f"    rc = main({edge_run_args!r} + ['--json'])\n"
        "frames = json.loads(buf.getvalue())[0]['frames']['in_range'] if rc == 0 else 0\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked parent (this benchmark)
        "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "print(json.dumps([rc, frames, int(hwm.split()[1])]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        rc, frames, rss_kb = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        rc, frames, rss_kb = result.returncode, 0, 0
    if rc != 0:
        lines = result.stderr.strip().splitlines()
        raise StageError("memory", None, RuntimeError(lines[-1] if lines else f"edge-run exited {rc}"))
    return rss_kb / 1024, frames


def loop_video(video: str, times: int, path: str) -> str:
    """The video stream's packets `times` over, each pass shifted by the clip's span; no audio."""
    with av.open(video) as src, av.open(path, "w") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        packets = [p for p in src.demux(stream) if p.size and p.pts is not None]
        if not packets:
            raise InputError(f"{video}: no timed video packets to loop")
        times_in = sorted(p.pts for p in packets)
        steps = [b - a for a, b in zip(times_in, times_in[1:]) if b > a]
        span = times_in[-1] - times_in[0] + (min(steps) if steps else 1)
        # the muxer rescales each packet's times in place, so every pass starts from the originals
        original = [(p.pts, p.dts) for p in packets]
        for n in range(times):
            for p, (pts, dts) in zip(packets, original):
                p.pts = pts + n * span
                p.dts = None if dts is None else dts + n * span
                p.time_base = stream.time_base
                p.stream = out
                dst.mux(p)
    return path
