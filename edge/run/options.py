"""What a run is given besides its inputs: RunOptions, checked when made."""

import dataclasses
import math
from dataclasses import dataclass

from .. import backends, media, tasks, writer
from ..choices import BackendName, Decoder, Device, FramesOn, Precision, Upload, check_choice, words
from ..errors import UsageError


# How much video an interrupted run may have to do again; each checkpoint also starts the
# overlay's encoder afresh on a keyframe, as x264 does every 250 frames anyway.
CHECKPOINT_S = 10.0


UPLOADS = words(Upload)


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Everything a run is given besides its inputs: what it loads, how it reads and processes,
    where its outputs go, and at what scale. Checked when made (UsageError), so that no run
    starts with options that cannot work; a Ray worker is given the same record."""

    models: tuple[str, ...] = ()  # model files; none: the default model of each of task_names
    task_names: tuple[str, ...] = ()  # with models, a check on their tasks
    out: str = "edge-out"
    batch: int | None = None  # None: the backend's own
    decoder: Decoder = "pyav"
    stream: int = 0
    stride: int = 1
    sample_fps: float | None = None
    start_s: float | None = None
    end_s: float | None = None
    backend: BackendName = "auto"
    device: Device | None = None
    ort_threads: int | None = None  # onnxruntime's and torch's intra-op threads; None: fit to the machine
    precision: Precision | None = None
    task_options: tasks.Options = tasks.Options()
    checkpoint_s: float = CHECKPOINT_S
    upload: Upload | None = "auto"  # None once the models are loaded and frames stay on the host
    frames_on: FramesOn = "auto"
    jobs: int = 1  # inputs side by side
    ray: str | None = None  # a Ray cluster's address, or auto
    ray_cpus: int | None = None
    resume: bool = False
    force: bool = False
    retry_failed: bool = False

    def __post_init__(self):
        object.__setattr__(self, "models", tuple(map(str, self.models)))
        object.__setattr__(self, "task_names", tuple(self.task_names))
        media.check_read_options(decoder=self.decoder, start_s=self.start_s, end_s=self.end_s, stride=self.stride,
                                 sample_fps=self.sample_fps, stream=self.stream)
        self._check()

    def record(self) -> dict:
        """What shapes the outputs, once the models are loaded and the batch and upload are the
        ones they imply (run.jobs.load_jobs): part of a run's identity, kept in run.json."""
        return {"decoder": self.decoder, "batch": self.batch, "stride": self.stride, "sample_fps": self.sample_fps,
                "start_s": self.start_s, "end_s": self.end_s, **dataclasses.asdict(self.task_options),
                "precision": self.precision, "checkpoint_s": self.checkpoint_s, "upload": self.upload,
                "frames_on": self.frames_on}

    def _check(self) -> None:
        """UsageError for the first option out of range, or options that cannot go together."""
        if self.batch is not None and self.batch < 1:
            raise UsageError(f"--batch must be 1 or more, got {self.batch}")
        task = self.task_options
        if not 0 <= task.alpha <= 1:
            raise UsageError(f"--alpha must be between 0 and 1, got {task.alpha}")
        if task.threshold is not None and not 0 <= task.threshold <= 1:
            raise UsageError(f"--threshold must be between 0 and 1, got {task.threshold}")
        if task.preset not in writer.X264_PRESETS:
            raise UsageError(f"--preset {task.preset!r} is not an x264 preset; "
                             f"allowed: {', '.join(writer.X264_PRESETS)}")
        if task.min_duration_s < 0:
            raise UsageError(f"--min-duration must be 0 or more seconds, got {task.min_duration_s}")
        if not 0 < self.checkpoint_s < math.inf:
            raise UsageError(f"--checkpoint-every must be a positive number of seconds, got {self.checkpoint_s}")
        if self.upload is not None:
            check_choice("upload", self.upload, UPLOADS)
        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise UsageError(f"--jobs must be 1 or more, got {self.jobs!r}")
        if self.ray_cpus is not None and self.ray is None:
            raise UsageError("--ray-cpus goes with --ray: it is the CPUs each Ray worker reserves")
        if self.ray_cpus is not None and (not isinstance(self.ray_cpus, int) or self.ray_cpus < 1):
            raise UsageError(f"--ray-cpus must be 1 or more, got {self.ray_cpus!r}")

    @property
    def cuda(self) -> bool:
        """Whether its models run on a GPU."""
        engines = any(path.endswith(".engine") for path in self.models)
        return backends.default_device("tensorrt" if engines else self.backend, self.device).startswith("cuda")
