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

The graphs are built with the `onnx` package, which edge's runtime does not need.
"""

import dataclasses
from pathlib import Path

import numpy as np

from edge.errors import UsageError
from edge.model import Contract, parse
from edge.run.models import default_model

OPSET = 17
PRODUCER = "edge-bench free model"
# Part of the contract a cached file is compared on: a change to the graphs below bumps it.
GRAPH_VERSION = "1"
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
    """`task`'s free model in `folder`, built there unless a file with the same contract is."""
    contract = free_contract(task)
    path = Path(folder) / f"{task}.onnx"
    if path.is_file() and _contract_of(path) == contract:
        return path
    Path(folder).mkdir(parents=True, exist_ok=True)
    return write(contract, path)


def write(contract: Contract, path: Path) -> Path:
    """Build the free model of `contract`'s task under `contract` (any input format, channel
    order, output form or point convention) and save it at `path`."""
    graph = _Graph(contract)
    output = {"camvid": _camvid, "planet": _planet, "biwi": _biwi}[contract.task](graph)
    graph.save(output, path)
    return path


def _contract_of(path: Path) -> Contract | None:
    onnx = _onnx()
    try:
        return parse({p.key: p.value for p in onnx.load(str(path)).metadata_props}, source=str(path))
    except Exception:  # a broken or foreign file is simply built again
        return None


class _Graph:
    """A graph under construction: its nodes and constants, and the contract's input, read as
    a float N x H x W x 3 tensor of 0..255 pixels in the contract's channel order."""

    def __init__(self, contract: Contract):
        self.onnx = _onnx()
        self.contract, self.nodes, self.inits, self.count = contract, [], [], 0
        self.pixels = self._pixels()
        self.red = 0 if contract.channel_order == "RGB" else 2

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
        std = np.asarray(self.contract.std, np.float32).reshape(1, 3, 1, 1) * 255
        mean = np.asarray(self.contract.mean, np.float32).reshape(1, 3, 1, 1) * 255
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
    table = g.const((np.arange(256) * classes // 256).astype(np.int64))
    ids = g.op("Squeeze", g.op("Gather", table, g.op("Cast", red, to=tensor.INT32), axis=0), g.const(np.array([3])))
    if c.output == "class_ids":
        return ids, tensor.INT64, ["N", h, w]
    logits = g.op("OneHot", ids, g.const(np.array(classes)), g.const(np.array([0, 1], np.float32)), axis=1)
    return logits, tensor.FLOAT, ["N", classes, h, w]


def _planet(g: _Graph) -> tuple[str, int, list]:
    classes = len(g.contract.classes)
    offsets = np.arange(classes, dtype=np.float32) / max(classes - 1, 1) - 0.5
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
