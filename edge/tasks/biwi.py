"""biwi: one face-centre point per frame → a smoothed track (CSV, JSON) and an overlay with a trail."""

import csv
import json
import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ModelError
from ..sinks import OverlaySink

TRAIL_S = 1.0  # the overlay's trail shows this many seconds of the smoothed track


@dataclass(slots=True)
class Point:
    x: float
    y: float
    x_smooth: float
    y_smooth: float


class OneEuro:
    """The One-Euro filter (Casiez et al., CHI 2012): little lag when the point moves fast,
    little jitter when it is still. Works with uneven time steps (VFR, --sample-fps)."""

    def __init__(self, *, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.t = self.x = self.dx = None

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        return 1 / (1 + 1 / (2 * math.pi * cutoff * dt))

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
    height, width = contract.input_size
    smoother = OneEuro(min_cutoff=1.0, beta=0.05)

    def decode(raw: np.ndarray, frames, windows) -> list[Point]:
        if raw.size != 2 * len(windows):
            raise ModelError(f"biwi model output has shape {raw.shape}; expected one (x, y) point per image")
        points = raw.reshape(len(windows), 2).astype(np.float64)
        if contract.point_convention == "xy_minus1_1":
            points = (points + 1) / 2 * np.array([width, height])
        results = []
        for point, frame, window in zip(points, frames, windows):
            x, y = window.to_frame(point)
            sx, sy = smoother(frame.pts_s, np.array([x, y]))
            results.append(Point(float(x), float(y), float(sx), float(sy)))
        return results

    return decode


def sinks(ctx) -> list:
    return [TrackSink(ctx), OverlaySink(ctx, Trail().draw)]


class Trail:
    def __init__(self):
        self.points: deque[tuple[float, Point]] = deque()
        self.last: Point | None = None

    def draw(self, frame, point: Point) -> np.ndarray:
        image, t = frame.image, frame.pts_s
        if point is not self.last:
            self.points.append((t, point))
            self.last = point
        while self.points and self.points[0][0] < t - TRAIL_S:
            self.points.popleft()
        out = image.copy()
        radius = max(3, image.shape[0] // 100)
        trail = np.array([[p.x_smooth, p.y_smooth] for _, p in self.points], np.int32)
        cv2.polylines(out, [trail], False, (255, 220, 0), max(1, radius // 2), cv2.LINE_AA)
        cv2.circle(out, (round(point.x), round(point.y)), radius, (255, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(out, (round(point.x_smooth), round(point.y_smooth)), radius * 2, (0, 255, 0), 2, cv2.LINE_AA)
        return out


class TrackSink:
    """track.csv row by row; track.json at the end (its points are already in the CSV's order)."""

    name = "track.csv, track.json"

    def __init__(self, ctx):
        self.ctx = ctx

    def __enter__(self):
        self.csv_file = open(self.ctx.folder / "track.csv", "w", newline="")
        self.json_file = open(self.ctx.folder / "track.json", "w")
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(["time_s", "frame", "x", "y", "x_smooth", "y_smooth"])
        video = self.ctx.video
        # streamed point by point, so a long video's track never sits in memory
        head = {"width": video.width, "height": video.height, "units": "pixels of the displayed frame",
                "smoothing": "one-euro"}
        self.json_file.write(json.dumps(head)[:-1] + ', "points": [')
        self.first = True
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
