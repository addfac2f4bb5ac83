"""`run()`: one call that streams videos through models into output folders, on this machine
or over a Ray cluster. edge-run (cli.py) is this call with argparse in front.

decode → batch (preprocess the selected frames) → infer → postprocess → sinks, each stage a
thread (see pipeline.py). Several models share one decode; each gets its own output folder.
"""

from .inputs import check_some_exist
from .run.jobs import run_here
from .run.options import RunOptions
from .run.summary import RunSummary


def run(inputs: list[str], options: RunOptions = RunOptions(), *, progress=None,
        notice=lambda message: None) -> list[RunSummary]:
    """Run every model over every input (see inputs.py for what an input can be); returns one
    RunSummary per input (as its run.json holds it), and keeps OUT/jobs.json (manifest.py).

    An input already done by the same command is skipped (`options.force` runs it again), as is
    one that failed (`retry_failed` runs it again); with `resume`, one whose run was interrupted
    carries on from its last checkpoint, taken every `checkpoint_s` seconds of video. With
    several inputs, one that fails is recorded and the others go on; a lone input's error is
    raised. `jobs` inputs run side by side; `ray` (auto, or a cluster's address) spreads them
    over a Ray cluster's nodes instead (cluster/driver.py), each worker reserving `ray_cpus`
    CPUs, or its node's. `progress(input, frames written, frames expected)` is called as each
    input goes; `notice(line)` with what the run has to say before and while it goes."""
    check_some_exist(inputs)
    if options.ray is not None:
        from .cluster.driver import run_on_ray

        return run_on_ray(inputs, options, progress=progress, notice=notice)
    return run_here(options, inputs, progress=progress, notice=notice)
