"""edge-bench's report: report.md and two plots from report.json's dict, and the comparison
with an earlier report."""

import json
from pathlib import Path

from edge.errors import OutputError

from .analysis import GOALS, explain, reasons_of, same_config, stages_at
from .reliability import EXTRA_ROUNDS, OTHERS_LIMIT, SPREAD_LIMIT, verdict_of


def figures_flat(report: dict) -> dict[str, float]:
    """Every frames/s figure and headline ratio under a stable name, for comparisons; a report
    from another version may lack some, and those are left out."""
    flat = {}
    for m in report.get("models", []):
        name = m.get("model", "?")
        for decoder, kinds in m.get("decode", {}).items():
            for kind, fig in kinds.items():
                flat[f"{name}: {kind} ({decoder}) fps"] = fig.get("fps")
        for table in ("preprocess", "postprocess"):
            for batch, fig in m.get(table, {}).items():
                flat[f"{name}: {table} b{batch} fps"] = fig.get("fps")
        for row in m.get("inference", []) + m.get("pipeline", []):
            flat[f"{name}: {row.get('stage')} {row.get('backend')} {row.get('precision')} b{row.get('batch')} fps"] = (
                row.get("fps"))
        for sink, fig in m.get("sinks", {}).items():
            flat[f"{name}: sink {sink} fps"] = fig.get("fps")
        for baseline, fig in m.get("baselines", {}).items():
            flat[f"{name}: baseline {baseline} fps"] = fig.get("fps")
        for key, value in ((m.get("headline") or {}).get("ratios") or {}).items():
            flat[f"{name}: pipeline ÷ {key.replace('_', ' ')}"] = value
    return {k: v for k, v in flat.items() if isinstance(v, (int, float))}


def compare(old: dict, new: dict) -> list[tuple[str, float, float, float]]:
    """(figure, old, new, change) for every figure both reports have."""
    before, after = figures_flat(old), figures_flat(new)
    return [(k, before[k], after[k], after[k] / before[k] - 1) for k in after if k in before and before[k]]


def _fig_cells(fig: dict) -> str:
    verdict = verdict_of(fig)
    spread = f"{fig['fps_min']:,.1f}–{fig['fps_max']:,.1f}"
    rounds = f" after {verdict.rounds} rounds" if verdict.rounds > 1 else ""
    if not verdict.reliable:
        spread += f" **unreliable**{rounds}: {'; '.join(verdict.reasons)}"
    elif rounds:
        spread += f" ({verdict.rounds} rounds)"
    return (f"{fig['fps']:,.1f} | {spread} | {fig['ms_per_frame']:.2f} | {fig['cpu_ms_per_frame']:.2f} | "
            f"{fig['cpu_cores_used']:.2f}")


FIG_HEAD = "frames/s | spread | ms/frame | CPU ms/frame | cores used"


