"""Text drawn over video frames: light letters in a dark outline, readable on any background.

The outline is the letters' own shape grown by a pixel or two, not a second, thicker rendering
of the text: since OpenCV 5 a glyph's advance depends on the stroke thickness, so a thick dark
pass and a thin light pass drift apart letter by letter and the label looks doubled.
"""

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


def outlined_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, *,
                  fill=(255, 255, 255), outline=(0, 0, 0), width: int = 1) -> None:
    """Draw `text` into `image` (H,W,3 uint8, in place) with its baseline's left end at
    `origin`, in `fill`, ringed `width` pixels wide in `outline`."""
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, 1)
    margin = width + 2  # antialiasing reaches a pixel past the glyphs
    x0, y0 = max(origin[0] - margin, 0), max(origin[1] - text_h - margin, 0)
    x1 = min(origin[0] + text_w + margin, image.shape[1])
    y1 = min(origin[1] + baseline + margin, image.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    letters = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.putText(letters, text, (origin[0] - x0, origin[1] - y0), FONT, scale, 255, 1, cv2.LINE_AA)
    ring = cv2.dilate(letters, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * width + 1, 2 * width + 1)))
    region = image[y0:y1, x0:x1].astype(np.float32)
    for coverage, colour in ((ring, outline), (letters, fill)):
        alpha = coverage[..., None].astype(np.float32) / 255
        region = region * (1 - alpha) + np.asarray(colour, np.float32) * alpha
    image[y0:y1, x0:x1] = np.rint(region).astype(np.uint8)
