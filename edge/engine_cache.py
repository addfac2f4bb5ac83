"""The TensorRT engine cache: which engine fits this model, GPU and TensorRT, and its sidecar.

An engine is built for one GPU model and one TensorRT version, and takes minutes to build, so
it is built once and kept in `cache_dir()`. Each engine is two files: `NAME.engine`, the raw
serialized plan (nothing prepended, so `trtexec --loadEngine` and DeepStream read it as is),
and `NAME.engine.json`, its sidecar: the model contract and everything the engine was built
for. No TensorRT here: the build and the GPU facts are passed in, so all of this is plain
Python that tests run anywhere.
"""

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from .errors import ModelError, OutputError, last_line
from .model import file_sha256, parse

CACHE_ENV = "EDGE_ENGINE_CACHE"
PRECISIONS = ("fp16", "fp32")
SETUP_FIELDS = ("trt_version", "gpu_name", "compute_capability")  # what the machine gives
# What an engine depends on: a change to any of these needs another engine.
KEY_FIELDS = ("onnx_sha256", *SETUP_FIELDS, "precision", "profile", "workspace_mb", "fp32_layers")
LABELS = {"onnx_sha256": "ONNX sha256", "trt_version": "TensorRT", "gpu_name": "GPU",
          "compute_capability": "compute capability", "precision": "precision",
          "profile": "batch profile (min/opt/max)", "workspace_mb": "workspace MB", "fp32_layers": "fp32 layers"}


def profile_for(batch: int, *, max_batch: int | None = None) -> tuple[int, int, int]:
    """(min, opt, max) batch sizes of the engine's optimization profile.

    min is 1 because a video's last batch is partial and runs as it is. opt is the run's batch,
    the size TensorRT tunes its kernels for. max is `max_batch` (default: the batch): the
    largest batch the engine accepts, as trtexec's --maxShapes; DeepStream's nvinfer
    `batch-size` and `trtexec --loadEngine --shapes` must stay within it. A larger max costs
    device memory, not speed at opt. A max below the batch is refused, as trtexec refuses
    opt > max, rather than silently raised.
    """
    if not _positive_int(batch):
        raise ValueError(f"batch must be an integer of 1 or more, got {batch!r}")
    if max_batch is None:
        max_batch = batch
    if not _positive_int(max_batch) or max_batch < batch:
        raise ValueError(f"max_batch must be an integer of at least the batch ({batch}), got {max_batch!r}")
    return (1, batch, max_batch)


def build_options(*, precision: str, batch: int, max_batch: int | None = None, workspace_mb: int = 1024,
                  fp32_layers=()) -> dict:
    """Validate the options a build takes; returns them as the cache key holds them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not supported; allowed: {', '.join(PRECISIONS)}")
    if not _positive_int(workspace_mb):
        raise ValueError(f"workspace_mb must be an integer of 1 or more, got {workspace_mb!r}")
    if isinstance(fp32_layers, str) or not all(isinstance(p, str) and p for p in fp32_layers):
        raise ValueError(f"fp32_layers must be a list of layer-name patterns, got {fp32_layers!r}")
    if fp32_layers and precision != "fp16":
        raise ValueError("fp32_layers keep layers out of fp16, so they apply only with precision fp16")
    return {"precision": precision, "profile": list(profile_for(batch, max_batch=max_batch)),
            "workspace_mb": workspace_mb, "fp32_layers": sorted(set(fp32_layers))}


def cache_key(*, onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: str, precision: str,
              profile, workspace_mb: int, fp32_layers) -> str:
    """A short stable hash of exactly the fields an engine depends on."""
    return _digest(_canonical(locals()))


def cache_dir() -> Path:
    """`$EDGE_ENGINE_CACHE`, else edge/engines in the user's cache folder (~/.cache by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge" / "engines"


def sidecar(contract_metadata: dict, *, onnx_path, **fields) -> dict:
    """The engine's sidecar: its contract, the source ONNX, and what it was built for."""
    return {"metadata": dict(contract_metadata), "onnx": os.path.abspath(onnx_path),
            **_canonical(fields), "cache_key": cache_key(**fields)}


def write_engine(plan: bytes, side: dict, path) -> None:
    # The sidecar goes last: a reader that finds it current can trust the plan beside it.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, bytes(plan))
    atomic_write(sidecar_path(path), (json.dumps(side, indent=2) + "\n").encode())


def sidecar_path(engine_path) -> Path:
    return Path(f"{engine_path}.json")


def read_sidecar(engine_path) -> dict:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise ModelError(f"{engine_path}: no engine sidecar {path.name} next to it, and the model contract lives "
                         "there; give the .onnx model (edge builds and caches the engine) or copy the .engine.json too")
    try:
        side = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: unreadable engine sidecar ({err}); rebuild the engine from its .onnx") from None
    if not (isinstance(side, dict) and isinstance(side.get("metadata"), dict)
            and isinstance(side.get("profile"), list) and len(side["profile"]) == 3):
        raise ModelError(f"{path}: not an edge engine sidecar (no 'metadata' and 'profile'); "
                         "rebuild the engine from its .onnx")
    return side


