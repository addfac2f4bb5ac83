"""Each stage of `edge-run` alone, then the whole pipeline, on the same first N frames.

Stages alone run edge's own code (media.read_frames, stages.batch_frames / postprocess /
write_sinks, the task's sinks, the backends) one after another on data made ready beforehand,
so each figure is that stage's cost and nothing else's. The pipeline figure is `api.run`
over the same frames, every stage in its own thread, model loading not counted.
"""

import itertools
import os
import shutil
import sys
import tempfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from edge import backends, media, tasks
from edge import api
from edge.run.models import Model
from edge.run.options import RunOptions
from edge.run import stages as run_stages
from edge.run.stages import Batch, batch_frames, sinks_alone
from edge.run.summary import RunSummary
from edge.errors import EdgeError, last_line, user_line
from edge.model import Contract, parse

from .measure import GpuSampler, LoadMeter, Sample, each_timed, figures, significant, timed
from .progress import Progress
from .reliability import until_reliable

FILES = {"onnxruntime": (".onnx",), "torch": (".pt2",), "tensorrt": (".engine", ".onnx")}
NOTHING_SELECTED = 10**9  # a stride no clip reaches: only the first frame gets converted
# read_frames' options for each way of decoding measured
DECODE_KINDS = {"decode": dict(pixels="selected", stride=NOTHING_SELECTED), "decode + RGB": dict(pixels="all"),
                "decode + planes": dict(pixels="planes")}


class Unavailable(Exception):
    """A backend or precision this machine cannot run; the message says why."""


@dataclass
class Setup:
    """What every measurement of one model shares."""

    video: str
    info: media.VideoInfo
    frames: list  # the first N frames, decoded once, every one selected
    model: Model  # the contract's side of the model: preprocessing, postprocessing, sinks
    options: tasks.Options
    repeats: int
    warmup: int
    work: Path  # scratch folder for the outputs of sinks and pipeline runs
    cores: int  # the share of them other work takes is judged against these
    progress: Progress  # hears of each warm-up and repeat, and of each figure measured again

    @property
    def end_s(self) -> float:
        """Just after the last frame, so the pipeline stops where the frames alone stop."""
        return self.frames[-1].pts_s + 1e-3

    def measure(self, work, *, warm=None, what: str = "") -> dict:
        """`work` timed, and timed again while the figure cannot be trusted; `what` names it
        where the running step measures several."""
        def one_round(warmup: int) -> dict:
            timing = timed(work, frames=len(self.frames), repeats=self.repeats, warmup=warmup, warm=warm,
                           tick=self.progress.detail)
            return figures(timing.samples, timing.others_cores)

        return self.rounds(one_round, what)

    def rounds(self, measure_round, what: str = "") -> dict:
        """A figure, from `measure_round(warmup)`, measured again while it cannot be trusted."""
        return until_reliable(measure_round, warmup=self.warmup, cores=self.cores,
                              again=lambda n, of, reasons: self.progress.again(n, of, reasons, what))

    def scratch(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.work))


def first_frames(video: str, n: int, pixels: str) -> list:
    with closing(media.read_frames(video, pixels=pixels)) as frames:
        return list(itertools.islice(frames, n))


def decode(setup: Setup, *, decoder: str, kind: str) -> dict:
    """Our decoder over the N frames: "decode" leaves them in the decoder's own format (PyAV's
    frames, OpenCV's grab without retrieve), "decode + RGB" converts every frame, "decode +
    planes" copies out the I420 planes (PyAV)."""
    def work():
        frames = media.read_frames(setup.video, decoder=decoder, **DECODE_KINDS[kind])
        with closing(frames):
            for _ in itertools.islice(frames, len(setup.frames)):
                pass

    return setup.measure(work)


def preprocess(setup: Setup, batch: int) -> tuple[dict, list]:
    """Figures of the batching stage, and the batches it made (inference and postprocessing use them)."""
    made = []

    def work():
        batches, seconds = each_timed(batch_frames(setup.frames, [setup.model], batch))
        made[:] = batches
        return seconds

    return setup.measure(work), made


def model_file(path: str, backend: str) -> str:
    """The file `backend` runs for the model at `path`: itself, or a sibling with its extension."""
    stem, ext = os.path.splitext(path)
    wanted = FILES[backend]
    if ext.lower() in wanted:
        return path
    for other in wanted:
        if os.path.isfile(stem + other):
            return stem + other
    hint = " (edge-export --torch-program writes one)" if backend == "torch" else ""
    raise Unavailable(f"{backend} runs {' or '.join(wanted)} files; there is no {Path(stem).name}{wanted[0]} "
                      f"beside {Path(path).name}{hint}")


def load_backend(path: str, *, backend: str, device: str | None, precision: str, batch: int, threads: int | None,
                 contract: Contract):
    """The backend, or Unavailable with why; a sibling file must carry the model's own contract."""
    try:
        loaded = backends.load(path, backend=backend, device=device, precision=precision, batch=batch,
                               threads=threads)
        same = parse(loaded.metadata, source=path) == contract
    except (EdgeError, ImportError) as err:
        raise Unavailable(last_line(err)) from None
    if not same:
        raise Unavailable(f"{Path(path).name} carries another contract than the model measured")
    return loaded


