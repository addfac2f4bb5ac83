"""A folder or glob of images read as a video: one frame per image, IMAGE_SEQUENCE_FPS apart,
in natural name order."""

import glob
import os
import re
from collections.abc import Iterator
from fractions import Fraction

import cv2

from .errors import InputError
from .frames import Frame
from .container import VideoInfo
from .decode import in_range


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


IMAGE_SEQUENCE_FPS = 25  # the rate a folder or glob of images is played at, as frames 0.04 s apart


def image_sequence(path: str) -> list[str] | None:
    """The images a folder or a glob pattern names, in natural name order (frame2 before
    frame10); None when `path` is neither, so it is read as a video file."""
    if not names_images(path):
        return None
    if os.path.isdir(path):
        try:
            names = [os.path.join(path, n) for n in os.listdir(path)]
        except OSError as err:
            raise InputError(f"cannot list the images in {path}: {err.strerror}") from None
    else:
        names = glob.glob(path)
    return natural_order(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(n))


def natural_order(names) -> list[str]:
    """Names sorted as people number things: frame2 before frame10."""
    # splitting on a captured group alternates text and digits: odd parts are the numbers
    return sorted(names, key=lambda n: [int(part) if i % 2 else part
                                        for i, part in enumerate(re.split(r"([0-9]+)", n))])


def names_images(path: str) -> bool:
    """Whether `path` is a folder or a glob pattern (a file that exists is a file, magic or not)."""
    return os.path.isdir(path) or (glob.has_magic(path) and not os.path.exists(path))


def sequence_name(path: str) -> str:
    """A name for the outputs of `path`: a video's stem, a folder's name, a glob's folder."""
    if not names_images(path):
        return os.path.splitext(os.path.basename(path))[0]
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    name = os.path.basename(os.path.abspath(folder or "."))
    return "".join(c for c in name if c not in "*?[]") or "images"


def probe_images(path: str, images: list[str]) -> VideoInfo:
    if not images:
        where = f"in the folder {path}" if os.path.isdir(path) else f"match {path}"
        raise InputError(f"no videos and no images ({', '.join(IMAGE_EXTENSIONS)}) {where}; pass a video file, a "
                         f"folder holding videos or images, or a glob such as 'frames/*.jpg'")
    first = next((image for image in map(cv2.imread, images) if image is not None), None)
    if first is None:
        raise InputError(f"none of the {len(images)} images in {path} can be read; check they are image files")
    height, width = first.shape[:2]
    return VideoInfo(path=path, stream=0, video_streams=1, width=width, height=height, fps=float(IMAGE_SEQUENCE_FPS),
                     time_base=Fraction(1, IMAGE_SEQUENCE_FPS), start_s=0.0,
                     duration_s=len(images) / IMAGE_SEQUENCE_FPS, frame_count=len(images), codec="images",
                     pix_fmt="bgr24", rotation=0, audio_codec=None)


def image_frames(path, images, start_s, end_s, select, pixels, stats, resume_after) -> Iterator[Frame]:
    """Each image a frame, 1 / IMAGE_SEQUENCE_FPS apart; one that cannot be read, or whose size
    differs from the first readable one (an overlay video has one size), is skipped and counted."""
    first = probe_images(path, images)  # the size probe reported: the first readable image's
    size = (first.height, first.width, 3)

    def read(name: str, pts_s: float):
        bgr = cv2.imread(name)  # EXIF orientation applied, as a phone photo is shown
        stats.decoded += 1
        if bgr is None or bgr.shape != size:
            stats.add_corrupt(pts_s)
            return None
        return bgr

    timed = ((index, index / IMAGE_SEQUENCE_FPS, name) for index, name in enumerate(images))
    for index, pts_s, bgr, selected in in_range(timed, start_s, end_s, select, resume_after, usable=read):
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if selected or pixels in ("all", "all_planes") else None
        yield Frame(index, pts_s, image, selected)