def output_folder(path: str) -> Path:
    """--out, made if need be; OutputError where it cannot be."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write to {out}: {err.strerror}; choose another --out") from None
    return out


def machine_name(mach: dict) -> str:
    """The machine the figures belong to, in a line: host, CPU, cores, memory, GPUs."""
    gpus = "; ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in mach["gpus"]) or "no GPU"
    cores = f"{mach['cores']} cores" + (f" of its {mach['cpus']}" if mach.get("cpus", mach["cores"]) != mach["cores"]
                                        else "")
    virtual = ", a virtual machine" if mach.get("virtual") else ""
    return f"{mach.get('host') or 'this machine'} ({mach['cpu']}{virtual}, {cores}, {mach['memory_gb']} GB; {gpus})"


def load_line(load: dict | None) -> str:
    """How busy other work kept the cores around the run; "" for a report from before it was recorded."""
    if not load:
        return ""

    def cores(value):
        return "an unknown share" if value is None else f"{value:.1f}"

    average = "" if load["load_average_before"] is None else f" (load average {load['load_average_before']:.2f})"
    return (f"Other work took {cores(load['before_others_cores'])} of the {load['cores']} cores just before the run"
            f"{average} and {cores(load['during_others_cores'])} on average during it.")


def markdown(report: dict, comparison: list | None = None, old_name: str = "") -> str:
    mach = report["machine"]
    v = mach["versions"]
    lines = [
        f"# edge-bench on {report['video']}",
        "",
        (f"{report['when']}, on {machine_name(mach)}. Every figure here is that machine's, as loaded then: "
         "another machine, or this one busier, gives others. " + load_line(report.get("load"))).strip(),
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        f"First {report['frames']} frames; each figure the median of {report['repeats']} timed repeats after "
        f"{report['warmup']} warm-up(s), spread = slowest–fastest repeat. A figure whose repeats spread over "
        f"{SPREAD_LIMIT:g}× or during which other work took over {OTHERS_LIMIT:.0%} of the cores is measured again, "
        f"up to {EXTRA_ROUNDS} more rounds, and marked unreliable, with why, if it stays so.",
        f"Command: `{report['command']}`",
        "",
        "## Headline",
        "",
        f"Goals: pipeline ÷ inference alone ≥ {GOALS['inference_alone']}, ÷ hand-written loop ≥ "
        f"{GOALS['hand_loop']:g}, ÷ `learn.predict` ≥ {GOALS['learn_predict']:g}. Measured on {machine_name(mach)}.",
        "",
        "| model | task | pipeline frames/s | config | ÷ inference alone | ÷ hand-written loop | ÷ learn.predict | "
        "ceiling ÷ inference alone | limited by | measurement |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [headline_row(m) for m in report["models"]]
    for m in report["models"]:
        lines += ["", *model_section(m, mach["cores"])]
    lines += ["", "![frames/s against batch](fps_vs_batch.png)", "", "![where the time goes](stages.png)"]
    if comparison is not None:
        lines += ["", f"## Against {old_name}", "", "| figure | before | now | change |", "|---|---|---|---|"]
        lines += [f"| {k} | {a:,.2f} | {b:,.2f} | {c:+.1%} |" for k, a, b, c in comparison]
    return "\n".join(lines) + "\n"


def headline_row(m: dict) -> str:
    """A model's line of the headline table: no ✓ or ✗ for a ratio that cannot be trusted, and why."""
    h = m.get("headline")
    if not h:
        return f"| {m['model']} | {m['task']} | no pipeline ran | | | | | | | |"
    r, unreliable = h["ratios"], h.get("unreliable", {})

    def cell(k):
        if k not in r:
            return "not measured"
        mark = "unreliable" if k in unreliable else "✓" if h["goals_met"][k] else "✗"
        ceiling = f" (ceiling {h['ceiling_ratios'][k]:.2f})" if k in h["ceiling_ratios"] else ""
        return f"**{r[k]:.2f}** {mark}{ceiling}"

    def flag(k):
        return " unreliable" if k in unreliable else ""

    reasons = reasons_of(h)
    return (f"| {m['model']} | {m['task']} | {h['pipeline_fps']:,.1f} | {h['backend']} {h['precision']} "
            f"batch {h['batch']}{flag('config')} | {cell('inference_alone')} | {cell('hand_loop')} | "
            f"{cell('learn_predict')} | {h['ceiling_ratio']:.2f}{flag('ceiling')} | {h['limited_by']} | "
            + (f"**unreliable**: {'; '.join(reasons)} |" if reasons else "reliable |"))


