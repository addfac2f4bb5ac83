"""Where a long edge-bench run is, in steps a user can follow.

A step is one thing measured: a figure, or the few a stage gives together (its sinks). The count
runs 1, 2, 3 … without jumps: when a step turns out to have nothing to measure (a backend this
machine lacks), it is taken off the total instead of counted, so the total is always the steps
done plus those still to come. Within a step, the warm-ups, repeats and extra rounds show as
they happen, since one step of a pipeline can take a minute.
"""

import sys


class Progress:
    """On a terminal, one tqdm line: steps done, the step running and where it is in it. In a
    log, one line per step and one per extra round (a figure measured again)."""

    def __init__(self, *, total: int, enabled: bool):
        self.total, self.enabled, self.done, self.label, self.bar = total, enabled, 0, "", None

    def __enter__(self):
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, file=sys.stderr, dynamic_ncols=True,
                            bar_format="{percentage:3.0f}%|{bar:20}| {desc}{postfix} [{elapsed}]")
        return self

    def step(self, label: str) -> None:
        if self.bar is not None and self.done:
            self.bar.update(1)  # the bar counts steps finished; its text names the one running
        self.done += 1
        self.label = label
        if self.bar is not None:
            self.bar.set_description_str(f"step {self.done} of {self.total}: {label[:60]}")
            self.bar.set_postfix_str("")
        elif self.enabled:
            print(f"[{self.done}/{self.total}] {label}", file=sys.stderr, flush=True)

    def detail(self, text: str) -> None:
        """Where the running step is (a warm-up, a repeat): on the terminal line only."""
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def again(self, round_: int, rounds: int, reasons: list[str], what: str = "") -> None:
        """A figure of the running step (`what` of it, where it has several) is measured again, and why."""
        label = f"{self.label}, {what}" if what else self.label
        text = f"{label}: measuring again, round {round_} of {rounds} ({'; '.join(reasons)})"
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif self.enabled:
            print(f"[{self.done}/{self.total}] {text}", file=sys.stderr, flush=True)

    def drop(self, steps: int) -> None:
        """Steps that will not run after all."""
        self.total -= steps
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.set_description_str(f"step {self.done} of {self.total}: {self.label[:60]}")

    def __exit__(self, *exc):
        if self.bar is not None:
            if self.done:
                self.bar.update(1)
            self.bar.close()
