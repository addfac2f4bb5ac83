"""`edge-export`: a fastai learner file → a contract ONNX file, gated on parity with PyTorch.

    edge-export LEARNER.pkl --onnx OUT.onnx [--task T] [--size H W]
                [--data DIR | --images DIR [--labels FILE.csv]] [--limit N]
                [--torch-program OUT.pt2] [--opset 17]

Everything the contract needs is read from the learner itself: the task from its model, target
transforms and loss; classes from its vocab (camvid: MaskBlock's codes); mean/std from the
`Normalize` in `dls.after_batch`; input size and resize method from the `Resize` in
`dls.after_item` (or a sized batch transform). Each file is then checked before it is moved into
place: PyTorch and the runtime's backend run the same uint8 images and must agree within GATE,
or the file is not written and the exit code is 4. The images are a dataset's validation split
(--data), the user's own pictures (--images, see export.user_images), or else the learner's own
validation set. planet's thresholds are fitted per tag on labelled images when there are any, and
the task metric is reported there.
"""

import argparse
import dataclasses
import os
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")  # fastai's import, not ours
import torch
from fastai.learner import Learner

from edge.backends.ort import OrtBackend
from edge.backends.torch_backend import TorchBackend
from edge.errors import EdgeError, InputError, ModelError, OutputError, UsageError, last_line
from edge.geometry import Preprocessor
from edge.model import TASKS, Contract
from export import datasets, user_images
from export.learner import DEFAULT_THRESHOLD, infer_contract, load_learner, strip_retyping, warn
from export.onnx_export import FBETA, OPSETS, ContractWrapper, compare, export_onnx
from export.torch_program import save_program
from export.user_images import GateImages, Truth

# The parity gate: onnxruntime against PyTorch on the same images, in the units the runtime
# acts on (README, "edge-export", names these).
GATE = {
    "camvid": {"pixel_agreement": (">=", 0.999)},
    "planet": {"tag_agreement": (">=", 0.999), "max_prob_diff": ("<=", 1e-3)},
    "biwi": {"max_point_diff_px": ("<=", 0.5)},
}
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
RANDOM_IMAGES = 8  # the gate's input when there is no validation image at all
BATCH = 8


# --- validation images and the gate ------------------------------------------------------------

def validation_images(learn, contract: Contract, *, data=None, images=None, labels=None,
                      limit: int = 200) -> GateImages:
    """The gate's images at the model size, with planet's labels where known. From `images` (the
    user's folder, labelled by the `labels` CSV), else `data` (read by export.datasets in the task's
    layout), else the learner's own valid set, else random pixels."""
    if images is not None:
        return user_images.load(images, contract, labels=labels, limit=limit)
    if data is not None:
        ds, source = _data_valid(contract.task, data, contract.input_size), f"{data} (validation split)"
    else:
        ds, source = getattr(learn.dls, "valid_ds", None), "the learner's validation set"
    samples = _read(ds, limit, data) if ds is not None and len(ds) else None
    if not samples:
        h, w = contract.input_size
        warn(f"no validation images to gate on; the parity gate runs on {RANDOM_IMAGES} random images")
        pixels = np.random.default_rng(0).integers(0, 256, (RANDOM_IMAGES, h, w, 3), dtype=np.uint8)
        return GateImages(pixels, "random pixels")
    pixels = Preprocessor(contract)([np.asarray(x.convert("RGB")) for x, _ in samples])
    truth = None
    if contract.task == "planet":
        vocab = [str(v) for v in ds.vocab]
        columns = [vocab.index(c) if c in vocab else None for c in contract.classes]
        tags = np.array([[float(y[i]) if i is not None else 0.0 for i in columns] for _, y in samples])
        truth = Truth(np.arange(len(samples)), tags=tags)
    return GateImages(pixels, f"{len(samples)} images from {source}", truth)


def _data_valid(task: str, data, size):
    if not Path(data).is_dir():
        raise InputError(f"{data}: --data must be a dataset folder in the {task} layout")
    try:
        dls = getattr(datasets, f"{task}_dls")(Path(data), size=size, bs=BATCH, seed=0, augment=False)
    except EdgeError:
        raise
    except Exception as err:  # a folder in another layout fails anywhere inside fastai
        raise InputError(f"{data}: cannot read it as a {task} dataset ({last_line(err)})") from err
    return dls.valid_ds if len(dls.valid_ds) else dls.train_ds


