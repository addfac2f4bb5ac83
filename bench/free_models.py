"""Models whose inference costs almost nothing, for measuring what the host does around them.

On a GPU box the model is nearly free, so decoding, colour conversion, drawing and encoding on
the CPU decide the speed. Each free model carries the same contract as its task's default model
(size, input format, resize, classes, palette, thresholds, point convention, output form), so
edge feeds it and reads it exactly as the default, and computes a known function of a pixel or
a channel:

- camvid: each pixel's class is floor(R * classes / 256) of its red channel (class ids, or
  logits that are one-hot of that id where the default gives logits);
- planet: tag k's probability is clip(R / 255 + k / (classes - 1) - 0.5, 0, 1) of the first
  pixel, so that some tags pass their thresholds and some do not (logits: log(p / (1 - p)), p
  kept within [LOGIT_EPS, 1 - LOGIT_EPS]);
- biwi: the point is the centre pixel's (R / 255, G / 255), mapped onto the point convention's
  range (-1..1, or 0..width and 0..height of the model's input).

The graphs are built with the `onnx` package, which edge's runtime does not need. Where torch
is importable, the same function is also saved as a torch.export program beside each graph
(TASK.pt2, the contract in it as edge's torch backend reads it), which `--host-device` runs on
edge's device path; without torch it is not written.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from edge import backends
from edge.backends.torch_backend import CONTRACT_FILE
from edge.errors import UsageError
from edge.model import Contract, parse
from edge.run.models import default_model

OPSET = 17
PRODUCER = "edge-bench free model"
# Part of the contract a cached file is compared on: a change to the graphs below bumps it.
# 2: BGR float inputs are normalized with the flipped mean and std, as edge feeds them; the .pt2.
GRAPH_VERSION = "2"
LOGIT_EPS = 1e-3


def _onnx():
    try:
        import onnx
    except ImportError:
        raise UsageError("edge-bench's free models are built with the onnx package: pip install onnx") from None
    return onnx


def default_contract(task: str) -> Contract:
    """The contract of `task`'s default model, as edge reads it."""
    onnx = _onnx()
    path = default_model(task)
    model = onnx.load(path, load_external_data=False)
    return parse({p.key: p.value for p in model.metadata_props}, source=path)


def free_contract(task: str) -> Contract:
    """The default's contract, but saying who made the model: a run.json of a free model must
    not claim it was exported from fastai."""
    return dataclasses.replace(default_contract(task), producer=PRODUCER, producer_version=GRAPH_VERSION)


def free_model(task: str, folder) -> Path:
    """`task`'s free model in `folder` (the .onnx, and where torch is importable its .pt2 beside
    it), built there unless files with the same contract are."""
    contract = free_contract(task)
    path = Path(folder) / f"{task}.onnx"
    if _contract_of(path) == contract and (_torch() is None or _program_contract(program_of(path)) == contract):
        return path
    Path(folder).mkdir(parents=True, exist_ok=True)
    return write(contract, path)


def program_of(path: Path) -> Path:
    """The torch program beside a free model's graph, as edge's torch backend names it."""
    return Path(path).with_suffix(".pt2")


def write(contract: Contract, path: Path) -> Path:
    """Build the free model of `contract`'s task under `contract` (any input format, channel
    order, output form or point convention) and save it at `path`, and its torch program beside
    it where torch is importable."""
    graph = _Graph(contract)
    output = {"camvid": _camvid, "planet": _planet, "biwi": _biwi}[contract.task](graph)
    graph.save(output, path)
    if _torch() is not None:
        _save_program(contract, program_of(path))
    return path


def _contract_of(path: Path) -> Contract | None:
    onnx = _onnx()
    try:
        return parse({p.key: p.value for p in onnx.load(str(path)).metadata_props}, source=str(path))
    except Exception:  # a missing, broken or foreign file is simply built again
        return None


def _program_contract(path: Path) -> Contract | None:
    try:
        return parse(backends.load(str(path), backend="torch", device="cpu").metadata, source=str(path))
    except Exception:  # as _contract_of
        return None


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _normalization(contract: Contract) -> tuple[np.ndarray, np.ndarray]:
    """float32_nchw's mean and std, x 255, in the input's channel order: edge flips them for BGR."""
    order = slice(None, None, -1) if contract.channel_order == "BGR" else slice(None)
    return (np.asarray(contract.mean, np.float32)[order] * 255, np.asarray(contract.std, np.float32)[order] * 255)


