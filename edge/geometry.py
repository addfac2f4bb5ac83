"""Frame ↔ model-input geometry for fastai's three resize methods, and the preprocess.

Every method is described by one window in frame pixels that is mapped onto the model's
input: squish takes the whole frame, crop a centred window inside it, pad a centred window
larger than it (the outside is reflected, as fastai pads). Outputs are mapped back through
the same window, so masks and points land on the original frame.
"""

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from .model import Contract

NO_CLASS = 255  # mask value for frame pixels the model never saw (outside a crop window)


def _cv2_i420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """cv2's COLOR_YUV2RGB_I420 of each (y, u, v) triple (as many as fill 64 x 64 blocks of
    2 x 2 pixels sharing one chroma sample), N x 3."""
    side = 64
    def grid(a):
        return np.resize(np.asarray(a, np.float64), side * side).reshape(side, side)
    luma = np.repeat(np.repeat(grid(y), 2, axis=0), 2, axis=1)
    planes = np.concatenate([luma, np.concatenate([grid(u), grid(v)]).reshape(side, 2 * side)]).astype(np.uint8)
    rgb = cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420)[::2, ::2].reshape(-1, 3).astype(np.float64)
    return rgb[: max(np.size(y), np.size(u), np.size(v))]


def _i420_conversion() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the installed cv2's COLOR_YUV2RGB_I420 computes (BT.601 limited range today): the
    floor (Y, U, V) are raised to first (OpenCV takes luma below black as black), the offset
    then subtracted, and the matrix applied. Asked of cv2 itself, so that converting elsewhere
    (on a device, or after resampling) follows whatever this OpenCV does: the floor is the last
    luma level whose output is that of level 0, the rest fitted to its output over a grid of
    values above the floor, where no channel clips."""
    # a chroma whose green and blue stay inside 0..255 near black
    near_black = _cv2_i420_to_rgb(np.arange(256), 200, 60)
    luma_floor = int(np.flatnonzero((near_black == near_black[0]).all(axis=1))[-1])
    levels = np.linspace(0, 255, 16)
    y, u, v = (a.ravel() for a in np.meshgrid(levels, levels, levels, indexing="ij"))
    rgb = _cv2_i420_to_rgb(y, u, v)
    used = ((rgb > 2) & (rgb < 253)).all(axis=1) & (y > luma_floor)
    fitted, *_ = np.linalg.lstsq(np.column_stack([y, u, v, np.ones_like(y)])[used], rgb[used], rcond=None)
    matrix, constant = fitted[:3].T, fitted[3]
    offset = -np.linalg.solve(matrix, constant)
    return (np.array([luma_floor, 0, 0], np.float32), offset.astype(np.float32), matrix.astype(np.float32))


YUV_FLOOR, YUV_OFFSET, YUV_TO_RGB = _i420_conversion()


@dataclass(frozen=True)
class Window:
    frame_size: tuple[int, int]  # (height, width) of the frame
    model_size: tuple[int, int]  # (height, width) of the model input
    x0: float
    y0: float
    width: float
    height: float

    @classmethod
    def fit(cls, frame_size: tuple[int, int], model_size: tuple[int, int], method: str) -> "Window":
        fh, fw = frame_size
        mh, mw = model_size
        if method == "squish":
            return cls(frame_size, model_size, 0.0, 0.0, float(fw), float(fh))
        scale = (max if method == "crop" else min)(mw / fw, mh / fh)
        width, height = mw / scale, mh / scale
        return cls(frame_size, model_size, (fw - width) / 2, (fh - height) / 2, width, height)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Model-input pixel coordinates (x, y), continuous, to frame pixel coordinates."""
        mh, mw = self.model_size
        scale = np.array([self.width / mw, self.height / mh])
        return points * scale + np.array([self.x0, self.y0])

    def region(self) -> tuple[slice, slice] | None:
        """The frame rows and columns a squish or crop window takes; None for a pad window,
        which reaches outside the frame."""
        fh, fw = self.frame_size
        if self.width > fw or self.height > fh:
            return None
        x0, y0 = int(round(self.x0)), int(round(self.y0))
        return slice(y0, y0 + int(round(self.height))), slice(x0, x0 + int(round(self.width)))

    def padding(self) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """For a pad window: the size (height, width) the whole frame is resized to, and the
        (top, bottom, left, right) border reflected around it to fill the model's input."""
        mh, mw = self.model_size
        fh, fw = self.frame_size
        inner_w, inner_h = max(1, round(fw * mw / self.width)), max(1, round(fh * mh / self.height))
        left, top = (mw - inner_w) // 2, (mh - inner_h) // 2
        return (inner_h, inner_w), (top, mh - inner_h - top, left, mw - inner_w - left)

    def resize_image(self, image: np.ndarray, out: np.ndarray) -> None:
        """Resample a frame into `out` (model height x width x 3); INTER_AREA is the antialiased
        downscale closest to the PIL resize fastai trained with."""
        mh, mw = self.model_size
        if (rows := self.region()) is not None:  # squish or crop
            region = image[rows]
            cv2.resize(region, (mw, mh), dst=out, interpolation=interpolation(region.shape, out.shape))
            return
        (inner_h, inner_w), border = self.padding()
        inner = cv2.resize(image, (inner_w, inner_h), interpolation=interpolation(image.shape, (inner_h, inner_w)))
        cv2.copyMakeBorder(inner, *border, cv2.BORDER_REFLECT_101, dst=out)

    def resize_planes(self, planes: np.ndarray, out: np.ndarray) -> None:
        """As resize_image, from a frame's I420 planes: each plane's window is resampled to the
        model's size (chroma from half resolution), then only those pixels are converted, with
        the BT.601 limited-range matrix of cv2's I420 conversion. Resampling before converting
        differs from converting first only where colours clip: within a level or two. Where the
        chroma would be enlarged, or the window reaches outside the frame (pad), it converts the
        frame first, as resize_image's callers do."""
        fh, fw = self.frame_size
        mh, mw = self.model_size
        inside = self.width <= fw and self.height <= fh
        if not (inside and self.height / 2 >= mh and self.width / 2 >= mw):
            self.resize_image(cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420), out)
            return
        x0, y0 = int(round(self.x0)), int(round(self.y0))
        w, h = int(round(self.width)), int(round(self.height))
        chroma = planes[fh:].reshape(2, fh // 2, fw // 2)
        regions = [planes[y0 : y0 + h, x0 : x0 + w]] + [
            plane[y0 // 2 : (y0 + h + 1) // 2, x0 // 2 : (x0 + w + 1) // 2] for plane in chroma]
        yuv = np.empty((mh, mw, 3), np.float32)
        for n, region in enumerate(regions):
            yuv[..., n] = cv2.resize(region, (mw, mh), interpolation=interpolation(region.shape, (mh, mw)))
        rgb = cv2.transform(np.maximum(yuv, YUV_FLOOR) - YUV_OFFSET, YUV_TO_RGB)
        np.clip(np.rint(rgb), 0, 255, out=rgb)
        out[...] = rgb

    @cached_property
    def nearest_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """For each frame row and column, the model pixel nearest its centre, or -1 where the
        model saw nothing. The host and a device both map masks back by gathering with these,
        so they agree by construction (cv2.warpAffine's nearest rounding differs between
        OpenCV versions)."""
        mh, mw = self.model_size
        fh, fw = self.frame_size
        out = []
        for count, size, start, extent in ((fh, mh, self.y0, self.height), (fw, mw, self.x0, self.width)):
            centre = (np.arange(count) + 0.5 - start) * (size / extent) - 0.5
            index = np.floor(centre + 0.5).astype(np.int64)
            out.append(np.where((index >= 0) & (index < size), index, -1))
        return out[0], out[1]

    @cached_property
    def frame_pixels(self) -> np.ndarray:
        """How many frame pixels mask_to_frame gives each model pixel (model height x width)."""
        (mh, mw), (rows, columns) = self.model_size, self.nearest_indices
        return np.outer(np.bincount(rows[rows >= 0], minlength=mh),
                        np.bincount(columns[columns >= 0], minlength=mw)).astype(np.float64)

    def class_fractions(self, mask: np.ndarray, classes: int) -> np.ndarray:
        """Each class's fraction of the pixels of mask_to_frame(mask), counted at model size,
        where there are a few hundred times fewer pixels; the sums are whole numbers, exact."""
        counts = np.bincount(mask.ravel(), weights=self.frame_pixels.ravel(), minlength=classes)[:classes]
        return counts / (self.frame_size[0] * self.frame_size[1])

    def mask_to_frame(self, mask: np.ndarray) -> np.ndarray:
        """A class-id map at model size to frame size (nearest), NO_CLASS where the model saw nothing."""
        mh, mw = self.model_size
        padded = np.full((mh + 1, mw + 1), NO_CLASS, np.uint8)
        padded[:mh, :mw] = mask  # index -1 lands on the NO_CLASS row and column
        rows, columns = self.nearest_indices
        # two takes along one axis each, columns first: the rows are then copied whole, ten
        # times faster than the other way round, and forty times np.ix_
        return padded.take(columns, axis=1).take(rows, axis=0)


def resample_weights(src_size: tuple[int, int], dst_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The resize `cv2.resize` does with the interpolation `interpolation` picks, as two
    matrices: out = rows @ image @ columns.T, per channel, so a device resizes by matrix
    products and matches the host. The weights are asked of the installed OpenCV, not copied
    from one version's source: resizing is linear and separable, so resizing the unit vectors
    gives the matrix's columns."""
    (src_h, src_w), (dst_h, dst_w) = src_size, dst_size
    method = interpolation(src_size, dst_size)
    return _axis_weights(src_h, dst_h, (src_w, dst_w), method), _axis_weights(src_w, dst_w, (src_h, dst_h), method)


# unit vectors resized at once, as the channels of one image: OpenCV resizes at most four
# channels with INTER_AREA
_UNITS_AT_ONCE = 4


def _axis_weights(src: int, dst: int, other: tuple[int, int], method: int) -> np.ndarray:
    """The (dst, src) weights OpenCV gives one side of an image when the other side goes from
    other[0] to other[1] pixels. OpenCV picks its algorithm by whether each side shrinks
    (INTER_AREA averages areas only where no side grows), so the other side here is a stand-in
    of one or two pixels that grows, shrinks or stays as the real one does; its pixels are
    equal, so what it mixes changes nothing."""
    stand_in = (1, 1) if other[0] == other[1] else ((2, 1) if other[0] > other[1] else (1, 2))
    columns = []
    for start in range(0, src, _UNITS_AT_ONCE):
        count = min(_UNITS_AT_ONCE, src - start)
        units = np.zeros((src, stand_in[0], count), np.float32)
        units[start + np.arange(count), :, np.arange(count)] = 1
        out = cv2.resize(units, (stand_in[1], dst), interpolation=method)
        columns.append(out.reshape(dst, stand_in[1], count)[:, 0])
    return np.concatenate(columns, axis=1)


def interpolation(src_shape, dst_shape) -> int:
    """What edge resizes frames with: INTER_AREA, the antialiased downscale closest to the PIL
    resize fastai trained with, when any side shrinks; else INTER_LINEAR."""
    shrinking = dst_shape[0] < src_shape[0] or dst_shape[1] < src_shape[1]
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


class Preprocessor:
    """Turns frames into one model's input batch, as its contract asks."""

    def __init__(self, contract: Contract):
        self.contract = contract
        self._windows: dict[tuple[int, int], Window] = {}

    def window(self, frame_size: tuple[int, int]) -> Window:
        if frame_size not in self._windows:  # frame size only changes if the stream does
            self._windows[frame_size] = Window.fit(frame_size, self.contract.input_size, self.contract.resize)
        return self._windows[frame_size]

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """One input batch from RGB images, or from I420 planes (2-D arrays, h*3/2 x w)."""
        mh, mw = self.contract.input_size
        batch = np.empty((len(images), mh, mw, 3), np.uint8)
        for image, out in zip(images, batch):
            if image.ndim == 2:
                self.window(planes_size(image)).resize_planes(image, out)
            else:
                self.window(image.shape[:2]).resize_image(image, out)
        if self.contract.channel_order == "BGR":
            batch = np.ascontiguousarray(batch[..., ::-1])
        if self.contract.input_format == "uint8_nhwc":
            return batch
        mean = np.asarray(self.contract.mean, np.float32) * 255
        inv_std = 1 / (np.asarray(self.contract.std, np.float32) * 255)
        if self.contract.channel_order == "BGR":
            mean, inv_std = mean[::-1], inv_std[::-1]
        normalized = (batch.astype(np.float32) - mean) * inv_std
        return np.ascontiguousarray(normalized.transpose(0, 3, 1, 2))


def planes_size(planes: np.ndarray) -> tuple[int, int]:
    """(height, width) of the frame whose I420 planes these are."""
    return planes.shape[0] * 2 // 3, planes.shape[1]
