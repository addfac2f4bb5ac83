"""Make the default models that ship in edge/models/, deterministically, on synthetic data.

    python -m export.defaults [--work DIR] [--tasks camvid,planet,biwi]

For each task: write the project's synthetic dataset (fixed seed), train the lesson's recipe
with the small `xresnet_tiny` body from scratch (no pretrained weights: nothing is downloaded),
export to ONNX and a torch program through the parity gate, and copy them to
edge/models/TASK.onnx and TASK.pt2. The
defaults show the pipeline working end to end; they know only the synthetic scenes. Train real
ones with `edge-train TASK --data DIR` on the real datasets (see README).
"""

import argparse
import shutil
import sys
from pathlib import Path

from export import datasets, exporter, train

MODELS = Path(__file__).resolve().parents[1] / "edge" / "models"
# Sizes and epochs chosen so each model stays under 10 MB, runs at 10+ frames/s on a 2-core
# CPU, and trains in a few minutes there.
# Learning rates are fixed rather than lr_find's suggestion, which is unstable on data this small.
RECIPES = {
    "camvid": dict(size=(96, 128), epochs=6, unfrozen_epochs=6, bs=8, lr=1e-2, data=dict(n=120, size=(96, 128))),
    "planet": dict(size=(64, 64), epochs=8, unfrozen_epochs=4, bs=16, lr=1e-2, data=dict(n=300, size=64)),
    "biwi": dict(size=(96, 128), epochs=20, unfrozen_epochs=10, bs=16, lr=1e-2, data=dict(subjects=5, frames=50)),
}
SEED = 0


def make(task: str, work: Path) -> Path:
    recipe = dict(RECIPES[task])
    data = getattr(datasets, f"make_{task}")(work / "data" / task, seed=SEED, **recipe.pop("data"))
    report = train.train(task, data, out=work / "learners", arch="xresnet_tiny", pretrained=False, seed=SEED,
                         **recipe)
    onnx_path, program = work / f"{task}.onnx", work / f"{task}.pt2"
    code = exporter.main([report["learner"], "--onnx", str(onnx_path), "--torch-program", str(program),
                          "--data", str(data)])
    if code != 0:
        raise SystemExit(f"export of {task} failed its parity gate (exit {code})")
    MODELS.mkdir(exist_ok=True)
    shutil.copyfile(onnx_path, MODELS / f"{task}.onnx")
    # beside it, so `--backend auto --device cuda` has torch to fall back on where there is
    # neither TensorRT nor a GPU onnxruntime
    shutil.copyfile(program, MODELS / f"{task}.pt2")
    return MODELS / f"{task}.onnx"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("build/defaults"))
    p.add_argument("--tasks", default="camvid,planet,biwi")
    args = p.parse_args(argv)
    for task in args.tasks.split(","):
        print(f"== {task}", flush=True)
        print(f"wrote {make(task, args.work)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
