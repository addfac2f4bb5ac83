"""Drawing on frames as the encoder takes them: I420 planes, one (h*3/2, w) uint8 array.

An overlay blended in RGB costs two colour conversions of every frame (the decoder's I420 to RGB,
then RGB to I420 for x264), more than the blend itself. Both are avoidable: cv2's RGB to I420
takes each 2x2 block's chroma from its top-left pixel, its I420 to RGB repeats a chroma sample
over its block, and the conversion is affine, so blending Y at every pixel and U, V at each
block's top-left pixel gives the RGB blend, converted, within rounding (and RGB's clipping of
colours outside its gamut). What is drawn over a frame is drawn in RGB, as before, and reaches
the planes in one of two ways: labels and swatches that recur frame after frame as overlays,
converted once (Overlay, lay); marks that move (a trail) on a patch around them, converted there
and back (draw_in_rgb). Either way the rest of the frame is never touched.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


def planes(i420: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y (h, w), U and V (h/2, w/2) planes of a C-contiguous I420 array."""
    if not i420.flags.c_contiguous:
        raise ValueError("I420 planes must be one C-contiguous array")
    rows, width = i420.shape
    height = rows * 2 // 3
    flat = i420.reshape(-1)
    luma = height * width
    chroma = luma // 4
    return (flat[:luma].reshape(height, width), flat[luma:luma + chroma].reshape(height // 2, width // 2),
            flat[luma + chroma:].reshape(height // 2, width // 2))


def even(image: np.ndarray) -> np.ndarray:
    """An image (RGB, or a class map) with an odd side grown by one replicated row or column, as
    4:2:0 needs (and as the writer pads it)."""
    height, width = image.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return image
    return np.pad(image, ((0, height % 2), (0, width % 2), *[(0, 0)] * (image.ndim - 2)), mode="edge")


def from_rgb(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(even(rgb), cv2.COLOR_RGB2YUV_I420)


def colours(rgb: np.ndarray) -> np.ndarray:
    """(n, 3) uint8 RGB colours as (n, 3) uint8 Y, U, V, asked of cv2's own conversion: one 2x2
    block of each colour."""
    rgb = np.asarray(rgb, np.uint8).reshape(-1, 3)
    blocks = np.repeat(np.repeat(rgb[None], 2, axis=0), 2, axis=1)  # 2 x 2n image
    y, u, v = planes(cv2.cvtColor(np.ascontiguousarray(blocks), cv2.COLOR_RGB2YUV_I420))
    return np.stack([y[0, ::2], u[0], v[0]], axis=1)


def blend(i420: np.ndarray, mask: np.ndarray, palette_yuv: np.ndarray, alpha: float, *,
          keep: int | None = None) -> np.ndarray:
    """A new I420 frame: each pixel mixed with its class's colour, `alpha` of the colour, as
    cv2.addWeighted mixes RGB. `mask` is the frame's (h, w) uint8 class ids, `palette_yuv` a
    (256, 3) table; pixels of class `keep` are left as they are."""
    out = np.empty_like(i420)
    mask = even(mask)
    small = np.ascontiguousarray(mask[::2, ::2])  # the pixels whose chroma cv2 keeps
    tables = np.ascontiguousarray(palette_yuv.T)
    for plane, target, ids, table in zip(planes(i420), planes(out), (mask, small, small), tables):
        colour = cv2.LUT(ids, table)
        cv2.addWeighted(plane, 1 - alpha, colour, alpha, 0, dst=target)
        if keep is not None:
            cv2.copyTo(plane, (ids == keep).view(np.uint8), target)  # four times np.copyto's speed
    return out


def draw_in_rgb(i420: np.ndarray, box: tuple[int, int, int, int], draw: Callable[[np.ndarray, tuple[int, int]], None]
                ) -> None:
    """Draw on the frame, in place, in RGB: `draw(rgb, (x0, y0))` gets the patch
    [x0, x1) x [y0, y1) that holds `box` (x0, y0, x1, y1), widened to whole chroma blocks and
    cut to the frame, and the patch's corner, to subtract from frame coordinates."""
    y, u, v = planes(i420)
    height, width = y.shape
    x0, y0 = max(box[0], 0) // 2 * 2, max(box[1], 0) // 2 * 2
    x1, y1 = min(box[2] + box[2] % 2, width), min(box[3] + box[3] % 2, height)
    if x1 <= x0 or y1 <= y0:
        return
    patch = np.empty(((y1 - y0) * 3 // 2, x1 - x0), np.uint8)
    chroma = (slice(y0 // 2, y1 // 2), slice(x0 // 2, x1 // 2))
    for source, target in zip((y[y0:y1, x0:x1], u[chroma], v[chroma]), planes(patch)):
        target[:] = source
    rgb = cv2.cvtColor(patch, cv2.COLOR_YUV2RGB_I420)
    draw(rgb, (x0, y0))
    for target, drawn in zip((y[y0:y1, x0:x1], u[chroma], v[chroma]), planes(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420))):
        target[:] = drawn


def _rgb_to_yuv() -> tuple[np.ndarray, np.ndarray]:
    """cv2's RGB to I420 as yuv = matrix @ rgb + offset, fitted to its own output (its fixed
    point arithmetic within a hundredth of a level), never copied from one version's source."""
    rgb = np.random.default_rng(0).integers(0, 256, (1024, 3))
    fitted, *_ = np.linalg.lstsq(np.column_stack([rgb, np.ones(len(rgb))]), colours(rgb).astype(np.float64),
                                 rcond=None)
    return fitted[:3].T.astype(np.float32), fitted[3].astype(np.float32)


RGB_TO_YUV, YUV_OFFSET = _rgb_to_yuv()


@dataclass(frozen=True)
class Overlay:
    """Marks laid over a frame, as its planes take them: plane = kept * plane + laid, Y at every
    pixel, U and V at each 2x2 block's top-left pixel (where cv2 samples chroma). Made once from
    an RGB drawing (kept * rgb + laid, linear, so its conversion is too) and laid on frame after
    frame without converting the frame. (x, y): its top-left pixel in the frame, both even."""

    x: int
    y: int
    kept: tuple[np.ndarray, np.ndarray] | None  # luma's (h x w), chroma's (h/2 x w/2); None: opaque
    laid: tuple[np.ndarray, np.ndarray, np.ndarray]  # Y, U, V: float32, or uint8 where opaque

    @classmethod
    def of(cls, corner: tuple[int, int], kept: np.ndarray, laid: np.ndarray) -> "Overlay":
        """From an RGB drawing at frame pixel `corner`: kept (h,w,1) of the frame shows, laid (h,w,3) on it."""
        (x, y), (h, w) = corner, kept.shape[:2]
        # grown to whole chroma blocks of the frame, with nothing drawn on what is added
        pad = ((y % 2, (y + h) % 2), (x % 2, (x + w) % 2), (0, 0))
        kept, laid = np.pad(kept, pad, constant_values=1), np.pad(laid, pad)
        yuv = laid @ RGB_TO_YUV.T + (1 - kept) * YUV_OFFSET
        planes = (yuv[..., 0], yuv[::2, ::2, 1], yuv[::2, ::2, 2])
        if not kept.any():  # opaque: its values are simply copied
            return cls(x - x % 2, y - y % 2, None, tuple(np.rint(p).astype(np.uint8) for p in planes))
        luma = np.ascontiguousarray(kept[..., 0])
        return cls(x - x % 2, y - y % 2, (luma, luma[::2, ::2]), tuple(np.ascontiguousarray(p) for p in planes))


@functools.lru_cache(maxsize=256)
def filled(corner: tuple[int, int], size: tuple[int, int], rgb: tuple[int, int, int]) -> Overlay:
    """A filled rectangle of `size` (width, height) at `corner`, in one colour."""
    width, height = size
    return Overlay.of(corner, np.zeros((height, width, 1), np.float32), np.broadcast_to(
        np.asarray(rgb, np.float32), (height, width, 3)))


def lay(i420: np.ndarray, overlays: list[Overlay]) -> None:
    """The overlays on the frame, in order, in place; what falls outside the frame is left out."""
    frame = planes(i420)
    for overlay in overlays:
        for n, (plane, laid) in enumerate(zip(frame, overlay.laid)):
            step = 1 if n == 0 else 2
            kept = None if overlay.kept is None else overlay.kept[min(n, 1)]
            _lay(plane, overlay.x // step, overlay.y // step, kept, laid)


def _lay(plane: np.ndarray, x: int, y: int, kept: np.ndarray | None, laid: np.ndarray) -> None:
    height, width = laid.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, plane.shape[1]), min(y + height, plane.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    cut = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    region = plane[y0:y1, x0:x1]
    if kept is None:
        region[:] = laid[cut]
        return
    # a mix of the frame's value and a colour's, both 0..255: no clipping needed
    mixed = np.multiply(region, kept[cut])
    mixed += laid[cut]
    region[:] = np.rint(mixed, out=mixed)
