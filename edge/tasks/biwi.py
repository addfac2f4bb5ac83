"""biwi: one face-centre point per frame → a smoothed track (CSV, JSON) and an overlay with a trail."""

import csv
import json
import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ModelError
from .. import i420
from ..sinks import OverlaySink, frame_planes
from ..files import durable_size, open_resumable

TRAIL_S = 1.0  # the overlay's trail shows this many seconds of the smoothed track


@dataclass(slots=True)
class Point:
    x: float
    y: float
    x_smooth: float
    y_smooth: float


WRITES_OVERLAY = True
DRAWS_ON_DEVICE = False
SHIPPED_MODEL_SAW = "faces drawn on synthetic backgrounds, not filmed people"
Result = Point


class OneEuro:
    """The One-Euro filter (Casiez et al., CHI 2012): little lag when the point moves fast,
    little jitter when it is still. Works with uneven time steps (VFR, --sample-fps)."""

    def __init__(self, *, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.t = self.x = self.dx = None

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        return 1 / (1 + 1 / (2 * math.pi * cutoff * dt))

    def state(self) -> dict:
        return {"t": self.t, "x": None if self.x is None else self.x.tolist(),
                "dx": None if self.dx is None else self.dx.tolist()}

    def restore(self, state: dict) -> None:
        self.t = state["t"]
        self.x, self.dx = (None if state[k] is None else np.array(state[k]) for k in ("x", "dx"))

    def __call__(self, t: float, x: np.ndarray) -> np.ndarray:
        if self.t is None or t <= self.t:
            self.t, self.x, self.dx = t, x, np.zeros_like(x)
            return x
        dt = t - self.t
        dx = (x - self.x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        cutoff = self.min_cutoff + self.beta * float(np.linalg.norm(self.dx))
        a = self._alpha(cutoff, dt)
        self.t, self.x = t, a * x + (1 - a) * self.x
        return self.x


def postprocessor(contract, options):
    return Decoder(contract)


class Decoder:
    """Raw points in model pixels (or -1..1) to frame pixels, smoothed along the video; the
    smoother's memory is what `state()` and `restore()` carry across a resume."""

    def __init__(self, contract):
        self.contract = contract
        self.smoother = OneEuro(min_cutoff=1.0, beta=0.05)

    def state(self) -> dict:
        return self.smoother.state()

    def restore(self, state: dict) -> None:
        self.smoother.restore(state)

    def __call__(self, raw: np.ndarray, frames, windows) -> list[Point]:
        if raw.size != 2 * len(windows):
            raise ModelError(f"biwi model output has shape {raw.shape}; expected one (x, y) point per image")
        points = raw.reshape(len(windows), 2).astype(np.float64)
        if self.contract.point_convention == "xy_minus1_1":
            height, width = self.contract.input_size
            points = (points + 1) / 2 * np.array([width, height])
        results = []
        for point, frame, window in zip(points, frames, windows):
            x, y = window.to_frame(point)
            sx, sy = self.smoother(frame.pts_s, np.array([x, y]))
            results.append(Point(float(x), float(y), float(sx), float(sy)))
        return results


def sinks(ctx) -> list:
    return [TrackSink(ctx), OverlaySink(ctx, Trail(ctx.video.height))]


class Trail:
    """Draws the point and the last TRAIL_S seconds of the smoothed track, on the frame's I420
    planes: only the patch around the marks is drawn in RGB (edge/i420.py)."""

    def __init__(self, frame_height: int):
        self.points: deque[tuple[float, Point]] = deque()
        self.radius = max(3, frame_height // 100)

    def state(self) -> dict:
        return {"points": [[t, p.x, p.y, p.x_smooth, p.y_smooth] for t, p in self.points]}

    def restore(self, state: dict) -> None:
        self.points = deque((t, Point(*values)) for t, *values in state["points"])

    def __call__(self, frame, point: Point) -> np.ndarray:
        t = frame.pts_s
        if frame.selected:  # an unselected frame shows the held point, already in the trail
            self.points.append((t, point))
        while self.points and self.points[0][0] < t - TRAIL_S:
            self.points.popleft()
        trail = np.array([[p.x_smooth, p.y_smooth] for _, p in self.points], np.int32).reshape(-1, 2)
        marks = np.array([[round(point.x), round(point.y)], [round(point.x_smooth), round(point.y_smooth)]])
        corners = np.concatenate([trail, marks])
        reach = 2 * self.radius + 3  # the ring's radius and width, and a pixel of antialiasing
        box = (*(corners.min(axis=0) - reach), *(corners.max(axis=0) + reach + 1))
        out = frame_planes(frame)
        if out is frame.planes:  # the decoder's, which other sinks draw from too
            out = out.copy()
        i420.draw_in_rgb(out, box, lambda rgb, corner: self._draw(rgb, trail - corner, marks - corner))
        return out

    def _draw(self, image: np.ndarray, trail: np.ndarray, marks: np.ndarray) -> None:
        radius = self.radius
        cv2.polylines(image, [trail.astype(np.int32)], False, (255, 220, 0), max(1, radius // 2), cv2.LINE_AA)
        cv2.circle(image, tuple(int(v) for v in marks[0]), radius, (255, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(image, tuple(int(v) for v in marks[1]), radius * 2, (0, 255, 0), 2, cv2.LINE_AA)


class TrackSink:
    """track.csv row by row; track.json at the end (its points are already in the CSV's order)."""

    name = "track.csv, track.json"

    def __init__(self, ctx):
        self.ctx = ctx
        self.resume = None

    def restore(self, state: dict) -> None:
        self.resume = state

    def checkpoint(self) -> dict:
        return {"csv": durable_size(self.csv_file, self.csv_file.name),
                "json": durable_size(self.json_file, self.json_file.name), "first": self.first}

    def __enter__(self):
        folder, resume = self.ctx.folder, self.resume or {}
        self.csv_file = open_resumable(folder / "track.csv", resume_bytes=resume.get("csv"))
        self.json_file = open_resumable(folder / "track.json", resume_bytes=resume.get("json"))
        self.csv = csv.writer(self.csv_file)
        self.first = resume.get("first", True)
        if self.resume is None:
            self.csv.writerow(["time_s", "frame", "x", "y", "x_smooth", "y_smooth"])
            video = self.ctx.video
            # streamed point by point, so a long video's track never sits in memory
            head = {"width": video.width, "height": video.height, "units": "pixels of the displayed frame",
                    "smoothing": "one-euro"}
            self.json_file.write(json.dumps(head)[:-1] + ', "points": [')
        return self

    def write(self, frame, point: Point | None) -> None:
        if not frame.selected or point is None:
            return
        values = [round(frame.pts_s, 6), frame.index, round(point.x, 2), round(point.y, 2),
                  round(point.x_smooth, 2), round(point.y_smooth, 2)]
        self.csv.writerow([f"{frame.pts_s:.6f}", *values[1:]])  # the same time format as every CSV
        item = json.dumps(dict(zip(("time_s", "frame", "x", "y", "x_smooth", "y_smooth"), values)))
        self.json_file.write(("\n" if self.first else ",\n") + item)
        self.first = False

    def __exit__(self, *exc) -> None:
        self.json_file.write("\n]}\n")
        self.csv_file.close()
        self.json_file.close()
