import cv2
import numpy as np
import pytest

from edge.geometry import (NO_CLASS, YUV_FLOOR, YUV_OFFSET, YUV_TO_RGB, Preprocessor, Window, interpolation,
                           planes_size, resample_weights)
from edge.model import Contract


def contract(resize="squish", **kw):
    return Contract(task="biwi", input_size=(40, 40), input_format="uint8_nhwc", output="points", resize=resize, **kw)


@pytest.mark.parametrize("method,expected", [
    ("squish", (0, 0, 160, 80)),
    ("crop", (40, 0, 80, 80)),  # the centred square of a 2:1 frame
    ("pad", (0, -40, 160, 160)),  # the frame centred in a square twice its height
])
def test_window_per_method(method, expected):
    w = Window.fit((80, 160), (40, 40), method)
    assert (w.x0, w.y0, w.width, w.height) == expected


@pytest.mark.parametrize("method", ["squish", "crop"])
def test_points_map_back_to_the_frame(method):
    """A dot's centroid in the model input lands on the dot in the frame."""
    frame = np.zeros((80, 160, 3), np.uint8)
    frame[28:32, 78:82] = 255  # centred at (80, 30)
    prep = Preprocessor(contract(method))
    image = prep([frame])[0].astype(float).sum(axis=2)
    ys, xs = np.mgrid[0:40, 0:40] + 0.5
    centroid = np.array([(image * xs).sum(), (image * ys).sum()]) / image.sum()
    assert np.allclose(prep.window((80, 160)).to_frame(centroid), (80, 30), atol=1.0)


def test_pad_points_map_back_past_the_padding():
    w = Window.fit((80, 160), (40, 40), "pad")
    assert np.allclose(w.to_frame(np.array([[20.0, 20.0], [0.0, 10.0], [40.0, 30.0]])), [[80, 40], [0, 0], [160, 80]])


def test_mask_maps_back_with_nearest_and_marks_unseen_pixels():
    w = Window.fit((80, 160), (40, 40), "crop")
    mask = np.zeros((40, 40), np.uint8)
    mask[:, 20:] = 1  # right half of the crop
    full = w.mask_to_frame(mask)
    assert full.shape == (80, 160)
    assert (full[:, :40] == NO_CLASS).all() and (full[:, 120:] == NO_CLASS).all()
    assert (full[:, 40:80] == 0).all() and (full[:, 80:120] == 1).all()


@pytest.mark.parametrize("method", ["squish", "crop", "pad"])
@pytest.mark.parametrize("frame_size, model_size", [((90, 160), (12, 16)), ((81, 163), (15, 11)), ((10, 14), (12, 16))])
def test_each_frame_pixel_takes_the_model_pixel_its_centre_falls_in(method, frame_size, model_size):
    w = Window.fit(frame_size, model_size, method)
    mh, mw = model_size
    mask = np.arange(mh * mw, dtype=np.int64).reshape(mh, mw) % 200  # ids tell the model pixel (small sizes)
    full = w.mask_to_frame(mask.astype(np.uint8))
    ys, xs = np.mgrid[0 : frame_size[0], 0 : frame_size[1]] + 0.5
    # the frame pixel's centre in model pixels: inside pixel floor(...) of the model, or outside it
    mx, my = (xs - w.x0) * mw / w.width, (ys - w.y0) * mh / w.height
    inside = (mx >= 0) & (mx < mw) & (my >= 0) & (my < mh)
    expected = np.where(inside, mask[np.clip(my, 0, mh - 1).astype(int), np.clip(mx, 0, mw - 1).astype(int)], NO_CLASS)
    # a centre exactly on a model pixel's edge may go either way
    on_edge = (np.abs(mx - np.round(mx)) < 1e-9) | (np.abs(my - np.round(my)) < 1e-9)
    assert (full == expected)[~on_edge].all()
    assert method != "squish" or NO_CLASS not in full


