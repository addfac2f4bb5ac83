"""Each stage of `edge-run` alone, then the whole pipeline, on the same first N frames.

Stages alone run edge's own code (media.read_frames, runner.batch_frames / postprocess /
write_sinks, the task's sinks, the backends) one after another on data made ready beforehand,
so each figure is that stage's cost and nothing else's. The pipeline figure is `runner.run`
over the same frames, every stage in its own thread, model loading not counted.
"""

import itertools
import shutil
import sys
import tempfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from edge import backends, media, runner, tasks
from edge.errors import EdgeError, last_line
from edge.model import Contract, parse

from .measure import GpuSampler, Sample, each_timed, figures, significant, timed

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
    model: runner.Model  # the contract's side of the model: preprocessing, postprocessing, sinks
    options: tasks.Options
    repeats: int
    warmup: int
    work: Path  # scratch folder for the outputs of sinks and pipeline runs

    @property
    def end_s(self) -> float:
        """Just after the last frame, so the pipeline stops where the frames alone stop."""
        return self.frames[-1].pts_s + 1e-3

    def measure(self, work, *, warm=None) -> dict:
        return figures(timed(work, frames=len(self.frames), repeats=self.repeats, warmup=self.warmup, warm=warm))

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
        batches, seconds = each_timed(runner.batch_frames(setup.frames, [setup.model], batch))
        made[:] = batches
        return seconds

    return setup.measure(work), made


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
    if getattr(loaded, "tensor_device", None) == "cuda":
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

    for _ in range(setup.warmup):  # before sampling: warm-up is where engines allocate
        work()
    with GpuSampler(enabled=loaded.device.startswith("cuda")) as gpu:
        samples = timed(work, frames=len(setup.frames), repeats=setup.repeats, warmup=0)
    return {**figures(samples), **gpu.figures(), "device": loaded.device}


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
            yield runner.Batch(b.frames, inputs=dict(b.inputs), windows=b.windows, outputs={name: out})

    def work():
        done[:], seconds = each_timed(runner.postprocess(fresh(), [setup.model], setup.options))
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
    result = {s.name: setup.measure(one(i)) for i, s in enumerate(module.sinks(probe))}

    def together():  # with the checkpoints a run takes
        folder = setup.scratch()
        settings = runner.Settings(batch=len(finished[0].frames), end_s=setup.end_s, options=setup.options)
        outputs = runner.Outputs(setup.info, settings, start_s, runner.Checkpoints(folder, {}, {name: contract.task}))
        list(runner.write_sinks(iter(finished), [setup.model], {name: runner.Staging(folder / name)}, runner.Tally(),
                                outputs))

    result["all sinks"] = setup.measure(together)
    return result


def pipeline(setup: Setup, model_path: str, *, backend: str, device: str | None, precision: str, batch: int,
             threads: int | None) -> dict:
    """`runner.run` over the N frames, as `edge-run --end` would; the run's own clock, which
    starts after the model is loaded."""
    runs = []

    def work():
        out = setup.scratch()
        (summary,) = runner.run([setup.video], models=[model_path], out=str(out), batch=batch,
                                end_s=setup.end_s, backend=backend, device=device, precision=precision,
                                threads=threads, options=setup.options)
        shutil.rmtree(out)
        runs.append(summary)

    for _ in range(setup.warmup):
        work()
    runs.clear()
    with GpuSampler(enabled=backends.default_device(backend, device) == "cuda") as gpu:
        for _ in range(setup.repeats):
            work()
    samples = [Sample(s["seconds"]["total"], s["seconds"]["cpu"], s["frames"]["processed"]) for s in runs]
    result = figures(samples)
    rates = [s["processed_per_s"] for s in runs]
    typical = runs[sorted(range(len(runs)), key=rates.__getitem__)[len(runs) // 2]]
    stages = ("decode", "preprocess", "infer", "postprocess", "sinks")
    result["busy_s"] = {k: typical["seconds"][k] for k in stages}
    result["total_s"] = typical["seconds"]["total"]
    processed = typical["frames"]["processed"]
    threads = {k: typical["stage_cpu_s"][k] for k in stages}
    threads["native pools"] = typical["seconds"]["cpu"] - sum(threads.values())
    result["thread_cpu_ms_per_frame"] = {k: significant(1000 * v / processed) for k, v in threads.items()}
    result["device"] = next(iter(typical["models"].values()))["device"]
    return {**result, **gpu.figures()}
