"""Text drawn over video frames: light letters in a dark outline, readable on any background.

The outline is the letters' own shape grown by a pixel or two, not a second, thicker rendering
of the text: since OpenCV 5 a glyph's advance depends on the stroke thickness, so a thick dark
pass and a thin light pass drift apart letter by letter and the label looks doubled.
"""

import functools

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


def outlined_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, *,
                  fill=(255, 255, 255), outline=(0, 0, 0), width: int = 1) -> None:
    """Draw `text` into `image` (H,W,3 uint8, in place) with its baseline's left end at
    `origin`, in `fill`, ringed `width` pixels wide in `outline`."""
    box = text_box(text, origin, scale, width)
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], image.shape[1]), min(box[3], image.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    cut = (slice(y0 - box[1], y1 - box[1]), slice(x0 - box[0], x1 - box[0]))
    kept, added = _layers(text, scale, width, tuple(fill), tuple(outline))
    region = image[y0:y1, x0:x1].astype(np.float32)
    image[y0:y1, x0:x1] = np.rint(region * kept[cut] + added[cut]).astype(np.uint8)


def text_layers(text: str, origin: tuple[int, int], scale: float, *, fill=(255, 255, 255), outline=(0, 0, 0),
                width: int = 1) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """What outlined_text draws, as layers: the top-left corner of its text_box, how much of each
    pixel there is kept (H,W,1) and the colour laid over it (H,W,3): drawn = kept * image + laid."""
    x0, y0, _, _ = text_box(text, origin, scale, width)
    return (x0, y0), *_layers(text, scale, width, tuple(fill), tuple(outline))


@functools.lru_cache(maxsize=1024)
def _layers(text: str, scale: float, width: int, fill: tuple, outline: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The text over text_box as one multiply and one add: how much of each pixel is kept
    (H,W,1) and the colour laid over it (H,W,3), float32. A legend draws the same few labels
    frame after frame, and rendering them is most of its cost."""
    x0, y0, x1, y1 = text_box(text, (0, 0), scale, width)
    letters = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.putText(letters, text, (-x0, -y0), FONT, scale, 255, 1, cv2.LINE_AA)
    ring = cv2.dilate(letters, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * width + 1, 2 * width + 1)))
    under, over = (coverage[..., None].astype(np.float32) / 255 for coverage in (ring, letters))
    # the outline over the frame, then the letters over that
    kept = (1 - under) * (1 - over)
    added = np.asarray(outline, np.float32) * under * (1 - over) + np.asarray(fill, np.float32) * over
    return kept, added


def text_box(text: str, origin: tuple[int, int], scale: float, width: int = 1) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the pixels outlined_text may change, uncut by the image's edges."""
    (text_w, text_h), baseline = _extent(text, scale)
    margin = width + 2  # antialiasing reaches a pixel past the glyphs
    return (origin[0] - margin, origin[1] - text_h - margin, origin[0] + text_w + margin,
            origin[1] + baseline + margin)


@functools.lru_cache(maxsize=1024)
def _extent(text: str, scale: float) -> tuple[tuple[int, int], int]:
    """cv2.getTextSize, asked once per label: a legend measures its rows twice a frame."""
    return cv2.getTextSize(text, FONT, scale, 1)
