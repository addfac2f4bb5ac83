"""Write demo clips and the three known-function contract models into a folder.

    python -m tests.demo DIR

DIR/demo.mp4 is 6 s of 320x240 at 25 fps with a tone: a red block drifts right, a wide blue
band covers the top from 2 to 3.5 s, the frame turns green from 4 s, and a white dot circles
like a face.
DIR/street.mp4 is 6 s of the synthetic street scenes the default camvid model learnt, panning.
DIR/camvid.onnx, planet.onnx and biwi.onnx honour the model contract (see tests/makers_models.py
for what each computes), so `edge-run` can be tried end to end without training anything.
"""

import math
import sys
from pathlib import Path

import numpy as np

from tests import makers_models
from tests.makers_clips import make_clip

H, W, FPS, SECONDS = 240, 320, 25, 6


def frame(i: int) -> np.ndarray:
    t = i / FPS
    image = np.full((H, W, 3), 20, np.uint8)
    if t >= 4:
        image[..., 1] = 220
    x = int(10 + 30 * t)
    image[140:200, x : x + 70] = (230, 30, 30)
    if 2 <= t < 3.5:
        image[:160] = (30, 30, 230)
    cx, cy = int(W / 2 + 80 * math.cos(t)), int(H / 2 + 50 * math.sin(t))
    image[cy - 6 : cy + 6, cx - 6 : cx + 6] = 255
    return image


def street(seconds: int = SECONDS, size=(192, 256)):
    """Frames of the synthetic CamVid scenes the default camvid model was trained on: a new
    scene each second, panned slowly across so it moves like a drive-by."""
    from export.datasets import _street_image, _street_mask

    h, w = size
    for second in range(seconds):
        rng = np.random.default_rng([7, second])
        wide = np.clip(_street_image(rng, _street_mask(rng, h, 2 * w)), 0, 255).astype(np.uint8)
        for i in range(FPS):
            x = i * w // FPS
            yield np.ascontiguousarray(wide[:, x : x + w])


def write(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    make_clip(folder / "demo.mp4", (frame(i) for i in range(FPS * SECONDS)), fps=FPS, audio=True)
    make_clip(folder / "street.mp4", street(), fps=FPS)
    makers_models.camvid(folder / "camvid.onnx", size=(120, 160))
    makers_models.planet(folder / "planet.onnx", size=(64, 64))
    makers_models.biwi(folder / "biwi.onnx", size=(120, 160))
    print(f"wrote {folder}/demo.mp4, {folder}/street.mp4 and {folder}/{{camvid,planet,biwi}}.onnx")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.demo DIR")
    write(Path(sys.argv[1]))
