"""A wrapped model → a torch.export program (.pt2) that runs with PyTorch alone, no fastai.

The program is the same uint8 NHWC → contract-output graph as the ONNX file (ContractWrapper),
and carries the same contract metadata as a JSON extra file, so the runtime's `torch` backend
reads it as onnxruntime reads metadata_props.
"""

import json

import torch

from edge.backends.torch_backend import CONTRACT_FILE
from edge.errors import ModelError
from edge.model import Contract


def save_program(wrapper: torch.nn.Module, contract: Contract, path) -> str:
    """Export `wrapper` (ContractWrapper over a model without fastai tensor subclasses) with a
    dynamic batch, and save it with the contract to `path`."""
    h, w = contract.input_size
    # Batch 2: torch.export specialises an example dimension of 1 into a constant.
    example = torch.zeros(2, h, w, 3, dtype=torch.uint8, device=next(wrapper.buffers()).device)
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(wrapper.eval(), (example,), dynamic_shapes={"pixels": {0: batch}})
    except Exception as err:  # torch.export raises many untyped errors for what it cannot trace
        lines = str(err).strip().splitlines() or [type(err).__name__]
        raise ModelError(f"{path}: torch.export cannot export this {contract.task} model "
                         f"({lines[0][:200]}); use the ONNX file instead") from err
    torch.export.save(program, str(path), extra_files={CONTRACT_FILE: json.dumps(contract.to_metadata())})
    return str(path)
