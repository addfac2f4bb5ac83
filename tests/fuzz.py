"""A longer fuzzing run than the test suite's, for the README's reliability figures:

    python -m tests.fuzz CASES SEED

Damages the corpus's encoded clips (tests/test_corpus.py SOURCES, two of them with audio) at
random (1 to 40 bytes flipped, half of them also cut short),
runs each through edge-run with the three default models in an isolated worker, and counts the
outcomes. Anything but a success or a clean one-line input error is printed with its file.
"""

import collections
import json
import random
import sys
import tempfile
from pathlib import Path

from tests.isolated import Worker
from tests.makers_clips import make_clip
from tests.test_corpus import SOURCES, TASKS, moving


def damage(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 40)):
        out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    if rng.random() < 0.5:
        out = out[: max(1, int(rng.uniform(0.05, 1.0) * len(out)))]
    return bytes(out)


def outcome_kind(outcome) -> str:
    if outcome.code == 0 and outcome.clean:
        summary = json.loads(outcome.stdout)[0]
        return "processed" + (", corrupt frames counted" if summary["frames"]["corrupt_skipped"] else "") + (
            ", cut short reported" if summary["stopped_early"] or summary["frames"]["read_error"] else "")
    if outcome.code is not None and outcome.clean:
        return f"clean error, exit {outcome.code}"
    return "FAILED: " + (outcome.failure or outcome.stderr.strip().splitlines()[-1])


def main(cases: int, seed: int) -> collections.Counter:
    rng = random.Random(seed)
    folder = Path(tempfile.mkdtemp(prefix="edge-fuzz-"))
    sources = {}
    for name, options in SOURCES.items():
        make_clip(folder / name, moving(24), fps=12, **options)
        sources[name] = (folder / name).read_bytes()
    worker, counts = Worker(timeout_s=90), collections.Counter()
    try:
        for n in range(cases):
            name = rng.choice(sorted(sources))
            path = folder / f"{n}-{name}"
            path.write_bytes(damage(sources[name], rng))
            outcome = worker.run([path, "--task", TASKS, "--out", folder / "out", "--json"])
            kind = outcome_kind(outcome)
            counts[kind] += 1
            if kind.startswith("FAILED") or kind.endswith("exit 6"):  # a stage, not the input, gave up
                print(f"{path}: {kind}: {outcome.stderr.strip()[-300:]}", flush=True)
    finally:
        worker.close()
    return counts


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m tests.fuzz CASES SEED")
    for kind, count in sorted(main(int(sys.argv[1]), int(sys.argv[2])).items(), key=lambda kv: -kv[1]):
        print(f"{count:5d}  {kind}")
