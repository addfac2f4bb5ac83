"""The record that flows between stages."""

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Frame:
    """One decoded video frame.

    `index` counts frames from the start of the stream (0-based) whether or not they are
    processed; `pts_s` is the presentation time in seconds from the stream's own timestamps,
    so variable-frame-rate input keeps its real times. `image` is HxWx3 uint8 RGB, upright,
    or None when no stage needs this frame's pixels. `selected` says whether the frame goes
    through inference (`--stride`, `--sample-fps`); unselected frames still reach the sinks,
    which hold the last result so overlays keep the input's frame count. `planes`, when the
    decoder was asked for them (on the host it always is, where the frame allows), holds the
    frame's I420 planes as one (h*3/2, w) uint8 array instead, and `image` is None: overlays
    are drawn on the planes and encoded as they are (edge/i420.py), and preprocessing converts
    what it needs, on the host or on the device. `on_device`, when the
    run's models take tensors on a device (edge/device.py), is a selected frame uploaded there
    (H,W,3 uint8 RGB), for drawing on it.
    """

    index: int
    pts_s: float
    image: np.ndarray | None
    selected: bool = True
    planes: np.ndarray | None = None
    on_device: object = None
