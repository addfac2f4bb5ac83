"""Every call into TensorRT lives here: build a plan from an ONNX file, and run a plan.

TensorRT 8.5 to 10.x (8.5 brought the named-tensor API used to run; JetPack 5.1+ ships it).
TensorRT comes only from NVIDIA (JetPack, or NVIDIA's pip index), so it and torch are imported
inside the functions that need them and `import edge` works without either. Device buffers
are torch CUDA tensors: torch is on every Jetson and RTX setup that runs models, and spares
edge a CUDA binding of its own.
"""

import fnmatch
import os
import threading

import numpy as np

from .engine_cache import atomic_write
from .errors import ModelError, UsageError

MIN_VERSION = (8, 5)
NOT_INSTALLED = ("--backend tensorrt: TensorRT is not installed{detail}; install it from NVIDIA (JetPack on Jetson, "
                 "`pip install tensorrt` from NVIDIA's index on x86) or use --backend onnxruntime")


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as err:
        # A wheel without its libraries (libnvinfer) imports with an error worth showing.
        missing = isinstance(err, ModuleNotFoundError) and err.name == "tensorrt"
        raise UsageError(NOT_INSTALLED.format(detail="" if missing else f" or broken ({err})")) from None
    if _version(trt) < MIN_VERSION:
        raise UsageError(f"--backend tensorrt: TensorRT {trt.__version__} is too old; edge needs "
                         f"{'.'.join(map(str, MIN_VERSION))} or newer (JetPack 5.1+), or use --backend onnxruntime")
    return trt


def gpu_info() -> dict:
    """The facts an engine is tied to: TensorRT version, GPU name and compute capability ("8.6")."""
    trt = import_tensorrt()
    torch = _cuda_torch()
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {"trt_version": trt.__version__, "gpu_name": torch.cuda.get_device_name(index),
            "compute_capability": f"{major}.{minor}"}


def build_engine(onnx_path, *, fp16: bool, profile: tuple[int, int, int], workspace_mb: int, timing_cache_path,
                 fp32_layers=()) -> bytes:
    """Build the serialized plan of `onnx_path` for batches profile = (min, opt, max).

    fp32_layers are fnmatch patterns of TensorRT layer names (the ONNX node names, e.g.
    "/model/layers.3/*") kept in fp32 in an fp16 engine, for layers that overflow in fp16.
    The timing cache file is read if present and written back, so later builds are faster.
    """
    if fp16 not in (True, False):
        raise ValueError(f"fp16 must be True or False, got {fp16!r}")
    if not (len(profile) == 3 and 1 <= profile[0] <= profile[1] <= profile[2]):
        raise ValueError(f"profile must be (min, opt, max) batch sizes with 1 <= min <= opt <= max, got {profile!r}")
    if fp32_layers and not fp16:
        raise ValueError("fp32_layers apply only to fp16 builds")
    trt = import_tensorrt()
    if fp16 and not hasattr(trt.BuilderFlag, "FP16"):
        raise UsageError(f"--precision fp16: TensorRT {trt.__version__} builds only strongly typed networks and has "
                         "no fp16 flag; use --precision fp32, or TensorRT 8.5-10.x")
    logger = _logger(trt)
    builder = trt.Builder(logger)
    # Explicit batch is the only mode from TensorRT 10 on, and must be asked for before.
    flags = 0 if _version(trt) >= (10, 0) else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        data = f.read()
    if not parser.parse(data, os.path.abspath(onnx_path)):  # the path finds external weights
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ModelError(f"{onnx_path}: TensorRT cannot parse this model: {_one_line(errors)}{more}; "
                         "export it with a supported opset, or use --backend onnxruntime")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if fp32_layers:
        _pin_fp32(trt, network, config, fp32_layers, onnx_path)
    config.add_optimization_profile(_profile(builder, network, profile, onnx_path))
    cache = _timing_cache(config, timing_cache_path)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"{onnx_path}: TensorRT could not build an engine: {_one_line(logger.errors)}; "
                         "try a larger workspace, or --backend onnxruntime")
    atomic_write(timing_cache_path, bytes(cache.serialize()))
    return bytes(plan)


