"""Work handed to a thread of its own, in order: the caller goes on while it is done.

The overlay writer encodes this way, so that drawing the next frame overlaps x264's work on the
last one instead of waiting for it: on a small machine the sinks stage is the pipeline's
slowest, and most of its time was spent waiting inside the encoder. A failure in the thread is
raised in the caller, as it is, at its next call; nothing waits forever on a thread that stopped.
"""

import queue
import threading
from collections.abc import Callable

POLL_S = 0.05
_STOP = object()


class Background:
    """Calls `work(item)` for each `put(item)`, in order, in a daemon thread named `name`, at most
    `depth` items behind the caller."""

    def __init__(self, work: Callable, *, name: str, depth: int = 4):
        self._work = work
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item) -> None:
        while True:
            self._raise()
            try:
                self._queue.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def drain(self) -> None:
        """Wait until every item put so far is done; raise the first failure."""
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                self._queue.all_tasks_done.wait(POLL_S)
        self._raise()

    def close(self) -> None:
        """Stop the thread: what is still queued is dropped (the caller is failing, or drained)."""
        self._error = self._error or _Closed()
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=POLL_S)
                break
            except queue.Full:
                continue
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None and not isinstance(self._error, _Closed):
            raise self._error

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            try:
                if self._error is None:  # after a failure, items are only counted off
                    self._work(item)
            except BaseException as err:  # raised in the caller, whatever it is
                self._error = err
            finally:
                self._queue.task_done()
        self._queue.task_done()


class _Closed(Exception):
    """The thread was closed: what is still queued is dropped, not worked on."""
