"""Loading models: the files a run names (or the tasks' default models), checked against their
contract before any video is opened, and the output folder each one writes into."""

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .. import backends, tasks
from ..errors import ModelError, UsageError
from ..inputs import short_hash
from ..model import TASKS, Contract, file_sha256, parse


MODEL_DIR_ENV = "EDGE_MODEL_DIR"


@dataclass
class Model:
    path: str
    contract: Contract
    backend: backends.Backend
    folder_name: str = ""
    sha256: str = ""

    @property
    def preprocess_key(self) -> tuple:
        """Models that agree on this share one preprocessed batch."""
        c = self.contract
        return (c.input_size, c.input_format, c.resize, c.channel_order, c.mean, c.std)


SHIPPED_MODELS = str(Path(__file__).parents[1] / "models")  # edge/models/


def default_model(task: str) -> str:
    folder = os.environ.get(MODEL_DIR_ENV) or SHIPPED_MODELS
    path = os.path.join(folder, f"{task}.onnx")
    if not os.path.isfile(path):
        raise ModelError(
            f"no default {task} model at {path}; pass --model FILE.onnx "
            f"(edge-export writes one) or set {MODEL_DIR_ENV} to a folder holding {task}.onnx"
        )
    return path


def default_model_notice(task: str, path: str) -> str:
    if os.path.dirname(path) != SHIPPED_MODELS:  # the user's own, from EDGE_MODEL_DIR
        return f"--task {task}: using the default model {path} ({MODEL_DIR_ENV})"
    return (f"--task {task}: using the default model {path}, trained only on {tasks.module(task).SHIPPED_MODEL_SAW}: "
            f"it shows the pipeline, not real-world accuracy; for real video train your own (edge-train {task} "
            f"--data DIR, then edge-export) and give --model FILE.onnx")


def load_models(model_paths, task_names, *, backend: str = "auto", device: str | None, threads: int | None,
                batch: int | None = None, precision: str | None = None, notice=lambda message: None) -> list[Model]:
    """Load and validate every model before any video is opened, so a bad one fails fast."""
    unknown = [t for t in task_names if t not in TASKS]
    if unknown:
        raise UsageError(f"unknown task {unknown[0]!r}; allowed: {', '.join(TASKS)}")
    paths = list(model_paths)
    twice = next((p for p, n in Counter(os.path.realpath(p) for p in paths).items() if n > 1), None)
    if twice is not None:
        raise UsageError(f"--model {twice} given twice; give each model once")
    if not paths:
        paths = [default_model(t) for t in task_names]
        for task, path in zip(task_names, paths):
            notice(default_model_notice(task, path))
    if not paths:
        raise UsageError("give --model FILE.onnx or --task with one of: " + ", ".join(TASKS))
    models = []
    for path in paths:
        loaded = backends.load(path, backend=backend, device=device, threads=threads, batch=batch,
                               precision=precision, notice=notice)
        contract = parse(loaded.metadata, source=loaded.path)
        check_io(loaded.path, loaded, contract)
        models.append(Model(loaded.path, contract, loaded, sha256=file_sha256(loaded.path)))
    if model_paths and task_names:
        found = sorted({m.contract.task for m in models})
        if found != sorted(set(task_names)):
            raise ModelError(f"--task {','.join(task_names)} conflicts with the models' own tasks: {','.join(found)}")
    for model, name in zip(models, output_names(paths) if model_paths else task_names):
        model.folder_name = name
    return models


def output_names(model_paths: list[str]) -> list[str]:
    """Each model's output folder: named after its file (two models of one task never share
    one), with a short hash of its path added where two files share a name."""
    stems = [Path(path).stem for path in model_paths]
    counts = Counter(stems)
    return [stem if counts[stem] == 1 else f"{stem}-{short_hash(path)}" for stem, path in zip(stems, model_paths)]


def check_io(path: str, backend: backends.Backend, contract: Contract) -> None:
    """The graph's declared input must be what the contract promises to feed it."""
    dtype = "tensor(uint8)" if contract.input_format == "uint8_nhwc" else "tensor(float)"
    if backend.input_type != dtype:
        raise ModelError(f"{path}: the graph takes {backend.input_type} but the contract says {contract.input_format}")
    declared = backend.input_shape
    if not declared or len(declared) != 4:
        return
    h, w = contract.input_size
    expected = [h, w, 3] if contract.input_format == "uint8_nhwc" else [3, h, w]
    for got, want in zip(declared[1:], expected):
        if isinstance(got, int) and got != want:
            raise ModelError(
                f"{path}: the graph takes input {declared} but the contract says "
                f"{contract.input_format} at {h}x{w}; export it again"
            )


def model_record(m: Model) -> dict:
    return {"path": os.path.abspath(m.path), "sha256": m.sha256, "task": m.contract.task,
            "backend": m.backend.name, "device": m.backend.device,
            "producer": m.contract.producer, "producer_version": m.contract.producer_version}
