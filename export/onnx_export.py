"""A trained torch model → an ONNX file that honours edge's model contract.

The exported graph takes what the runtime feeds with input_format "uint8_nhwc": uint8 RGB
pixels (N, H, W, 3) at the model's size. The cast, fastai's normalisation, the layout change
and the task's decode all run inside the graph, so the runtime does no float work per pixel
and the file says everything about how to feed it.

Exporter: the TorchScript exporter (`dynamo=False`). The torch.export-based default needs
onnxscript and fails on fastai's DynamicUnet (its ToTensorBase layer makes a tensor subclass
that torch.export's fake tensors refuse); on the resnet heads, where both work, TorchScript's
graph ran as fast or faster in onnxruntime and its native opset (≤ 20) needs no conversion.
"""

import warnings

import numpy as np
import onnx
import torch

from edge.backends.ort import OrtBackend
from edge.errors import ModelError
from edge.model import Contract, parse

# The contract output each task's graph gives, with the decode in the graph or without it.
OUTPUTS = {
    ("camvid", True): "class_ids",
    ("camvid", False): "logits",
    ("planet", True): "probabilities",
    ("planet", False): "logits",
    ("biwi", True): "points",
}
OPSETS = range(17, 21)  # the contract asks for 17 or newer; 20 is the TorchScript exporter's newest


def check_contract(contract: Contract, *, decode: bool) -> None:
    """Raise ValueError unless `contract` describes what ContractWrapper(decode=decode) produces."""
    if decode not in (True, False):
        raise ValueError(f"decode must be True or False, got {decode!r}")
    try:  # the runtime's own validation, so the file we write is one it accepts
        parse(contract.to_metadata(), source="contract")
    except ModelError as err:
        raise ValueError(str(err)) from None
    if (contract.task, decode) not in OUTPUTS:
        allowed = ", ".join(sorted({task for task, d in OUTPUTS if d == decode}))
        raise ValueError(f"decode={decode} is not available for task {contract.task!r}; allowed tasks: {allowed}")
    expected = {
        "input_format": "uint8_nhwc",
        "channel_order": "RGB",  # fastai trains on RGB
        "output": OUTPUTS[contract.task, decode],
    }
    if contract.task == "biwi":
        expected["point_convention"] = "xy_minus1_1"  # fastai's TensorPoint scaling
    for key, value in expected.items():
        if getattr(contract, key) != value:
            raise ValueError(f"contract {key} is {getattr(contract, key)!r}; the exported graph gives {value!r} "
                             f"(task {contract.task}, decode={decode})")


