"""Frames on the model's device: upload, preprocessing and the camvid overlay as torch tensors.

Used when every model of a run takes torch tensors on one device (the torch backend, TensorRT,
onnxruntime on CUDA with a CUDA torch beside it). Frames cross to the device once per batch, as
uint8, through a pinned staging buffer allocated once; the batch is resized, normalised and
handed to the model there; the camvid class map is mapped to the frame, counted and blended
into it there; what comes back to the host is the few numbers of fractions, tags and points,
and finished overlay frames. Each stage thread runs its device work on a CUDA stream of its
own and waits for it before handing the batch on, so the upload of batch k+1 runs while batch
k is in the model, and no tensor is freed while a stream still uses it. On the CPU the same
code runs on CPU tensors (the tests run it there), without pinning or streams.

torch is imported only when a DevicePath is made: the host path (onnxruntime on the CPU,
numpy and OpenCV) never needs it.
"""

import threading
from contextlib import contextmanager

import cv2
import numpy as np

from .choices import FramesOn, words
from .errors import UsageError
from .geometry import YUV_FLOOR, YUV_OFFSET, YUV_TO_RGB, NO_CLASS, Window, resample_weights


def torch_has_cuda() -> bool:
    """Whether a CUDA build of torch is installed and sees a GPU (without failing when torch is absent)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


FRAMES_ON = words(FramesOn)


def for_models(backends, frames_on: str = "auto") -> "DevicePath | None":
    """Where a run's frames meet its models (`frames_on`): "host" keeps them there (numpy and
    OpenCV); "device" takes them to the device every model takes tensors on; "auto" does that
    for a GPU only: on CPU tensors the host path is faster (720p camvid through torch on 2
    cores: 63 frames/s on the host path, 34 on the device path). None means the host."""
    if frames_on not in FRAMES_ON:
        raise UsageError(f"--frames-on {frames_on!r}; allowed: {', '.join(FRAMES_ON)}")
    devices = {backend.tensor_device for backend in backends}
    shared = devices.pop() if len(devices) == 1 else None
    if frames_on == "device":
        if shared is None:
            raise UsageError("--frames-on device: the models do not all take tensors on one device; use "
                             "--backend torch (or onnxruntime) for every model, on one --device")
        return DevicePath(shared)
    return DevicePath(shared) if frames_on == "auto" and shared == "cuda" else None


def is_tensor(value) -> bool:
    return type(value).__module__.startswith("torch")


def host(value) -> np.ndarray:
    """A tensor, on any device, or an array, as a numpy array."""
    return value.cpu().numpy() if is_tensor(value) else np.asarray(value)


def finite_rows(raw) -> np.ndarray | None:
    """Per item of a batch of outputs, whether all its values are finite; None for integer outputs."""
    if is_tensor(raw):
        if not raw.is_floating_point():
            return None
        import torch

        return host(torch.isfinite(raw.reshape(len(raw), -1)).all(dim=1))
    return np.isfinite(raw.reshape(len(raw), -1)).all(axis=1) if raw.dtype.kind == "f" else None


class DevicePath:
    def __init__(self, device: str):
        try:
            import torch
        except ImportError:
            raise UsageError("frames on a device need torch, which is not installed; use --frames-on host") from None

        self.torch = torch
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        # each stage thread (of each job, when several run at once) has its own stream and its
        # own pinned host buffer that uploads go through, grown when needed
        self._local = threading.local()
        self._weights: dict[tuple, list] = {}  # resampling matrices on the device, by (frame, model) size

    @contextmanager
    def stage(self):
        """The block's device work on this thread's own stream, finished when the block ends."""
        if not self.cuda:
            yield
            return
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = self.torch.cuda.Stream(self.device)
        with self.torch.cuda.stream(stream):
            yield
        stream.synchronize()

    def upload(self, images: list[np.ndarray]):
        """Same-shaped uint8 arrays (RGB frames, or I420 planes) as one tensor on the device. Call
        it in a `stage()` block: the staging buffer is reused once the block has waited for the copy."""
        torch = self.torch
        if not self.cuda:
            return torch.from_numpy(np.stack(images))
        shape = (len(images), *images[0].shape)
        count = int(np.prod(shape))
        staging = getattr(self._local, "staging", None)
        if staging is None or staging.numel() < count:
            staging = self._local.staging = torch.empty(count, dtype=torch.uint8, pin_memory=True)
        staging = staging[:count].view(shape)
        np.stack(images, out=staging.numpy())
        return staging.to(self.device, non_blocking=True)

    def rgb(self, planes):
        """N frames' I420 planes (N, H*3/2, W) as N,H,W,3 uint8 RGB, a frame at a time (the
        float intermediates of a whole batch of HD frames would take gigabytes)."""
        return self.torch.stack([i420_to_rgb(frame) for frame in planes])

    def model_input(self, frames, window: Window, contract):
        """The model's input batch from N,H,W,3 uint8 frames: the window resized to the model's
        size as on the host, a pad window's border reflected, then the contract's channel order
        and format."""
        torch = self.torch
        x = frames.permute(0, 3, 1, 2).float()
        if (rows := window.region()) is not None:
            x = self._resize(x[:, :, rows[0], rows[1]], window.model_size)
        else:
            inner, (top, bottom, left, right) = window.padding()
            x = torch.nn.functional.pad(self._resize(x, inner), (left, right, top, bottom), mode="reflect")
        x = x.round_().clamp_(0, 255)
        if contract.channel_order == "BGR":
            x = x.flip(1)
        if contract.input_format == "uint8_nhwc":
            return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        mean = torch.tensor(contract.mean, device=x.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(contract.std, device=x.device).view(1, 3, 1, 1) * 255
        if contract.channel_order == "BGR":
            mean, std = mean.flip(1), std.flip(1)
        return ((x - mean) / std).contiguous()

    def _resize(self, x, size: tuple[int, int]):
        """N,C,H,W resampled to `size` as the host's cv2.resize does, by two matrix products."""
        key = (tuple(x.shape[2:]), tuple(size))
        if key not in self._weights:  # asked of OpenCV once per frame size (milliseconds for HD)
            self._weights[key] = [self.torch.from_numpy(w).to(self.device) for w in resample_weights(*key)]
        rows, columns = self._weights[key]
        return rows @ x @ columns.T


