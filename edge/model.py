"""The model contract: what an ONNX file's metadata must say for edge to run it.

Export writes these keys, the runtime reads them, and neither knows the other's internals;
README.md ("The model contract") is the normative description. Values are strings; lists
and numbers are JSON.
"""

import hashlib
import json
from dataclasses import dataclass, field

from .errors import ModelError

CONTRACT_VERSION = 1
PREFIX = "edge."

TASKS = ("camvid", "planet", "biwi")
INPUT_FORMATS = ("uint8_nhwc", "float32_nchw")
CHANNEL_ORDERS = ("RGB", "BGR")
RESIZE_METHODS = ("squish", "crop", "pad")
OUTPUT_FORMS = {
    "camvid": ("class_ids", "logits"),
    "planet": ("probabilities", "logits"),
    "biwi": ("points",),
}
POINT_CONVENTIONS = ("xy_minus1_1", "xy_pixels")

REQUIRED = ("contract", "task", "input_size", "input_format", "resize", "output")
REQUIRED_BY_TASK = {
    "camvid": ("classes", "palette"),
    "planet": ("classes", "thresholds"),
    "biwi": ("point_convention",),
}


@dataclass(frozen=True)
class Contract:
    """Everything the runtime needs to feed a model and read its output."""

    task: str
    input_size: tuple[int, int]  # (height, width) the graph takes
    input_format: str
    output: str
    resize: str = "squish"
    channel_order: str = "RGB"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # on the 0..1 scale, as fastai's stats
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    classes: tuple[str, ...] = ()
    thresholds: tuple[float, ...] = ()  # planet: one per class
    palette: tuple[tuple[int, int, int], ...] = ()  # camvid: one RGB per class
    point_convention: str = "xy_minus1_1"
    producer: str = ""
    producer_version: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    def to_metadata(self) -> dict[str, str]:
        """The metadata_props an exporter writes for this contract."""
        props = {
            "contract": str(CONTRACT_VERSION),
            "task": self.task,
            "input_size": json.dumps(list(self.input_size)),
            "input_format": self.input_format,
            "output": self.output,
            "resize": self.resize,
            "channel_order": self.channel_order,
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "producer": self.producer,
            "producer_version": self.producer_version,
        }
        if self.classes:
            props["classes"] = json.dumps(list(self.classes))
        if self.thresholds:
            props["thresholds"] = json.dumps(list(self.thresholds))
        if self.palette:
            props["palette"] = json.dumps([list(c) for c in self.palette])
        if self.task == "biwi":
            props["point_convention"] = self.point_convention
        return {PREFIX + k: v for k, v in props.items()}


def parse(metadata: dict[str, str], *, source: str = "model") -> Contract:
    """Validate metadata_props into a Contract; every problem names the key at fault."""
    props = {k[len(PREFIX):]: v for k, v in metadata.items() if k.startswith(PREFIX)}

    def fail(message: str) -> ModelError:
        return ModelError(f"{source}: {message}; see 'The model contract' in README.md")

    for key in REQUIRED:
        if key not in props:
            raise fail(f"metadata key '{PREFIX}{key}' is missing")
    if props["contract"] != str(CONTRACT_VERSION):
        raise fail(f"contract version {props['contract']!r} is not supported (this edge reads {CONTRACT_VERSION})")

    def choice(key: str, allowed, default=None) -> str:
        value = props.get(key, default)
        if value not in allowed:
            raise fail(f"'{PREFIX}{key}' is {value!r}; allowed: {', '.join(allowed)}")
        return value

    def js(key: str, default=None):
        if key not in props:
            return default
        try:
            return json.loads(props[key])
        except json.JSONDecodeError:
            raise fail(f"'{PREFIX}{key}' is not valid JSON: {props[key][:60]!r}") from None

    task = choice("task", TASKS)
    for key in REQUIRED_BY_TASK[task]:
        if key not in props:
            raise fail(f"metadata key '{PREFIX}{key}' is missing (required for task {task})")

    size = js("input_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise fail(f"'{PREFIX}input_size' must be [height, width] positive integers, got {props['input_size']!r}")

    def floats(key: str, count: int | None, default):
        values = js(key, default)
        if isinstance(values, (int, float)) and key == "thresholds":
            values = [values] * (count or 1)
        if not (isinstance(values, list) and all(isinstance(v, (int, float)) for v in values)):
            raise fail(f"'{PREFIX}{key}' must be a list of numbers")
        if count is not None and len(values) != count:
            raise fail(f"'{PREFIX}{key}' has {len(values)} values, expected {count}")
        return tuple(float(v) for v in values)

    classes = js("classes", [])
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise fail(f"'{PREFIX}classes' must be a list of strings")
    if task in ("camvid", "planet") and not classes:
        raise fail(f"'{PREFIX}classes' is empty")

    palette = js("palette", [])
    if task == "camvid":
        ok = isinstance(palette, list) and len(palette) == len(classes) and all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in palette
        )
        if not ok:
            raise fail(f"'{PREFIX}palette' must hold one [r, g, b] (0-255) per class ({len(classes)})")

    std = floats("std", 3, [1.0, 1.0, 1.0])
    if any(s <= 0 for s in std):
        raise fail(f"'{PREFIX}std' values must be positive")
    return Contract(
        task=task,
        input_size=(size[0], size[1]),
        input_format=choice("input_format", INPUT_FORMATS),
        output=choice("output", OUTPUT_FORMS[task]),
        resize=choice("resize", RESIZE_METHODS),
        channel_order=choice("channel_order", CHANNEL_ORDERS, "RGB"),
        mean=floats("mean", 3, [0.0, 0.0, 0.0]),
        std=std,
        classes=tuple(classes),
        thresholds=floats("thresholds", len(classes), None) if task == "planet" else (),
        palette=tuple(tuple(c) for c in palette),
        point_convention=choice("point_convention", POINT_CONVENTIONS, "xy_minus1_1"),
        producer=props.get("producer", ""),
        producer_version=props.get("producer_version", ""),
        extra={k: v for k, v in metadata.items() if not k.startswith(PREFIX)},
    )


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
