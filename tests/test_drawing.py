"""Text over frames (edge/drawing.py, camvid's legend), drawn with the installed OpenCV."""

import cv2
import numpy as np
import pytest

from edge.drawing import outlined_text
from edge.tasks.camvid import Legend

BACKGROUND = (60, 128, 180)  # no blend of the black outline and white letters over it gives it back


def stray_letter_pixels(image: np.ndarray) -> int:
    """Pixels of the light letters that touch the untouched background: where the fill is
    not inside its outline (a doubled, ghosted label has many)."""
    changed = (image != BACKGROUND).any(axis=2).astype(np.uint8)
    # a pixel with any untouched pixel among its eight neighbours
    edge = cv2.erode(changed, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=1) == 0
    light = image.min(axis=2) > 200
    return int((light & edge).sum())


@pytest.mark.parametrize("scale", [0.4, 0.6, 1.0, 1.6])
@pytest.mark.parametrize("text", ["Sidewalk 10%", "Road 63%", "MotorcycleScooter 1%"])
def test_letters_lie_inside_their_outline(scale, text):
    image = np.full((80, 700, 3), BACKGROUND, np.uint8)
    outlined_text(image, text, (10, 50), scale)
    assert (image.min(axis=2) > 200).sum() > 20 * len(text) * scale  # the letters were drawn
    assert (image.max(axis=2) < 40).any()  # and so was the outline
    assert stray_letter_pixels(image) == 0


@pytest.mark.parametrize("height", [90, 240, 480, 720, 1080])
def test_the_legend_is_clean_at_every_frame_size(height):
    image = np.full((height, height * 16 // 9, 3), BACKGROUND, np.uint8)
    classes = ("Road", "Sidewalk", "Building", "Sky", "Tree", "Car", "Pedestrian", "Bicyclist")
    palette = np.array([(200, 40, 40)] * len(classes), np.uint8)  # no channel over 200: not taken for letters
    fractions = np.array([0.40, 0.10, 0.20, 0.12, 0.08, 0.05, 0.03, 0.02])
    Legend.of(fractions, classes, palette, height).draw(image)
    assert (image.min(axis=2) > 200).any()
    assert stray_letter_pixels(image) == 0


def test_text_at_the_frame_edge_is_clipped_not_an_error():
    image = np.full((30, 60, 3), BACKGROUND, np.uint8)
    outlined_text(image, "Sidewalk 10%", (40, 12), 1.0)
    outlined_text(image, "Sky", (-100, -100), 1.0)
    assert (image != BACKGROUND).any()
