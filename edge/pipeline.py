"""Stages wired with threads and bounded queues.

A stage is a generator function: the first takes nothing and yields items, the others take
an iterator of the previous stage's items and yield theirs (the last yields nothing). Bounded
queues keep memory flat on any length of video. The first failure sets one stop event; every
queue wait polls it, so all stages unwind promptly (their `with` blocks run, so sinks discard
their files) and the failure is raised as a StageError naming the stage and the frame.
"""

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .errors import EdgeError, StageError

POLL_S = 0.05
_END = object()


class _Stopped(Exception):
    """Raised inside a stage when another stage failed or the run was interrupted."""


@dataclass
class Stage:
    name: str
    fn: Callable[..., Iterator]
    busy_s: float = 0.0  # time inside the stage, queue waits excluded
    cpu_s: float = 0.0  # CPU time of the stage's own thread (not of native pools it hands work to)
    items: int = 0
    last_frame: int | None = None  # index of the last frame the stage took in (or made)
    thread: threading.Thread | None = field(default=None, repr=False)


def frame_index(item) -> int | None:
    """The frame an item is about: a Frame's index, or a batch's last frame."""
    if hasattr(item, "index"):
        return item.index
    frames = getattr(item, "frames", None)
    return frames[-1].index if frames else None


class Pipeline:
    def __init__(self, stages: list[Stage], *, queue_size: int = 4):
        self.stages = stages
        self.queues = [queue.Queue(maxsize=queue_size) for _ in stages[1:]]
        self.stop = threading.Event()
        self.error: StageError | EdgeError | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        for n, stage in enumerate(self.stages):
            inbox = self.queues[n - 1] if n > 0 else None
            outbox = self.queues[n] if n < len(self.queues) else None
            stage.thread = threading.Thread(
                target=self._work, args=(stage, inbox, outbox), name=f"edge-{stage.name}", daemon=True
            )
        for stage in self.stages:
            stage.thread.start()

    def wait(self, on_tick: Callable[[], None] = lambda: None) -> None:
        """Block until every stage ends; raise the first failure. Ctrl-C and SIGTERM arrive here,
        in the main thread, so the short joins keep it responsive; a pipeline waited on in
        another thread (a job among several) is stopped by what `on_tick` raises. `on_tick` is
        called at once, and after every join, so a short run reports (and can be stopped) too."""
        try:
            on_tick()
            for stage in self.stages:
                while stage.thread.is_alive():
                    stage.thread.join(POLL_S * 4)
                    on_tick()
        except BaseException:
            self.abort()
            raise
        if self.error is not None:
            raise self.error

    def abort(self, grace_s: float = 2.0) -> None:
        """Stop every stage and give them `grace_s` to unwind. A stage still inside a long native
        call (one inference batch) is a daemon thread: it cannot outlive the process or write."""
        self.stop.set()
        deadline = time.monotonic() + grace_s
        for stage in self.stages:
            stage.thread.join(max(0.0, deadline - time.monotonic()))

    def _fail(self, stage: Stage, err: BaseException) -> None:
        with self._lock:
            if self.error is None:
                if isinstance(err, EdgeError):  # keeps its own kind and exit code; the CLI adds where
                    err.stage, err.frame_index = stage.name, stage.last_frame
                    self.error = err
                else:
                    self.error = StageError(stage.name, stage.last_frame, err)
                    self.error.__cause__ = err
        self.stop.set()

    def _work(self, stage: Stage, inbox: queue.Queue | None, outbox: queue.Queue | None) -> None:
        started, cpu_started = time.perf_counter(), time.thread_time()
        waited = 0.0

        def take() -> Iterator:
            nonlocal waited
            while True:
                t = time.perf_counter()
                item = self._get(inbox)
                waited += time.perf_counter() - t
                if item is _END:
                    return
                stage.last_frame = frame_index(item)
                yield item

        try:
            outputs = stage.fn(take()) if inbox is not None else stage.fn()
            for item in outputs:
                stage.items += 1
                if inbox is None:
                    stage.last_frame = frame_index(item)
                if outbox is not None:
                    t = time.perf_counter()
                    self._put(outbox, item)
                    waited += time.perf_counter() - t
            if outbox is not None:
                self._put(outbox, _END)
        except _Stopped:
            pass
        except BaseException as err:  # every failure, whatever its type, must stop the others
            self._fail(stage, err)
        finally:
            stage.busy_s = time.perf_counter() - started - waited
            stage.cpu_s = time.thread_time() - cpu_started

    def _get(self, inbox: queue.Queue):
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return inbox.get(timeout=POLL_S)
            except queue.Empty:
                continue

    def _put(self, outbox: queue.Queue, item) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                outbox.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue
