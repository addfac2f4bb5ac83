"""Writes the README's pictures from the quick start's outputs: frame FRAME of each overlay video,
and planet's timeline, as PNGs. Run from the repository root after the quick start:

    python docs/quickstart_frames.py out/street docs/images
"""

import shutil
import sys
from pathlib import Path

import av
import cv2

FRAME = 75  # the middle of the 6-second street clip


def main(outputs: Path, images: Path, frame: int = FRAME) -> None:
    images.mkdir(parents=True, exist_ok=True)
    for task in ("camvid", "biwi"):
        with av.open(str(outputs / task / "overlay.mp4")) as container:
            for n, picture in enumerate(container.decode(video=0)):
                if n == frame:
                    cv2.imwrite(str(images / f"quickstart-{task}.png"), picture.to_ndarray(format="bgr24"))
                    break
    shutil.copyfile(outputs / "planet" / "timeline.png", images / "quickstart-planet.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
