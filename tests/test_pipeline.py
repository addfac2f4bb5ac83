import threading
import time

import pytest

from edge.errors import ModelError, StageError
from edge.frames import Frame
from edge.pipeline import Pipeline, Stage


def frames(n):
    def source():
        for i in range(n):
            yield Frame(i, i / 10, None)
    return source


def endless():
    i = 0
    while True:
        yield Frame(i, 0.0, None)
        i += 1


def passthrough(items):
    yield from items


def test_items_flow_in_order_through_every_stage():
    seen = []

    def sink(items):
        seen.extend(f.index for f in items)
        yield from ()

    p = Pipeline([Stage("decode", frames(100)), Stage("a", passthrough), Stage("sinks", sink)], queue_size=2)
    p.start()
    p.wait()
    assert seen == list(range(100))
    assert [s.items for s in p.stages[:2]] == [100, 100]


def test_a_failure_stops_every_stage_and_names_stage_and_frame():
    closed = threading.Event()

    def broken(items):
        for f in items:
            if f.index == 7:
                raise ZeroDivisionError("boom")
            yield f

    def sink(items):
        try:
            for _ in items:
                pass
            yield from ()
        finally:
            closed.set()

    p = Pipeline([Stage("decode", endless), Stage("infer", broken), Stage("sinks", sink)])
    p.start()
    t = time.monotonic()
    with pytest.raises(StageError, match=r"stage 'infer' failed at frame 7: ZeroDivisionError: boom") as info:
        p.wait()
    assert time.monotonic() - t < 5
    assert info.value.exit_code == 6 and isinstance(info.value.__cause__, ZeroDivisionError)
    assert closed.is_set()  # the sink's cleanup ran
    assert not any(s.thread.is_alive() for s in p.stages)


def test_an_edge_error_keeps_its_kind_and_gains_where():
    def bad(items):
        for f in items:
            raise ModelError("model output is wrong")
        yield from ()

    p = Pipeline([Stage("decode", frames(3)), Stage("postprocess", bad)])
    p.start()
    with pytest.raises(ModelError) as info:
        p.wait()
    assert info.value.stage == "postprocess" and info.value.frame_index == 0


def test_a_failing_source_is_reported():
    def source():
        yield Frame(0, 0.0, None)
        raise OSError("disk gone")

    p = Pipeline([Stage("decode", source), Stage("sinks", passthrough)])
    p.start()
    with pytest.raises(StageError, match="stage 'decode' failed at frame 0: OSError"):
        p.wait()


def test_abort_unblocks_stages_waiting_on_full_queues():
    def stuck(items):
        next(items)
        time.sleep(30)  # a slow consumer: the queues before it fill up
        yield from ()

    p = Pipeline([Stage("decode", endless), Stage("slow", passthrough), Stage("sinks", stuck)], queue_size=2)
    p.start()
    time.sleep(0.3)
    t = time.monotonic()
    p.abort(grace_s=1.0)
    assert time.monotonic() - t < 2
    assert not p.stages[0].thread.is_alive() and not p.stages[1].thread.is_alive()


def test_busy_time_excludes_queue_waits():
    def slow_sink(items):
        for _ in items:
            time.sleep(0.02)
        yield from ()

    p = Pipeline([Stage("decode", frames(20)), Stage("sinks", slow_sink)], queue_size=1)
    p.start()
    p.wait()
    decode, sink = p.stages
    assert sink.busy_s >= 0.3 and decode.busy_s < sink.busy_s / 3
