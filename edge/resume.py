"""Checkpoints that let an interrupted run carry on where it stopped (`edge-run --resume`).

Every `--checkpoint-every` seconds of video, at the end of a batch, the sinks stage has each
sink make what it wrote durable and say where it stands (a CSV's size, the overlay's packet
log and times, a timeline's open intervals, a trail), takes the postprocessor's memory as it
was after that batch (biwi's One-Euro filter) and the result the next unselected frames will
show, and writes it all to OUT/<video>/.edge-resume/, the JSON last and atomically. The
partial outputs stay in their staging folders when the run is interrupted, fails, or is
killed outright.

A resumed run first checks that it is the same run (the input's size and time, the models'
hashes, backends and every option that shapes the outputs, edge's version), decodes the
frames up to the checkpoint without converting them (frame selection, timestamps and counts
then go on exactly as in one whole run), cuts each partial file back to its checkpoint size
and carries on. The outputs equal an uninterrupted run's byte for byte: that run takes the
same checkpoints, at the same frames (tests/test_resume.py).
"""

import contextlib
import hashlib
import json
import os
import shutil
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import media, tasks
from .errors import UsageError
from .files import sync

RESUME_DIR = ".edge-resume"
CHECKPOINT = "checkpoint.json"


def fingerprint(path: str) -> dict:
    """What tells a changed input apart, cheaply: its size and modification time (for a folder
    or glob of images, their number, total size and latest time)."""
    images = media.image_sequence(path)
    stats = [os.stat(name) for name in (images if images is not None else [path])]
    return {"path": os.path.abspath(path), "files": len(stats), "bytes": sum(s.st_size for s in stats),
            "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}


def key_of(identity: dict) -> str:
    """A short hash of a run's identity, kept in run.json to recognise a finished run."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _holds(path: Path, size: int) -> bool:
    """Whether `path` is still there, a folder where `size` is -1, else a file of at least `size` bytes."""
    if size < 0:
        return path.is_dir()
    return path.is_file() and path.stat().st_size >= size


def difference(old: dict, new: dict, prefix: str = "") -> str | None:
    """The first setting that differs between two identities, in words; None when they agree."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            if (found := difference(a, b, f"{prefix}{key}.")) is not None:
                return found
        elif a != b:
            return f"{prefix}{key} was {a!r}, now {b!r}"
    return None


@dataclass
class Checkpoint:
    """Where a run stood after a batch, loaded to resume it."""

    position: dict  # the sinks stage's Tally (run/stages.py), as a dict
    models: dict  # per output folder name: staging (folder name), sinks (their states), postprocess
    held: dict  # per output folder name: the result unselected frames show next, or None


class Checkpoints:
    """The resume state of one input's outputs, in OUT/<video>/.edge-resume/."""

    def __init__(self, folder: Path, identity: dict, model_tasks: dict[str, str], *,
                 encoder_threads: int | None = None):
        # one state per set of models, so a run of other models over the same input leaves it be
        self.dir = Path(folder) / RESUME_DIR / "+".join(sorted(model_tasks))
        self.folder = Path(folder)
        self.key = key_of(identity)  # what run.json keeps, to know a finished run of the same command
        # x264's output depends on its threads, so a resume must also encode with as many
        self.identity = json.loads(json.dumps({**identity, "encoder_threads": encoder_threads}))  # lists, not tuples
        self.model_tasks = model_tasks  # output folder name → task, to read held results back
        self.serial = 0  # of the checkpoint last saved or resumed; 0 while there is none
        self.reached_s: float | None = None  # the time of its last frame
        self.resumed: Checkpoint | None = None
        self.stale: list[Path] = []  # an earlier interrupted run's staging folders, which this run replaces
        # The sinks thread saves while the main thread may be deciding, after a stop, whether
        # there is anything to resume: once it has decided, no save may land.
        self._lock = threading.Lock()
        self._abandoned = False

    def open(self, *, resume: bool, notice: Callable[[str], None]) -> None:
        """Take the saved checkpoint to resume from (`resume`), or plan to replace it. UsageError
        when asked to resume a run that was made with other inputs, models or options."""
        saved, problem = self._read()
        name = self.identity["input"]["path"]
        if saved is None:
            if resume:
                notice(f"{name}: nothing to resume{problem}; starting at the beginning")
            return
        stagings = [self.folder / model / record["staging"] for model, record in saved["models"].items()]
        reached = f"{saved['position']['last_time_s']:.2f} s"
        if not resume:
            notice(f"{name}: an interrupted run got to {reached}; this run starts over (add --resume to continue it)")
            self.stale = stagings
            return
        if (changed := difference(saved["identity"], self.identity)) is not None:
            threads_only = changed.startswith("encoder_threads")
            if threads_only:  # x264's output depends on its threads
                changed = "its overlay was being encoded with another --jobs (x264's threads change its output)"
            refused = UsageError(f"cannot resume {name}: {changed}; give the interrupted run's command again, "
                                 f"or leave out --resume to start over")
            refused.threads_only = threads_only  # a Ray worker on a node of other cores starts over instead
            raise refused
        lost = next((str(path) for path in stagings if not path.is_dir()), None)
        lost = lost or next((f"{staging / entry}" for staging, record in zip(stagings, saved["models"].values())
                             for entry, size in record["entries"].items() if not _holds(staging / entry, size)), None)
        if lost is not None:
            notice(f"{name}: cannot resume, {lost} is gone or cut short; starting at the beginning")
            self.stale = stagings
            return
        try:
            held = {model: self._held(model, record["held"]) for model, record in saved["models"].items()}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            notice(f"{name}: cannot resume, its checkpoint is damaged ({err}); starting at the beginning")
            self.stale = stagings
            return
        self.serial, self.reached_s = saved["serial"], saved["position"]["last_time_s"]
        self.resumed = Checkpoint(saved["position"], saved["models"], held)
        notice(f"{name}: resuming after {reached} ({saved['position']['written']} frames done)")

    def _held(self, model: str, file_name: str | None):
        if file_name is None:
            return None
        with np.load(self.dir / file_name, allow_pickle=False) as arrays:
            return tasks.result_from_arrays(self.model_tasks[model], arrays)

    def save(self, position: dict, models: dict, held: dict) -> None:
        """Record a checkpoint: `models` as in Checkpoint.models, `held` per model its result.
        Does nothing once the run was abandoned."""
        with self._lock:
            if self._abandoned:
                return
            serial = self.serial + 1
            self.dir.mkdir(parents=True, exist_ok=True)
            records = {}
            for model, record in models.items():
                held_name = None
                if held[model] is not None:
                    held_name = f"held-{model}-{serial}.npz"
                    with open(self.dir / held_name, "wb") as file:
                        np.savez_compressed(file, **tasks.result_arrays(held[model]))
                        sync(file, self.dir / held_name)
                staging = self.folder / model / record["staging"]
                # what a resume must find there: each entry, each file at least this long
                entries = {p.name: -1 if p.is_dir() else p.stat().st_size for p in staging.iterdir()}
                records[model] = {**record, "held": held_name, "entries": entries}
            checkpoint = {"serial": serial, "identity": self.identity, "position": position, "models": records}
            partial = self.dir / f".{CHECKPOINT}.partial"
            with open(partial, "w") as file:
                json.dump(checkpoint, file)
                sync(file, partial)
            os.replace(partial, self.dir / CHECKPOINT)
            self.serial, self.reached_s = serial, position["last_time_s"]
            for path in self.dir.glob("held-*.npz"):
                if path.stem.rsplit("-", 1)[1] != str(serial):
                    path.unlink()
            self._drop_stale()

    def abandon(self) -> None:
        """The run stopped: after this (which waits for a save under way), `serial` is final."""
        with self._lock:
            self._abandoned = True

    def drop(self) -> None:
        """Forget the resume state: the run finished."""
        shutil.rmtree(self.dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.dir.parent.rmdir()  # when no other set of models has a state there
        self._drop_stale()

    def _drop_stale(self) -> None:
        for staging in self.stale:
            shutil.rmtree(staging, ignore_errors=True)
        self.stale = []

    def _read(self) -> tuple[dict | None, str]:
        try:
            with open(self.dir / CHECKPOINT) as file:
                saved = json.load(file)
        except FileNotFoundError:
            return None, ""
        except (OSError, ValueError) as err:
            return None, f" (its checkpoint cannot be read: {err})"
        if not _well_formed(saved):
            return None, " (its checkpoint is damaged)"
        return saved, ""


def _well_formed(saved) -> bool:
    try:
        return (isinstance(saved["serial"], int) and isinstance(saved["identity"]["input"]["path"], str)
                and isinstance(saved["position"]["written"], int)
                and isinstance(saved["position"]["last_time_s"], float)
                and all({"staging", "held", "entries", "sinks", "postprocess"} <= record.keys()
                        and isinstance(record["entries"], dict) for record in saved["models"].values()))
    except (KeyError, TypeError, AttributeError):
        return False
