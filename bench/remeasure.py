"""A headline above its ceiling, measured again.

The pipeline cannot outrun its ceiling, so a headline above it rests on a wrong figure: most
often inference alone, measured while other work took a core, so that it reads slow and the
ratio reads high. Inference alone and the pipeline at the headline's configuration are measured
again (each with its own rounds), at most EXTRA_ROUNDS times; a headline still above its ceiling
says so (analysis.unreliable).
"""

from edge.run.stages import batch_frames
from edge.model import Contract

from . import analysis, stages
from .reliability import EXTRA_ROUNDS


def settled_headline(setup: stages.Setup, contract: Contract, result: dict, before: list[str], *,
                     device: str | None, threads: int | None) -> dict | None:
    """The model's headline, once no longer above its ceiling or measured again as often as it may."""
    h = analysis.headline(result, setup.cores, before)
    for n in range(EXTRA_ROUNDS):
        problem = h and analysis.above_ceiling(h)
        if not problem:
            break
        setup.progress.again(n + 2, 1 + EXTRA_ROUNDS, [problem], "inference alone and the pipeline")
        config = {"backend": h["backend"], "precision": h["precision"], "batch": h["batch"]}
        file = stages.model_file(result["path"], h["backend"])
        loaded = stages.load_backend(file, device=device, threads=threads, contract=contract, **config)
        batches = list(batch_frames(setup.frames, [setup.model], h["batch"]))
        replace_row(result["inference"], {"stage": "inference alone", **config,
                                          **stages.inference(setup, loaded, batches)})
        loaded = None  # let go of it, so that emptying the GPU cache frees its memory for the pipeline
        stages.release_gpu_cache()
        replace_row(result["pipeline"], stages.pipeline_row(setup, file, device=device, threads=threads, **config))
        h = analysis.headline(result, setup.cores, before)
    return h


def replace_row(rows: list[dict], row: dict) -> None:
    """Put a figure measured again in the place of the one of its configuration."""
    if "fps" in row:
        rows[rows.index(analysis.same_config(rows, row))] = row
