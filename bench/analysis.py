"""The headline of a model's measurements, and the physical limit behind it.

The pipeline runs its stages in parallel threads, so it can go no faster than its slowest
stage alone, and no faster than the cores can supply the CPU time all stages need per frame.
The lower of the two is the ceiling; the report compares the pipeline with it, so a ratio
below the goal comes with the stage or the resource that stands in the way, and one above it
says that a figure it rests on is wrong.
"""

from .measure import significant
from .reliability import ceiling_problem, named, verdict_of

GOALS = {"inference_alone": 0.85, "hand_loop": 2.0, "learn_predict": 3.0}
BASELINES = {"hand loop": "hand_loop", "learn.predict": "learn_predict"}


def best_pipeline(result: dict) -> dict | None:
    rows = [r for r in result["pipeline"] if "fps" in r]
    return max(rows, key=lambda r: r["fps"]) if rows else None


def same_config(rows: list[dict], row: dict) -> dict | None:
    keys = ("backend", "precision", "batch")
    return next((r for r in rows if "fps" in r and all(r[k] == row[k] for k in keys)), None)


def stages_at(result: dict, batch: int, inference: dict) -> dict[str, dict]:
    """The pipeline's stages alone, as the pipeline runs them (PyAV decoder, one batch size)."""
    return {
        "decode": result["decode"]["pyav"][result["pipeline_decode"]],
        "preprocess": result["preprocess"][str(batch)],
        "inference": inference,
        "postprocess": result["postprocess"][str(batch)],
        "sinks": result["sinks"]["all sinks"],
    }


def headline(result: dict, cores: int, before: list[str] = ()) -> dict | None:
    """The best pipeline against inference alone and the baselines, with the ceiling; `before`:
    why the machine could not be trusted before the run (see unreliable)."""
    best = best_pipeline(result)
    if best is None:
        return None
    alone = same_config(result["inference"], best)
    stages = stages_at(result, best["batch"], alone)
    slowest = min(stages, key=lambda k: stages[k]["fps"])
    cpu_ms = sum(s["cpu_ms_per_frame"] for s in stages.values())
    cpu_ceiling = cores * 1000 / cpu_ms
    ceiling = min(stages[slowest]["fps"], cpu_ceiling)
    out = {
        "backend": best["backend"], "precision": best["precision"], "batch": best["batch"],
        "pipeline_fps": best["fps"], "inference_alone_fps": alone["fps"],
        "ratios": {"inference_alone": significant(best["fps"] / alone["fps"])},
        "slowest_stage": slowest, "slowest_stage_fps": stages[slowest]["fps"],
        "cpu_ms_per_frame_all_stages": round(cpu_ms, 3), "cpu_ceiling_fps": round(cpu_ceiling, 2),
        "ceiling_fps": round(ceiling, 2), "ceiling_ratio": significant(ceiling / alone["fps"]),
        "limited_by": slowest if stages[slowest]["fps"] <= cpu_ceiling else "cpu",
        "share_of_ceiling": significant(best["fps"] / ceiling),
    }
    out["ceiling_ratios"] = {}
    for name, key in BASELINES.items():
        baseline = result["baselines"].get(name, {})
        if "fps" in baseline:
            out["ratios"][key] = significant(best["fps"] / baseline["fps"])
            out["ceiling_ratios"][key] = significant(ceiling / baseline["fps"])
            out.setdefault("baseline_cpu", {})[key] = {"cpu_ms_per_frame": baseline["cpu_ms_per_frame"],
                                                        "cores_used": baseline["cpu_cores_used"]}
    out["inference_cpu_ms_per_frame"] = alone["cpu_ms_per_frame"]
    out["inference_cores_used"] = alone["cpu_cores_used"]
    out["goals_met"] = {k: v >= GOALS[k] for k, v in out["ratios"].items()}
    out["unreliable"] = unreliable(result, out, stages, list(before))
    for key in out["unreliable"].keys() & out["goals_met"].keys():
        out["goals_met"][key] = None  # a goal cannot be met, nor missed, by a figure that is wrong
    return out


