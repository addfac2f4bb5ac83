"""camvid: a class id per pixel → a blended overlay video, class fractions, optional masks."""

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ..device import blend, host, is_tensor, segment, to_device
from .. import i420
from ..drawing import outlined_text, text_layers
from ..errors import ModelError
from ..geometry import NO_CLASS
from ..sinks import CsvSink, MaskSink, OverlaySink, frame_planes

LEGEND_ROWS = 8  # the legend lists the largest classes present, at most this many
LEGEND_MIN_FRACTION = 0.005


@dataclass(slots=True)
class Segmentation:
    # frame height x width uint8 class ids, NO_CLASS where the model saw nothing; a tensor on
    # the device when frames went there
    mask: np.ndarray
    fractions: np.ndarray  # per class, the fraction of the frame's pixels


WRITES_OVERLAY = True
DRAWS_ON_DEVICE = True
SHIPPED_MODEL_SAW = "flat-coloured synthetic street scenes"
Result = Segmentation


def postprocessor(contract, options):
    classes = len(contract.classes)
    if classes >= NO_CLASS:
        raise ModelError(f"camvid model has {classes} classes; edge supports at most {NO_CLASS - 1}")

    def decode(raw: np.ndarray, frames, windows) -> list[Segmentation]:
        logits = contract.output == "logits"
        if not logits and len(raw) and (int(raw.min()) < 0 or int(raw.max()) >= classes):
            raise ModelError(f"model output class id {int(raw.max())} but the contract lists {classes} classes")
        if is_tensor(raw):
            masks, fractions = segment(raw.reshape(len(windows), *raw.shape[-3 if logits else -2:]), windows[0],
                                       classes, logits)
            return [Segmentation(mask, row) for mask, row in zip(masks, fractions)]
        ids = raw.argmax(axis=1) if logits else raw
        ids = ids.reshape(len(windows), *ids.shape[-2:])
        results = []
        for model_mask, window in zip(ids.astype(np.uint8), windows):
            results.append(Segmentation(window.mask_to_frame(model_mask), window.class_fractions(model_mask, classes)))
        return results

    return decode


def sinks(ctx) -> list:
    contract, options = ctx.contract, ctx.options
    palette = np.zeros((NO_CLASS + 1, 3), np.uint8)  # NO_CLASS, where the model saw nothing: black
    palette[: len(contract.palette)] = contract.palette
    palette_yuv = i420.colours(palette)
    keep = NO_CLASS if contract.resize == "crop" else None  # outside the crop window the model saw nothing

    def draw(frame, seg: Segmentation) -> np.ndarray:
        legend = Legend.of(seg.fractions, contract.classes, contract.palette, seg.mask.shape[0])
        if ctx.device is not None:
            out = blend(to_device(frame, ctx.device), seg.mask, palette, options.alpha, keep_unseen=keep is not None)
            legend.draw(out)
            return out
        out = i420.blend(frame_planes(frame), seg.mask, palette_yuv, options.alpha, keep=keep)
        i420.lay(out, legend.overlays())
        return out

    out = [
        OverlaySink(ctx, draw),
        CsvSink(ctx.folder / "classes.csv", list(contract.classes), lambda seg: [f"{f:.5f}" for f in seg.fractions]),
    ]
    if options.save_masks:
        out.append(MaskSink(ctx.folder / "masks", mask_of=lambda seg: host(seg.mask)))
    return out


@dataclass(frozen=True)
class Legend:
    """The largest classes of a frame, a colour swatch and "name NN%" a row, at its top left."""

    rows: list[tuple[tuple[int, int, int], str]]
    scale: float
    row: int  # pixels a row

    @classmethod
    def of(cls, fractions: np.ndarray, classes, palette, frame_height: int) -> "Legend":
        order = [i for i in np.argsort(-fractions)[:LEGEND_ROWS] if fractions[i] >= LEGEND_MIN_FRACTION]
        scale = max(0.4, frame_height / 900)
        rows = [(tuple(int(v) for v in palette[i]), f"{classes[i]} {fractions[i]:.0%}") for i in order]
        return cls(rows, scale, int(22 * scale / 0.6))

    def overlays(self) -> list[i420.Overlay]:
        """What draw draws, to lay on a frame's planes; each swatch and label is made once."""
        out = []
        for n, (colour, label) in enumerate(self.rows):
            out.append(i420.filled(*self._swatch(n), colour))
            out.append(_label(label, self._origin(n), self.scale))
        return out

    def draw(self, image: np.ndarray) -> None:
        """Into an RGB frame."""
        for n, (colour, label) in enumerate(self.rows):
            (x, y), (width, height) = self._swatch(n)
            cv2.rectangle(image, (x, y), (x + width - 1, y + height - 1), colour, -1)  # corners inclusive
            outlined_text(image, label, self._origin(n), self.scale)

    def _swatch(self, n: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Row n's colour square: its top-left corner and its (width, height)."""
        return (6, 6 + n * self.row), (self.row - 3, self.row - 3)

    def _origin(self, n: int) -> tuple[int, int]:
        """Where row n's text starts, on its baseline."""
        return 10 + self.row, 6 + n * self.row + self.row - 8


@functools.lru_cache(maxsize=1024)
def _label(text: str, origin: tuple[int, int], scale: float) -> i420.Overlay:
    return i420.Overlay.of(*text_layers(text, origin, scale))
