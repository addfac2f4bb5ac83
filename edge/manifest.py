"""OUT/jobs.json: every input of the runs into OUT, with its state, and the whole's figures.

Per input (keyed by its full path): state (pending, running, done, failed, interrupted), its
output folder, the error line and exit code of a failure, when it started and finished, its
frames and frames/s, and the identity of the run that made it (resume_key). The file is
written anew (a line per input), atomically, at every change, so it can be read at any
moment, and a later run into the same OUT reads it to know what is done and what failed; two
runs into one OUT at once keep each other's records.
"""

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from pathlib import Path

from .errors import OutputError

NAME = "jobs.json"
STATES = ("pending", "running", "done", "failed", "interrupted")


class Manifest:
    def __init__(self, root: Path):
        self.path = Path(root) / NAME
        self._lock = threading.Lock()
        self._as_left = None  # the file's identity when this process last read or wrote it
        self._lines: dict[str, str] = {}  # each record's line as last written, while it is unchanged
        self.jobs: dict[str, dict] = self._read()

    def get(self, key: str) -> dict:
        return self.jobs.get(key, {})

    def outputs(self) -> dict[str, str]:
        """Each recorded input's output folder, by input."""
        return {key: job["output"] for key, job in self.jobs.items() if job.get("output")}

    def update(self, key: str, **fields) -> None:
        """Change one input's record. Another edge-run writing into the same OUT is waited for
        (a lock file beside it) and its records kept: under the lock, the file is read again if
        it wrote there since."""
        self.update_many({key: fields})

    def update_many(self, changes: dict[str, dict]) -> None:
        """Change several inputs' records in one writing of the file (which is whole each time,
        so thousands of inputs registered one by one would cost the square of their number)."""
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                lock = open(self.path.with_name(f".{NAME}.lock"), "w")
            except OSError as err:
                raise self._cannot(err) from err
            with lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                # read again only if another run wrote it since: at 10,000 inputs a reading costs more than a writing
                if self._identity() == self._as_left:
                    known = self.jobs
                else:
                    known, self._lines = self._read(), {}
                changed = {key: {**self.jobs.get(key, {}), **fields} for key, fields in changes.items()}
                changed = {key: job for key, job in changed.items() if known.get(key) != job}
                for key in changed:
                    self._lines.pop(key, None)
                self.jobs = {**known, **changed}
                if changed:  # not, say, for a rerun's inputs found done as recorded
                    self._write()

    def totals(self) -> dict:
        """The whole's figures: inputs per state, frames, and frames/s over the jobs' own time."""
        jobs = list(self.jobs.values())
        done = [j for j in jobs if j.get("state") == "done"]
        frames = sum(j.get("frames") or 0 for j in done)
        seconds = sum(j.get("seconds") or 0.0 for j in done)
        return {"inputs": len(jobs), **{state: sum(j.get("state") == state for j in jobs) for state in STATES},
                "frames": frames, "seconds": round(seconds, 3),
                "frames_per_s": round(frames / seconds, 2) if seconds else None}

    def _identity(self) -> tuple | None:
        """The file as it is now, told apart from every other writing of it (each is a new file)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    def _read(self) -> dict[str, dict]:
        try:
            self._as_left = self._identity()
            jobs = json.loads(self.path.read_text())["jobs"]
            if isinstance(jobs, dict) and all(isinstance(job, dict) for job in jobs.values()):
                return jobs
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError):
            pass
        # damaged beyond use: kept aside for whoever wants to look, and rebuilt from here on
        with contextlib.suppress(OSError):
            os.replace(self.path, self.path.with_name(NAME + ".damaged"))
        return {}

    def _write(self) -> None:
        # a line per input: as easy to read and grep as indented JSON, and json's C encoder
        # (which indenting turns off) makes it ten times quicker to write; unchanged lines are kept
        for key, job in self.jobs.items():
            if key not in self._lines:
                self._lines[key] = f"    {json.dumps(key)}: {json.dumps(job)}"
        records = ",\n".join(self._lines[key] for key in self.jobs)
        text = f'{{\n  "jobs": {{\n{records}\n  }},\n  "totals": {json.dumps(self.totals())}\n}}\n'
        try:
            fd, partial = tempfile.mkstemp(prefix=f".{NAME}.", dir=self.path.parent)
            with os.fdopen(fd, "w") as file:
                file.write(text)
            os.chmod(partial, 0o644)
            os.replace(partial, self.path)
            self._as_left = self._identity()
        except OSError as err:
            raise self._cannot(err) from err

    def _cannot(self, err: OSError) -> OutputError:
        return OutputError(f"cannot write to {self.path.parent}: {err.strerror or err}; choose another --out")
