"""torch backend: a torch.export program (`edge-export --torch-program OUT.pt2`) run by PyTorch.

The program holds the same graph as the ONNX file (uint8 NHWC in, the contract's output out) and
the contract as the JSON extra file CONTRACT_FILE. torch is imported here only, so the runtime
imports without it. On `--device cuda` the weights stay fp32 and the graph runs under fp16
autocast: the uint8 input crosses to the GPU as uint8, the program's own cast makes it float,
and autocast then runs convolutions and matmuls in fp16 while keeping reductions in fp32
(precision "fp32" runs it without autocast, to measure what fp16 gains).
"""

import contextlib
import json

import numpy as np

from ..errors import ModelError, UsageError, last_line
from . import check_file, onnx_type
from ..machine import default_threads

CONTRACT_FILE = "edge.contract.json"


class TorchBackend:
    name = "torch"

    def __init__(self, path: str, *, device: str = "cpu", threads: int | None = None,
                 precision: str | None = None):
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: torch has no CUDA here; install a CUDA build of torch "
                             "on a CUDA machine, or use --device cpu")
        check_file(path, "a torch program file")
        self.path = path  # the file it runs
        extra = {CONTRACT_FILE: ""}
        try:
            program = torch.export.load(path, extra_files=extra)
        except Exception as err:  # a zip that is not a program, not a zip, or a program too new
            raise ModelError(f"{path}: torch {torch.__version__} cannot load it as a program ({last_line(err)}); "
                             f"write one with edge-export --torch-program, with this torch") from err
        try:
            self.metadata = {str(k): str(v) for k, v in json.loads(extra[CONTRACT_FILE]).items()}
        except (json.JSONDecodeError, AttributeError):
            raise ModelError(f"{path}: the torch program has no valid '{CONTRACT_FILE}' (the edge contract); "
                             f"export it again with edge-export --torch-program") from None
        pixels = _user_input(program)
        self.input_shape = [d if isinstance(d, int) else str(d) for d in pixels.shape]
        self.input_type = onnx_type(str(pixels.dtype).removeprefix("torch."))
        # intra-op threads are process-wide in torch, unlike an onnxruntime session's
        torch.set_num_threads(threads or default_threads())
        self._torch = torch
        self._device = torch.device(device)
        if device == "cuda":
            from torch.export.passes import move_to_device_pass

            # The graph records the export's device (an assert on the input's metadata), so
            # moving the weights alone is not enough: this pass rewrites both.
            program = move_to_device_pass(program, device)
        self.module = program.module()
        self._fp16 = device == "cuda" and precision != "fp32"
        if device == "cuda" and not self._fp16:
            # fp32 means fp32: torch would otherwise run convolutions in TF32 (10-bit mantissa)
            # on Ampere and later, and fp16's agreement would be measured against that
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        self.device = f"cuda ({'fp16' if self._fp16 else 'fp32'})" if device == "cuda" else "cpu"
        self.tensor_device = device  # run_tensor takes and gives tensors there
        self.default_batch = 8 if device == "cuda" else 4

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_tensor(self._torch.from_numpy(np.ascontiguousarray(batch)).to(self._device)).cpu().numpy()

    def run_tensor(self, x):
        """A batch already on this backend's device, in and out as tensors."""
        torch = self._torch
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16) if self._fp16 else contextlib.nullcontext():
            out = self.module(x)
        return out.float() if out.is_floating_point() else out  # fp16 out of autocast; decoding takes float32


def _user_input(program):
    """The fake tensor of the program's first user input: its shape (symbolic batch) and dtype."""
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    return node.meta["val"]