class EngineRunner:
    """A deserialized plan and its execution context: runs one batch within the profile's sizes."""

    def __init__(self, plan: bytes):
        trt = import_tensorrt()
        self.torch = torch = _cuda_torch()
        self.logger = _logger(trt)  # TensorRT needs its logger and runtime to outlive the engine
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ModelError(f"TensorRT cannot load this engine: {_one_line(self.logger.errors)}; "
                             "rebuild it from its .onnx on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ModelError(f"the engine has {len(inputs)} inputs; edge models take one (the pixels)")
        self.input_name = inputs[0]
        self.outputs = [n for n in names if n != self.input_name]  # TensorRT needs a buffer for each
        self.input_shape = tuple(self.engine.get_tensor_shape(self.input_name))  # batch is -1
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.output_dtypes = {n: _torch_dtype(torch, trt.nptype(self.engine.get_tensor_dtype(n))) for n in self.outputs}
        # A stream of our own: TensorRT syncs extra on the default stream, and warns about it.
        self.stream = torch.cuda.Stream()
        self.lock = threading.Lock()  # one execution context: jobs side by side take turns

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The first output for `batch`, whose size must lie within the engine's profile."""
        with self.torch.cuda.stream(self.stream):  # the copy in goes on the engine's stream
            pixels = self.torch.from_numpy(np.ascontiguousarray(batch, self.input_dtype)).cuda()
        return self.run_tensor(pixels).cpu().numpy()

    def run_tensor(self, pixels):
        """As `run`, from a CUDA tensor to a CUDA tensor, finished when it returns."""
        with self.lock:
            return self._run(pixels)

    def _run(self, pixels):
        torch, context = self.torch, self.context
        self.stream.wait_stream(torch.cuda.current_stream())  # whatever made `pixels` comes first
        with torch.cuda.stream(self.stream):  # allocations and the engine share one stream
            pixels = pixels.to(_torch_dtype(torch, self.input_dtype)).contiguous()
            if not context.set_input_shape(self.input_name, tuple(pixels.shape)):
                raise ModelError(f"the engine does not take input {tuple(pixels.shape)}: "
                                 f"{_one_line(self.logger.errors)}; use a batch within the engine's profile")
            context.set_tensor_address(self.input_name, pixels.data_ptr())
            outputs = []
            for name in self.outputs:
                out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=self.output_dtypes[name], device="cuda")
                context.set_tensor_address(name, out.data_ptr())
                outputs.append(out)
            if not context.execute_async_v3(self.stream.cuda_stream):
                raise ModelError(f"TensorRT failed to run a batch of {len(pixels)}: {_one_line(self.logger.errors)}")
        self.stream.synchronize()
        return outputs[0]


def _profile(builder, network, batches, onnx_path):
    """The one optimization profile: the batch axis spans (min, opt, max), other axes as the model has them."""
    if network.num_inputs != 1:
        raise ModelError(f"{onnx_path}: the graph has {network.num_inputs} inputs; edge models take one (the pixels)")
    pixels = network.get_input(0)
    shape = tuple(pixels.shape)
    if shape[0] != -1:
        raise ModelError(f"{onnx_path}: the graph's batch axis is fixed at {shape[0]}; TensorRT engines here need a "
                         "dynamic batch (edge-export writes one), or use --backend onnxruntime")
    if any(d < 0 for d in shape[1:]):
        raise ModelError(f"{onnx_path}: the graph's input {pixels.name} has shape {list(shape)}; only the batch axis "
                         "may be dynamic, so export it at the contract's input_size")
    profile = builder.create_optimization_profile()
    profile.set_shape(pixels.name, *[(b, *shape[1:]) for b in batches])
    return profile


def _pin_fp32(trt, network, config, patterns, onnx_path) -> None:
    """Keep the layers matching `patterns` in fp32 inside an fp16 engine."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(layer.name, pattern) for layer in layers):
            examples = ", ".join(layer.name for layer in layers[:3])
            raise UsageError(f"fp32 layer pattern {pattern!r} matches no layer of {onnx_path} (its layers are named "
                             f"like {examples}); give fnmatch patterns of those names")
    floats = (trt.float32, trt.float16)
    for layer in layers:
        if not any(fnmatch.fnmatchcase(layer.name, p) for p in patterns):
            continue
        tensors = [layer.get_input(i) for i in range(layer.num_inputs)]
        outputs = [i for i in range(layer.num_outputs) if layer.get_output(i).dtype in floats]
        # A layer with no float tensor (shapes, indices) has no fp16 form to keep it from.
        if outputs or any(t is not None and t.dtype in floats for t in tensors):
            layer.precision = trt.float32
            for i in outputs:
                layer.set_output_type(i, trt.float32)
    # Without this flag TensorRT takes the pins as hints and may still choose fp16 kernels.
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)


def _timing_cache(config, path):
    data = b""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            data = f.read()
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        # A corrupt or foreign cache only costs build time: start an empty one.
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _logger(trt):
    """A logger that keeps TensorRT's errors for edge's one-line messages instead of printing its log."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)

    return Logger()


def _cuda_torch():
    try:
        import torch
    except ImportError:
        raise UsageError("--backend tensorrt: needs PyTorch with CUDA for its GPU buffers; install NVIDIA's "
                         "PyTorch for JetPack on Jetson or a CUDA build of torch on x86, or use --backend onnxruntime"
                         ) from None
    if not torch.cuda.is_available():
        raise UsageError("--backend tensorrt: no CUDA GPU is visible (torch.cuda.is_available() is False); check the "
                         "NVIDIA driver and CUDA_VISIBLE_DEVICES, or use --backend onnxruntime")
    return torch


def _torch_dtype(torch, numpy_type):
    return torch.from_numpy(np.empty(0, numpy_type)).dtype


def _version(trt) -> tuple[int, int]:
    major, minor = (trt.__version__.split(".") + ["0"])[:2]
    return int(major), int(minor)


def _one_line(messages: list[str]) -> str:
    text = " ".join(messages[0].split()) if messages else "no message from TensorRT"
    return text[:300]
