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
        pts = [p.pts for p in packets]
        ordered = sorted(pts)
        steps = [b - a for a, b in zip(ordered, ordered[1:]) if b > a]
        span = ordered[-1] - ordered[0] + (min(steps) if steps else 1)
        # Decode times made anew: some containers (mkv) leave them out of the first packets, and
        # the muxer needs them increasing across passes. The times in order, held back by the
        # largest reordering, are increasing and never after their packet's presentation.
        delay = max(o - p for o, p in zip(ordered, pts))
        dts = [o - delay for o in ordered]
        for n in range(times):
            for p, p_pts, p_dts in zip(packets, pts, dts):
                p.pts = p_pts + n * span
                p.dts = p_dts + n * span
                p.time_base = stream.time_base
                p.stream = out
                dst.mux(p)
    return path
