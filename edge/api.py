"""`run()`: one call that streams videos through models into output folders, on this machine
or over a Ray cluster. edge-run (cli.py) is this call with argparse in front.

decode → batch (preprocess the selected frames) → infer → postprocess → sinks, each stage a
thread (see pipeline.py). Several models share one decode; each gets its own output folder.
"""

from . import media, tasks
from .choices import BackendName, Decoder, Device, FramesOn, Precision, Upload
from .inputs import check_some_exist
from .run.jobs import Setup, run_here
from .run.options import CHECKPOINT_S, check_options
from .run.summary import RunSummary


def run(
    inputs: list[str],
    *,
    models: list[str] = (),
    tasks_: list[str] = (),
    out: str = "edge-out",
    batch: int | None = None,
    decoder: Decoder = "pyav",
    stream: int = 0,
    stride: int = 1,
    sample_fps: float | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    backend: BackendName = "auto",
    device: Device | None = None,
    threads: int | None = None,
    precision: Precision | None = None,
    options: tasks.Options = tasks.Options(),
    resume: bool = False,
    force: bool = False,
    retry_failed: bool = False,
    checkpoint_s: float = CHECKPOINT_S,
    upload: Upload = "auto",
    frames_on: FramesOn = "auto",
    jobs: int = 1,
    ray: str | None = None,
    ray_cpus: int | None = None,
    progress=None,
    notice=lambda message: None,
) -> list[RunSummary]:
    """Run every model over every input (see inputs.py for what an input can be); returns one
    RunSummary per input (as its run.json holds it), and keeps OUT/jobs.json (manifest.py).

    An input already done by the same command is skipped (`force` runs it again), as is one that
    failed (`retry_failed` runs it again); with `resume`, one whose run was interrupted carries on
    from its last checkpoint, taken every `checkpoint_s` seconds of video. With several inputs,
    one that fails is recorded and the others go on; a lone input's error is raised. `jobs`
    inputs run side by side; `ray` (auto, or a cluster's address) spreads them over a Ray
    cluster's nodes instead (cluster/driver.py), each worker reserving `ray_cpus` CPUs, or its node's.
    `progress(input, frames written, frames expected)` is called as each input goes."""
    media.check_read_options(decoder=decoder, start_s=start_s, end_s=end_s, stride=stride, sample_fps=sample_fps,
                             stream=stream)
    check_options(batch=batch, options=options, checkpoint_s=checkpoint_s, upload=upload, jobs=jobs, ray=ray,
                  ray_cpus=ray_cpus)
    check_some_exist(inputs)
    setup = Setup(models=tuple(models), tasks_=tuple(tasks_), batch=batch, decoder=decoder, stream=stream,
                  stride=stride, sample_fps=sample_fps, start_s=start_s, end_s=end_s, backend=backend, device=device,
                  threads=threads, precision=precision, options=options, checkpoint_s=checkpoint_s, upload=upload,
                  frames_on=frames_on)
    if ray is not None:
        from .cluster.driver import run_on_ray

        return run_on_ray(ray, inputs, setup, out=out, jobs=jobs, cpus=ray_cpus, force=force,
                          retry_failed=retry_failed, resume=resume, progress=progress, notice=notice)
    return run_here(setup, inputs, out=out, jobs=jobs, force=force, retry_failed=retry_failed, resume=resume,
                    progress=progress, notice=notice)
