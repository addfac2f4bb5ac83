"""TensorRT backend: a model's engine, built once per GPU and TensorRT version, run on the GPU.

Given MODEL.onnx it uses the engine cache (edge/engine_cache.py), building the engine on first
use; given an .engine it runs that, with the contract from the .engine.json sidecar beside it.
"""

import numpy as np

from .. import engine_cache, tensorrt_engine
from ..errors import ModelError, UsageError
from . import check_file, onnx_type


class TensorrtBackend:
    name = "tensorrt"

    def __init__(self, path: str, *, device: str = "cuda", threads: int | None = None, precision: str = "fp16",
                 batch: int = 8, max_batch: int | None = None, workspace_mb: int = 1024, fp32_layers=()):
        # threads is taken so every backend loads alike; TensorRT's work is on the GPU.
        if device != "cuda":
            raise UsageError(f"--backend tensorrt runs on the GPU, not {device!r}; use --device cuda, "
                             "or --backend onnxruntime for the CPU")
        try:
            engine_cache.build_options(precision=precision, batch=batch, max_batch=max_batch,
                                       workspace_mb=workspace_mb, fp32_layers=fp32_layers)
        except ValueError as err:
            raise UsageError(f"--backend tensorrt: {err}") from None
        check_file(path, "an ONNX model or TensorRT engine file")
        self.path = path  # the file it runs
        if str(path).lower().endswith(".onnx"):
            self.engine_path = str(engine_cache.get_or_build(
                path, precision=precision, batch=batch, max_batch=max_batch, workspace_mb=workspace_mb,
                fp32_layers=fp32_layers, build=tensorrt_engine.build_engine, info=tensorrt_engine.gpu_info))
            side = engine_cache.read_sidecar(self.engine_path)
        else:  # an engine built elsewhere: only the machine it was built for can run it
            self.engine_path = path
            side = engine_cache.read_sidecar(path)
            setup = tensorrt_engine.gpu_info()
            reasons = engine_cache.check_engine(side, **setup)
            if reasons:
                raise ModelError(f"{path}: built for another machine ({'; '.join(reasons)}); rebuild it here from "
                                 f"{side.get('onnx', 'its .onnx')} with --backend tensorrt")
        with open(self.engine_path, "rb") as f:
            self.runner = tensorrt_engine.EngineRunner(f.read())
        self.metadata = side["metadata"]
        self.precision = side.get("precision", "unknown")
        self.device = f"cuda (TensorRT {self.precision})"
        self.tensor_device = "cuda"  # run_tensor takes and gives CUDA tensors
        _, self.default_batch, self.max_batch = side["profile"]
        self.input_shape = [d if d >= 0 else None for d in self.runner.input_shape]
        self.input_type = onnx_type(np.dtype(self.runner.input_dtype).name)

    def run(self, batch: np.ndarray) -> np.ndarray:
        # Batches above the engine's max run in chunks; any size down to 1 fits its profile.
        step = self.max_batch
        parts = [self.runner.run(batch[start : start + step]) for start in range(0, len(batch), step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def run_tensor(self, batch):
        """As `run`, for a batch already on the GPU, which the output stays on."""
        step = self.max_batch
        parts = [self.runner.run_tensor(batch[start : start + step]) for start in range(0, len(batch), step)]
        return parts[0] if len(parts) == 1 else self.runner.torch.cat(parts)
