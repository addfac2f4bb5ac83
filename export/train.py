"""`edge-train`: the lesson-3 recipes as a command.

    edge-train camvid --data DIR [--arch resnet34] [--size 180 240 --full-size 360 480] [--no-pretrained]

camvid: `unet_learner` with accuracy that ignores Void; planet: `vision_learner` with sigmoid
outputs, `accuracy_multi` at thresh 0.2 and F-beta (beta 2); biwi: point regression with MSE.
Each runs `lr_find` (suggestion printed and plotted), `fit_one_cycle` frozen (a pretrained body;
from scratch every layer trains), then unfrozen with discriminative rates `slice(lo, hi)`; `--full-size` swaps larger data into the same learner and
trains again (progressive resizing). `to_fp16()` when a GPU is present. Writes the learner
(`TASK.pkl`, for `edge-export`) and a report: metrics per epoch, the untrained and final
validation metrics, the loss curve and the lr_find plot.
"""

import argparse
import json
import os
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a server has no display; plots go to PNG files

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from fastai.vision.all import (  # noqa: E402
    FBetaMulti, MSELossFlat, ProgressCallback, ResBlock, XResNet, accuracy_multi, set_seed, unet_learner,
    vision_learner,
)

from edge.errors import EdgeError, UsageError  # noqa: E402
from edge.model import TASKS  # noqa: E402
from export import datasets  # noqa: E402


DEFAULT_SIZE = {"camvid": (180, 240), "planet": (128, 128), "biwi": (120, 160)}
DEFAULT_ARCH = {"camvid": "resnet34", "planet": "resnet50", "biwi": "resnet34"}
# The lesson's discriminative rates after unfreezing, as fractions of the frozen rate.
UNFROZEN = {"camvid": (1 / 400, 1 / 4), "planet": (1 / 100, 1 / 5), "biwi": (1 / 100, 1 / 10)}


def xresnet_tiny(pretrained: bool = False, **kwargs):
    """fastai's XResNet at a quarter width, one block per stage: the shipped default models use
    it so each stays under 10 MB and runs at 10+ frames/s on a 2-core CPU. No pretrained weights."""
    if pretrained:
        raise UsageError("xresnet_tiny has no pretrained weights; pass --no-pretrained")
    return XResNet(ResBlock, 1, [1, 1, 1, 1], widen=0.25, n_out=1000)


ARCHS = ("resnet18", "resnet34", "resnet50", "xresnet_tiny")
CUTS = {"xresnet_tiny": -4}  # XResNet ends in pool, flatten, dropout, linear


def arch_fn(name: str):
    if name not in ARCHS:
        raise UsageError(f"unknown --arch {name!r}; allowed: {', '.join(ARCHS)}")
    if name == "xresnet_tiny":
        return xresnet_tiny
    import torchvision.models

    return getattr(torchvision.models, name)


def check_pretrained(name: str) -> None:
    """Pretrained weights only from torch's local cache: a download would hang a machine without
    internet, so refuse with the path and the way out instead."""
    if name == "xresnet_tiny":
        raise UsageError("xresnet_tiny has no pretrained weights; pass --no-pretrained")
    import torchvision.models

    weights = torchvision.models.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.exists():
        raise UsageError(f"pretrained {name} weights are not in the local cache ({cached}); fetch them where "
                         f"there is internet, or pass --no-pretrained to train from scratch")


def accuracy_ignoring(inp, targ, void: int):
    """Pixel accuracy over the pixels that are not Void, as the lesson's acc_camvid."""
    targ = targ.squeeze(1)
    mask = targ != void
    return (inp.argmax(dim=1)[mask] == targ[mask]).float().mean()


def make_learner(task: str, dls, arch: str, pretrained: bool):
    fn, cut = arch_fn(arch), CUTS.get(arch)
    if task == "camvid":
        codes = list(dls.vocab)
        void = codes.index("Void") if "Void" in codes else -1
        return unet_learner(dls, fn, metrics=partial(accuracy_ignoring, void=void), wd=1e-2,
                            pretrained=pretrained, cut=cut)
    if task == "planet":
        metrics = [partial(accuracy_multi, thresh=0.2), FBetaMulti(beta=2, average="samples", thresh=0.2)]
        return vision_learner(dls, fn, metrics=metrics, pretrained=pretrained, cut=cut)
    return vision_learner(dls, fn, loss_func=MSELossFlat(), y_range=(-1, 1), pretrained=pretrained, cut=cut)


