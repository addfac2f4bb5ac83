"""onnxruntime backend: CPU by default, the TensorRT or CUDA execution provider on `--device cuda`."""


import numpy as np

from ..device import torch_has_cuda
from ..errors import ModelError, UsageError, last_line
from ..machine import default_threads
from . import check_file

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
# output types a graph can write into a torch tensor in place, by their torch (and numpy) name
_TORCH_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
                "tensor(int32)": "int32", "tensor(uint8)": "uint8"}
_NUMPY_TYPES = {"torch.uint8": np.uint8, "torch.float32": np.float32}  # the inputs edge feeds


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
        output = self.session.get_outputs()[0]
        self._output = (output.name, output.type, output.shape[1:])
        # Frames can meet the model on its device as torch tensors (edge/device.py), bound in
        # place, which needs the output's size known ahead but for the batch.
        in_place = all(isinstance(d, int) for d in output.shape[1:]) and output.type in _TORCH_TYPES
        on_gpu = used != "CPUExecutionProvider"
        self.tensor_device = None if not in_place or (on_gpu and not torch_has_cuda()) else "cuda" if on_gpu else "cpu"
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
        return self._chunked(batch, lambda chunk: self.session.run(None, {self.input_name: chunk})[0], np)

    def run_tensor(self, batch):
        """As `run`, for a batch in torch tensors (on CUDA with a GPU provider), bound in place:
        the output is allocated beside the input and the graph reads and writes them there."""
        import torch

        return self._chunked(batch.contiguous(), self._bound, torch)

    def _chunked(self, batch, run, xp):
        step = self.fixed_batch or len(batch)
        parts = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            if len(chunk) < step:  # pad the last partial chunk of a fixed-batch graph with its last item
                chunk = chunk[list(range(len(chunk))) + [len(chunk) - 1] * (step - len(chunk))]
            parts.append(run(chunk))
        out = parts[0] if len(parts) == 1 else xp.concatenate(parts)
        return out[: len(batch)]

    def _bound(self, pixels):
        import torch

        name, kind, shape = self._output
        out = torch.empty((len(pixels), *shape), dtype=getattr(torch, _TORCH_TYPES[kind]), device=pixels.device)
        where = (pixels.device.type, pixels.device.index or 0)
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, *where, _NUMPY_TYPES[str(pixels.dtype)], list(pixels.shape),
                           pixels.data_ptr())
        binding.bind_output(name, *where, np.dtype(_TORCH_TYPES[kind]), list(out.shape), out.data_ptr())
        for other in self.session.get_outputs()[1:]:  # a graph's further outputs: let it place them
            binding.bind_output(other.name, where[0], where[1])
        if pixels.is_cuda:  # onnxruntime reads on its own stream: what made `pixels` must be done
            torch.cuda.current_stream().synchronize()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return out
