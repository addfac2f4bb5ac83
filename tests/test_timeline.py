import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import UsageError
from edge.timeline import Interval, TimelineBuilder, draw_timeline, intervals_to_rows, write_vtt

# Quarter-second frames keep every time exact in binary floating point.
DT = 0.25


def run(probs, *, times=None, end_s=None, tags=("a",), thresholds=(0.5,), **kw):
    """Feed rows of probabilities (one row per frame, or a 1-D list for a single tag)."""
    probs = np.asarray(probs, dtype=float).reshape(len(probs), -1)
    times = [i * DT for i in range(len(probs))] if times is None else times
    builder = TimelineBuilder(tags, thresholds=thresholds, **kw)
    for t, row in zip(times, probs):
        builder.update(t, row)
    return builder.finish(times[-1] + DT if end_s is None else end_s)


def frames(spec):
    """'..##.' → [0.1, 0.1, 0.9, 0.9, 0.1]: a quick way to write a signal."""
    return [0.9 if c == "#" else 0.1 for c in spec]


def test_clean_event():
    probs = [0.1] * 4 + [0.6, 0.8, 1.0, 0.8] + [0.1] * 12
    (iv,) = run(probs)
    assert iv == Interval("a", 1.0, 2.0, peak=1.0, mean=pytest.approx(0.8), frames=4)
    assert iv.duration_s == 1.0


def test_single_noisy_frame_opens_nothing():
    assert run(frames("........#........")) == []


def test_single_dip_does_not_split():
    probs = frames("....######.######.....")
    probs[10] = 0.0
    (iv,) = run(probs)
    assert (iv.start_s, iv.end_s, iv.frames) == (1.0, 4.25, 13)
    assert iv.mean == pytest.approx((12 * 0.9 + 0.0) / 13)  # the dip's frame counts in the mean


def test_gap_as_long_as_min_duration_splits():
    ivs = run(frames("....####..####...."), min_duration_s=0.5)
    assert [(iv.start_s, iv.end_s) for iv in ivs] == [(1.0, 2.0), (2.5, 3.5)]


def test_bridging_happens_before_dropping():
    # Two 0.25 s blips 0.25 s apart: each is too short, but bridged they last 0.75 s.
    (iv,) = run(frames("....#.#....."), min_duration_s=0.5)
    assert (iv.start_s, iv.end_s, iv.frames) == (1.0, 1.75, 3)


def test_hysteresis_keeps_on_but_does_not_open():
    kw = dict(thresholds=(0.5,), hysteresis=0.1)
    # 0.45 sits between the off level (0.4) and the on level (0.5).
    (iv,) = run([0.1] * 4 + [0.9] * 4 + [0.45] * 8 + [0.3] * 8, **kw)
    assert (iv.start_s, iv.end_s, iv.frames) == (1.0, 4.0, 12)
    assert run([0.45] * 20, **kw) == []
    # Below the off level the interval closes where the signal drops.
    (iv,) = run([0.1] * 4 + [0.9] * 4 + [0.39] * 8, **kw)
    assert iv.end_s == 2.0


def test_per_tag_thresholds():
    probs = [[0.1, 0.1]] * 4 + [[0.6, 0.6]] * 8 + [[0.1, 0.1]] * 4
    ivs = run(probs, tags=("clear", "road"), thresholds=(0.5, 0.7))
    assert [iv.tag for iv in ivs] == ["clear"]


def test_event_running_to_the_end_closes_at_finish():
    (iv,) = run(frames("....########"), end_s=10.0)
    assert (iv.start_s, iv.end_s) == (1.0, 10.0)
    # Still shorter than min_duration_s at the end: dropped like anywhere else.
    assert run(frames("...........#"), end_s=11 * DT + 0.25) == []


def test_variable_frame_rate_each_frame_covers_until_the_next():
    # The off frame at 0.9 covers only [0.9, 1.0): a 0.1 s gap, bridged, though on frames are 0.85 s apart.
    times = [0.0, 0.1, 0.15, 0.9, 1.0, 2.5, 2.6]
    (iv,) = run([0.1, 0.9, 0.9, 0.1, 0.9, 0.1, 0.1], times=times, end_s=3.0)
    assert (iv.start_s, iv.end_s, iv.frames) == (0.1, 2.5, 4)
    # Here the off frame covers [0.3, 1.0): not bridged, and the run [0.1, 0.3) alone is too short.
    times = [0.0, 0.1, 0.15, 0.3, 1.0, 2.5]
    (iv,) = run([0.1, 0.9, 0.9, 0.1, 0.9, 0.1], times=times, end_s=3.0)
    assert (iv.start_s, iv.end_s, iv.frames) == (1.0, 2.5, 1)
    # Sampled at 1 fps, a single on frame covers a whole second, long enough for an interval.
    (iv,) = run([0.1, 0.9, 0.1], times=[0.0, 1.0, 2.0], end_s=3.0)
    assert (iv.start_s, iv.end_s) == (1.0, 2.0)


