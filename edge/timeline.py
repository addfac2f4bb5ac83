"""Per-frame tag probabilities → intervals per tag, streamed; plus WebVTT, a picture and table rows.

Time model: frame i at time t_i covers [t_i, t_{i+1}), the last frame covers until the end time
given to `finish`. Every duration below is measured on that model, so frame rate and sampling
(variable frame rate, every n-th frame) need no special case: a frame simply counts for longer.
"""

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from itertools import groupby
from typing import Sequence, TextIO

import cv2
import numpy as np

from .errors import UsageError


@dataclass(frozen=True)
class Interval:
    tag: str
    start_s: float
    end_s: float
    peak: float  # max probability over the interval's frames
    mean: float  # mean probability over the interval's frames, bridged dips included
    frames: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class _Track:
    """One tag's state: the hysteresis switch and the interval that may still grow."""

    def __init__(self, tag: str, on_at: float, off_below: float, min_duration_s: float):
        self.tag, self.on_at, self.off_below, self.min_duration_s = tag, on_at, off_below, min_duration_s
        self.on = False
        self.start: float | None = None  # start of the pending interval; None before the first on frame
        # Sums run over every frame since `start`, so a bridged dip is already counted; the snapshot
        # taken where the latest on-run ended is what the interval gets if no later run is bridged.
        self.peak, self.total, self.frames = -math.inf, 0.0, 0
        self.end, self.snapshot = 0.0, (-math.inf, 0.0, 0)

    def step(self, t: float, p: float) -> Interval | None:
        """Feed one frame; returns the pending interval if this frame proves it can grow no more."""
        on = p >= self.on_at or (self.on and p >= self.off_below)
        done = None
        if on and not self.on and (self.start is None or t - self.end >= self.min_duration_s):
            done = self._interval()
            self.start, self.peak, self.total, self.frames = t, -math.inf, 0.0, 0
        if self.on and not on:
            self.end, self.snapshot = t, (self.peak, self.total, self.frames)
        if self.start is not None:
            self.peak, self.total, self.frames = max(self.peak, p), self.total + p, self.frames + 1
        self.on = on
        return done

    STATE = ("on", "start", "peak", "total", "frames", "end", "snapshot")

    def state(self) -> dict:
        return {name: getattr(self, name) for name in self.STATE}

    def restore(self, state: dict) -> None:
        for name in self.STATE:
            setattr(self, name, state[name])
        self.snapshot = tuple(self.snapshot)

    def close(self, end_s: float) -> Interval | None:
        if self.on:
            self.end, self.snapshot = end_s, (self.peak, self.total, self.frames)
        return self._interval()

    def _interval(self) -> Interval | None:
        if self.start is None:
            return None
        duration = self.end - self.start
        if duration < self.min_duration_s or duration <= 0:
            return None
        peak, total, frames = self.snapshot
        return Interval(self.tag, self.start, self.end, peak, total / frames, frames)


