"""Overlays drawn on I420 planes (edge/i420.py) against the RGB route they replace: blend in RGB,
draw, convert for the encoder. The tolerance, stated: where the source's colours lie inside
RGB's gamut, every sample within 1 level (rounding); where they do not, the RGB route clipped
them before blending, and the planes route keeps them: such samples may differ more, and the
test bounds how many."""

import cv2
import numpy as np
import pytest

from edge import i420
from edge.drawing import outlined_text, text_layers
from edge.frames import Frame
from edge.geometry import NO_CLASS, planes_size
from edge.tasks import biwi, camvid

RNG = np.random.default_rng(7)
PALETTE = np.zeros((NO_CLASS + 1, 3), np.uint8)
PALETTE[:12] = RNG.integers(0, 256, (12, 3))


def in_gamut_planes(height=240, width=320) -> np.ndarray:
    """A frame of gradients and saturated blocks, constant over each 2x2 block: its I420 turns
    back into the same RGB, so both routes start from the same colours."""
    y, x = np.mgrid[: height // 2, : width // 2]
    rgb = np.stack([x * 255 // (width // 2), y * 255 // (height // 2), (x + y) % 256], axis=-1).astype(np.uint8)
    rgb[10:40, 10:60] = (255, 0, 0)
    rgb[50:80, 70:120] = (0, 0, 255)
    rgb = np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)


def random_planes(height=240, width=320) -> np.ndarray:
    """Any bytes: much of it outside RGB's gamut, as damaged or oddly encoded video can be."""
    return RNG.integers(0, 256, (height * 3 // 2, width), dtype=np.uint8)


def blocky_mask(height, width, classes=12) -> np.ndarray:
    """Class ids as a model at a lower resolution gives them: in blocks of 5 x 7, so that some
    edges fall inside a 2x2 chroma block."""
    small = RNG.integers(0, classes, (height // 5 + 1, width // 7 + 1)).astype(np.uint8)
    return np.repeat(np.repeat(small, 5, axis=0), 7, axis=1)[:height, :width]


def rgb_route_blend(planes, mask, alpha, keep=None) -> np.ndarray:
    rgb = cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420)
    out = cv2.addWeighted(rgb, 1 - alpha, cv2.LUT(cv2.merge([mask] * 3), PALETTE[:, None]), alpha, 0)
    if keep is not None:
        out[mask == keep] = rgb[mask == keep]
    return cv2.cvtColor(out, cv2.COLOR_RGB2YUV_I420)


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def test_colours_are_what_cv2_converts_them_to():
    rgb = RNG.integers(0, 256, (40, 3), dtype=np.uint8)
    yuv = i420.colours(rgb)
    for colour, (y, u, v) in zip(rgb, yuv):
        planes = i420.planes(cv2.cvtColor(np.full((2, 2, 3), colour, np.uint8), cv2.COLOR_RGB2YUV_I420))
        assert (planes[0][0, 0], planes[1][0, 0], planes[2][0, 0]) == (y, u, v)


@pytest.mark.parametrize("alpha", [0.5, 0.3, 1.0])
@pytest.mark.parametrize("keep", [None, NO_CLASS])
def test_blend_is_the_rgb_blend_within_rounding_in_gamut(alpha, keep):
    planes = in_gamut_planes()
    mask = blocky_mask(240, 320)
    mask[:, :24] = NO_CLASS  # a crop window's unseen edge
    out = i420.blend(planes, mask, i420.colours(PALETTE), alpha, keep=keep)
    assert difference(out, rgb_route_blend(planes, mask, alpha, keep)).max() <= 1
    if keep is not None:
        y, u, v = i420.planes(out)
        assert (y[:, :24] == i420.planes(planes)[0][:, :24]).all()  # unseen pixels kept as they were


def test_blend_out_of_gamut_differs_only_where_rgb_clipped():
    planes = random_planes()
    mask = blocky_mask(240, 320)
    off = difference(i420.blend(planes, mask, i420.colours(PALETTE), 0.5), rgb_route_blend(planes, mask, 0.5))
    # the RGB route's own round trip shows which samples it clipped
    clipped = difference(cv2.cvtColor(cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420), cv2.COLOR_RGB2YUV_I420),
                         planes) > 1
    assert off[~clipped].max() <= 2
    assert off[clipped].max() > 2  # the test would see a change of route


def test_odd_frames_blend_as_the_writer_pads_them():
    rgb = np.repeat(np.repeat(RNG.integers(0, 256, (60, 80, 3), dtype=np.uint8), 2, 0), 2, 1)[:119, :159]
    mask = blocky_mask(119, 159)
    planes = i420.from_rgb(rgb)
    assert planes_size(planes) == (120, 160)
    out = i420.blend(planes, mask, i420.colours(PALETTE), 0.5)
    assert difference(out, rgb_route_blend(planes, i420.even(mask), 0.5)).max() <= 1


def test_drawing_in_rgb_changes_only_its_patch():
    planes = random_planes()
    before = planes.copy()

    def draw(rgb, corner):
        cv2.circle(rgb, (100 - corner[0], 90 - corner[1]), 20, (0, 255, 0), -1, cv2.LINE_AA)

    i420.draw_in_rgb(planes, (79, 69, 121, 111), draw)
    changed = np.argwhere(i420.planes(difference(planes, before))[0] > 0)
    assert changed.min(axis=0).tolist() >= [68, 78] and changed.max(axis=0).tolist() <= [111, 121]
    whole = cv2.cvtColor(before, cv2.COLOR_YUV2RGB_I420)
    draw(whole, (0, 0))
    expected = cv2.cvtColor(whole, cv2.COLOR_RGB2YUV_I420)
    y = i420.planes(planes)[0][70:110, 80:120]
    assert (y == i420.planes(expected)[0][70:110, 80:120]).all()  # drawn as the whole frame would be


def test_a_patch_past_the_frame_is_cut_to_it():
    planes = random_planes(120, 160)
    corners = []
    i420.draw_in_rgb(planes, (-50, 100, 400, 300), lambda rgb, corner: corners.append((rgb.shape, corner)))
    assert corners == [((20, 160, 3), (0, 100))]
    i420.draw_in_rgb(planes, (200, 200, 300, 300), lambda rgb, corner: corners.append(corner))
    assert len(corners) == 1  # nothing of the frame: nothing drawn


@pytest.mark.parametrize("height", [120, 240, 480, 720])
def test_the_legend_on_planes_is_the_legend_on_rgb(height):
    planes = in_gamut_planes(height, height * 4 // 3)
    fractions = np.array([0.40, 0.10, 0.20, 0.12, 0.08, 0.05, 0.03, 0.02])
    classes = ("Road", "Sidewalk", "Building", "Sky", "Tree", "Car", "Pedestrian", "Bicyclist")
    legend = camvid.Legend.of(fractions, classes, PALETTE[:8], height)
    rgb = cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420)
    legend.draw(rgb)
    on_planes = planes.copy()
    i420.lay(on_planes, legend.overlays())
    assert difference(on_planes, cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)).max() <= 1
    assert difference(on_planes, planes).max() > 100  # it was drawn


@pytest.mark.parametrize("origin", [(-7, 9), (3, 3), (250, 235), (101, 50)])
def test_text_laid_on_planes_is_the_text_drawn_on_rgb_even_cut_by_the_frame(origin):
    planes = in_gamut_planes()
    rgb = cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420)
    outlined_text(rgb, "Sidewalk 10%", origin, 0.9)
    i420.lay(planes, [i420.Overlay.of(*text_layers("Sidewalk 10%", origin, 0.9))])
    assert difference(planes, cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)).max() <= 1


def test_the_trail_on_planes_is_the_trail_on_rgb():
    planes = in_gamut_planes()
    trail = biwi.Trail(240)
    point = biwi.Point(150.4, 100.6, 148.2, 102.9)
    for t in (0.0, 0.2, 0.4):
        out = trail(Frame(int(t * 5), t, None, True, planes=planes), point)
        point = biwi.Point(point.x + 12, point.y + 5, point.x_smooth + 10, point.y_smooth + 4)
    # what the trail looked like drawn on RGB: the smoothed track, the point, a ring round the smoothed one
    rgb = cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420)
    track = np.array([[p.x_smooth, p.y_smooth] for _, p in trail.points], np.int32)
    last = trail.points[-1][1]
    cv2.polylines(rgb, [track], False, (255, 220, 0), 1, cv2.LINE_AA)
    cv2.circle(rgb, (round(last.x), round(last.y)), 3, (255, 0, 0), -1, cv2.LINE_AA)
    cv2.circle(rgb, (round(last.x_smooth), round(last.y_smooth)), 6, (0, 255, 0), 2, cv2.LINE_AA)
    assert difference(out, cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)).max() <= 1
    assert difference(out, planes).max() > 100
