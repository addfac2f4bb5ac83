"""The fastai lesson-3 learners at the lesson's architectures and input sizes, untrained, and their
ONNX exports, for timing edge against learn.predict on models of real size:

    python -m bench.timing_models FOLDER [--tasks camvid,planet,biwi]

Each learner is built as the lesson builds it (unet_learner / vision_learner over the project's
DataLoaders, pretrained=False: nothing is downloaded) on a few generated images of the lesson's
size, written with learn.export(), and exported by edge-export through its parity gate. The
weights are random: throughput depends on the layers and the input size, not on the weights'
values, so these cost what the trained models cost; their outputs mean nothing.

What each mirrors (fastai course v1 lesson 3, rebuilt with fastai 2's learner functions):
- camvid: unet_learner with resnet34 over half-size CamVid, 360x480. The lesson's "go big" stage
  at 720x960 costs about 4x this.
- planet: vision_learner with resnet50 at 256x256 (its second stage), thresholds 0.2.
- biwi: vision_learner with resnet34 at 120x160.
"""

import argparse
import sys
from pathlib import Path

import torch

from export import datasets, exporter, train

LESSON = {
    "camvid": dict(arch="resnet34", size=(360, 480), data=dict(n=6, size=(360, 480))),
    "planet": dict(arch="resnet50", size=(256, 256), data=dict(n=10, size=256)),
    "biwi": dict(arch="resnet34", size=(120, 160), data=dict(subjects=2, frames=6, size=(240, 320))),
}


def name(task: str) -> str:
    recipe = LESSON[task]
    h, w = recipe["size"]
    return f"{task}-{recipe['arch']}-{h}x{w}"


def build(task: str, folder: Path) -> tuple[Path, Path]:
    """FOLDER/<name>.pkl (the learner) and FOLDER/<name>.onnx (its export)."""
    recipe = LESSON[task]
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)  # the same weights every build
    data = getattr(datasets, f"make_{task}")(folder / "data" / task, seed=0, **recipe["data"])
    dls = train.load_data(task, data, recipe["size"], bs=2, seed=0, augment=False)
    learn = train.make_learner(task, dls, recipe["arch"], pretrained=False)
    learner, onnx = folder / f"{name(task)}.pkl", folder / f"{name(task)}.onnx"
    learn.export(learner.resolve())
    code = exporter.main([str(learner), "--onnx", str(onnx), "--data", str(data)])
    if code != 0:
        raise SystemExit(f"export of the {task} timing model failed (exit {code})")
    return learner, onnx


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--tasks", default=",".join(LESSON))
    args = p.parse_args(argv)
    for task in args.tasks.split(","):
        learner, onnx = build(task, args.folder)
        print(f"{task}: {learner} {onnx} ({onnx.stat().st_size / 2**20:.1f} MiB)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
