"""Small ONNX models that honour the contract and compute known functions, so tests can
assert what the outputs contain, not just that they exist.

- camvid: each pixel's class is its dominant channel (Red, Green, Blue), or Void when every
  channel is at most 64.
- planet: the probability of tag red/green/blue is the mean of that channel / 255, and of
  bright the mean of all three.
- biwi: the point is the brightness-weighted centroid of the image (a dot on black).
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.model import Contract

OPSET = 18
CAMVID_CLASSES = ("Void", "Red", "Green", "Blue")
CAMVID_PALETTE = ((0, 0, 0), (255, 255, 0), (0, 255, 255), (255, 0, 255))
PLANET_TAGS = ("red", "green", "blue", "bright")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class _Graph:
    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, kind: str, inputs: list[str], out: str, **attrs) -> str:
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out


def _pixels(g: _Graph, contract: Contract, batch) -> tuple[onnx.ValueInfoProto, str]:
    """Graph input, and a float NHWC tensor of 0..255 RGB pixels whatever the input format."""
    h, w = contract.input_size
    if contract.input_format == "uint8_nhwc":
        x = helper.make_tensor_value_info("pixels", TensorProto.UINT8, [batch, h, w, 3])
        return x, g.op("Cast", ["pixels"], "rgb", to=TensorProto.FLOAT)
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 3, h, w])
    std = np.asarray(contract.std, np.float32).reshape(1, 3, 1, 1) * 255
    mean = np.asarray(contract.mean, np.float32).reshape(1, 3, 1, 1) * 255
    scaled = g.op("Mul", ["pixels", g.const("std255", std)], "scaled")
    nchw = g.op("Add", [scaled, g.const("mean255", mean)], "nchw")
    return x, g.op("Transpose", [nchw], "rgb", perm=[0, 2, 3, 1])


def _save(g: _Graph, x, y, contract: Contract, path) -> str:
    graph = helper.make_graph(g.nodes, "edge_test_model", [x], [y], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    helper.set_model_props(model, contract.to_metadata())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def camvid(path, *, size=(48, 64), output="class_ids", input_format="uint8_nhwc", resize="squish",
           batch="N", **contract_fields) -> str:
    contract = Contract(task="camvid", input_size=size, input_format=input_format, output=output, resize=resize,
                        classes=CAMVID_CLASSES, palette=CAMVID_PALETTE, producer="tests",
                        mean=IMAGENET_MEAN, std=IMAGENET_STD, **contract_fields)
    g = _Graph()
    x, rgb = _pixels(g, contract, batch)
    first = g.op("Slice", [rgb, g.const("s0", np.array([0])), g.const("s1", np.array([1])),
                           g.const("s3", np.array([3]))], "first")
    void = g.op("Add", [g.op("Mul", [first, g.const("zero", np.float32(0))], "zeros"),
                        g.const("void_level", np.float32(64))], "void")
    scores = g.op("Concat", [void, rgb], "scores", axis=3)
    if output == "class_ids":
        g.op("ArgMax", [scores], "classes", axis=3, keepdims=0)
        y = helper.make_tensor_value_info("classes", TensorProto.INT64, [batch, *size])
    else:
        g.op("Transpose", [scores], "logits", perm=[0, 3, 1, 2])
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4, *size])
    return _save(g, x, y, contract, path)


def planet(path, *, size=(32, 32), output="probabilities", thresholds=(0.5, 0.5, 0.5, 0.5), batch="N") -> str:
    contract = Contract(task="planet", input_size=size, input_format="uint8_nhwc", output=output,
                        classes=PLANET_TAGS, thresholds=thresholds, producer="tests")
    g = _Graph()
    x, rgb = _pixels(g, contract, batch)
    channel = g.op("ReduceMean", [rgb, g.const("hw", np.array([1, 2]))], "channel_mean", keepdims=0)
    overall = g.op("ReduceMean", [channel, g.const("c", np.array([1]))], "overall", keepdims=1)
    means = g.op("Concat", [channel, overall], "means", axis=1)
    probs = g.op("Div", [means, g.const("full", np.float32(255))], "probabilities")
    if output == "logits":
        centred = g.op("Sub", [probs, g.const("half", np.float32(0.5))], "centred")
        g.op("Mul", [centred, g.const("gain", np.float32(20))], "logits")
    y = helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, len(PLANET_TAGS)])
    return _save(g, x, y, contract, path)


def biwi(path, *, size=(48, 64), point_convention="xy_minus1_1", resize="squish", batch="N", eps=1e-6) -> str:
    """eps=0 makes a broken model: 0/0, NaN, for an all-black frame."""
    h, w = size
    contract = Contract(task="biwi", input_size=size, input_format="uint8_nhwc", output="points", resize=resize,
                        point_convention=point_convention, producer="tests")
    g = _Graph()
    x, rgb = _pixels(g, contract, batch)
    weight = g.op("ReduceSum", [rgb, g.const("ch", np.array([3]))], "weight", keepdims=0)  # N,h,w
    xs = np.tile((np.arange(w, dtype=np.float32) + 0.5), (h, 1))
    ys = np.tile((np.arange(h, dtype=np.float32) + 0.5)[:, None], (1, w))
    if point_convention == "xy_minus1_1":
        xs, ys = xs * 2 / w - 1, ys * 2 / h - 1
    hw = g.const("axes_hw", np.array([1, 2]))
    total = g.op("ReduceSum", [weight, hw], "total", keepdims=0)
    safe = g.op("Add", [total, g.const("eps", np.float32(eps))], "safe_total")
    coords = []
    for name, grid in (("x", xs), ("y", ys)):
        weighted = g.op("Mul", [weight, g.const(f"grid_{name}", grid)], f"weighted_{name}")
        summed = g.op("ReduceSum", [weighted, hw], f"sum_{name}", keepdims=0)
        coords.append(g.op("Unsqueeze", [g.op("Div", [summed, safe], f"mean_{name}"), g.const(f"ax_{name}", np.array([1]))],
                           f"coord_{name}"))
    g.op("Concat", coords, "point", axis=1)
    y = helper.make_tensor_value_info("point", TensorProto.FLOAT, [batch, 2])
    return _save(g, x, y, contract, path)
