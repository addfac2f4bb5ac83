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
    keys = _Keys(metadata, source)
    task = keys.choice("task", TASKS)
    for key in REQUIRED_BY_TASK[task]:
        if key not in keys.props:
            raise keys.fail(f"metadata key '{PREFIX}{key}' is missing (required for task {task})")
    size = keys.js("input_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise keys.fail(f"'{PREFIX}input_size' must be [height, width] positive integers, got "
                        f"{keys.props['input_size']!r}")
    classes = _classes(keys, task)
    palette = _palette(keys, task, len(classes))
    std = keys.floats("std", 3, [1.0, 1.0, 1.0])
    if any(s <= 0 for s in std):
        raise keys.fail(f"'{PREFIX}std' values must be positive")
    return Contract(
        task=task,
        input_size=(size[0], size[1]),
        input_format=keys.choice("input_format", INPUT_FORMATS),
        output=keys.choice("output", OUTPUT_FORMS[task]),
        resize=keys.choice("resize", RESIZE_METHODS),
        channel_order=keys.choice("channel_order", CHANNEL_ORDERS, "RGB"),
        mean=keys.floats("mean", 3, [0.0, 0.0, 0.0]),
        std=std,
        classes=tuple(classes),
        thresholds=keys.floats("thresholds", len(classes), None) if task == "planet" else (),
        palette=tuple(tuple(c) for c in palette),
        point_convention=keys.choice("point_convention", POINT_CONVENTIONS, "xy_minus1_1"),
        producer=keys.props.get("producer", ""),
        producer_version=keys.props.get("producer_version", ""),
        extra={k: v for k, v in metadata.items() if not k.startswith(PREFIX)},
    )


class _Keys:
    """One model's contract keys (without the prefix), read with the checks they all share; the
    keys every contract needs, and its version, are checked on the way in."""

    def __init__(self, metadata: dict[str, str], source: str):
        self.props = {k[len(PREFIX):]: v for k, v in metadata.items() if k.startswith(PREFIX)}
        self.source = source
        for key in REQUIRED:
            if key not in self.props:
                raise self.fail(f"metadata key '{PREFIX}{key}' is missing")
        if self.props["contract"] != str(CONTRACT_VERSION):
            raise self.fail(f"contract version {self.props['contract']!r} is not supported (this edge reads "
                            f"{CONTRACT_VERSION})")

    def fail(self, message: str) -> ModelError:
        return ModelError(f"{self.source}: {message}; see 'The model contract' in README.md")

    def choice(self, key: str, allowed, default=None) -> str:
        value = self.props.get(key, default)
        if value not in allowed:
            raise self.fail(f"'{PREFIX}{key}' is {value!r}; allowed: {', '.join(allowed)}")
        return value

    def js(self, key: str, default=None):
        if key not in self.props:
            return default
        try:
            return json.loads(self.props[key])
        except json.JSONDecodeError:
            raise self.fail(f"'{PREFIX}{key}' is not valid JSON: {self.props[key][:60]!r}") from None

    def floats(self, key: str, count: int | None, default) -> tuple[float, ...]:
        values = self.js(key, default)
        if isinstance(values, (int, float)) and key == "thresholds":
            values = [values] * (count or 1)
        if not (isinstance(values, list) and all(isinstance(v, (int, float)) for v in values)):
            raise self.fail(f"'{PREFIX}{key}' must be a list of numbers")
        if count is not None and len(values) != count:
            raise self.fail(f"'{PREFIX}{key}' has {len(values)} values, expected {count}")
        return tuple(float(v) for v in values)


def _classes(keys: _Keys, task: str) -> list[str]:
    classes = keys.js("classes", [])
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise keys.fail(f"'{PREFIX}classes' must be a list of strings")
    if task in ("camvid", "planet") and not classes:
        raise keys.fail(f"'{PREFIX}classes' is empty")
    return classes


def _palette(keys: _Keys, task: str, classes: int) -> list:
    palette = keys.js("palette", [])
    if task == "camvid" and not (isinstance(palette, list) and len(palette) == classes and all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in palette)):
        raise keys.fail(f"'{PREFIX}palette' must hold one [r, g, b] (0-255) per class ({classes})")
    return palette


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
