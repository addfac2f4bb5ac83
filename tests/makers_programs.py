"""torch programs (.pt2) of the known-function models in makers_models, with the same contracts,
so a run through the torch backend, where frames go to the model's device, can be compared with
a run of the ONNX twin on the host path."""

import torch

from edge.backends.ort import OrtBackend
from edge.model import parse
from export.torch_program import save_program
from tests import makers_models


class Camvid(torch.nn.Module):
    def __init__(self, logits: bool):
        super().__init__()
        self.logits = logits
        self.register_buffer("void", torch.tensor(64.0))

    def forward(self, pixels):
        rgb = pixels.float()
        scores = torch.cat([self.void.expand_as(rgb[..., :1]), rgb], dim=3)
        return scores.permute(0, 3, 1, 2) if self.logits else scores.argmax(dim=3)


class Planet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("full", torch.tensor(255.0))

    def forward(self, pixels):
        channel = pixels.float().mean(dim=(1, 2))
        return torch.cat([channel, channel.mean(dim=1, keepdim=True)], dim=1) / self.full


class Biwi(torch.nn.Module):
    def __init__(self, size):
        super().__init__()
        h, w = size
        self.register_buffer("xs", ((torch.arange(w) + 0.5) * 2 / w - 1).expand(h, w))
        self.register_buffer("ys", ((torch.arange(h) + 0.5) * 2 / h - 1)[:, None].expand(h, w))

    def forward(self, pixels):
        weight = pixels.float().sum(dim=3)
        total = weight.sum(dim=(1, 2)) + 1e-6
        x = (weight * self.xs).sum(dim=(1, 2)) / total
        y = (weight * self.ys).sum(dim=(1, 2)) / total
        return torch.stack([x, y], dim=1)


def twins(folder, task: str, **options) -> tuple[str, str]:
    """(ONNX file, torch program) of one known-function model."""
    onnx_path = getattr(makers_models, task)(folder / f"{task}.onnx", **options)
    contract = parse(OrtBackend(onnx_path).metadata)
    module = {"camvid": lambda: Camvid(contract.output == "logits"), "planet": Planet,
              "biwi": lambda: Biwi(contract.input_size)}[task]()
    return onnx_path, save_program(module, contract, folder / f"{task}.pt2")