class ContractWrapper(torch.nn.Module):
    """uint8 NHWC RGB in, the contract's output out: `model` with fastai's input pipeline and decode."""

    def __init__(self, model: torch.nn.Module, contract: Contract, *, decode: bool = True):
        super().__init__()
        check_contract(contract, decode=decode)
        self.model, self.task, self.decode = model, contract.task, decode
        self.register_buffer("mean", torch.tensor(contract.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(contract.std).view(1, 3, 1, 1), persistent=False)

    def raw(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model's own output, fed as fastai fed it in training (IntToFloatTensor, then Normalize)."""
        x = pixels.permute(0, 3, 1, 2).float() / 255
        return self.model((x - self.mean) / self.std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.raw(pixels)
        if self.task == "biwi":
            return out.flatten(1)  # fastai's point head gives (N, 2); a (N, 1, 2) TensorPoint shape also fits
        if not self.decode:
            return out
        return out.argmax(1) if self.task == "camvid" else out.sigmoid()


def export_onnx(model: torch.nn.Module, contract: Contract, path, *, opset: int = 17, decode: bool = True) -> str:
    """Export `model` wrapped for `contract` to a single ONNX file at `path` (dynamic batch "N")."""
    if not isinstance(opset, int) or opset not in OPSETS:
        raise ValueError(f"opset must be one of {OPSETS.start}..{OPSETS.stop - 1}, got {opset!r}")
    device = _device(model)
    wrapper = ContractWrapper(model.eval(), contract, decode=decode).to(device).eval()
    h, w = contract.input_size
    # Batch 2: with 1 the trace could fold size-1 broadcasts or squeezes into constants.
    example = torch.zeros(2, h, w, 3, dtype=torch.uint8, device=device)
    with torch.no_grad():
        _check_shape(wrapper.raw(example), contract)
    path = str(path)
    with warnings.catch_warnings():  # torch deprecates this exporter, but it is the one fastai's unet needs
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        # DynamicUnet compares feature-map heights and widths; the contract fixes those, so
        # the trace baking them in is right (only the batch axis varies).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module="fastai.vision.models.unet")
        torch.onnx.export(
            wrapper, (example,), path, dynamo=False, opset_version=opset,
            input_names=["pixels"], output_names=[contract.output],
            dynamic_axes={"pixels": {0: "N"}, contract.output: {0: "N"}},
        )
    exported = onnx.load(path)
    props = {p.key: p.value for p in exported.metadata_props}
    onnx.helper.set_model_props(exported, {**props, **contract.to_metadata()})
    onnx.checker.check_model(exported)
    onnx.save(exported, path)
    return path


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def _check_shape(raw: torch.Tensor, contract: Contract) -> None:
    """The model's raw output must fit the contract: a class count, an image size, a point."""
    n = raw.shape[0]
    expected = {
        "camvid": (n, len(contract.classes), *contract.input_size),
        "planet": (n, len(contract.classes)),
        "biwi": (n, 2),
    }[contract.task]
    got = tuple(raw.flatten(1).shape if contract.task == "biwi" else raw.shape)
    if got != expected:
        raise ValueError(f"model output has shape {got} for a batch of {n}; the {contract.task} contract "
                         f"({len(contract.classes)} classes, input {contract.input_size}) needs {expected}")


FBETA = 2  # the lesson's fbeta / FBetaMulti: recall weighs more than precision


def parity(model: torch.nn.Module, onnx_path, contract: Contract, *, images: np.ndarray) -> dict:
    """Run `images` (uint8 N, H, W, 3 RGB at the model's size) through torch and onnxruntime;
    how far the two agree (`compare`), raw logits decoded first as the runtime does."""
    h, w = contract.input_size
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape[1:] == (h, w, 3)):
        raise ValueError(f"images must be a uint8 array of shape (N, {h}, {w}, 3), got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}")
    decode = contract.output != "logits"
    device = _device(model)
    wrapper = ContractWrapper(model.eval(), contract, decode=decode).to(device).eval()
    with torch.no_grad():
        ours = wrapper(torch.from_numpy(images).to(device)).cpu().numpy()
    theirs = OrtBackend(str(onnx_path)).run(images)
    if not decode:
        ours, theirs = ((x.argmax(1) if contract.task == "camvid" else 1 / (1 + np.exp(-x))) for x in (ours, theirs))
    return compare(contract, ours, theirs)


def compare(contract: Contract, ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    """How far `theirs` (the exported file's outputs) is from `ours` (PyTorch's), in the task's metric."""
    if contract.task == "camvid":
        same = ours == theirs
        ious = [((ours == c) & (theirs == c)).sum() / union for c in range(len(contract.classes))
                if (union := ((ours == c) | (theirs == c)).sum())]
        return {"pixel_agreement": float(same.mean()), "mean_iou": float(np.mean(ious)),
                "differing_pixels": int((~same).sum())}
    if contract.task == "planet":
        thresholds = np.asarray(contract.thresholds)
        a, b = ours >= thresholds, theirs >= thresholds
        tp, fp, fn = (a & b).sum(1), (b & ~a).sum(1), (a & ~b).sum(1)
        b2 = FBETA**2
        denominator = (1 + b2) * tp + b2 * fn + fp
        fbeta = np.where(denominator > 0, (1 + b2) * tp / np.maximum(denominator, 1), 1.0)  # no tag in both: agree
        # accuracy_thresh against PyTorch's decisions is exactly the tag agreement
        return {"tag_agreement": float((a == b).mean()), "fbeta": float(fbeta.mean()),
                "max_prob_diff": float(np.abs(ours - theirs).max())}
    h, w = contract.input_size
    px = np.abs(ours - theirs).reshape(-1, 2) * np.array([w / 2, h / 2])  # -1..1 spans w (h) pixels
    return {"max_point_diff_px": float(px.max()), "mean_point_diff_px": float(px.mean())}
