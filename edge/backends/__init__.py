"""Inference backends behind one small protocol; each is imported only when asked for."""

from typing import Protocol

import numpy as np

from ..errors import UsageError

BACKENDS = ("onnxruntime",)
DEVICES = ("cpu", "cuda")


class Backend(Protocol):
    name: str  # e.g. "onnxruntime"
    device: str  # what actually runs it, e.g. "cpu" or "cuda (CUDAExecutionProvider)"
    metadata: dict[str, str]  # the model's metadata_props, where the contract lives
    default_batch: int

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch through the model; returns its first output."""


def load(path: str, *, backend: str = "onnxruntime", device: str = "cpu", threads: int | None = None) -> Backend:
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    from .ort import OrtBackend

    return OrtBackend(path, device=device, threads=threads)
