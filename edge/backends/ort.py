"""onnxruntime backend: CPU by default, the TensorRT or CUDA execution provider on `--device cuda`."""

import os

import numpy as np

from ..device import torch_has_cuda
from ..errors import ModelError, UsageError, last_line
from . import check_file

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def usable_cores() -> int:
    """The cores this process may run on (its affinity, as a container or taskset limits it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads() -> int:
    """Intra-op threads: all cores on a small machine (inference is the bottleneck there and
    idle ORT threads sleep, since spinning is off), one core left for decode and encode above four."""
    cores = usable_cores()
    return cores if cores <= 4 else cores - 1


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, path: str, *, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        check_file(path, "an ONNX model file")
        self.path = path  # the file it runs
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            available = [p for p in GPU_PROVIDERS if p in ort.get_available_providers()]
            if not available:
                raise UsageError(
                    "--device cuda: this onnxruntime has no CUDA or TensorRT provider; "
                    "install onnxruntime-gpu on a CUDA machine, or use --device cpu"
                )
            providers = available + providers
        try:
            self.session = ort.InferenceSession(path, options, providers=providers)
        except Exception as err:  # onnxruntime raises untyped errors for every kind of bad file
            raise ModelError(f"{path}: not a valid ONNX model ({last_line(err)}); export it again") from err
        used = self.session.get_providers()[0]
        self.device = "cpu" if used == "CPUExecutionProvider" else f"cuda ({used})"
        # frames can meet the model on the GPU only through a CUDA torch (edge/device.py)
        self.tensor_device = "cuda" if used != "CPUExecutionProvider" and torch_has_cuda() else None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape = list(model_input.shape)
        self.input_type = model_input.type  # e.g. "tensor(uint8)"
        # A graph exported with a fixed batch dimension is fed in chunks of that size.
        fixed = model_input.shape[0] if model_input.shape else None
        self.fixed_batch = fixed if isinstance(fixed, int) and fixed > 0 else None
        self.default_batch = self.fixed_batch or (8 if device == "cuda" else 4)

    def run(self, batch: np.ndarray) -> np.ndarray:
        step = self.fixed_batch or len(batch)
        parts = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            if len(chunk) < step:  # pad the last partial chunk of a fixed-batch graph
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - len(chunk), axis=0)])
            parts.append(self.session.run(None, {self.input_name: chunk})[0])
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return out[: len(batch)]
