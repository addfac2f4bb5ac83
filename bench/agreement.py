"""Do fp16 and fp32 agree? Each model run over one clip at both precisions, outputs compared.

    python -m bench.agreement CLIP --model M.onnx [--model ...] [--device cuda] [--out DIR]

Runs `edge-run` twice per model (camvid with --save-masks), then compares what users get:
camvid's class of every pixel of every processed frame, planet's tags at the model's
thresholds per frame, biwi's point per frame in pixels. Writes agreement.json and
agreement.md in DIR; the goals (issue 6) are camvid pixels >= 99%, planet tag sets >= 99% of
frames, biwi points within 1 px.
"""

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from edge import tasks
from edge.api import run
from edge.run.options import RunOptions

GOALS = {"camvid": ("pixels_equal", 0.99), "planet": ("frames_same_tags", 0.99), "biwi": ("max_px", 1.0)}


def compare(task: str, fp32: Path, fp16: Path) -> dict:
    """The agreement of two output folders of one model over one input (fp32 first)."""
    if task == "camvid":
        equal = total = 0
        for mask in sorted((fp32 / "masks").glob("*.png")):
            a = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
            b = cv2.imread(str(fp16 / "masks" / mask.name), cv2.IMREAD_UNCHANGED)
            equal, total = equal + int((a == b).sum()), total + a.size
        return {"frames": len(list((fp32 / "masks").glob("*.png"))), "pixels_equal": equal / total}
    # A frame with a row in one table only (its output was NaN or Inf in the other) disagrees.
    table = "scores.csv" if task == "planet" else "track.csv"
    a, b = (_rows(folder / table) for folder in (fp32, fp16))
    frames, common = a.keys() | b.keys(), sorted(a.keys() & b.keys())
    if task == "planet":
        thresholds = json.loads((fp32 / "timeline.json").read_text())["thresholds"]
        same = sum((a[f][2:] >= thresholds).tolist() == (b[f][2:] >= thresholds).tolist() for f in common)
        gaps = [np.abs(a[f][2:] - b[f][2:]).max() for f in common]
        return {"frames": len(frames), "frames_same_tags": same / len(frames),
                "max_score_difference": float(max(gaps, default=0.0))}
    distance = np.array([np.hypot(*(a[f][2:4] - b[f][2:4])) for f in common])
    return {"frames": len(frames), "max_px": float(distance.max()) if len(common) == len(frames) else math.inf,
            "within_1px": float((distance <= 1).sum() / len(frames))}


def _rows(path: Path) -> dict[int, np.ndarray]:
    """A CSV's rows by frame index (its second column)."""
    with open(path, newline="") as f:
        return {int(row[1]): np.array([float(v) for v in row]) for row in list(csv.reader(f))[1:]}


def met(task: str, figures: dict) -> bool:
    key, goal = GOALS[task]
    return figures[key] <= goal if key == "max_px" else figures[key] >= goal


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clip")
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--backend", default="auto")
    p.add_argument("--out", type=Path, default=Path("bench/results/gpu"))
    args = p.parse_args(argv)
    results = {}
    for model in args.model:
        folders = {}
        for precision in ("fp32", "fp16"):
            (summary,) = run([args.clip], RunOptions(
                models=[model], out=str(args.out / "agreement" / precision), backend=args.backend, device=args.device,
                precision=precision, task_options=tasks.Options(save_masks=True)))
            (name,) = summary.outputs
            folders[precision] = (Path(summary.outputs[name]), summary.models[name])
        task = folders["fp32"][1].task
        figures = compare(task, folders["fp32"][0], folders["fp16"][0])
        results[model] = {"task": task, "backends": {k: v[1].device for k, v in folders.items()}, **figures,
                          "goal": f"{GOALS[task][0]} {'<=' if task == 'biwi' else '>='} {GOALS[task][1]}",
                          "met": met(task, figures)}
    (args.out / "agreement.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# fp16 against fp32", "", "| model | task | frames | agreement | goal | met |",
             "|---|---|---|---|---|---|"]
    for model, r in results.items():
        key = GOALS[r["task"]][0]
        lines.append(f"| {Path(model).name} | {r['task']} | {r['frames']} | {key} {r[key]:.4f} | {r['goal']} | "
                     f"{'yes' if r['met'] else 'NO'} |")
    (args.out / "agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["met"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
