"""The worker side of `--ray` (cluster.py): a Ray actor that loads the models once and runs the
inputs it is given as run.jobs.Jobs does at home, each as a stream of events back to the driver,
and the form errors take to cross from one to the other.
"""

import dataclasses
import os
import queue
import threading
import time
from pathlib import Path

from .. import errors
from ..errors import EdgeError, Interrupted, UsageError, user_line
from ..inputs import Job as InputJob
from ..run.jobs import load_jobs, replacing_notice
from ..run.options import RunOptions

PROGRESS_S = 0.5  # between two progress events of one input


class Relay:
    """jobs.json as a worker sees it: one input's record, whose changes go back to the driver."""

    def __init__(self, key: str, record: dict, send):
        self.key, self.record, self.send = key, dict(record), send

    def get(self, key: str) -> dict:
        return self.record if key == self.key else {}

    def update(self, key: str, **fields) -> None:
        self.record.update(fields)
        self.send(("record", fields))

    def update_many(self, changes: dict[str, dict]) -> None:
        for key, fields in changes.items():
            self.update(key, **fields)


def remote_error(err: BaseException) -> tuple[str, str, int]:
    """An error as it crosses from a worker to the driver: its kind, its line and its exit code."""
    if isinstance(err, EdgeError):
        return type(err).__name__, user_line(err), err.exit_code
    return ("EdgeError", f"internal error on a Ray worker, {type(err).__name__}: {errors.last_line(err)} "
                         f"(please report it)", 1)


def rebuilt(kind: str, line: str, exit_code: int) -> EdgeError:
    """The driver's copy of a worker's error: the same line, exit code and, where simple, class."""
    cls = getattr(errors, kind, EdgeError)
    if not (isinstance(cls, type) and issubclass(cls, EdgeError)) or cls in (Interrupted, errors.StageError):
        cls = EdgeError  # their constructors take other arguments than a line
    err = cls(line)
    err.exit_code = exit_code
    return err


class Worker:
    """A Ray actor: the models loaded once; each `process` call runs one input and is a stream
    of events: ("record", fields), ("progress", written, expected), ("notice", line), and last
    ("summary", summary), ("stopped", resumable) or ("error", remote_error)."""

    def __init__(self, options: RunOptions, cpus: float, jobs: int):
        import ray

        self.where = f"{ray.util.get_node_ip_address()} pid {os.getpid()}"
        self.notices: list[str] = []
        self.error = None
        cores = max(1, int(cpus))
        try:
            self.jobs = load_jobs(options, None, progress=None, notice=self.notices.append, ort_threads=cores)
        except EdgeError as err:
            self.error = remote_error(err)
            return
        self.jobs.codec_threads = max(1, cores // jobs)  # the decoder's and encoder's, of each input side by side
        if all(m.backend.device == "cpu" for m in self.jobs.models):
            import cv2

            cv2.setNumThreads(1)  # as machine.opencv_threads does, for this process's whole life

    def ready(self) -> dict:
        return {"error": self.error, "notices": self.notices, "where": self.where}

    def stop(self) -> None:
        """Running inputs stop at their next tick, keeping their checkpoints; none start."""
        if self.error is None:
            self.jobs.cancel.set()

    def process(self, job: InputJob, record: dict, *, attempt: int, lone: bool, force: bool, retry_failed: bool,
                resume: bool):
        events = queue.SimpleQueue()
        sent, latest = [0.0], [None]

        def progress(key: str, written: int, expected: int | None) -> None:
            latest[0] = ("progress", written, expected)
            if time.monotonic() - sent[0] >= PROGRESS_S:
                sent[0] = time.monotonic()
                events.put(latest[0])

        # a lone input's error is the run's, as at home: it comes back as the error event
        jobs = dataclasses.replace(self.jobs, manifest=Relay(job.key, record, events.put), progress=progress,
                                   notice=lambda line: events.put(("notice", line)), lone=lone)
        folder = Path(record["output"])  # the driver gave it
        worker = threading.Thread(target=self.run_input, name="edge-ray-input", daemon=True,
                                  args=(jobs, job, folder, events, attempt, force, retry_failed, resume))
        worker.start()
        while True:
            event = events.get()
            if event[0] in FINAL:
                if latest[0] is not None:
                    yield latest[0]  # the last count, which the throttle may have held back
                yield event
                break
            yield event
        worker.join()

    @staticmethod
    def run_input(jobs, job, folder, events, attempt, force, retry_failed, resume) -> None:
        """One input planned, prepared, registered and run, as at home; its outcome the last event."""
        plan = None
        try:
            plan = jobs.plan(job, folder=folder, force=force, retry_failed=retry_failed or resume)
            if plan.known is None:
                try:
                    # an input its dead worker left is carried on from its checkpoint, if any
                    jobs.prepare(plan, resume=resume or attempt > 1)
                except UsageError as refused:
                    # its checkpoint was made with as many x264 threads as another node's cores gave
                    if resume and not getattr(refused, "threads_only", False):
                        raise
                    jobs.notice(f"{str(refused).split('; ')[0]} on this worker; it starts over")
                    jobs.prepare(plan, resume=False)
                replacing_notice([plan], jobs.notice)
                jobs.register([plan])
            events.put(("summary", jobs.execute(plan)))
        except Interrupted:
            events.put(("stopped", bool(plan and plan.checkpoints and plan.checkpoints.serial)))
        except BaseException as err:  # the whole run's error (an input's own is in its summary)
            events.put(("error", remote_error(err)))


FINAL = ("summary", "stopped", "error")  # the events that end an input's stream