class _Graph:
    """A graph under construction: its nodes and constants, and the contract's input, read as
    a float N x H x W x 3 tensor of 0..255 pixels in the contract's channel order."""

    def __init__(self, contract: Contract):
        self.onnx = _onnx()
        self.contract, self.nodes, self.inits, self.count = contract, [], [], 0
        self.pixels = self._pixels()
        self.red = _red(contract)

    def const(self, value) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, kind: str, *inputs: str, **attrs) -> str:
        self.count += 1
        out = f"{kind.lower()}{self.count}"
        self.nodes.append(self.onnx.helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def _pixels(self) -> str:
        h, w = self.contract.input_size
        tensor = self.onnx.TensorProto
        if self.contract.input_format == "uint8_nhwc":
            self.input = self.onnx.helper.make_tensor_value_info("pixels", tensor.UINT8, ["N", h, w, 3])
            return self.op("Cast", "pixels", to=tensor.FLOAT)
        # float32_nchw holds (x / 255 - mean) / std: undo it, and round off float error, so
        # that the pixel values the functions read are the frame's own
        self.input = self.onnx.helper.make_tensor_value_info("pixels", tensor.FLOAT, ["N", 3, h, w])
        mean, std = (a.reshape(1, 3, 1, 1) for a in _normalization(self.contract))
        nchw = self.op("Round", self.op("Add", self.op("Mul", "pixels", self.const(std)), self.const(mean)))
        return self.op("Transpose", nchw, perm=[0, 2, 3, 1])

    def channels(self, image: str, first: int, last: int) -> str:
        """image[..., first:last] of an N x h x w x 3 tensor."""
        return self.op("Slice", image, self.const(np.array([first])), self.const(np.array([last])),
                       self.const(np.array([3])))

    def pixel(self, y: int, x: int) -> str:
        """The N x 1 x 1 x 3 pixel at (y, x)."""
        return self.op("Slice", self.pixels, self.const(np.array([y, x])), self.const(np.array([y + 1, x + 1])),
                       self.const(np.array([1, 2])))

    def save(self, output: tuple[str, int, list], path: Path) -> None:
        """Save with the graph's output named after the output form, as the defaults name theirs."""
        name, kind, shape = output
        onnx, named = self.onnx, self.contract.output
        self.nodes.append(onnx.helper.make_node("Identity", [name], [named]))
        graph = onnx.helper.make_graph(self.nodes, f"free_{self.contract.task}", [self.input],
                                       [onnx.helper.make_tensor_value_info(named, kind, shape)], self.inits)
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)])
        model.ir_version = 8  # what onnxruntime releases of the last years all read
        onnx.helper.set_model_props(model, self.contract.to_metadata())
        onnx.checker.check_model(model)
        onnx.save(model, str(path))


def _camvid(g: _Graph) -> tuple[str, int, list]:
    c, (h, w) = g.contract, g.contract.input_size
    classes = len(c.classes)
    tensor = g.onnx.TensorProto
    # the red bytes alone, before anything is cast: a tenth of the work of casting the image
    red = g.channels("pixels" if c.input_format == "uint8_nhwc" else g.pixels, g.red, g.red + 1)
    # each red value's class, looked up: onnxruntime's elementwise arithmetic costs twice as much
    table = g.const(_class_table(classes))
    ids = g.op("Squeeze", g.op("Gather", table, g.op("Cast", red, to=tensor.INT32), axis=0), g.const(np.array([3])))
    if c.output == "class_ids":
        return ids, tensor.INT64, ["N", h, w]
    logits = g.op("OneHot", ids, g.const(np.array(classes)), g.const(np.array([0, 1], np.float32)), axis=1)
    return logits, tensor.FLOAT, ["N", classes, h, w]


def _planet(g: _Graph) -> tuple[str, int, list]:
    classes = len(g.contract.classes)
    offsets = _offsets(classes)
    red = g.op("Reshape", g.channels(g.pixel(0, 0), g.red, g.red + 1), g.const(np.array([-1, 1])))
    shifted = g.op("Add", g.op("Div", red, g.const(np.float32(255))), g.const(offsets))
    probs = g.op("Clip", shifted, g.const(np.float32(0)), g.const(np.float32(1)))
    if g.contract.output == "logits":
        p = g.op("Clip", probs, g.const(np.float32(LOGIT_EPS)), g.const(np.float32(1 - LOGIT_EPS)))
        probs = g.op("Sub", g.op("Log", p), g.op("Log", g.op("Sub", g.const(np.float32(1)), p)))
    return probs, g.onnx.TensorProto.FLOAT, ["N", classes]


def _biwi(g: _Graph) -> tuple[str, int, list]:
    h, w = g.contract.input_size
    centre = g.pixel(h // 2, w // 2)
    rg = g.op("Concat", g.channels(centre, g.red, g.red + 1), g.channels(centre, 1, 2), axis=3)
    unit = g.op("Div", g.op("Reshape", rg, g.const(np.array([-1, 2]))), g.const(np.float32(255)))
    if g.contract.point_convention == "xy_minus1_1":
        point = g.op("Sub", g.op("Mul", unit, g.const(np.float32(2))), g.const(np.float32(1)))
    else:  # xy_pixels: of the model's input
        point = g.op("Mul", unit, g.const(np.array([w, h], np.float32)))
    return point, g.onnx.TensorProto.FLOAT, ["N", 2]


def _red(contract: Contract) -> int:
    return 0 if contract.channel_order == "RGB" else 2


def _class_table(classes: int) -> np.ndarray:
    """Each red value's class id."""
    return (np.arange(256) * classes // 256).astype(np.int64)


def _offsets(classes: int) -> np.ndarray:
    """planet's per-tag offsets, -0.5 to 0.5."""
    return np.arange(classes, dtype=np.float32) / max(classes - 1, 1) - 0.5


def _save_program(contract: Contract, path: Path) -> None:
    """The graph's function as a torch.export program with a dynamic batch, saved with the
    contract as edge's torch backend reads it (as export/torch_program.py saves a trained model,
    but taking the contract's own input format, which may be float NCHW)."""
    torch = _torch()
    h, w = contract.input_size
    # batch 2: torch.export specialises an example dimension of 1 into a constant
    example = (torch.zeros(2, h, w, 3, dtype=torch.uint8) if contract.input_format == "uint8_nhwc"
               else torch.zeros(2, 3, h, w))
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(_module(contract).eval(), (example,), dynamic_shapes={"pixels": {0: batch}})
    torch.export.save(program, str(path), extra_files={CONTRACT_FILE: json.dumps(contract.to_metadata())})


def _module(contract: Contract):
    """A torch module computing what `contract`'s graph computes, op for op in float32, each
    pixel read before the rest of the image is converted (the same values: the conversions are
    elementwise)."""
    torch = _torch()
    c, (h, w), red = contract, contract.input_size, _red(contract)
    nhwc = c.input_format == "uint8_nhwc"

    class FreeModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            mean, std = _normalization(c)
            classes = len(c.classes)
            constants = {"mean": mean[None], "std": std[None], "full": np.float32(255),
                         "size": np.array([w, h], np.float32)}
            # the task's own only: torch.export.save cannot package an empty tensor (biwi has no classes)
            if c.task == "camvid":
                constants.update(table=_class_table(classes), ids=np.arange(classes).reshape(1, -1, 1, 1))
            if c.task == "planet":
                constants["offsets"] = _offsets(classes)
            for name, value in constants.items():
                self.register_buffer(name, torch.from_numpy(np.asarray(value)))

        def pixel(self, pixels, y: int, x: int):
            """The N x 3 pixel at (y, x), 0..255 as float, in the input's channel order."""
            if nhwc:
                return pixels[:, y, x, :].float()
            return torch.round(pixels[:, :, y, x] * self.std + self.mean)

        def forward(self, pixels):
            if c.task == "camvid":
                reds = pixels[..., red] if nhwc else torch.round(
                    pixels[:, red] * self.std[0, red] + self.mean[0, red])
                ids = self.table[reds.long()]  # truncated, as ONNX's Cast to int32
                return ids if c.output == "class_ids" else (ids[:, None] == self.ids).float()
            if c.task == "planet":
                probs = (self.pixel(pixels, 0, 0)[:, red:red + 1] / self.full + self.offsets).clamp(0, 1)
                if c.output != "logits":
                    return probs
                p = probs.clamp(LOGIT_EPS, 1 - LOGIT_EPS)
                return torch.log(p) - torch.log(1 - p)
            centre = self.pixel(pixels, h // 2, w // 2)
            unit = torch.cat([centre[:, red:red + 1], centre[:, 1:2]], dim=1) / self.full
            return unit * 2 - 1 if c.point_convention == "xy_minus1_1" else unit * self.size

    return FreeModel()