def _read(ds, limit: int, data):
    try:
        return [ds[i] for i in range(min(limit, len(ds)))]
    except Exception as err:  # exported learners name files of another machine, or functions left behind
        if data is not None:
            raise InputError(f"{data}: cannot read a validation item ({last_line(err)})") from err
        warn(f"the learner's validation items cannot be read ({last_line(err)})")
        return None


def run_batched(run, images: np.ndarray) -> np.ndarray:
    """`run` over `images` a few at a time: a whole validation set at once would not fit in memory."""
    return np.concatenate([run(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])


def run_torch(module: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return run_batched(lambda x: module(torch.from_numpy(x)).numpy(), images)


def fit_thresholds(probs: np.ndarray, labels: np.ndarray) -> tuple[float, ...]:
    """Per tag, the grid threshold with the best F-beta on the validation set (ties: nearest the
    lesson's 0.2); a tag with no positive example keeps 0.2."""
    b2 = FBETA**2
    out = []
    for p, y in zip(probs.T, labels.T.astype(bool)):
        if not y.any():
            out.append(DEFAULT_THRESHOLD)
            continue
        pred = p[None, :] >= THRESHOLD_GRID[:, None]
        tp, fp, fn = (pred & y).sum(1), (pred & ~y).sum(1), (~pred & y).sum(1)
        score = (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp)  # y.any(): never 0 / 0
        best = np.flatnonzero(score == score.max())
        out.append(float(THRESHOLD_GRID[best[np.argmin(np.abs(THRESHOLD_GRID[best] - DEFAULT_THRESHOLD))]]))
    return tuple(out)


def gate(contract: Contract, metrics: dict[str, float], *, title: str, bounds: dict | None = None) -> dict:
    """The parity table: printed, and returned with whether every bound (GATE's by default) holds."""
    bounds = bounds or GATE[contract.task]
    failed = [k for k, (op, bound) in bounds.items()
              if not (metrics[k] >= bound if op == ">=" else metrics[k] <= bound)]
    print(f"{title}\n  {'metric':<20} {'value':>12}  {'required':<11} result")
    for key, value in metrics.items():
        op, bound = bounds.get(key, ("", ""))
        verdict = ("FAIL" if key in failed else "ok") if op else ""
        print(f"  {key:<20} {value:>12.6g}  {f'{op} {bound}':<11} {verdict}".rstrip())
    return {"metrics": metrics, "required": {k: f"{op} {b}" for k, (op, b) in bounds.items()},
            "failed": failed, "passed": not failed}


# --- the command -----------------------------------------------------------------------------

def export(learner, onnx_path, *, task: str | None = None, size: tuple[int, int] | None = None, data=None,
           images=None, labels=None, limit: int = 200, torch_program=None, opset: int = 17, trt: bool = False,
           fp16: bool = False, batch: int = 8, fp32_layers=()) -> dict:
    """Export `learner` (a path or a Learner, whose model loses its ToTensorBase layer) to
    `onnx_path` through the parity gate on up to `limit` images (of `data`, or of the folder
    `images`, labelled by the CSV `labels`); returns the report (contract metadata, parity tables,
    and with labels their metric). Raises ModelError when the gate fails, and the file that failed
    is not written."""
    if task is not None and task not in TASKS:
        raise UsageError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    if opset not in OPSETS:
        raise UsageError(f"--opset must be one of {OPSETS.start}..{OPSETS.stop - 1}, got {opset}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise UsageError(f"--size must be two positive integers H W, got {' '.join(map(str, size))}")
    check_gate_options(data=data, images=images, labels=labels, limit=limit)
    if (fp16 or fp32_layers) and not trt:
        raise UsageError("--fp16 and --fp32-layers shape the TensorRT engine; add --trt")
    if trt:
        from edge import engine_cache

        try:  # before the ONNX is written, not after
            engine_cache.build_options(precision="fp16" if fp16 else "fp32", batch=batch, fp32_layers=fp32_layers)
        except ValueError as err:
            raise UsageError(f"--trt: {err}") from None
    learn = learner if isinstance(learner, Learner) else load_learner(learner)
    model = strip_retyping(learn.model)
    contract = infer_contract(learn, task=task, size=size)
    gated = validation_images(learn, contract, data=data, images=images, labels=labels, limit=limit)
    pixels, source = gated.pixels, gated.source
    ours = run_torch(ContractWrapper(model, contract), pixels)
    contract, scored = fit_to_labels(contract, gated.truth, ours)
    report = {"contract": contract.to_metadata(), "images": source, "onnx": str(onnx_path)}
    if scored is not None:
        report["labels"] = scored
    report["parity"] = _gated(
        onnx_path, contract, pixels, ours, OrtBackend, f"onnxruntime vs PyTorch on {source}",
        write=lambda path: export_onnx(model, contract, path, opset=opset))
    if torch_program:
        report["torch_program"] = str(torch_program)
        report["torch_parity"] = _gated(
            torch_program, contract, pixels, ours, TorchBackend, f"torch program vs PyTorch on {source}",
            write=lambda path: save_program(ContractWrapper(model, contract), contract, path))
    if trt:
        report["engine"], report["engine_parity"] = export_engine(
            onnx_path, contract, pixels, ours, fp16=fp16, batch=batch, fp32_layers=fp32_layers, source=source)
    return report


def check_gate_options(*, data, images, labels, limit: int) -> None:
    if data is not None and images is not None:
        raise UsageError("--data and --images both name the gate's images; give one: --data for a dataset in the "
                         "task's layout, --images for a folder of your own pictures")
    if labels is not None and images is None:
        raise UsageError("--labels labels the pictures of --images DIR; add it (--data brings its own labels)")
    if limit < 1:
        raise UsageError(f"--limit must be 1 or more, got {limit}")


def fit_to_labels(contract: Contract, truth: Truth | None, ours: np.ndarray) -> tuple[Contract, dict | None]:
    """planet's thresholds fitted on the labelled images, and the task metric there (printed, and
    returned for the report)."""
    if truth is None:
        return contract, None
    mine, count = ours[truth.rows], len(truth.rows)
    scored = {"count": count}
    if truth.tags is not None:
        contract = dataclasses.replace(contract, thresholds=fit_thresholds(mine, truth.tags))
        scored["thresholds"] = dict(zip(contract.classes, contract.thresholds))
        print(f"thresholds (best F2 per tag on the {count} labelled images): "
              + ", ".join(f"{c} {t:.2f}" for c, t in zip(contract.classes, contract.thresholds)))
    scored["metrics"] = user_images.score(contract, truth, mine)
    # fitted and scored on the same images, the metric flatters the thresholds: say so
    print(f"task metric on the {count} labelled images"
          + (" (at the thresholds fitted on them)" if truth.tags is not None else "") + ":")
    for key, value in scored["metrics"].items():
        print(f"  {key:<20} {value:>12.6g}")
    return contract, scored


# fp16 cannot match fp32 to the last bit: the bounds a deployment must keep (camvid pixels, planet
# tags at the thresholds, biwi points).
FP16_GATE = {
    "camvid": {"pixel_agreement": (">=", 0.99)},
    "planet": {"tag_agreement": (">=", 0.99)},
    "biwi": {"max_point_diff_px": ("<=", 1.0)},
}


def export_engine(onnx_path, contract: Contract, pixels, ours, *, fp16: bool, batch: int, fp32_layers,
                  source: str) -> tuple[str, dict]:
    """A TensorRT engine built from the gated ONNX (through the engine cache, so `edge-run
    --backend tensorrt` finds it too), copied beside it as OUT.engine + OUT.engine.json, and
    gated itself. Layers that overflow in fp16 stay in fp32 with --fp32-layers."""
    from edge import engine_cache, tensorrt_engine
    from edge.backends.tensorrt import TensorrtBackend

    precision = "fp16" if fp16 else "fp32"
    cached = engine_cache.get_or_build(onnx_path, precision=precision, batch=batch, fp32_layers=fp32_layers,
                                       build=tensorrt_engine.build_engine, info=tensorrt_engine.gpu_info)
    engine = Path(onnx_path).with_suffix(".engine")
    runner = TensorrtBackend(str(cached), precision=precision, batch=batch)
    table = gate(contract, compare(contract, ours, run_batched(runner.run, pixels)),
                 title=f"parity: TensorRT {precision} vs PyTorch on {source}",
                 bounds=FP16_GATE[contract.task] if fp16 else None)
    if not table["passed"]:
        raise ModelError(f"{engine}: the {precision} engine disagrees with PyTorch ({', '.join(table['failed'])}); "
                         "keep the layers that overflow in fp16 in fp32 with --fp32-layers PATTERN, or drop --fp16")
    for src, dst in ((cached, engine), (engine_cache.sidecar_path(cached), engine_cache.sidecar_path(engine))):
        engine_cache.atomic_write(dst, Path(src).read_bytes())
    return str(engine), table


def _gated(path, contract: Contract, pixels, ours, backend, title: str, *, write) -> dict:
    """Write the file beside `path`, run it with the runtime's `backend`, and move it into place
    only if it agrees with PyTorch; returns the parity table."""
    path = str(path)
    root, ext = os.path.splitext(path)
    partial = f"{root}.partial{ext}"  # torch.export.load wants the .pt2 ending
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as err:
        raise OutputError(f"{path}: cannot create its folder ({err.strerror})") from err
    try:
        try:
            write(partial)
        except EdgeError:
            raise
        except Exception as err:  # the exporter's contract checks and its own failures, untyped
            raise ModelError(f"{path}: export failed ({last_line(err)})") from err
        loaded = backend(partial)
        h, w = contract.input_size
        if loaded.input_shape[1:] != [h, w, 3]:
            raise ModelError(f"{path}: the exported graph takes {loaded.input_shape}, not the contract's "
                             f"(N, {h}, {w}, 3); this is a bug in edge-export")
        table = gate(contract, compare(contract, ours, run_batched(loaded.run, pixels)), title=f"parity: {title}")
        if not table["passed"]:
            raise ModelError(f"{path}: the exported model disagrees with PyTorch ({', '.join(table['failed'])} "
                             f"beyond the gate), so it was not written")
        os.replace(partial, path)
        return table
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="exit codes: 0 ok, 2 usage, 3 input, 4 model (incl. a failed parity gate)")
    p.add_argument("learner", metavar="LEARNER.pkl", help="a fastai learner file (learn.export())")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the contract ONNX file to write")
    p.add_argument("--task", choices=TASKS, help="the learner's task (default: read from the learner)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="input size (default: the learner's Resize)")
    p.add_argument("--data", metavar="DIR", help="dataset folder in the task's layout: its validation images gate "
                                                 "the export (and fit planet's thresholds)")
    p.add_argument("--images", metavar="DIR", help="a folder of your own images (subfolders too): they gate the "
                                                   "export instead of --data")
    p.add_argument("--labels", metavar="FILE.csv",
                   help="with --images: a CSV image,labels (or Kaggle's image_name,tags); planet's space-separated "
                        "tags fit its thresholds, biwi's face centre 'x y' in pixels; both give the task metric")
    p.add_argument("--limit", type=int, default=200, metavar="N", help="images to gate on, at most (default 200)")
    p.add_argument("--torch-program", metavar="OUT.pt2", help="also write a fastai-free torch.export program")
    p.add_argument("--opset", type=int, default=17,
                   help=f"ONNX opset, {OPSETS.start}..{OPSETS.stop - 1} (default 17)")
    p.add_argument("--trt", action="store_true", help="also build a TensorRT engine, OUT.engine + OUT.engine.json")
    p.add_argument("--fp16", action="store_true", help="with --trt: an fp16 engine (gated at FP16_GATE)")
    p.add_argument("--batch", type=int, default=8, help="with --trt: the batch the engine is tuned for (default 8)")
    p.add_argument("--fp32-layers", nargs="+", default=(), metavar="PATTERN",
                   help="with --trt --fp16: layers (name patterns) kept in fp32, for those that overflow in fp16")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        report = export(args.learner, args.onnx, task=args.task, size=args.size, data=args.data, images=args.images,
                        labels=args.labels, limit=args.limit, torch_program=args.torch_program, opset=args.opset,
                        trt=args.trt, fp16=args.fp16, batch=args.batch, fp32_layers=tuple(args.fp32_layers))
    except EdgeError as err:
        if args.debug:
            traceback.print_exc()
        print(f"edge-export: error: {err}", file=sys.stderr)
        return err.exit_code
    written = [report["onnx"]] + [report[k] for k in ("torch_program", "engine") if k in report]
    print(f"wrote {' and '.join(written)} ({report['contract']['edge.task']}, "
          f"input {report['contract']['edge.input_size']}, resize {report['contract']['edge.resize']})")
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