def release_gpu_cache() -> None:
    """torch keeps the GPU memory a backend freed; the next backend's GPU figures must not count it."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def inference(setup: Setup, loaded, batches: list) -> dict:
    """The backend alone on the preprocessed batches, with GPU use on CUDA; there, as the
    pipeline runs it, on batches already on the GPU, without copies either way."""
    inputs = [b.inputs[setup.model.preprocess_key] for b in batches]
    if loaded.tensor_device == "cuda":
        import torch

        inputs = [torch.from_numpy(x).cuda() for x in inputs]

        def run(x):
            out = loaded.run_tensor(x)
            torch.cuda.synchronize()  # the batch's time is its work's, not its queueing's
            return out
    else:
        run = loaded.run

    def work():
        return each_timed(run(x) for x in inputs)[1]

    def one_round(warmup: int) -> dict:
        for n in range(warmup):  # before sampling: warm-up is where engines allocate
            setup.progress.detail(f"warm-up {n + 1}/{warmup}")
            work()
        with GpuSampler(enabled=loaded.device.startswith("cuda")) as gpu:
            timing = timed(work, frames=len(setup.frames), repeats=setup.repeats, warmup=0,
                           tick=setup.progress.detail)
        return {**figures(timing.samples, timing.others_cores), **gpu.figures(), "device": loaded.device}

    return setup.rounds(one_round)


def outputs(setup: Setup, loaded, batches: list) -> list:
    """One pass of raw outputs, for postprocessing."""
    return [loaded.run(b.inputs[setup.model.preprocess_key]) for b in batches]


def postprocess(setup: Setup, batches: list, outputs: list) -> tuple[dict, list]:
    """The task's decoding of raw outputs into results in frame pixels; returns the batches
    with their results (as the sinks get them)."""
    name = setup.model.folder_name
    done = []

    def fresh():  # postprocess consumes each batch's output, so every repeat gets new ones
        for b, out in zip(batches, outputs):
            yield Batch(b.frames, inputs=dict(b.inputs), windows=b.windows, outputs={name: out})

    def work():
        done[:], seconds = each_timed(run_stages.postprocess(fresh(), [setup.model], setup.options))
        return seconds

    return setup.measure(work), done


def sinks(setup: Setup, finished: list) -> dict[str, dict]:
    """Each of the task's sinks alone (opening, every frame, closing: encoding included), then
    all of them as the sinks stage runs them."""
    contract, name = setup.model.contract, setup.model.folder_name
    module = tasks.module(contract.task)
    start_s = max(0.0, setup.info.start_s)
    pairs = [(f, r) for b in finished for f, r in zip(b.frames, b.results[name])]

    # each repeat writes into a folder of its own, left for the scratch folder's removal, so
    # deleting files is not timed
    def one(index: int):
        def work():
            ctx = tasks.SinkContext(setup.scratch(), contract, setup.info, setup.options, start_s, setup.end_s)
            with module.sinks(ctx)[index] as sink:
                for frame, result in pairs:
                    sink.write(frame, result)
        return work

    probe = tasks.SinkContext(setup.work, contract, setup.info, setup.options, start_s, setup.end_s)
    result = {s.name: setup.measure(one(i), what=s.name) for i, s in enumerate(module.sinks(probe))}

    def together():  # with the checkpoints a run takes
        sinks_alone(finished, setup.model, setup.scratch(), setup.info, setup.options, end_s=setup.end_s)

    result["all sinks"] = setup.measure(together, what="all sinks")
    return result


def pipeline_row(setup: Setup, file: str, *, backend: str, device: str | None, precision: str, batch: int,
                 threads: int | None) -> dict:
    """The pipeline's row of the report: its figures, or why it failed."""
    row = {"stage": "pipeline", "backend": backend, "precision": precision, "batch": batch}
    try:
        row.update(pipeline(setup, file, backend=backend, device=device, precision=precision, batch=batch,
                            threads=threads))
    except EdgeError as err:
        row["failed"] = user_line(err)
    return row


def pipeline(setup: Setup, model_path: str, *, backend: str, device: str | None, precision: str, batch: int,
             threads: int | None) -> dict:
    """`api.run` over the N frames, as `edge-run --end` would; the run's own clock, which
    starts after the model is loaded."""
    runs = []

    def work():
        out = setup.scratch()
        (summary,) = api.run([setup.video], RunOptions(
            models=[model_path], out=str(out), batch=batch, end_s=setup.end_s, backend=backend, device=device,
            precision=precision, ort_threads=threads, task_options=setup.options))
        shutil.rmtree(out)
        runs.append(summary)

    def one_round(warmup: int) -> dict:
        for n in range(warmup):
            setup.progress.detail(f"warm-up {n + 1}/{warmup}")
            work()
        runs.clear()
        with GpuSampler(enabled=backends.default_device(backend, device) == "cuda") as gpu, LoadMeter() as load:
            for n in range(setup.repeats):
                setup.progress.detail(f"repeat {n + 1}/{setup.repeats}")
                work()
        return {**pipeline_figures(runs, load.others_cores), **gpu.figures()}

    return setup.rounds(one_round)


def pipeline_figures(runs: list[RunSummary], others_cores: float | None) -> dict:
    """The figures of a round of pipeline runs, and the stage breakdown of its median run."""
    samples = [Sample(s.seconds.total, s.seconds.cpu, s.frames.processed) for s in runs]
    result = figures(samples, others_cores)
    rates = [s.processed_per_s for s in runs]
    typical = runs[sorted(range(len(runs)), key=rates.__getitem__)[len(runs) // 2]]
    stages = ("decode", "preprocess", "infer", "postprocess", "sinks")
    result["busy_s"] = {k: typical.seconds.stages[k] for k in stages}
    result["total_s"] = typical.seconds.total
    processed = typical.frames.processed
    threads = {k: typical.stage_cpu_s[k] for k in stages}
    threads["native pools"] = typical.seconds.cpu - sum(threads.values())
    result["thread_cpu_ms_per_frame"] = {k: significant(1000 * v / processed) for k, v in threads.items()}
    result["device"] = next(iter(typical.models.values())).device
    return result