def load_data(task: str, data: Path, size, bs: int, seed: int, augment: bool):
    if task == "camvid":
        return datasets.camvid_dls(data, size=size, bs=bs, seed=seed, augment=augment)
    if task == "planet":
        # the Kaggle layout (train-jpg/, train_v2.csv), else fastai's Planet sample (train/, labels.csv)
        kaggle = (data / "train_v2.csv").exists() or not (data / "labels.csv").exists()
        return datasets.planet_dls(data, size=size, bs=bs, seed=seed, augment=augment,
                                   csv="train_v2.csv" if kaggle else "labels.csv",
                                   folder="train-jpg" if kaggle else "train")
    return datasets.biwi_dls(data, size=size, bs=bs, seed=seed, augment=augment)


def train(task: str, data, *, out, arch: str | None = None, pretrained: bool = True, size=None, full_size=None,
          epochs: int = 4, unfrozen_epochs: int = 4, bs: int = 8, lr: float | None = None, seed: int = 0,
          lr_find_steps: int = 100, augment: bool = True, log=print) -> dict:
    """Run the task's recipe; returns the report (also written next to the learner)."""
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    if epochs < 1 or unfrozen_epochs < 0 or bs < 1 or lr_find_steps < 10:
        raise UsageError("--epochs and --bs must be 1 or more, --unfrozen-epochs 0 or more, lr_find steps 10 or more")
    arch = arch or DEFAULT_ARCH[task]
    arch_fn(arch)  # an unknown name is a usage error before anything else
    if pretrained:
        check_pretrained(arch)
    started = time.time()
    set_seed(seed, reproducible=True)
    size = tuple(size or DEFAULT_SIZE[task])
    dls = load_data(task, Path(data), size, bs, seed, augment)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    learn = make_learner(task, dls, arch, pretrained)
    learn.path, learn.model_dir = out, "."  # lr_find's scratch weights: a temporary folder in out
    if not sys.stderr.isatty():  # fastprogress redraws its bars as text otherwise
        learn.remove_cb(ProgressCallback)
    if torch.cuda.is_available():
        learn = learn.to_fp16()
    baseline = dict(zip(_metric_names(learn), [float(v) for v in learn.validate()]))
    log(f"untrained: {_fmt(baseline)}")

    try:
        valley = float(learn.lr_find(num_it=lr_find_steps, show_plot=True).valley)
    except IndexError:  # fastai finds no valley when the loss diverges within a few steps
        valley = None
    plt.gcf().savefig(out / f"{task}_lr_find.png", dpi=80)
    plt.close("all")
    if lr is None and valley is None:
        raise UsageError("lr_find could not suggest a learning rate (the loss diverged at once); pass --lr")
    lr = lr or valley
    log(f"lr_find suggests {valley if valley is None else f'{valley:.2e}'}; training at {lr:.2e}")

    history, curve = [], {"train": [], "valid": []}  # the loss curve across every fit
    for stage_size in [size] + ([tuple(full_size)] if full_size else []):
        if stage_size != size:  # progressive resizing: the same learner, larger data
            log(f"progressive resizing: {size} -> {stage_size}")
            learn.dls = load_data(task, Path(data), stage_size, max(1, bs // 2), seed, augment)
        # Freezing keeps pretrained features while the new head settles; a body trained from
        # scratch has nothing to keep, so there every layer trains from the start.
        if pretrained:
            learn.freeze()
        learn.fit_one_cycle(epochs, lr)
        _extend(curve, learn)
        history += _epochs(learn, f"{stage_size[0]}x{stage_size[1]} {'frozen' if pretrained else 'all layers'}")
        log(f"{history[-1]}")
        if unfrozen_epochs:
            lo, hi = UNFROZEN[task]
            learn.unfreeze()
            learn.fit_one_cycle(unfrozen_epochs, slice(lr * lo, lr * hi))
            _extend(curve, learn)
            history += _epochs(learn, f"{stage_size[0]}x{stage_size[1]} unfrozen")
            log(f"{history[-1]}")

    final = dict(zip(_metric_names(learn), [float(v) for v in learn.validate()]))
    log(f"final: {_fmt(final)}")
    _plot_curve(curve, out / f"{task}_loss.png", title=f"{task}: loss per step")
    learner_path = out / f"{task}.pkl"
    learn.export(learner_path.resolve())
    report = {
        "task": task, "arch": arch, "pretrained": pretrained, "data": str(data), "size": list(size),
        "full_size": list(full_size) if full_size else None, "bs": bs, "lr": lr, "seed": seed,
        "lr_find_valley": valley, "steps": len(curve["train"]), "untrained": baseline, "final": final, "epochs": history,
        "learner": str(learner_path), "seconds": round(time.time() - started, 1),
        "fp16": torch.cuda.is_available(),
    }
    (out / f"{task}_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _extend(curve: dict, learn) -> None:
    """Append the last fit's losses; fastai's recorder only keeps the latest fit."""
    offset = len(curve["train"])
    curve["train"] += [float(v) for v in learn.recorder.losses]
    curve["valid"] += [(offset + i, float(v[1])) for i, v in zip(learn.recorder.iters, learn.recorder.values)]


def _plot_curve(curve: dict, path: Path, *, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["train"], label="train")
    if curve["valid"]:
        ax.plot(*zip(*curve["valid"]), "o-", label="valid")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _metric_names(learn) -> list[str]:
    return ["valid_loss"] + [m.name for m in learn.metrics]


def _epochs(learn, stage: str) -> list[dict]:
    names = learn.recorder.metric_names[1:-1]  # drops "epoch" and "time"
    return [{"stage": stage, **{n: (float(v) if v is not None else None) for n, v in zip(names, values)}}
            for values in learn.recorder.values]


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=TASKS)
    p.add_argument("--data", required=True, type=Path, help="dataset folder in the task's real layout")
    p.add_argument("--out", type=Path, default=Path("models"), help="where TASK.pkl and the report go")
    p.add_argument("--arch", help=f"one of {', '.join(ARCHS)} (default: the lesson's)")
    p.add_argument("--no-pretrained", action="store_true", help="train from scratch (no weights in the cache)")
    p.add_argument("--size", type=int, nargs="+", metavar="N", help="training size: H W, or one number")
    p.add_argument("--full-size", type=int, nargs="+", metavar="N", help="then train again at this size")
    p.add_argument("--epochs", type=int, default=4, help="epochs with the body frozen (per size)")
    p.add_argument("--unfrozen-epochs", type=int, default=4, help="epochs after unfreezing (per size)")
    p.add_argument("--bs", type=int, default=8)
    p.add_argument("--lr", type=float, help="learning rate (default: lr_find's suggestion)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic", action="store_true",
                   help="first write the project's synthetic dataset for the task into --data")
    p.add_argument("--download", action="store_true", help="first fetch the real dataset with fastai's untar_data")
    p.add_argument("--debug", action="store_true")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.synthetic:
            getattr(datasets, f"make_{args.task}")(args.data, seed=args.seed)
        elif args.download:
            args.data = datasets.download(args.task, args.data)
        report = train(args.task, args.data, out=args.out, arch=args.arch, pretrained=not args.no_pretrained,
                       size=_size(args.size), full_size=_size(args.full_size), epochs=args.epochs,
                       unfrozen_epochs=args.unfrozen_epochs, bs=args.bs, lr=args.lr, seed=args.seed)
    except EdgeError as err:
        if args.debug:
            traceback.print_exc()
        print(f"edge-train: error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"wrote {report['learner']} and {args.out / (args.task + '_report.json')} "
          f"({report['seconds']} s; final {_fmt(report['final'])})")
    return 0


def _size(values):
    if not values:
        return None
    if len(values) > 2:
        raise UsageError("a size is H W or one number")
    return (values[0], values[-1])


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
