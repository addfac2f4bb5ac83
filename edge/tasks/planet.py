"""planet: multi-label tag probabilities → scores, a tag timeline (CSV, JSON, WebVTT, PNG)."""

import csv

import numpy as np

from ..sinks import CsvSink, write_json, write_png
from ..timeline import TimelineBuilder, draw_timeline, intervals_to_rows, write_vtt


WRITES_OVERLAY = False
DRAWS_ON_DEVICE = False
SHIPPED_MODEL_SAW = "textured synthetic aerial tiles"
Result = np.ndarray  # the tag probabilities


def postprocessor(contract, options):
    def decode(raw: np.ndarray, frames, windows) -> list[np.ndarray]:
        scores = raw.reshape(len(windows), -1).astype(np.float32)
        if contract.output == "logits":
            scores = 1 / (1 + np.exp(-scores))
        return list(scores)

    return decode


def thresholds(contract, options) -> list[float]:
    if options.threshold is not None:
        return [options.threshold] * len(contract.classes)
    return list(contract.thresholds)


def sinks(ctx) -> list:
    tags = list(ctx.contract.classes)
    return [
        CsvSink(ctx.folder / "scores.csv", tags, lambda probs: [f"{p:.5f}" for p in probs]),
        TimelineSink(ctx, tags, thresholds(ctx.contract, ctx.options)),
    ]


class TimelineSink:
    """Feeds processed frames to the interval builder; writes the timeline files on success."""

    name = "timeline.csv, timeline.json, tags.vtt, timeline.png"

    def __init__(self, ctx, tags, thresholds):
        self.ctx, self.tags, self.thresholds = ctx, tags, thresholds
        self.builder = TimelineBuilder(tags, thresholds=thresholds, min_duration_s=ctx.options.min_duration_s)
        self.last_pts_s: float | None = None

    def restore(self, state: dict) -> None:
        self.builder.restore(state["builder"])
        self.last_pts_s = state["last_pts_s"]

    def checkpoint(self) -> dict:
        return {"builder": self.builder.state(), "last_pts_s": self.last_pts_s}

    def __enter__(self):
        return self

    def write(self, frame, probs) -> None:
        if frame.selected and probs is not None:
            self.builder.update(frame.pts_s, probs)
        self.last_pts_s = frame.pts_s

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None or self.last_pts_s is None:
            return
        fps = self.ctx.video.fps
        end_s = self.last_pts_s + (1 / fps if fps > 0 else 0.0)
        intervals = self.builder.finish(end_s)
        rows = intervals_to_rows(intervals)
        folder = self.ctx.folder
        with open(folder / "timeline.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["tag", "start_s", "end_s", "duration_s", "peak", "mean", "frames"])
            writer.writeheader()
            writer.writerows(rows)
        write_json(folder / "timeline.json", {
            "tags": self.tags,
            "thresholds": self.thresholds,
            "min_duration_s": self.ctx.options.min_duration_s,
            "end_s": round(end_s, 3),
            "intervals": rows,
        })
        with open(folder / "tags.vtt", "w") as f:
            write_vtt(f, intervals)
        write_png(folder / "timeline.png", draw_timeline(intervals, self.tags, duration_s=end_s))
