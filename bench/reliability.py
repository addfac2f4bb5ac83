"""Whether a figure of edge-bench can be trusted, and measuring it again when it cannot.

A figure is the median of a few timed repeats on a machine other work may share, so three things
make it untrustworthy: repeats that disagree (something took the cores during some of them),
other work taking a share of this process's cores while it ran (every repeat slowed alike, which
the spread does not show), and a headline ratio above its own ceiling (the pipeline faster than
the limit its stages alone set: one of those figures is wrong). A figure found so is measured
again, up to EXTRA_ROUNDS more times; one that stays so keeps its reasons, and the report says
them where it would otherwise print a ✓ or ✗.
"""

from dataclasses import asdict, dataclass, field
from typing import Callable

# The committed reports, measured on a quiet machine, spread up to 1.37× between repeats; past
# 1.5× the median of three is a guess.
SPREAD_LIMIT = 1.5
# Other work taking more than this share of the cores slows every stage measured alone, and
# the pipeline (which uses them all) differently from inference alone, so the ratios drift.
OTHERS_LIMIT = 0.25
# Two medians of a quiet machine differ by a few percent, so a pipeline a little above its
# ceiling is noise; well above it, a figure is wrong.
CEILING_SLACK = 1.05
EXTRA_ROUNDS = 2


@dataclass
class Verdict:
    """How many rounds a figure took, and why it cannot be trusted ([] when it can)."""

    rounds: int = 1
    reasons: list[str] = field(default_factory=list)

    @property
    def reliable(self) -> bool:
        return not self.reasons


def verdict_of(fig: dict) -> Verdict:
    """A figure's verdict as report.json holds it; a figure from before these checks has none."""
    return Verdict(**fig["reliability"]) if "reliability" in fig else Verdict()


def spread_problem(fps_min: float, fps_max: float) -> str | None:
    if fps_min > 0 and fps_max / fps_min > SPREAD_LIMIT:
        return f"repeats spread {fps_min:,.1f}–{fps_max:,.1f} frames/s"
    return None


def load_problem(others_cores: float | None, cores: int, when: str = "during it") -> str | None:
    if others_cores is not None and others_cores > OTHERS_LIMIT * cores:
        return f"other work took {others_cores:.1f} of the {cores} cores {when}"
    return None


def ceiling_problem(ratio: float, ceiling: float) -> str | None:
    if ratio > ceiling * CEILING_SLACK:
        return f"ratio {ratio:.2f} above its ceiling {ceiling:.2f}"
    return None


def problems(fig: dict, cores: int) -> list[str]:
    """Why one measured figure (measure.figures' dict) cannot be trusted."""
    found = (spread_problem(fig["fps_min"], fig["fps_max"]), load_problem(fig.get("others_cores"), cores))
    return [p for p in found if p]


def until_reliable(measure_round: Callable[[int], dict], *, warmup: int, cores: int,
                   again: Callable[[int, int, list[str]], None] = lambda n, of, reasons: None) -> dict:
    """A figure, measured by `measure_round(warmup)` until it can be trusted, at most
    1 + EXTRA_ROUNDS times (the rounds after the first run warm), and no more once other work
    has taken the cores through two rounds in a row: it will through a third, which would only
    repeat them at the same cost. Each round's figure is the median of its repeats, as every
    figure is; of the rounds, the first that can be trusted is kept, else the one with fewest
    reasons and the narrowest spread. `again(n, of, reasons)` hears of each round after the first."""
    rounds = []
    for n in range(1 + EXTRA_ROUNDS):
        if rounds:
            again(n + 1, 1 + EXTRA_ROUNDS, rounds[-1][1])
        fig = measure_round(warmup if n == 0 else 0)
        rounds.append((fig, problems(fig, cores)))
        lasting_load = len(rounds) > 1 and all(load_problem(f.get("others_cores"), cores) for f, _ in rounds[-2:])
        if not rounds[-1][1] or lasting_load:
            break
    fig, reasons = min(rounds, key=lambda r: (len(r[1]), r[0]["fps_max"] / r[0]["fps_min"]))
    return {**fig, "reliability": asdict(Verdict(len(rounds), reasons))}


def named(name: str, fig: dict) -> list[str]:
    return [f"{name}: {reason}" for reason in verdict_of(fig).reasons]


@dataclass
class RunLoad:
    """The machine around a run: the cores other work took in the moment before it, the load
    average then (the figure other tools show, which counts every runnable thread and lags a
    minute), and the cores other work took over the whole run."""

    cores: int
    before_others_cores: float | None
    load_average_before: float | None
    during_others_cores: float | None = None

    def reasons(self) -> list[str]:
        """Why no figure of the run can be trusted, whatever its own checks say."""
        problem = load_problem(self.before_others_cores, self.cores, "just before the run")
        return [problem] if problem else []
