"""The fastai lesson-3 architectures at the lesson's input sizes, untrained, as contract ONNX
files for timing edge: `python -m bench.timing_models FOLDER` (from the repository root).

Weights are random (pretrained=False, nothing is downloaded). Throughput depends on the
layers and the input size, not on the weights' values, so these files cost exactly what the
trained models cost; their outputs mean nothing, and the contract's producer says so.

What each mirrors (fastai course v1 lesson 3, rebuilt with fastai 2's learner functions):
- camvid: unet_learner(data, resnet34) over half-size CamVid, 360x480, squish (v1 squished
  when given a (h, w) size). The lesson's "go big" stage at 720x960 costs about 4x this.
- planet: cnn_learner(data, resnet50) at 256x256 (its second stage), thresholds 0.2 as the
  lesson's accuracy_thresh, crop (v1's default for a square int size).
- biwi: cnn_learner(data, resnet34) at 120x160, squish, no y_range: the v1 lesson used none
  (the v2 course's resnet18 with y_range=(-1, 1) adds only a sigmoid). v1's points were (y, x);
  a fastai 2 TensorPoint model gives (x, y), which is what the contract here says.
"""

import os
import sys
import time

import fastai
import numpy as np
import torch
from fastai.vision.all import create_unet_model, create_vision_model, imagenet_stats, resnet34, resnet50

from edge.backends.ort import OrtBackend
from edge.model import TASKS, Contract
from export.datasets import CAMVID_PALETTE, PLANET_TAGS
from export.onnx_export import export_onnx

PRODUCER = "edge-bench-timing (untrained)"

def lesson_model(task: str) -> tuple[torch.nn.Module, Contract]:
    """The untrained model and its contract; the models are what unet_learner and
    vision_learner build (create_unet_model / create_vision_model with their defaults)."""
    mean, std = imagenet_stats
    common = dict(input_format="uint8_nhwc", mean=tuple(mean), std=tuple(std), producer=PRODUCER,
                  producer_version=f"fastai {fastai.__version__}")
    if task == "camvid":
        size = (360, 480)
        model = create_unet_model(resnet34, len(CAMVID_PALETTE), size, pretrained=False)
        return model, Contract(task="camvid", input_size=size, output="class_ids", resize="squish",
                               classes=tuple(CAMVID_PALETTE), palette=tuple(CAMVID_PALETTE.values()), **common)
    if task == "planet":
        model = create_vision_model(resnet50, len(PLANET_TAGS), pretrained=False)
        return model, Contract(task="planet", input_size=(256, 256), output="probabilities", resize="crop",
                               classes=PLANET_TAGS, thresholds=(0.2,) * len(PLANET_TAGS), **common)
    model = create_vision_model(resnet34, 2, pretrained=False)
    return model, Contract(task="biwi", input_size=(120, 160), output="points", resize="squish",
                           point_convention="xy_minus1_1", **common)


def build(task: str, folder) -> str:
    """Write FOLDER/<task>.onnx for one of camvid, planet, biwi; returns its path."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)  # the same file every build
    model, contract = lesson_model(task)
    return export_onnx(model, contract, os.path.join(folder, f"{task}.onnx"))


def batch1_ms(path: str) -> float:
    """One batch-1 run with the runtime's own session settings, after a warm-up run."""
    backend = OrtBackend(path)
    _, h, w, _ = backend.input_shape
    image = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    backend.run(image)  # the first run allocates buffers and picks kernels
    start = time.perf_counter()
    backend.run(image)
    return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.timing_models FOLDER")
    for task in TASKS:
        path = build(task, sys.argv[1])
        print(f"{task}: {path} {os.path.getsize(path) / 2**20:.1f} MiB, batch 1 {batch1_ms(path):.1f} ms", flush=True)
