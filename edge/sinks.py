"""Output staging and the generic sinks.

Every output of a run is written inside a hidden staging folder next to its final place and
moved there only when the whole run succeeded, so a failed or interrupted run never leaves a
final-named partial file, and never a mix of old and new outputs.

A sink is a context manager with `write(frame, result)`; for resuming (resume.py) it also has
`checkpoint()`, which makes what it wrote durable and returns its state as plain JSON values,
and `restore(state)`, called before entering it in a later run, which makes it carry on from
that state in the same staging folder.
"""

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from . import i420
from .device import host_rgb
from .errors import OutputError
from .frames import Frame
from .files import durable_size, open_resumable
from .writer import VideoWriter


class Staging:
    """A hidden folder inside `out_dir`; `commit()` moves its contents into `out_dir`."""

    def __init__(self, out_dir: Path, *, reuse: str | None = None):
        """`reuse` names an existing staging folder (of an interrupted run being resumed)."""
        self.out_dir = Path(out_dir)
        if reuse is not None:
            self.dir = self.out_dir / reuse
            return
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.dir = Path(tempfile.mkdtemp(prefix=".edge-partial-", dir=self.out_dir))
        except OSError as err:
            raise OutputError(f"cannot write to {self.out_dir}: {err.strerror or err}; choose another --out") from err

    def path(self, name: str) -> Path:
        return self.dir / name

    def commit(self) -> list[Path]:
        """Move the outputs into place; hidden entries are what a stopped writer left, not outputs."""
        finals = []
        for staged in sorted(self.dir.iterdir()):
            if staged.name.startswith("."):
                continue
            final = self.out_dir / staged.name
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            os.replace(staged, final)
            finals.append(final)
        shutil.rmtree(self.dir)
        return finals

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class OverlaySink:
    """Every frame of the range, with the latest result drawn on it, into overlay.mp4 with the
    input's audio; frames before the first result are written as they are."""

    name = "overlay.mp4"  # what the sink writes, as the user knows it

    def __init__(self, ctx, draw):
        """`draw(frame, result)` returns the frame to write; a draw with memory (a trail) also
        has `state()` and `restore(state)`."""
        self.ctx, self.draw = ctx, draw
        self.resume = None

    def restore(self, state: dict) -> None:
        self.resume = state["video"]
        if state["draw"] is not None:
            self.draw.restore(state["draw"])

    def checkpoint(self) -> dict:
        draw_state = getattr(self.draw, "state", None)
        return {"video": self.writer.checkpoint(), "draw": draw_state() if draw_state else None}

    def __enter__(self):
        video = self.ctx.video
        self.writer = VideoWriter(
            self.ctx.folder / "overlay.mp4", width=video.width, height=video.height, time_base=video.time_base,
            audio_from=video.path if video.audio_codec else None, start_s=self.ctx.start_s, end_s=self.ctx.end_s,
            preset=self.ctx.options.preset, encoder=self.ctx.options.encoder, threads=self.ctx.encoder_threads,
            resume=self.resume,
        ).__enter__()
        return self

    def write(self, frame: Frame, result) -> None:
        self.writer.write(picture(frame) if result is None else self.draw(frame, result), frame.pts_s)

    def __exit__(self, *exc):
        return self.writer.__exit__(*exc)


def picture(frame: Frame) -> np.ndarray:
    """The frame as the writer takes it, converting nothing: I420 planes where the decoder gave
    them, else RGB."""
    return frame.planes if frame.planes is not None else host_rgb(frame)


def frame_planes(frame: Frame) -> np.ndarray:
    """The frame's I420 planes (edge/i420.py), to draw on."""
    return frame.planes if frame.planes is not None else i420.from_rgb(host_rgb(frame))


class CsvSink:
    """One row per processed frame: time, index, then the task's columns."""

    def __init__(self, path: Path, columns: list[str], row):
        self.path, self.columns, self.row = path, columns, row
        self.name = path.name
        self.resume_bytes = None

    def restore(self, state: dict) -> None:
        self.resume_bytes = state["bytes"]

    def checkpoint(self) -> dict:
        return {"bytes": durable_size(self.file, self.path)}

    def __enter__(self):
        self.file = open_resumable(self.path, resume_bytes=self.resume_bytes)
        self.writer = csv.writer(self.file)
        if self.resume_bytes is None:
            self.writer.writerow(["time_s", "frame", *self.columns])
        return self

    def write(self, frame: Frame, result) -> None:
        if frame.selected and result is not None:
            self.writer.writerow([f"{frame.pts_s:.6f}", frame.index, *self.row(result)])

    def __exit__(self, *exc) -> None:
        self.file.close()


class MaskSink:
    """Lossless class-id masks, one PNG per processed frame, named by frame index."""

    def __init__(self, folder: Path, mask_of):
        self.folder, self.mask_of = folder, mask_of
        self.name = f"{folder.name}/*.png"
        self.resuming = False

    def restore(self, state: dict) -> None:
        self.resuming = True  # masks past the checkpoint are written again, under the same names

    def checkpoint(self) -> dict:
        return {}

    def __enter__(self):
        self.folder.mkdir(exist_ok=self.resuming)
        return self

    def write(self, frame: Frame, result) -> None:
        if frame.selected and result is not None:
            if not cv2.imwrite(str(self.folder / f"{frame.index:07d}.png"), self.mask_of(result)):
                raise OutputError(f"cannot write mask PNG into {self.folder}")

    def __exit__(self, *exc) -> None:
        pass


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OutputError(f"cannot write {path}")
