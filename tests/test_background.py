"""edge/background.py: work handed to a thread, in order, its failures raised in the caller."""

import threading
import time

import pytest

from edge.background import Background
from edge.errors import OutputError


def test_items_are_worked_in_order_and_drain_waits_for_them():
    done = []
    worker = Background(lambda item: (time.sleep(0.001), done.append(item)), name="t", depth=2)
    for i in range(50):
        worker.put(i)
    worker.drain()
    assert done == list(range(50))
    worker.close()


def test_a_failure_is_raised_in_the_caller_as_it_is():
    def work(item):
        if item == 3:
            raise OutputError("cannot write x: disk full")

    worker = Background(work, name="t", depth=1)
    with pytest.raises(OutputError, match="disk full"):
        for i in range(100):  # the next puts raise, however full the queue was
            worker.put(i)
    with pytest.raises(OutputError):
        worker.drain()
    worker.close()


def test_drain_raises_a_failure_of_the_last_item():
    worker = Background(lambda item: 1 / item, name="t")
    worker.put(0)
    with pytest.raises(ZeroDivisionError):
        worker.drain()
    worker.close()


def test_close_drops_what_is_queued_and_returns_promptly():
    started, release, done = threading.Event(), threading.Event(), []

    def work(item):
        started.set()
        release.wait(5)
        done.append(item)

    worker = Background(work, name="t", depth=3)
    for i in range(4):  # one in the work, three queued
        worker.put(i)
    started.wait(5)
    threading.Timer(0.2, release.set).start()
    t = time.monotonic()
    worker.close()
    assert time.monotonic() - t < 2 and done == [0]  # the item in hand finished, the queued ones dropped
