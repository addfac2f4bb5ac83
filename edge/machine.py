"""What this machine gives a run: its cores, and how the thread pools share them."""

import os
from contextlib import contextmanager

import cv2


def usable_cores() -> int:
    """The cores this process may run on (its affinity, as a container or taskset limits it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads() -> int:
    """onnxruntime's and torch's intra-op threads: all cores on a small machine (inference is the
    bottleneck there and idle ORT threads sleep, since spinning is off), one core left for decode
    and encode above four."""
    cores = usable_cores()
    return cores if cores <= 4 else cores - 1


@contextmanager
def opencv_threads(threads: int | None):
    """OpenCV's own thread pool set to `threads` (None: left alone) for the duration. With the
    model on the CPU, inference and the pipeline's stage threads already keep every core busy;
    OpenCV waking its pool for each resize, conversion and blend on top only adds switching
    (measured on 2 cores: 0.7 ms less CPU a frame, about 4% more frames/s, with it off)."""
    if threads is None:
        yield
        return
    previous = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)
