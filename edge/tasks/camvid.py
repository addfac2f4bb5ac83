"""camvid: a class id per pixel → a blended overlay video, class fractions, optional masks."""

from dataclasses import dataclass

import cv2
import numpy as np

from ..device import blend, host, is_tensor, segment, to_device
from ..drawing import outlined_text
from ..errors import ModelError
from ..geometry import NO_CLASS
from ..sinks import CsvSink, MaskSink, OverlaySink

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
            mask = window.mask_to_frame(model_mask)
            # calcHist counts uint8 values four times faster than np.bincount
            counts = cv2.calcHist([mask], [0], None, [NO_CLASS + 1], [0, NO_CLASS + 1]).ravel()[:classes].astype(np.float64)
            results.append(Segmentation(mask, counts / mask.size))
        return results

    return decode


def sinks(ctx) -> list:
    contract, options = ctx.contract, ctx.options
    # cv2.LUT on a 3-channel copy of the mask is ten times faster than numpy's palette[mask]
    palette = np.zeros((NO_CLASS + 1, 1, 3), np.uint8)
    palette[: len(contract.palette), 0] = contract.palette

    def draw(frame, seg: Segmentation) -> np.ndarray:
        crop = contract.resize == "crop"  # outside the crop window the model saw nothing
        if ctx.device is not None:
            out = blend(to_device(frame, ctx.device), seg.mask, palette[:, 0], options.alpha, keep_unseen=crop)
        else:
            image = frame.image
            colours = cv2.LUT(cv2.merge([seg.mask] * 3), palette)
            out = cv2.addWeighted(image, 1 - options.alpha, colours, options.alpha, 0)
            if crop:
                unseen = seg.mask == NO_CLASS
                out[unseen] = image[unseen]
        draw_legend(out, seg.fractions, contract.classes, contract.palette)
        return out

    out = [
        OverlaySink(ctx, draw),
        CsvSink(ctx.folder / "classes.csv", list(contract.classes), lambda seg: [f"{f:.5f}" for f in seg.fractions]),
    ]
    if options.save_masks:
        out.append(MaskSink(ctx.folder / "masks", mask_of=lambda seg: host(seg.mask)))
    return out


def draw_legend(image: np.ndarray, fractions: np.ndarray, classes, palette) -> None:
    order = [i for i in np.argsort(-fractions)[:LEGEND_ROWS] if fractions[i] >= LEGEND_MIN_FRACTION]
    scale = max(0.4, image.shape[0] / 900)
    row = int(22 * scale / 0.6)
    for n, i in enumerate(order):
        y = 6 + n * row
        cv2.rectangle(image, (6, y), (6 + row - 4, y + row - 4), tuple(int(v) for v in palette[i]), -1)
        label = f"{classes[i]} {fractions[i]:.0%}"
        outlined_text(image, label, (10 + row, y + row - 8), scale)