def unreliable(result: dict, h: dict, stages: dict[str, dict], before: list[str]) -> dict[str, list[str]]:
    """Why each headline ratio, the ceiling and the choice of configuration cannot be trusted, for
    those that cannot: a ratio by the machine's load before the run, by being above its ceiling,
    or by the reasons of the pipeline's figure or its own denominator's; the ceiling by those of
    the stages alone; the configuration by other pipeline figures that cannot be trusted (one of
    them may be the fastest)."""
    labels = {"inference_alone": "inference alone", **{key: name for name, key in BASELINES.items()}}
    denominators = {"inference_alone": stages["inference"],
                    **{key: result["baselines"].get(name, {}) for name, key in BASELINES.items()}}
    ceilings = {"inference_alone": h["ceiling_ratio"], **h["ceiling_ratios"]}
    pipeline = named("pipeline", same_config(result["pipeline"], h))
    out = {}
    for key, ratio in h["ratios"].items():
        above = ceiling_problem(ratio, ceilings[key])
        out[key] = [*before, *([above] if above else []), *pipeline, *named(labels[key], denominators[key])]
    out["ceiling"] = [reason for name, fig in stages.items() for reason in named(f"{name} alone", fig)]
    others = sum(1 for row in result["pipeline"] if "fps" in row and row is not same_config(result["pipeline"], h)
                 and not verdict_of(row).reliable)
    if others:
        out["config"] = [f"{others} other pipeline figure{'s' if others > 1 else ''} unreliable, so the fastest "
                         "configuration may be another"]
    return {key: reasons for key, reasons in out.items() if reasons}


def reasons_of(h: dict) -> list[str]:
    """Every reason the headline gives for not trusting it, each once, in order."""
    return list(dict.fromkeys(reason for reasons in h.get("unreliable", {}).values() for reason in reasons))


def above_ceiling(h: dict) -> str | None:
    """Why the headline is wrong where the pipeline is faster than its ceiling, else None."""
    return ceiling_problem(h["ratios"]["inference_alone"], h["ceiling_ratio"])


def explain(h: dict, stage_fps: dict[str, float], cores: int) -> str:
    """One paragraph: what the pipeline reached, and what stands in the way when a goal is missed."""
    ratio = h["ratios"]["inference_alone"]
    alone = ", ".join(f"{k} {v:,.0f}" for k, v in stage_fps.items())
    reasons = reasons_of(h)
    text = f"**Unreliable:** {'; '.join(reasons)}. " if reasons else ""
    text += (f"The pipeline runs {h['pipeline_fps']:,.1f} frames/s, {ratio:.2f} of inference alone "
            f"({h['inference_alone_fps']:,.1f}). Stages alone, frames/s: {alone}. Together they need "
            f"{h['cpu_ms_per_frame_all_stages']:.2f} ms of CPU a frame, so {cores} cores pass at most "
            f"{h['cpu_ceiling_fps']:,.0f} frames/s; ")
    if h["limited_by"] == "cpu":
        text += "the CPU is the limit"
    else:
        text += f"the slowest stage, {h['limited_by']}, is the limit"
    text += (f": a ceiling of {h['ceiling_fps']:,.1f} frames/s, {h['ceiling_ratio']:.2f} of inference alone. "
             f"The pipeline reaches {h['share_of_ceiling']:.0%} of that ceiling"
             + (", which it cannot: a figure it rests on is wrong." if above_ceiling(h) else "."))
    if ratio < GOALS["inference_alone"] and h["ceiling_ratio"] < GOALS["inference_alone"]:
        others = h["cpu_ms_per_frame_all_stages"] - h["inference_cpu_ms_per_frame"]
        text += (f" A ratio of {GOALS['inference_alone']} is out of reach here: inference alone already keeps "
                 f"{h['inference_cores_used']:.1f} of {cores} cores busy, so the {others:.2f} ms of CPU a frame "
                 f"the other stages need comes out of the model's share.")
    for name, key in BASELINES.items():
        if key in h["ratios"] and h["ratios"][key] < GOALS[key]:
            if h["ceiling_ratios"][key] < GOALS[key]:
                theirs = h["baseline_cpu"][key]
                text += (f" Against {name} the goal of {GOALS[key]:g}× is out of reach: even at its ceiling the "
                         f"pipeline would be {h['ceiling_ratios'][key]:.2f}× as fast. The {name} baseline itself keeps "
                         f"{theirs['cores_used']:.1f} of {cores} cores busy, so no arrangement of the work in "
                         f"threads can beat it by much; only less CPU a frame can, and the pipeline's stages need "
                         f"{h['cpu_ms_per_frame_all_stages']:.2f} ms against its {theirs['cpu_ms_per_frame']:.2f}.")
            else:
                text += (f" Against {name} the ceiling would allow {h['ceiling_ratios'][key]:.2f}×; the pipeline "
                         f"falls short of it by the {1 - h['share_of_ceiling']:.0%} it loses to running its stages "
                         f"side by side on shared cores.")
    return text
