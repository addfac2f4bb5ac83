"""A fastai learner file, loaded on a machine that lacks the notebook's own functions, and the
contract read from it: task, classes, input size and resize, normalisation, palette."""

import colorsys
import os
import pickle
import sys
import types
import warnings
from functools import cache

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")  # fastai's import, not ours
import fastai  # noqa: E402
import torch
from fastai.data.transforms import MultiCategorize, Normalize
from fastai.layers import ToTensorBase
from fastai.learner import Learner
from fastai.learner import load_learner as fastai_load_learner
from fastai.vision.augment import AffineCoordTfm, RandomResizedCrop, RandomResizedCropGPU, Resize
from fastai.vision.core import PointScaler
from fastai.vision.data import AddMaskCodes
from fastai.vision.models.unet import DynamicUnet

from edge import __version__
from edge.errors import InputError, ModelError, last_line
from edge.model import TASKS, Contract
from export import datasets


DEFAULT_THRESHOLD = 0.2  # the lesson's accuracy_thresh


def warn(message: str) -> None:
    print(f"edge-export: warning: {message}", file=sys.stderr)


# --- loading ---------------------------------------------------------------------------------

class Missing:
    """Stands in for a function or class the pickle names but this process cannot import: a
    notebook's `get_y_fn` or `label_func`. Those only build datasets; inference never calls them."""

    where = ""

    def __init__(self, *args, **kwargs):
        self._refuse()

    def __call__(self, *args, **kwargs):
        self._refuse()

    def _refuse(self):
        raise ModelError(f"{self.where} is not importable here (it lived in the training session); "
                         f"import or define it before using this part of the learner")

    def __setstate__(self, state):  # an instance of a missing class keeps whatever state it had
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


@cache  # one class per name, so the objects that share it in the pickle still share it
def placeholder(module: str, name: str) -> type:
    return type(name, (Missing,), {"__module__": module, "__qualname__": name, "where": f"{module}.{name}"})