def check_engine(side: dict, **expected) -> list[str]:
    """Why the engine described by `side` cannot serve `expected` (any of KEY_FIELDS); [] if it can."""
    unknown = sorted(set(expected) - set(KEY_FIELDS))
    if unknown:
        raise ValueError(f"unknown engine field {unknown[0]!r}; allowed: {', '.join(KEY_FIELDS)}")
    want = _canonical(expected)
    return [f"{LABELS[f]} {_show(f, side.get(f))} → {_show(f, want[f])}"
            for f in KEY_FIELDS if f in want and side.get(f) != want[f]]


def get_or_build(onnx_path, *, precision: str, batch: int, max_batch: int | None = None, workspace_mb: int = 1024,
                 fp32_layers=(), build, info, log=None) -> Path:
    """The cached engine for `onnx_path`, built first if missing, stale or foreign.

    `build(onnx_path, fp16=, profile=, workspace_mb=, timing_cache_path=, fp32_layers=) -> plan bytes`
    and `info() -> {trt_version, gpu_name, compute_capability}` are tensorrt_engine's
    build_engine and gpu_info in use, and stand-ins in tests.
    """
    log = log or _stderr
    options = build_options(precision=precision, batch=batch, max_batch=max_batch, workspace_mb=workspace_mb,
                            fp32_layers=fp32_layers)
    found = info()
    setup = {k: str(found[k]) for k in SETUP_FIELDS}
    fields = {"onnx_sha256": file_sha256(onnx_path), **setup, **options}
    # One engine per model file, GPU and options: a re-exported model or a TensorRT upgrade
    # replaces it, while other GPUs sharing the folder, and other batch sizes, keep their own.
    slot = _digest({"onnx": os.path.realpath(onnx_path), "gpu_name": setup["gpu_name"],
                    "compute_capability": setup["compute_capability"], **options})
    name = Path(onnx_path).stem
    path = cache_dir() / f"{name}-{precision}-b{options['profile'][2]}-{slot}.engine"
    reasons = _stale(path, fields)
    if reasons == []:
        return path
    metadata = read_onnx_metadata(onnx_path)
    parse(metadata, source=str(onnx_path))  # a broken contract fails now, not after a long build
    _check_writable(path.parent)
    if reasons:
        log(f"engine cache: rebuilding {name} ({'; '.join(reasons)})")
    else:
        low, opt, high = options["profile"]
        log(f"engine cache: building {name} ({precision}, batch {low}/{opt}/{high}, TensorRT {setup['trt_version']} "
            f"on {setup['gpu_name']}) into {path}; this takes minutes, once")
    # Timing measurements depend on the GPU and TensorRT only, so every model built there shares them.
    timing = path.parent / f"timing-{_digest(setup)}.cache"
    plan = build(onnx_path, fp16=precision == "fp16", profile=tuple(options["profile"]),
                 workspace_mb=workspace_mb, timing_cache_path=timing, fp32_layers=options["fp32_layers"])
    write_engine(plan, sidecar(metadata, onnx_path=onnx_path, **fields), path)
    return path


def _stale(path: Path, fields: dict) -> list[str] | None:
    """None when there is no engine at `path`; else why it cannot serve `fields` ([] when it can)."""
    if not path.is_file():
        return None
    try:
        return check_engine(read_sidecar(path), **fields)
    except ModelError:
        return ["its sidecar is missing or unreadable"]


def read_onnx_metadata(onnx_path) -> dict[str, str]:
    """The model's metadata_props, read by onnxruntime (the runtime's ONNX reader) without optimizing."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises untyped errors for every kind of bad file
        raise ModelError(f"{onnx_path}: not a valid ONNX model ({last_line(err)}); export it again") from err
    return dict(session.get_modelmeta().custom_metadata_map)


def atomic_write(path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a torn one (a Jetson may lose power)."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=folder)
    except OSError as err:
        raise OutputError(f"{folder}: cannot write the engine cache ({err.strerror or err}); "
                          f"set {CACHE_ENV} to a writable folder") from None
    probe.close()


def _canonical(fields: dict) -> dict:
    """Fields in the one form that is hashed and compared: lists, ints, sorted layer patterns."""
    convert = {"profile": lambda p: [int(b) for b in p], "workspace_mb": int,
               "fp32_layers": lambda ps: sorted(set(ps))}
    if "precision" in fields and fields["precision"] not in PRECISIONS:
        raise ValueError(f"precision {fields['precision']!r} is not supported; allowed: {', '.join(PRECISIONS)}")
    return {k: convert.get(k, str)(v) for k, v in fields.items()}


def _digest(value) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _show(field: str, value) -> str:
    if value is None:
        return "unknown"
    if field == "onnx_sha256":
        return str(value)[:12]
    if field == "profile":
        return "/".join(str(b) for b in value)
    if field == "fp32_layers":
        return ",".join(value) or "none"
    return str(value)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # stdout may carry --json