def test_intervals_sorted_by_start_then_tag():
    probs = [[0.1, 0.1]] * 4 + [[0.9, 0.9]] * 4 + [[0.9, 0.1]] * 4 + [[0.1, 0.1]] * 4
    ivs = run(probs, tags=("road", "clear"), thresholds=(0.5, 0.5))
    assert [(iv.tag, iv.start_s, iv.end_s) for iv in ivs] == [("clear", 1.0, 2.0), ("road", 1.0, 3.0)]


@pytest.mark.parametrize(
    "kw",
    [
        dict(thresholds=(0.5, 0.5)),
        dict(thresholds=(1.5,)),
        dict(thresholds=(0.5,), hysteresis=-0.1),
        dict(thresholds=(0.5,), min_duration_s=-1.0),
        dict(thresholds=(0.5,), min_duration_s=float("nan")),
    ],
)
def test_bad_options_raise(kw):
    with pytest.raises(UsageError, match="must|need"):
        TimelineBuilder(["a"], **kw)


def test_duplicate_tags_raise():
    with pytest.raises(UsageError, match="unique"):
        TimelineBuilder(["a", "a"], thresholds=(0.5, 0.5))


def test_bad_frames_raise():
    builder = TimelineBuilder(["a", "b"], thresholds=(0.5, 0.5))
    builder.update(1.0, np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="increase"):
        builder.update(1.0, np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="probabilities"):
        builder.update(2.0, np.array([0.1]))
    with pytest.raises(ValueError, match="non-finite"):
        builder.update(2.0, np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="before the last frame"):
        builder.finish(0.5)
    assert builder.finish(1.0) == []
    with pytest.raises(RuntimeError):
        builder.update(3.0, np.array([0.1, 0.2]))


def test_vtt_splits_cues_where_the_active_set_changes():
    intervals = [
        Interval("road", 0.5, 2.0, 0.9, 0.8, 10),
        Interval("clear", 1.0, 3.25, 0.9, 0.8, 10),
        Interval("water", 5.0, 3725.5004, 0.9, 0.8, 10),
        Interval("water", 4.0, 4.0004, 0.9, 0.8, 1),  # rounds to zero length: no cue
    ]
    out = io.StringIO()
    write_vtt(out, intervals)
    assert out.getvalue() == (
        "WEBVTT\n\n"
        "00:00:00.500 --> 00:00:01.000\nroad\n\n"
        "00:00:01.000 --> 00:00:02.000\nclear, road\n\n"
        "00:00:02.000 --> 00:00:03.250\nclear\n\n"
        "00:00:05.000 --> 01:02:05.500\nwater\n\n"
    )


def test_vtt_empty():
    out = io.StringIO()
    write_vtt(out, [])
    assert out.getvalue() == "WEBVTT\n\n"


def colored(img):
    """Pixels of the bars: everything else (background, stripes, grid, text) is grey."""
    r, _, b = np.moveaxis(img.astype(int), 2, 0)
    return b - r > 30


def test_draw_timeline_bars_land_in_their_rows():
    tags = ["clear", "road", "water"]
    base = draw_timeline([], tags, duration_s=10.0, width=800)
    assert base.dtype == np.uint8 and base.ndim == 3 and base.shape[1:] == (800, 3)
    assert not colored(base).any()

    def bar_box(intervals):
        ys, xs = np.nonzero(colored(draw_timeline(intervals, tags, duration_s=10.0, width=800)))
        return ys.min(), ys.max(), xs.min(), xs.max()

    top = bar_box([Interval("clear", 2.0, 4.0, 0.9, 0.8, 10)])
    bottom = bar_box([Interval("water", 6.0, 8.0, 0.9, 0.8, 10)])
    assert top[1] < bottom[0]  # the first tag's row lies above the last tag's row
    assert top[3] < bottom[2]  # and the earlier bar lies left of the later one
    assert abs((top[3] - top[2]) - (bottom[3] - bottom[2])) <= 1  # equal durations, equal widths
    assert 0.2 * 800 < top[2] < top[3] < 0.6 * 800  # 2 s..4 s of 10 s, after the label column