def model_section(m: dict, cores: int) -> list[str]:
    h_, w_ = m["input_size"]
    lines = [f"## {m['model']} ({m['task']}, {m['producer']}, input {h_} high x {w_} wide)", ""]
    h = m.get("headline")
    if h:
        alone = stages_at(m, h["batch"], same_config(m["inference"], h))
        lines += [explain(h, {k: s["fps"] for k, s in alone.items()}, cores), ""]
    lines += ["### Stages alone", "", f"Each on the frames made ready beforehand; OpenCV threads "
              f"{m['opencv_threads']}, as the pipeline sets them.", "",
              f"| stage | {FIG_HEAD} |", "|---|---|---|---|---|---|"]
    for decoder, kinds in m["decode"].items():
        for kind, fig in kinds.items():
            lines.append(f"| {kind} ({decoder}) | {_fig_cells(fig)} |")
    for batch, fig in m["preprocess"].items():
        lines.append(f"| preprocess, batch {batch} | {_fig_cells(fig)} |")
    for batch, fig in m["postprocess"].items():
        lines.append(f"| postprocess, batch {batch} | {_fig_cells(fig)} |")
    for sink, fig in m["sinks"].items():
        lines.append(f"| sink: {sink} | {_fig_cells(fig)} |")
    lines += ["", "### Inference alone and the whole pipeline", "",
              f"| stage | backend | precision | batch | device | {FIG_HEAD} | batch latency p50 / p95 ms | GPU |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in m["inference"] + m["pipeline"]:
        head = f"| {row['stage']} | {row['backend']} | {row['precision']} | {row.get('batch', '')} |"
        if "fps" not in row:
            why = f"unavailable: {row['unavailable']}" if "unavailable" in row else f"failed: {row['failed']}"
            lines.append(f"{head} {why} | | | | | | | |")
            continue
        latency = (f"{row['latency_ms_p50']:.2f} / {row['latency_ms_p95']:.2f}" if "latency_ms_p50" in row else "")
        gpu = f"{row['gpu_util_pct']:.0f}% busy, {row['gpu_memory_mb']} MB" if "gpu_util_pct" in row else ""
        lines.append(f"{head} {row['device']} | {_fig_cells(row)} | {latency} | {gpu} |")
    busy = [r for r in m["pipeline"] if "busy_s" in r]
    if busy:
        names = list(busy[0]["thread_cpu_ms_per_frame"])
        lines += ["", "Inside the pipeline, per stage thread: busy seconds (outside queue waits) / CPU ms a frame "
                  "of the thread itself; *native pools* is the CPU of threads no stage owns: onnxruntime's "
                  "workers, the decoder's and x264's.", "",
                  "| pipeline | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for r in busy:
            cells = [f"{r['busy_s'][k]:.2f} s / {r['thread_cpu_ms_per_frame'][k]:.2f}" if k in r["busy_s"]
                     else f"{r['thread_cpu_ms_per_frame'][k]:.2f}" for k in names]
            lines.append(f"| {r['backend']} {r['precision']} batch {r['batch']}, {r['total_s']:.2f} s | "
                         + " | ".join(cells) + " |")
    fp = fp16_gain(m)
    if fp:
        lines += ["", "fp16 ÷ fp32, inference alone: " + ", ".join(f"{k} {v:.2f}×" for k, v in fp.items()) + "."]
    lines += ["", "### Baselines (same frames, same model)", "", f"| way | device | {FIG_HEAD} |",
              "|---|---|---|---|---|---|---|"]
    for name, fig in m["baselines"].items():
        lines.append(f"| {name} | {fig['device']} | {_fig_cells(fig)} |" if "fps" in fig else
                     f"| {name} | | not measured: {fig['unavailable']} | | | | |")
    mem = m.get("memory")
    if mem:
        lines += ["", "Peak resident memory of `edge-run` (fresh process): " + "; ".join(
            f"{run['frames']} frames → {run['peak_rss_mb']:.0f} MB" for run in mem["runs"])
            + (f" (**{mem['growth']:+.1%}** over {mem['runs'][-1]['frames']} frames)" if "growth" in mem else "")
            + "."]
    return lines


def fp16_gain(m: dict) -> dict[str, float]:
    rows = {(r["backend"], r["batch"], r["precision"]): r["fps"] for r in m["inference"] if "fps" in r}
    return {f"{b} batch {n}": rows[(b, n, "fp16")] / rows[(b, n, "fp32")]
            for (b, n, p) in rows if p == "fp16" and (b, n, "fp32") in rows}


def plots(report: dict, folder: Path) -> list[str]:
    """fps_vs_batch.png and stages.png; [] without matplotlib (a device box may lack it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    models = report["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, m in zip(axes[0], models):
        for stage, style in (("inference alone", "-o"), ("pipeline", "--s")):
            rows = [r for r in m["inference"] + m["pipeline"] if r["stage"] == stage and "fps" in r]
            for key in sorted({(r["backend"], r["precision"]) for r in rows}):
                line = sorted((r["batch"], r["fps"]) for r in rows if (r["backend"], r["precision"]) == key)
                ax.plot(*zip(*line), style, label=f"{stage}: {key[0]} {key[1]}")
        ax.set(title=f"{m['model']} ({m['task']})", xlabel="batch", ylabel="frames/s", xscale="log")
        ax.set_xticks(sorted({r["batch"] for r in m["inference"] if "batch" in r}) or [1])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.minorticks_off()
        ax.set_ylim(bottom=0)  # from zero, so the gap between the lines reads as the ratio it is
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "fps_vs_batch.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(len(models), 1, figsize=(8, 3.2 * len(models)), squeeze=False)
    for ax, m in zip(axes[:, 0], models):
        h = m.get("headline")
        if not h:
            continue
        bars = {f"{k} (alone)": s for k, s in stages_at(m, h["batch"], same_config(m["inference"], h)).items()}
        bars["pipeline"] = same_config(m["pipeline"], h)
        bars.update({k: v for k, v in m["baselines"].items() if "fps" in v})
        names = list(bars)[::-1]
        ax.barh(names, [bars[n]["ms_per_frame"] for n in names], color="tab:blue", label="wall ms/frame")
        ax.barh(names, [bars[n]["cpu_ms_per_frame"] for n in names], height=0.35, color="tab:orange",
                label="CPU ms/frame")
        ax.set(title=f"{m['model']}: where the time goes (batch {h['batch']})", xlabel="ms per frame", xscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "stages.png", dpi=100)
    plt.close(fig)
    return ["fps_vs_batch.png", "stages.png"]


def write(report: dict, folder: Path, *, old: dict | None = None, old_name: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    comparison = compare(old, report) if old is not None else None
    report["plots"] = plots(report, folder)
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report, comparison, old_name)
    if not report["plots"]:
        text += "\nPlots: not drawn (matplotlib is not installed).\n"
    (folder / "report.md").write_text(text)
    return folder / "report.md"
