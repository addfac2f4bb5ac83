"""Timing primitives of edge-bench: timed repeats, their figures, the load other work put on
the cores meanwhile, GPU sampling, the machine.

Every figure is the median of several timed repeats after untimed warm-ups, with the spread
(slowest and fastest repeat) beside it: this machine is noisy, one run says little.
CPU time is the whole process's (every thread: onnxruntime's pool, PyAV's decoder threads), so
CPU use above 1 core means the work ran in parallel.
"""

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from edge.machine import usable_cores


@dataclass
class Sample:
    """One timed repeat: how long it took, the CPU it used, the frames it handled, and the
    latency of each call (one batch) where the work comes in calls."""

    wall_s: float
    cpu_s: float
    frames: int
    latencies_s: list[float] = field(default_factory=list)


@dataclass
class Round:
    """The timed repeats of one measurement, and how many of this process's cores other work
    took while they ran (None where that cannot be told)."""

    samples: list[Sample]
    others_cores: float | None


def timed(work, *, frames: int, repeats: int, warmup: int, warm=None, tick=None) -> Round:
    """Run `work()` repeats times after `warmup` runs of `warm()` (by default `work` itself);
    `work` may return the latencies of its calls. `tick(text)` hears where it is."""
    tick = tick or (lambda text: None)
    for n in range(warmup):
        tick(f"warm-up {n + 1}/{warmup}")
        (warm or work)()
    samples = []
    with LoadMeter() as load:
        for n in range(repeats):
            tick(f"repeat {n + 1}/{repeats}")
            wall, cpu = time.perf_counter(), time.process_time()
            latencies = work() or []
            samples.append(Sample(time.perf_counter() - wall, time.process_time() - cpu, frames, list(latencies)))
    return Round(samples, load.others_cores)


TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
LOAD_WINDOW_S = 0.2  # /proc/stat counts in ticks (10 ms): a shorter window cannot tell a core's share


def busy_cpu_s() -> float | None:
    """Seconds the cores this process may run on have been busy since boot, for anyone, steal
    included (time a virtual machine's core was given to its neighbours); None without /proc/stat."""
    cpus = {f"cpu{n}" for n in cpu_set()}
    try:
        rows = [row for row in map(str.split, Path("/proc/stat").read_text().splitlines()) if row and row[0] in cpus]
    except OSError:
        return None
    # columns: user nice system idle iowait irq softirq steal; all but idle and iowait are busy
    return TICK_S * sum(sum(int(row[k]) for k in (1, 2, 3, 6, 7, 8)) for row in rows)


def cpu_set() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


class LoadMeter:
    """How many of this process's cores other work took while the block ran: the cores' busy
    time less this process's own CPU time, over the wall time. Load averages cannot tell this:
    they count this process's own threads, and lag a minute behind."""

    def __enter__(self):
        self.others_cores = None
        self.start = (busy_cpu_s(), time.process_time(), time.perf_counter())
        return self

    def __exit__(self, *exc):
        busy, own, wall = busy_cpu_s(), time.process_time(), time.perf_counter()
        busy0, own0, wall0 = self.start
        if busy is None or busy0 is None or wall - wall0 < LOAD_WINDOW_S:
            return
        # each core's counter may be one tick off at either end of the window
        others = busy - busy0 - (own - own0) - 2 * TICK_S * len(cpu_set())
        self.others_cores = round(max(0.0, others) / (wall - wall0), 2)


def idle_load(seconds: float) -> float | None:
    """The cores other work takes while this process waits `seconds`: the machine before a run."""
    with LoadMeter() as load:
        time.sleep(seconds)
    return load.others_cores


def each_timed(items) -> tuple[list, list[float]]:
    """Consume an iterator; return its items and the seconds each one took to come out."""
    out, seconds = [], []
    start = time.perf_counter()
    for item in items:
        now = time.perf_counter()
        seconds.append(now - start)
        out.append(item)
        start = now
    return out, seconds