@pytest.mark.parametrize("src, dst", [
    ((90, 120), (48, 64)), ((720, 1280), (360, 480)), ((90, 120), (45, 60)),  # shrinking, by whole and other factors
    ((90, 120), (160, 200)), ((7, 13), (9, 29)),  # enlarging
    ((90, 120), (48, 200)), ((90, 120), (160, 64)),  # one side grows, the other shrinks
    ((90, 120), (90, 64)), ((10, 10), (10, 10)),  # one side or none changes
])
def test_resample_weights_resize_as_the_installed_opencv_does(src, dst):
    image = np.random.default_rng(0).random(src).astype(np.float32)
    rows, columns = resample_weights(src, dst)
    theirs = cv2.resize(image, dst[::-1], interpolation=interpolation(src, dst))
    assert rows.shape == (dst[0], src[0]) and columns.shape == (dst[1], src[1])
    assert np.abs(rows @ image @ columns.T - theirs).max() <= 1e-5


def test_squish_mask_covers_the_frame():
    w = Window.fit((81, 163), (40, 40), "squish")
    mask = np.arange(40, dtype=np.uint8)[None, :].repeat(40, 0)
    full = w.mask_to_frame(mask)
    assert full.shape == (81, 163) and NO_CLASS not in full
    assert full[0, 0] == 0 and full[0, -1] == 39


def test_pad_reflects_like_fastai():
    frame = np.zeros((20, 40, 3), np.uint8)
    frame[:8] = 200  # top rows bright; reflection puts brightness into the padding
    out = Preprocessor(contract("pad"))([frame])[0]
    assert out.shape == (40, 40, 3) and out[:10].max() > 0


def test_float_input_is_normalized_nchw_and_bgr_reordered():
    c = Contract(task="biwi", input_size=(2, 2), input_format="float32_nchw", output="points",
                 channel_order="BGR", mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    frame = np.zeros((2, 2, 3), np.uint8)
    frame[..., 0] = 255  # pure red
    x = Preprocessor(c)([frame])
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    # BGR order: channel 0 is blue (mean 0, std 1), channel 2 is red ((1 - .5) / .5)
    assert np.allclose(x[0, 0], 0.0) and np.allclose(x[0, 1], -1.0) and np.allclose(x[0, 2], 1.0)


def colourful(h=120, w=160) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) % 256], -1).astype(np.uint8)
    rgb[20:60, 40:90] = (250, 30, 40)  # a saturated block: its edges are where clipping can differ
    return rgb


@pytest.mark.parametrize("method, size", [("squish", (24, 32)), ("crop", (16, 16)), ("pad", (16, 16)),
                                          ("squish", (100, 140))])
def test_planes_preprocess_like_their_rgb(method, size):
    """Resampling the I420 planes then converting matches converting then resampling, within
    rounding; where the chroma would be enlarged or padded, the frame is converted first."""
    planes = cv2.cvtColor(colourful(), cv2.COLOR_RGB2YUV_I420)
    rgb = cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420)
    c = Contract(task="planet", input_size=size, input_format="uint8_nhwc", output="probabilities",
                 resize=method, classes=("a",), thresholds=(0.2,))
    prep = Preprocessor(c)
    ours, theirs = prep([planes]).astype(int), prep([rgb]).astype(int)
    assert np.abs(ours - theirs).max() <= 4 and np.abs(ours - theirs).mean() < 1
    converted_first = method == "pad" or size[0] > 60
    assert (ours == theirs).all() == converted_first  # the planes path ran where it should
    assert planes_size(planes) == (120, 160)


def test_the_installed_opencv_converts_i420_as_bt601_limited_range():
    """media.py hands cv2 the streams whose colour matrix is BT.601 (or unspecified) to convert:
    this fails, rather than colours drifting, if an OpenCV release changes its matrix."""
    bt601 = np.array([[1.164, 0.0, 1.596], [1.164, -0.392, -0.813], [1.164, 2.017, 0.0]])
    assert np.abs(YUV_TO_RGB - bt601).max() < 0.01
    assert np.abs(YUV_OFFSET - (16, 128, 128)).max() < 0.1 and tuple(YUV_FLOOR) == (16, 0, 0)