def _lenient_pickle(missing: list[str]) -> types.ModuleType:
    """`pickle`, except that a name that cannot be imported becomes a placeholder (and is noted)."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            try:
                return super().find_class(module, name)
            except (ImportError, AttributeError):
                missing.append(f"{module}.{name}")
                return placeholder(module, name)

    lenient = types.ModuleType("edge_lenient_pickle")
    lenient.__dict__.update({k: v for k, v in vars(pickle).items() if not k.startswith("__")})
    lenient.Unpickler = Unpickler  # torch.load unpickles with pickle_module.Unpickler
    return lenient


def load_learner(path) -> Learner:
    """fastai's load_learner (cpu, weights_only=False) through the lenient unpickler."""
    path = str(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: learner file not found" if not os.path.exists(path) else f"{path}: not a file")
    missing: list[str] = []
    try:
        with warnings.catch_warnings():  # fastai warns that pickle is unsafe: the user chose this file
            warnings.simplefilter("ignore")
            learn = fastai_load_learner(path, cpu=True, pickle_module=_lenient_pickle(missing))
    except Exception as err:  # torch.load and pickle raise untyped errors for a file that is not a learner
        raise ModelError(f"{path}: not a fastai learner ({last_line(err)}); write one with learn.export()") from err
    if isinstance(learn.model, Missing):
        raise ModelError(f"{path}: the model's class {learn.model.where} is not importable here; make it "
                         f"importable (a class defined in a notebook: move it to a module) and run again")
    if missing:
        warn(f"{path} names {', '.join(sorted(set(missing)))}, not importable here; "
             f"only datasets use them, so export goes on")
    return learn


# --- the contract from the learner -----------------------------------------------------------

def _transforms(dls, where: str) -> list:
    pipeline = getattr(dls, where, None)
    return list(getattr(pipeline, "fs", []))


def _target_transforms(dls) -> list:
    try:
        return [f for tl in dls.train_ds.tls for f in tl.tfms.fs]
    except (AttributeError, TypeError):
        return []


def task_evidence(learn) -> dict[str, str]:
    """Each task the learner looks like, with why."""
    found = {}
    if isinstance(learn.model, DynamicUnet):
        found["camvid"] = "a DynamicUnet model"
    for t in _transforms(learn.dls, "after_item") + _target_transforms(learn.dls):
        if isinstance(t, AddMaskCodes):
            found.setdefault("camvid", "MaskBlock targets")
        elif isinstance(t, MultiCategorize):
            found.setdefault("planet", "MultiCategoryBlock targets")
        elif isinstance(t, PointScaler):
            found.setdefault("biwi", "PointBlock targets")
    loss = type(getattr(learn.loss_func, "func", learn.loss_func)).__name__
    if loss == "BCEWithLogitsLoss":
        found.setdefault("planet", "a BCEWithLogits loss")
    elif loss == "MSELoss":
        found.setdefault("biwi", "an MSE loss")
    return found


def infer_task(learn, task: str | None = None) -> str:
    found = task_evidence(learn)
    if task is not None:
        if found and task not in found:
            what = next(iter(found))
            raise ModelError(f"--task {task} conflicts with the learner, which is a {what} learner "
                             f"({found[what]}); drop --task or pass --task {what}")
        return task
    if len(found) != 1:
        why = "; ".join(f"{t}: {reason}" for t, reason in found.items()) or "no sign of any"
        raise ModelError(f"cannot tell the learner's task ({why}); pass --task {'|'.join(TASKS)}")
    return next(iter(found))


def input_size(dls) -> tuple[tuple[int, int] | None, str]:
    """(height, width) and resize method of what fastai fed the model at validation."""
    size, method = None, "squish"
    for t in _transforms(dls, "after_item"):
        if isinstance(t, (Resize, RandomResizedCrop)):
            size = (t.size[1], t.size[0])  # fastai keeps item sizes as (width, height)
            method = str(t.method) if isinstance(t, Resize) else "squish"
            if method == "pad" and t.pad_mode != "reflection":
                warn(f"the learner pads with {t.pad_mode}; the runtime pads by reflection, fastai's default")
            if isinstance(t, RandomResizedCrop):
                warn("RandomResizedCrop validates on a centre crop of a slightly larger squish; "
                     "the contract says squish")
    for t in _transforms(dls, "after_batch"):
        if isinstance(t, (AffineCoordTfm, RandomResizedCropGPU)) and t.size is not None:
            # a sized batch transform resamples the whole batch to its (height, width) at validation
            batch_size = (t.size, t.size) if isinstance(t.size, int) else tuple(t.size)
            if isinstance(t, RandomResizedCropGPU):
                method = "crop"
            elif size is None or size[0] * batch_size[1] != size[1] * batch_size[0]:
                method = "squish"
            size = batch_size
    return size, method


def normalisation(dls) -> tuple[tuple[float, ...], tuple[float, ...]]:
    norms = [t for t in _transforms(dls, "after_batch") if isinstance(t, Normalize) and t.mean is not None]
    if not norms:
        # Not imagenet_stats: without a Normalize, fastai fed this model plain 0..1 pixels.
        warn("the learner has no Normalize in dls.after_batch, so its model saw 0..1 pixels; "
             "recording mean 0, std 1")
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    # fastai keeps the stats as float32: 7 significant digits give back the numbers the user wrote
    mean, std = (tuple(float(f"{v:.7g}") for v in torch.as_tensor(s).flatten().tolist())
                 for s in (norms[-1].mean, norms[-1].std))
    return mean, std


def palette(codes) -> tuple[tuple[int, int, int], ...]:
    """CamVid's colour for a CamVid code, a fixed distinct colour (golden-angle hues) otherwise."""
    known = {k.lower(): tuple(v) for k, v in datasets.CAMVID_PALETTE.items()}
    out = []
    for i, code in enumerate(codes):
        rgb = colorsys.hsv_to_rgb((i * 0.618034) % 1, 0.65, 0.95)
        out.append(known.get(code.lower(), tuple(round(v * 255) for v in rgb)))
    return tuple(out)


def infer_contract(learn, *, task: str | None = None, size: tuple[int, int] | None = None) -> Contract:
    """The contract of `learn`'s model, read from the learner; `task` and `size` override."""
    task = infer_task(learn, task)
    found_size, resize = input_size(learn.dls)
    size = tuple(size) if size else found_size
    if size is None:
        raise ModelError("the learner has no Resize transform to read its input size from; pass --size H W")
    mean, std = normalisation(learn.dls)
    common = dict(task=task, input_size=size, input_format="uint8_nhwc", resize=resize, mean=mean, std=std,
                  producer=f"edge-export {__version__}", producer_version=f"fastai {fastai.__version__}")
    if task == "biwi":
        return Contract(output="points", point_convention="xy_minus1_1", **common)
    if task == "planet":
        classes = [str(c) for c in getattr(learn.dls, "vocab", None) or []]
        if not classes:
            raise ModelError("the planet learner has no vocab (MultiCategoryBlock's tags); "
                             "export it again with its dls")
        return Contract(output="probabilities", classes=tuple(classes),
                        thresholds=(DEFAULT_THRESHOLD,) * len(classes), **common)
    codes = next((t.codes for t in _transforms(learn.dls, "after_item")
                  if isinstance(t, AddMaskCodes) and t.codes is not None), None)
    if codes is None:
        with torch.no_grad():
            count = strip_retyping(learn.model)(torch.zeros(1, 3, *size)).shape[1]
        codes = [str(i) for i in range(count)]
        warn(f"the learner's MaskBlock has no codes; naming its {count} classes 0..{count - 1}")
    codes = tuple(str(c) for c in codes)
    return Contract(output="class_ids", classes=codes, palette=palette(codes), **common)


def strip_retyping(model: torch.nn.Module) -> torch.nn.Module:
    """`model` in eval mode with fastai's ToTensorBase layers made identities, in place.

    ToTensorBase (DynamicUnet's last layer) only retypes the output as fastai's TensorBase so
    fastai's callbacks can dispatch on it; the values are unchanged. torch.export's fake
    tensors refuse that tensor subclass, and neither exported graph needs the type."""
    retyping = [(parent, name) for parent in model.modules()
                for name, child in parent.named_children() if isinstance(child, ToTensorBase)]
    for parent, name in retyping:
        setattr(parent, name, torch.nn.Identity())
    return model.eval().cpu()