def figures(samples: list[Sample], others_cores: float | None = None) -> dict:
    """frames/s (median, min, max), ms per frame, CPU ms per frame and cores used, latency p50/p95,
    and the cores other work took meanwhile."""
    rates = [s.frames / s.wall_s for s in samples]
    fps = statistics.median(rates)
    out = {
        "fps": round(fps, 2),
        "fps_min": round(min(rates), 2),
        "fps_max": round(max(rates), 2),
        "ms_per_frame": significant(1000 / fps),
        "cpu_ms_per_frame": significant(statistics.median(1000 * s.cpu_s / s.frames for s in samples)),
        "cpu_cores_used": round(statistics.median(s.cpu_s / s.wall_s for s in samples), 2),
        "repeats": len(samples),
        "others_cores": others_cores,
    }
    latencies = [x for s in samples for x in s.latencies_s]
    if latencies:
        out["latency_ms_p50"] = significant(float(np.percentile(latencies, 50)) * 1000)
        out["latency_ms_p95"] = significant(float(np.percentile(latencies, 95)) * 1000)
    return out


def significant(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


class GpuSampler:
    """GPU utilization and memory while a measurement runs, from `nvidia-smi -lms` in the
    background (the driver's view: it sees every backend's allocations, not only torch's, and
    those of other processes on the same GPU)."""

    QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]

    def __init__(self, *, enabled: bool, period_ms: int = 100):
        self.command = shutil.which("nvidia-smi") if enabled else None
        self.period_ms = period_ms
        self.lines: list[str] = []

    def __enter__(self):
        if self.command:
            gpu = f"--id={cuda_device()}"
            self.process = subprocess.Popen([self.command, *self.QUERY, gpu, f"-lms={self.period_ms}"],
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
            self.reader.start()
        return self

    def __exit__(self, *exc):
        if self.command:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            self.reader.join(timeout=5)

    def figures(self) -> dict:
        """Mean utilization and peak memory of the first GPU; {} without samples."""
        return gpu_figures(self.lines)


def cuda_device() -> str:
    """The GPU that CUDA's device 0 is, as nvidia-smi numbers them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible if visible.isdigit() else "0"


def gpu_figures(lines: list[str]) -> dict:
    util, memory = [], []
    for line in lines:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            util.append(int(parts[0]))
            memory.append(int(parts[1]))
    if not util:
        return {}
    return {"gpu_util_pct": round(statistics.mean(util), 1), "gpu_memory_mb": max(memory), "gpu_samples": len(util)}


def version(*distributions: str) -> str | None:
    """The installed version of the first of `distributions` present, without importing it."""
    for name in distributions:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(name)
    return None


def machine() -> dict:
    """What the figures belong to: the host, its CPU (and whether it is a virtual machine, whose
    cores its neighbours share), the cores this process may use of the ones it has, memory, GPUs."""
    cpu, virtual = platform.processor(), None
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
        virtual = any(line.startswith("flags") and "hypervisor" in line.split() for line in lines)
    cores = usable_cores()
    info = {
        "host": platform.node(), "cpu": cpu, "virtual": virtual, "cores": cores, "cpus": os.cpu_count(),
        "memory_gb": _memory_gb(), "os": platform.platform(), "python": platform.python_version(),
        "versions": {
            "edge": version("edge"), "numpy": version("numpy"),
            "onnxruntime": version("onnxruntime", "onnxruntime-gpu"), "torch": version("torch"),
            "tensorrt": version("tensorrt", "tensorrt-cu12", "tensorrt-cu13") or jetpack_tensorrt(), "av": version("av"),
            "opencv": version("opencv-python-headless", "opencv-python", "opencv-contrib-python"),
            "fastai": version("fastai"),
        },
        "gpus": gpus(),
    }
    return info


def jetpack_tensorrt() -> str | None:
    """JetPack installs TensorRT's Python module from a deb, with no package metadata to read."""
    try:
        import tensorrt
    except Exception:  # absent, or present but broken: either way there is no version to report
        return None
    return getattr(tensorrt, "__version__", None)


def gpus() -> list[dict]:
    """Name, driver and memory of each NVIDIA GPU; [] where there is none (or no driver)."""
    command = shutil.which("nvidia-smi")
    if not command:
        return []
    try:
        result = subprocess.run([command, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = [[p.strip() for p in line.split(",")] for line in result.stdout.splitlines() if line.count(",") == 2]
    return [{"name": name, "driver": driver, "memory": total} for name, driver, total in rows]


def _memory_gb() -> float | None:
    with contextlib.suppress(OSError, StopIteration, ValueError):
        kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        return round(kb / 2**20, 1)
    return None
