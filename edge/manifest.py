"""OUT/jobs.json: every input of the runs into OUT, with its state, and the whole's figures.

Per input (keyed by its full path): state (pending, running, done, failed, interrupted), its
output folder, the error line and exit code of a failure, when it started and finished, its
frames and frames/s, and the identity of the run that made it (resume_key). The file is
written anew, atomically, at every change, so it can be read at any moment, and a later run
into the same OUT reads it to know what is done and what failed.
"""

import json
import os
import threading
from pathlib import Path

from .errors import OutputError

NAME = "jobs.json"
STATES = ("pending", "running", "done", "failed", "interrupted")


class Manifest:
    def __init__(self, root: Path):
        self.path = Path(root) / NAME
        self._lock = threading.Lock()
        try:
            self.jobs: dict[str, dict] = json.loads(self.path.read_text())["jobs"]
        except (OSError, ValueError, KeyError, TypeError):
            self.jobs = {}  # none yet, or one damaged beyond use: it is rebuilt from this run

    def get(self, key: str) -> dict:
        return self.jobs.get(key, {})

    def update(self, key: str, **fields) -> None:
        with self._lock:
            self.jobs[key] = {**self.jobs.get(key, {}), **fields}
            self._write()

    def totals(self) -> dict:
        """The whole's figures: inputs per state, frames, and frames/s over the jobs' own time."""
        jobs = list(self.jobs.values())
        done = [j for j in jobs if j.get("state") == "done"]
        frames = sum(j.get("frames", 0) for j in done)
        seconds = sum(j.get("seconds", 0.0) for j in done)
        return {"inputs": len(jobs), **{state: sum(j.get("state") == state for j in jobs) for state in STATES},
                "frames": frames, "seconds": round(seconds, 3),
                "frames_per_s": round(frames / seconds, 2) if seconds else None}

    def _write(self) -> None:
        partial = self.path.with_name(f".{NAME}.partial")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"jobs": self.jobs, "totals": self.totals()}, indent=2) + "\n")
            os.replace(partial, self.path)
        except OSError as err:
            raise OutputError(f"cannot write to {self.path.parent}: {err.strerror or err}; "
                              f"choose another --out") from err