def i420_to_rgb(planes):
    """One frame's I420 planes (H*3/2, W uint8 tensor, as the decoder gives them) as H,W,3 uint8
    RGB, with the BT.601 limited-range matrix of cv2's conversion, each chroma sample covering
    its 2x2 block."""
    import torch

    rows, w = planes.shape
    h = rows * 2 // 3
    chroma = planes[h:].reshape(2, h // 2, w // 2).float().repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    yuv = torch.stack([planes[:h].float(), chroma[0], chroma[1]], dim=-1)
    floor, offset, matrix = (torch.tensor(a, device=planes.device) for a in (YUV_FLOOR, YUV_OFFSET, YUV_TO_RGB))
    return ((torch.maximum(yuv, floor) - offset) @ matrix.T).round_().clamp_(0, 255).to(torch.uint8)


def to_device(frame, device):
    """A frame's RGB on `device`: where the preprocess stage put it, or uploaded now."""
    import torch

    if frame.on_device is not None:
        return frame.on_device
    if frame.image is None:
        return i420_to_rgb(torch.from_numpy(frame.planes).to(device))
    return torch.from_numpy(frame.image).to(device)


def host_rgb(frame) -> np.ndarray:
    """A frame's RGB on the host, wherever its pixels are."""
    if frame.image is not None:
        return frame.image
    if frame.on_device is not None:
        return host(frame.on_device)
    return cv2.cvtColor(frame.planes, cv2.COLOR_YUV2RGB_I420)


def segment(raw, window: Window, classes: int, logits: bool):
    """Class maps at frame size (N,H,W uint8 on the device, NO_CLASS where the model saw
    nothing) from a batch of logits or class ids on the device, and, on the host, each frame's
    fraction of pixels per class."""
    import torch

    ids = (raw.argmax(dim=1) if logits else raw).to(torch.uint8)
    n, h, w = ids.shape
    padded = torch.full((n, h + 1, w + 1), NO_CLASS, dtype=torch.uint8, device=ids.device)
    padded[:, :h, :w] = ids  # index -1 lands on the NO_CLASS row and column
    rows, columns = (torch.from_numpy(i).to(ids.device) for i in window.nearest_indices)
    masks = padded[:, rows][:, :, columns]
    offsets = torch.arange(n, device=ids.device).view(n, 1, 1) * (NO_CLASS + 1)
    counts = torch.bincount((masks.long() + offsets).flatten(), minlength=n * (NO_CLASS + 1))
    fractions = host(counts.view(n, NO_CLASS + 1)[:, :classes]).astype(np.float64) / masks[0].numel()
    return masks, fractions


def blend(image, mask, palette: np.ndarray, alpha: float, keep_unseen: bool) -> np.ndarray:
    """The frame (H,W,3 uint8 tensor) with the class colours of `mask` (a tensor, or an array
    restored from a checkpoint) laid over it at `alpha`, as cv2.addWeighted rounds; where
    `keep_unseen`, pixels the model never saw keep the frame's. Returned on the host."""
    import torch

    mask = torch.as_tensor(mask, device=image.device).long()
    colours = torch.as_tensor(palette, device=image.device)[mask]
    out = (image.float() * (1 - alpha) + colours.float() * alpha).round_().clamp_(0, 255).to(torch.uint8)
    if keep_unseen:
        out = torch.where((mask == NO_CLASS).unsqueeze(-1), image, out)
    return host(out)
