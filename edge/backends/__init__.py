"""Inference backends behind one small protocol; each is imported only when asked for.

onnxruntime runs `.onnx` files (CPU, or its CUDA/TensorRT providers); torch runs `.pt2`
programs made by `edge-export --torch-program`; tensorrt runs `.engine` files, or builds one
from an `.onnx` into the engine cache. `auto` picks by the file's extension and, for an .onnx
on the GPU, the fastest backend the machine has.
"""

import os
from typing import Protocol

import numpy as np

from ..choices import BackendName, Device, Precision, words
from ..errors import ModelError, UsageError

BACKENDS = words(BackendName)
DEVICES = words(Device)
PRECISIONS = words(Precision)
BY_EXTENSION = {".pt2": "torch", ".engine": "tensorrt"}


class Backend(Protocol):
    """What every backend gives; edge/run/ and bench/ use nothing else of them."""

    name: str  # e.g. "onnxruntime"
    path: str  # the model file it runs
    device: str  # what actually runs it, e.g. "cpu" or "cuda (CUDAExecutionProvider)"
    metadata: dict[str, str]  # the model's contract keys
    default_batch: int
    input_type: str  # the graph's input as onnxruntime spells types, e.g. "tensor(uint8)" (see onnx_type)
    input_shape: list  # the graph's input shape; a dimension not fixed is a name or None
    # the torch device run_tensor takes and gives tensors on ("cpu", "cuda"), or None where it
    # takes arrays only (onnxruntime without torch, or on a GPU that torch cannot reach)
    tensor_device: str | None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch through the model; returns its first output."""

    def run_tensor(self, batch):
        """Run one batch of torch tensors on `tensor_device`; returns its first output there."""


def onnx_type(dtype_name: str) -> str:
    """A dtype's name ("uint8", "float32") as onnxruntime spells input types, which run.models.check_io's
    contract check compares against, whatever the backend."""
    return {"uint8": "tensor(uint8)", "float32": "tensor(float)", "float16": "tensor(float16)"}.get(
        dtype_name, f"tensor({dtype_name})")


def check_file(path: str, kind: str) -> None:
    """One-line ModelErrors for a model path that is missing, a folder or empty."""
    if not os.path.exists(path):
        raise ModelError(f"{path}: model file not found; check the path given to --model")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a folder, not {kind}")
    if os.path.getsize(path) == 0:
        raise ModelError(f"{path}: model file is empty (0 bytes); export it again")


def resolve(path: str, backend: str, device: str | None = None, notice=lambda message: None) -> tuple[str, str]:
    """The backend to run `path` with, and the file it runs: `auto` goes by the file's kind,
    and for an .onnx on `--device cuda` picks the fastest this machine has (see `fastest`)."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend, path
    by_kind = BY_EXTENSION.get(os.path.splitext(path)[1].lower(), "onnxruntime")
    if device != "cuda" or by_kind != "onnxruntime":
        return by_kind, path
    program = os.path.splitext(path)[0] + ".pt2"
    name, chosen = fastest(path, tensorrt=_tensorrt_works(), onnxruntime_gpu=_onnxruntime_gpu(),
                           torch_cuda=_torch_cuda(), program=program if os.path.isfile(program) else None)
    notice(f"--backend auto on cuda: {name} for {chosen}" + {
        "tensorrt": " (an engine built once into the engine cache)",
        "onnxruntime": " (TensorRT is not installed; onnxruntime's GPU provider)",
        "torch": " (neither TensorRT nor a GPU onnxruntime here; the torch program beside it)"}[name])
    return name, chosen


def fastest(path: str, *, tensorrt: bool, onnxruntime_gpu: bool, torch_cuda: bool,
            program: str | None) -> tuple[str, str]:
    """For an .onnx on the GPU: a TensorRT engine (fastest; edge runs it through CUDA torch),
    else onnxruntime's CUDA or TensorRT provider, else the torch program beside the .onnx (same
    name, .pt2)."""
    if tensorrt and torch_cuda:  # edge's TensorRT runner keeps its buffers in CUDA torch tensors
        return "tensorrt", path
    if onnxruntime_gpu:
        return "onnxruntime", path
    if torch_cuda and program is not None:
        return "torch", program
    raise UsageError(
        "--device cuda: nothing here runs the model on the GPU: TensorRT is not installed, onnxruntime has no CUDA "
        "provider" + ("" if program else f", and there is no torch program {os.path.splitext(path)[0]}.pt2")
        + ("" if torch_cuda else ", and torch has no CUDA") + "; install one of them, or use --device cpu")


def _tensorrt_works() -> bool:
    from ..tensorrt_engine import import_tensorrt

    try:
        import_tensorrt()
    except UsageError:
        return False
    return True


def _onnxruntime_gpu() -> bool:
    import onnxruntime

    return any(p in onnxruntime.get_available_providers() for p in ("TensorrtExecutionProvider",
                                                                    "CUDAExecutionProvider"))


def _torch_cuda() -> bool:
    from ..device import torch_has_cuda

    return torch_has_cuda()


def default_device(backend: str, device: str | None) -> str:
    """The device a resolved backend runs on when none is asked for: TensorRT only has the GPU."""
    return device or ("cuda" if backend == "tensorrt" else "cpu")


def load(path: str, *, backend: str = "auto", device: str | None = None, threads: int | None = None,
         batch: int | None = None, precision: str | None = None, notice=lambda message: None) -> Backend:
    """`device` None means the backend's own: cuda for TensorRT, cpu for the others; `precision`
    None means the fastest the backend offers there: fp16 on the GPU, fp32 on the CPU."""
    name, path = resolve(path, backend, device, notice)
    device = default_device(name, device)
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    precision = check_precision(name, device, precision)
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(path, device=device, threads=threads, precision=precision)
    if name == "tensorrt":
        from .tensorrt import TensorrtBackend

        return TensorrtBackend(path, device=device, threads=threads, batch=batch or 8, precision=precision)
    from .ort import OrtBackend

    return OrtBackend(path, device=device, threads=threads)


def check_precision(backend: str, device: str, precision: str | None) -> str:
    """The precision `backend` will run at on `device`; UsageError for one it cannot."""
    if precision is not None and precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    default = "fp16" if device == "cuda" and backend in ("torch", "tensorrt") else "fp32"
    precision = precision or default
    if precision == "fp16" and default != "fp16":
        where = ("onnxruntime runs the graph as exported (fp32)" if backend == "onnxruntime"
                 else "fp16 needs the GPU")
        raise UsageError(f"--precision fp16 with --backend {backend} on {device}: {where}; use --backend tensorrt "
                         f"or torch with --device cuda, or --precision fp32")
    return precision

