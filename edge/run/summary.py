"""RunSummary: one input's outcome, the typed record that run.json, jobs.json and edge-run's
report are made from.

An input's run is "done" (its run.json holds this record), "skipped" (done by an earlier run
with the same identity, its record read back from run.json), or "failed" (the error line and
exit code jobs.json keeps). `to_json()` gives the dict run.json and `edge-run --json` hold, key
for key as they always have; `from_json()` reads one back.
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Literal


@dataclass(frozen=True)
class FrameCounts:
    decoded: int  # by the decoder, in range or not
    in_range: int  # written: every frame between --start and --end
    processed: int  # selected, and run through the models
    not_selected: int
    corrupt_skipped: int
    corrupt_times_s: list[float]
    last_time_s: float | None
    read_error: str | None  # why reading stopped before the end of the file, if it did


@dataclass(frozen=True)
class Seconds:
    total: float  # wall time
    cpu: float  # the process's CPU time
    stages: dict[str, float]  # each stage's busy time (queue waits left out)

    def to_json(self) -> dict:
        return {"total": self.total, "cpu": self.cpu, **self.stages}

    @classmethod
    def from_json(cls, record: dict) -> "Seconds":
        return cls(record["total"], record["cpu"], {k: v for k, v in record.items() if k not in ("total", "cpu")})


@dataclass(frozen=True)
class Resumed:
    after_frame: int
    after_s: float | None
    frames_before: int  # written before the resume; the run's own figures count only after


@dataclass(frozen=True)
class StoppedEarly:
    """A file cut short: where its frames ran out, before the end its container declares."""

    at_s: float
    expected_end_s: float


@dataclass(frozen=True)
class ModelRecord:
    path: str
    sha256: str
    task: str
    backend: str
    device: str
    producer: str
    producer_version: str
    nonfinite_output: int = 0  # frames whose output held NaN or Inf, which have no result
    nonfinite_times_s: list[float] = field(default_factory=list)  # the first of them


@dataclass(frozen=True)
class RunSummary:
    status: Literal["done", "skipped", "failed"]
    input: str  # the input's full path
    video: dict | None = None  # its stream: number, size, fps, codec, duration, audio codec, rotation
    frames: FrameCounts | None = None
    stopped_early: StoppedEarly | None = None
    resumed: Resumed | None = None
    options: dict | None = None  # every option that shapes the outputs (run.options.RunOptions.record)
    frames_on: str | None = None  # "host", or the torch device frames went to
    encoder: str | None = None  # of the overlay videos, where there are any
    seconds: Seconds | None = None
    stage_cpu_s: dict[str, float] | None = None  # each stage thread's own CPU
    frames_per_s: float | None = None
    processed_per_s: float | None = None
    tool: dict | None = None
    resume_key: str | None = None  # the run's identity, which a rerun compares
    started_at: str | None = None
    finished_at: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # each model's output folder, by name
    models: dict[str, ModelRecord] = field(default_factory=dict)
    error: str | None = None  # a failure's line
    exit_code: int | None = None  # and its exit code
    earlier: bool = False  # a failure recorded by an earlier run, not tried again

    def to_json(self) -> dict:
        if self.status == "failed":
            return {"status": self.status, "input": self.input, "error": self.error, "exit_code": self.exit_code,
                    "earlier": self.earlier, "outputs": self.outputs}
        out = {}
        for f in fields(self):
            if f.name in ("error", "exit_code", "earlier"):
                continue
            value = getattr(self, f.name)
            if f.name == "seconds":
                value = value.to_json()
            elif f.name == "models":
                value = {name: asdict(model) for name, model in value.items()}
            elif hasattr(value, "__dataclass_fields__"):
                value = asdict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, record: dict) -> "RunSummary":
        """A summary as to_json wrote it (the fields of run.json that are its own)."""
        if record["status"] == "failed":
            return cls("failed", record["input"], error=record["error"], exit_code=record["exit_code"],
                       earlier=record["earlier"], outputs=record.get("outputs", {}))
        nested = {"frames": FrameCounts, "stopped_early": StoppedEarly, "resumed": Resumed}
        kept = {f.name: record[f.name] for f in fields(cls) if f.name in record}
        for name, kind in nested.items():
            if kept.get(name) is not None:
                kept[name] = kind(**kept[name])
        kept["seconds"] = Seconds.from_json(kept["seconds"])
        kept["models"] = {name: ModelRecord(**model) for name, model in kept.get("models", {}).items()}
        return cls(**kept)