def test_draw_timeline_degenerate_inputs():
    for width, img in (
        (1200, draw_timeline([], ["a"], duration_s=0.0)),
        (300, draw_timeline([], [], duration_s=0.0, width=300)),
        (1200, draw_timeline([Interval("a", 0.0, 0.0, 0.9, 0.9, 1)], ["a", "b"], duration_s=0.0)),
        (1200, draw_timeline([Interval("a", 0.0, 5e4, 0.9, 0.9, 1)], ["a"], duration_s=2e5)),  # > 2 days
    ):
        assert img.dtype == np.uint8 and img.shape[1:] == (width, 3)
    with pytest.raises(UsageError, match="width"):
        draw_timeline([], ["a"], duration_s=1.0, width=10)
    with pytest.raises(UsageError, match="duration_s"):
        draw_timeline([], ["a"], duration_s=-1.0)


def test_intervals_to_rows_rounds():
    (row,) = intervals_to_rows([Interval("road", 1.00049, 2.5, 0.912345, 0.7, 12)])
    assert row == dict(tag="road", start_s=1.0, end_s=2.5, duration_s=1.5, peak=0.9123, mean=0.7, frames=12)


def reference(times, probs, end_s, threshold, hysteresis, min_duration_s):
    """The same rules, offline and slow: switch states, runs, bridge, drop."""
    on, states = False, []
    for p in probs:
        on = p >= threshold or (on and p >= threshold - hysteresis)
        states.append(on)
    next_t = list(times[1:]) + [end_s]
    runs = []  # [first, last] on-frame indices
    for i, state in enumerate(states):
        if state and i > 0 and states[i - 1]:
            runs[-1][1] = i
        elif state:
            runs.append([i, i])
    merged = []
    for first, last in runs:
        if merged and times[first] - next_t[merged[-1][1]] < min_duration_s:
            merged[-1][1] = last
        else:
            merged.append([first, last])
    out = []
    for first, last in merged:
        start, end = times[first], next_t[last]
        if end - start >= min_duration_s and end > start:
            inside = probs[first : last + 1]
            out.append((start, end, max(inside), sum(inside) / len(inside), len(inside)))
    return out


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(0.01, 1.0),  # time since the previous frame
            st.floats(0.0, 1.0),
            st.floats(0.0, 1.0),
        ),
        min_size=1,
        max_size=60,
    ),
    thresholds=st.tuples(st.floats(0.05, 1.0), st.floats(0.05, 1.0)),
    hysteresis=st.floats(0.0, 0.3),
    min_duration_s=st.floats(0.0, 2.0),
    tail=st.floats(0.0, 1.0),
)
def test_matches_offline_reference_and_invariants(steps, thresholds, hysteresis, min_duration_s, tail):
    times = list(np.cumsum([dt for dt, _, _ in steps]))
    probs = [[a, b] for _, a, b in steps]
    end_s = times[-1] + tail
    tags = ("x", "y")
    ivs = run(
        probs, times=times, end_s=end_s, tags=tags, thresholds=thresholds,
        hysteresis=hysteresis, min_duration_s=min_duration_s,
    )

    assert ivs == sorted(ivs, key=lambda iv: (iv.start_s, iv.tag))
    for k, tag in enumerate(tags):
        mine = [iv for iv in ivs if iv.tag == tag]
        column = [row[k] for row in probs]
        expected = reference(times, column, end_s, thresholds[k], hysteresis, min_duration_s)
        assert [(iv.start_s, iv.end_s, iv.peak, iv.frames) for iv in mine] == [
            (start, end, peak, n) for start, end, peak, _, n in expected
        ]
        assert [iv.mean for iv in mine] == pytest.approx([mean for _, _, _, mean, _ in expected])
        for iv in mine:
            assert times[0] <= iv.start_s < iv.end_s <= end_s
            assert iv.duration_s >= min_duration_s
            assert iv.peak >= thresholds[k] and iv.mean <= iv.peak + 1e-12
        for a, b in zip(mine, mine[1:]):
            assert b.start_s - a.end_s >= min_duration_s and b.start_s > a.end_s