class TimelineBuilder:
    """Streams (time, probabilities) frames into intervals per tag; memory grows with intervals only.

    Per tag, a hysteresis switch turns on at p >= threshold and off at p < threshold - hysteresis.
    A run is a maximal stretch of frames with the same switch state; its duration runs from its
    first frame's time to the time of the first frame after it (`finish`'s end_s for the last run),
    i.e. each frame covers until the next one. Then, in this order:
      1. an off-run shorter than min_duration_s between two on-runs is bridged: the two runs and
         the gap become one interval, and the gap's frames count in its mean, peak and frames;
      2. an interval (after bridging) shorter than min_duration_s, or of zero length, is dropped.
    So a lone noisy frame neither opens nor closes an interval, while a flicker whose gaps are all
    short becomes one interval. An interval's end_s is the time of the first frame after its last
    on frame, or finish's end_s if the tag is still on at the end.
    """

    def __init__(
        self,
        tags: Sequence[str],
        *,
        thresholds: Sequence[float],
        hysteresis: float = 0.05,
        min_duration_s: float = 0.5,
    ):
        if len(set(tags)) != len(tags):
            raise UsageError(f"tags must be unique, got {list(tags)}")
        if len(thresholds) != len(tags):
            raise UsageError(f"need one threshold per tag: {len(tags)} tags, {len(thresholds)} thresholds")
        if not all(0.0 <= th <= 1.0 for th in thresholds):
            raise UsageError(f"thresholds must be in [0, 1], got {list(thresholds)}")
        if not 0.0 <= hysteresis <= 1.0:
            raise UsageError(f"hysteresis must be in [0, 1], got {hysteresis}")
        if not 0.0 <= min_duration_s < math.inf:
            raise UsageError(f"min_duration_s must be in [0, inf), got {min_duration_s}")
        self._tracks = [_Track(tag, th, th - hysteresis, min_duration_s) for tag, th in zip(tags, thresholds)]
        self._done: list[Interval] = []
        self._last_t = -math.inf
        self._finished = False

    def update(self, t: float, probs: np.ndarray) -> None:
        """One frame at time t (seconds, strictly after the previous frame) with one probability per tag."""
        if self._finished:
            raise RuntimeError("update() after finish()")
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (len(self._tracks),):
            raise ValueError(f"expected {len(self._tracks)} probabilities, got shape {probs.shape}")
        if not t > self._last_t:
            raise ValueError(f"frame times must increase strictly: {t} after {self._last_t}")
        if not np.isfinite(probs).all():  # a NaN would silently poison the means
            raise ValueError(f"non-finite probability at t={t}: {probs}")
        self._last_t = t
        for track, p in zip(self._tracks, probs.tolist()):
            if (interval := track.step(t, p)) is not None:
                self._done.append(interval)

    def state(self) -> dict:
        """Everything a later `restore` needs to go on as if never stopped, as plain JSON values
        (infinities included, which Python's json writes and reads)."""
        if self._finished:
            raise RuntimeError("state() after finish()")
        return {"tracks": [track.state() for track in self._tracks], "last_t": self._last_t,
                "done": [dataclasses.asdict(interval) for interval in self._done]}

    def restore(self, state: dict) -> None:
        for track, track_state in zip(self._tracks, state["tracks"], strict=True):
            track.restore(track_state)
        self._last_t = state["last_t"]
        self._done = [Interval(**interval) for interval in state["done"]]

    def finish(self, end_s: float) -> list[Interval]:
        """Close at the video's end and return every interval, sorted by (start_s, tag)."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        if not end_s >= self._last_t:
            raise ValueError(f"end_s {end_s} is before the last frame at {self._last_t}")
        self._finished = True
        self._done += [iv for track in self._tracks if (iv := track.close(end_s)) is not None]
        return sorted(self._done, key=lambda iv: (iv.start_s, iv.tag))


def _ms(t: float) -> int:
    return round(t * 1000)


def _vtt_time(ms: int) -> str:
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def write_vtt(file: TextIO, intervals: Sequence[Interval]) -> None:
    """WebVTT with a cue per stretch where the set of active tags is constant and not empty.

    Tags in a cue are listed alphabetically, so the text depends only on the set. Times are
    rounded to ms first, so an interval that rounds to nothing adds no cue and no cue is empty.
    """
    # At equal times the order of edges does not matter: the whole group is applied before reading the set.
    edges = sorted(
        [(_ms(iv.start_s), 1, iv.tag) for iv in intervals] + [(_ms(iv.end_s), -1, iv.tag) for iv in intervals]
    )
    file.write("WEBVTT\n\n")
    count: Counter[str] = Counter()  # a Counter, not a set, so overlapping intervals of one tag still work
    cue_start = 0
    cue_tags: tuple[str, ...] = ()
    for ms, group in groupby(edges, key=lambda edge: edge[0]):
        for _, step, tag in group:
            count[tag] += step
        tags = tuple(sorted(tag for tag, n in count.items() if n > 0))
        if tags != cue_tags:
            if cue_tags:
                file.write(f"{_vtt_time(cue_start)} --> {_vtt_time(ms)}\n{', '.join(cue_tags)}\n\n")
            cue_start, cue_tags = ms, tags


_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TITLE_H, _ROW_H, _AXIS_H, _PAD = 32, 22, 34, 10
_BACKGROUND, _STRIPE, _GRID, _INK = (255, 255, 255), (242, 242, 242), (215, 215, 215), (40, 40, 40)
_BAR = np.array([31, 119, 180], dtype=np.float64)  # a blue that stays readable when faded
_TICK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def _tick_label(t: float, span: float) -> str:
    if span < 60:
        return f"{t:g}s"
    h, rest = divmod(round(t), 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if span >= 3600 else f"{rest // 60}:{rest % 60:02d}"


def draw_timeline(
    intervals: Sequence[Interval],
    tags: Sequence[str],
    *,
    duration_s: float,
    width: int = 1200,
    title: str = "timeline",
) -> np.ndarray:
    """RGB uint8 picture: one row per tag (in `tags` order), a bar per interval whose colour deepens
    with its peak probability, a time axis and a title. Intervals of tags not in `tags` are not drawn.
    The array is RGB: convert with cv2.cvtColor(img, cv2.COLOR_RGB2BGR) before cv2.imwrite."""
    if not 0.0 <= duration_s < math.inf:
        raise UsageError(f"duration_s must be in [0, inf), got {duration_s}")
    if width < 300:
        raise UsageError(f"width must be at least 300 pixels, got {width}")
    # Never divide by zero: an empty video still gets axes, and bars past duration_s still fit.
    span = max([duration_s, *(iv.end_s for iv in intervals)]) or 1.0
    label_w = max([cv2.getTextSize(tag, _FONT, 0.45, 1)[0][0] for tag in tags], default=0)
    left = min(label_w + 2 * _PAD, width // 3)  # a very long tag name is clipped, not the plot
    plot_w = width - left - 2 * _PAD
    top = _TITLE_H
    img = np.full((top + len(tags) * _ROW_H + _AXIS_H, width, 3), _BACKGROUND, np.uint8)

    def x_of(t: float) -> int:
        return left + round(min(max(t, 0.0), span) / span * plot_w)

    for i, tag in enumerate(tags):
        y = top + i * _ROW_H
        if i % 2:
            cv2.rectangle(img, (0, y), (width - 1, y + _ROW_H - 1), _STRIPE, cv2.FILLED)
        cv2.putText(img, tag, (_PAD, y + _ROW_H - 7), _FONT, 0.45, _INK, 1, cv2.LINE_AA)

    max_ticks = plot_w / 100  # a tick label every ~100 px stays readable
    step = next((s for s in _TICK_STEPS if span / s <= max_ticks), 3600 * math.ceil(span / max_ticks / 3600))
    bottom = top + len(tags) * _ROW_H
    for k in range(int(span / step + 1e-9) + 1):
        x = x_of(k * step)
        cv2.line(img, (x, top), (x, bottom + 4), _GRID, 1)
        label = _tick_label(k * step, span)
        text_w = cv2.getTextSize(label, _FONT, 0.4, 1)[0][0]
        cv2.putText(img, label, (x - text_w // 2, bottom + 20), _FONT, 0.4, _INK, 1, cv2.LINE_AA)
    cv2.line(img, (left, bottom), (left + plot_w, bottom), _INK, 1)

    rows = {tag: i for i, tag in enumerate(tags)}
    for iv in intervals:
        if iv.tag not in rows:
            continue
        y = top + rows[iv.tag] * _ROW_H
        strength = 0.3 + 0.7 * min(max(iv.peak, 0.0), 1.0)  # faint but visible even at a low peak
        color = tuple(int(c) for c in _BAR * strength + np.array(_BACKGROUND) * (1 - strength))
        x0, x1 = x_of(iv.start_s), x_of(iv.end_s)
        cv2.rectangle(img, (x0, y + 4), (max(x1 - 1, x0), y + _ROW_H - 5), color, cv2.FILLED)

    header = f"{title}  |  {len(tags)} tags, {len(intervals)} intervals, {_tick_label(duration_s, span)}"
    cv2.putText(img, header, (_PAD, 22), _FONT, 0.55, _INK, 1, cv2.LINE_AA)
    return img


def intervals_to_rows(intervals: Sequence[Interval]) -> list[dict]:
    """Plain dicts for CSV/JSON writers: times rounded to ms, probabilities to 4 decimals."""
    return [
        {
            "tag": iv.tag,
            "start_s": round(iv.start_s, 3),
            "end_s": round(iv.end_s, 3),
            "duration_s": round(iv.duration_s, 3),
            "peak": round(iv.peak, 4),
            "mean": round(iv.mean, 4),
            "frames": iv.frames,
        }
        for iv in intervals
    ]
