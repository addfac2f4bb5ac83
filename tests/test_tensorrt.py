"""The TensorRT backend: cache keys, sidecars and profiles as plain functions; the builder's
calls against a test double of `tensorrt`; real engines only where TensorRT and a GPU are
(those tests skip elsewhere, and fail instead when EDGE_REQUIRE_GPU=1)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge import backends, engine_cache, tensorrt_engine
from edge.backends.ort import OrtBackend
from edge.backends.tensorrt import TensorrtBackend
from edge.engine_cache import cache_key, check_engine, get_or_build, profile_for, read_sidecar, sidecar, write_engine
from edge.errors import ModelError, OutputError, UsageError
from edge.model import parse
from edge.run.models import check_io
from tests import fake_tensorrt, makers_models

SETUP = {"trt_version": "10.3.0", "gpu_name": "NVIDIA GeForce RTX 3060", "compute_capability": "8.6"}
FIELDS = {"onnx_sha256": "ab" * 32, **SETUP, "precision": "fp16", "profile": (1, 8, 8), "workspace_mb": 1024,
          "fp32_layers": ()}


@pytest.fixture
def trt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt)
    return fake_tensorrt


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "engines"
    monkeypatch.setenv(engine_cache.CACHE_ENV, str(folder))
    return folder


class Builds:
    """Stands in for tensorrt_engine.build_engine in get_or_build: records calls, returns a plan."""

    def __init__(self):
        self.calls = []

    def __call__(self, onnx_path, **options):
        self.calls.append(options)
        return f"plan {len(self.calls)} of {os.path.basename(onnx_path)}".encode()


def cached(onnx_path, builds, log, setup=SETUP, **options):
    return get_or_build(onnx_path, **{"precision": "fp16", "batch": 8, **options}, build=builds,
                        info=lambda: setup, log=log.append)


def fake_build(onnx_path, tmp_path, **options) -> dict:
    options = {"fp16": True, "profile": (1, 8, 16), "workspace_mb": 512,
               "timing_cache_path": tmp_path / "timing.cache", **options}
    return json.loads(tensorrt_engine.build_engine(onnx_path, **options))


# --- profile arithmetic and cache keys ---------------------------------------------------------

def test_profile_spans_one_to_the_batch_or_the_given_max():
    assert profile_for(8) == (1, 8, 8)
    assert profile_for(8, max_batch=32) == (1, 8, 32)
    assert profile_for(1) == (1, 1, 1)


@pytest.mark.parametrize("batch,max_batch", [(0, None), (-1, None), (2.5, None), (True, None), (8, 4), (8, 0)])
def test_profile_refuses_impossible_batches(batch, max_batch):
    with pytest.raises(ValueError, match="batch"):
        profile_for(batch, max_batch=max_batch)


def test_cache_key_is_short_stable_and_canonical():
    key = cache_key(**FIELDS)
    assert len(key) == 16 and int(key, 16) >= 0
    assert key == "1216de9d284ca615"  # the canonical form is part of the cache's format: keep it stable
    assert cache_key(**FIELDS | {"profile": [1, 8, 8]}) == key
    layers = cache_key(**FIELDS | {"fp32_layers": ["b*", "a*", "b*"]})
    assert layers == cache_key(**FIELDS | {"fp32_layers": ("a*", "b*")}) != key


@pytest.mark.parametrize("field,value", [
    ("onnx_sha256", "cd" * 32), ("trt_version", "10.7.0"), ("gpu_name", "Orin"), ("compute_capability", "8.7"),
    ("precision", "fp32"), ("profile", (1, 8, 16)), ("workspace_mb", 2048), ("fp32_layers", ("/head/*",)),
])
def test_cache_key_changes_with_every_field(field, value):
    assert cache_key(**FIELDS | {field: value}) != cache_key(**FIELDS)


def test_cache_key_takes_exactly_its_fields():
    with pytest.raises(ValueError, match="allowed: fp16, fp32"):
        cache_key(**FIELDS | {"precision": "int8"})
    with pytest.raises(TypeError):
        cache_key(**FIELDS, batch=8)


def test_cache_dir_is_the_env_var_or_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_ENGINE_CACHE", str(tmp_path / "mine"))
    assert engine_cache.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("EDGE_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert engine_cache.cache_dir() == tmp_path / "xdg" / "edge" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert engine_cache.cache_dir() == tmp_path / ".cache" / "edge" / "engines"


@pytest.mark.parametrize("options,message", [
    ({"precision": "int8"}, "allowed: fp16, fp32"),
    ({"workspace_mb": 0}, "workspace_mb"),
    ({"fp32_layers": "/head/*"}, "list of layer-name patterns"),
    ({"precision": "fp32", "fp32_layers": ["/head/*"]}, "only with precision fp16"),
])
def test_build_options_are_checked_up_front(options, message):
    with pytest.raises(ValueError, match=message):
        engine_cache.build_options(**{"precision": "fp16", "batch": 8, **options})


# --- engine files and sidecars -----------------------------------------------------------------

def test_engine_file_is_the_raw_plan_with_its_sidecar_beside_it(tmp_path):
    contract = makers_models.camvid(tmp_path / "camvid.onnx")
    metadata = engine_cache.read_onnx_metadata(contract)
    side = sidecar(metadata, onnx_path=contract, **FIELDS)
    plan = bytes(range(256)) * 4
    path = tmp_path / "out" / "camvid.engine"
    write_engine(plan, side, path)
    assert path.read_bytes() == plan  # nothing prepended: trtexec --loadEngine and DeepStream read it
    assert (tmp_path / "out" / "camvid.engine.json").is_file()
    assert sorted(os.listdir(tmp_path / "out")) == ["camvid.engine", "camvid.engine.json"]  # no temp files left
    assert read_sidecar(path) == side
    assert side["cache_key"] == cache_key(**FIELDS)
    assert side["onnx"] == os.path.abspath(contract)
    assert {k: side[k] for k in SETUP} == SETUP
    options = (side["precision"], side["profile"], side["workspace_mb"], side["fp32_layers"])
    assert options == ("fp16", [1, 8, 8], 1024, [])
    assert parse(side["metadata"]).task == "camvid"


def test_an_engine_without_its_sidecar_is_a_one_line_model_error(tmp_path):
    path = tmp_path / "camvid.engine"
    path.write_bytes(b"plan")
    with pytest.raises(ModelError, match="contract lives there") as err:
        read_sidecar(path)
    assert "\n" not in str(err.value)
    (tmp_path / "camvid.engine.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable engine sidecar"):
        read_sidecar(path)
    (tmp_path / "camvid.engine.json").write_text('{"metadata": {}}')
    with pytest.raises(ModelError, match="not an edge engine sidecar"):
        read_sidecar(path)


def test_check_engine_accepts_the_engine_it_describes(tmp_path):
    assert check_engine(sidecar({}, onnx_path=tmp_path, **FIELDS), **FIELDS) == []


@pytest.mark.parametrize("field,value,reason", [
    ("onnx_sha256", "cd" * 32, "ONNX sha256 abababababab → cdcdcdcdcdcd"),
    ("trt_version", "10.7.0", "TensorRT 10.3.0 → 10.7.0"),
    ("gpu_name", "Orin", "GPU NVIDIA GeForce RTX 3060 → Orin"),
    ("compute_capability", "8.7", "compute capability 8.6 → 8.7"),
    ("precision", "fp32", "precision fp16 → fp32"),
    ("profile", (1, 8, 16), "batch profile (min/opt/max) 1/8/8 → 1/8/16"),
    ("workspace_mb", 2048, "workspace MB 1024 → 2048"),
    ("fp32_layers", ["/head/*"], "fp32 layers none → /head/*"),
])
def test_check_engine_says_why_an_engine_is_stale_or_foreign(tmp_path, field, value, reason):
    side = sidecar({}, onnx_path=tmp_path, **FIELDS)
    assert check_engine(side, **FIELDS | {field: value}) == [reason]


def test_check_engine_checks_only_the_fields_given(tmp_path):
    side = sidecar({}, onnx_path=tmp_path, **FIELDS)
    assert check_engine(side, **SETUP) == []
    assert check_engine(side, **SETUP | {"trt_version": "8.6.1", "gpu_name": "Orin"}) == [
        "TensorRT 10.3.0 → 8.6.1", "GPU NVIDIA GeForce RTX 3060 → Orin"]
    with pytest.raises(ValueError, match="unknown engine field 'batch'; allowed: onnx_sha256"):
        check_engine(side, batch=8)


# --- get_or_build ------------------------------------------------------------------------------

def test_engine_is_built_once_then_reused(models, cache):
    onnx_path, builds, log = models.camvid(), Builds(), []
    first = cached(onnx_path, builds, log)
    second = cached(onnx_path, builds, log)
    assert first == second and len(builds.calls) == 1
    assert first.parent == cache and first.name.startswith("camvid-fp16-b8-") and first.suffix == ".engine"
    assert first.read_bytes() == b"plan 1 of camvid.onnx"
    assert len(log) == 1 and log[0].startswith("engine cache: building camvid (fp16, batch 1/8/8, TensorRT 10.3.0")
    side = read_sidecar(first)
    assert parse(side["metadata"]).task == "camvid"
    assert side["onnx_sha256"] == engine_cache.file_sha256(onnx_path)
    call = builds.calls[0]
    assert call["fp16"] is True and call["profile"] == (1, 8, 8) and call["workspace_mb"] == 1024
    assert call["timing_cache_path"].parent == cache


def test_a_changed_onnx_is_rebuilt_in_place_with_the_reason(models, cache):
    onnx_path, builds, log = models.camvid(), Builds(), []
    first = cached(onnx_path, builds, log)
    models.camvid(size=(32, 32))  # re-exported at the same path
    assert cached(onnx_path, builds, log) == first and len(builds.calls) == 2
    assert log[1].startswith("engine cache: rebuilding camvid (ONNX sha256 ")
    assert first.read_bytes() == b"plan 2 of camvid.onnx"


def test_a_tensorrt_upgrade_rebuilds_with_the_versions_in_the_message(models, cache):
    onnx_path, builds, log = models.camvid(), Builds(), []
    first = cached(onnx_path, builds, log)
    assert cached(onnx_path, builds, log, setup=SETUP | {"trt_version": "10.7.0"}) == first
    assert log[1] == "engine cache: rebuilding camvid (TensorRT 10.3.0 → 10.7.0)"
    assert read_sidecar(first)["trt_version"] == "10.7.0"


def test_another_gpu_gets_its_own_engine_and_the_first_is_kept(models, cache):
    onnx_path, builds, log = models.camvid(), Builds(), []
    rtx = cached(onnx_path, builds, log)
    orin = cached(onnx_path, builds, log, setup=SETUP | {"gpu_name": "Orin", "compute_capability": "8.7"})
    assert orin != rtx and rtx.is_file() and read_sidecar(orin)["gpu_name"] == "Orin"
    assert "building camvid" in log[1] and "on Orin" in log[1]
    assert cached(onnx_path, builds, log) == rtx and len(builds.calls) == 2  # still there for the RTX
    timing = {call["timing_cache_path"] for call in builds.calls}
    assert len(timing) == 2  # timing caches are per GPU and TensorRT too


def test_other_build_options_get_their_own_engine(models, cache):
    onnx_path, builds, log = models.camvid(), Builds(), []
    paths = {cached(onnx_path, builds, log), cached(onnx_path, builds, log, batch=4),
             cached(onnx_path, builds, log, max_batch=16), cached(onnx_path, builds, log, precision="fp32"),
             cached(onnx_path, builds, log, workspace_mb=256), cached(onnx_path, builds, log, fp32_layers=["x*"])}
    assert len(paths) == 6 and len(builds.calls) == 6
    assert builds.calls[1]["profile"] == (1, 4, 4) and builds.calls[2]["profile"] == (1, 8, 16)
    assert builds.calls[3]["fp16"] is False and builds.calls[5]["fp32_layers"] == ["x*"]
    assert len({call["timing_cache_path"] for call in builds.calls}) == 1  # one machine, one timing cache


def test_an_engine_that_lost_its_sidecar_is_rebuilt(models, cache):
    onnx_path, builds, log = models.camvid(), Builds(), []
    path = cached(onnx_path, builds, log)
    os.remove(f"{path}.json")
    assert cached(onnx_path, builds, log) == path and len(builds.calls) == 2
    assert log[1] == "engine cache: rebuilding camvid (its sidecar is missing or unreadable)"


def test_a_broken_contract_fails_before_any_build(tmp_path, models, cache):
    model = onnx.load(models.camvid())
    del model.metadata_props[:]
    onnx.save(model, tmp_path / "bare.onnx")
    builds = Builds()
    with pytest.raises(ModelError, match="'edge.contract' is missing"):
        cached(tmp_path / "bare.onnx", builds, [])
    assert builds.calls == []


def test_an_unwritable_cache_fails_before_any_build(tmp_path, models, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("EDGE_ENGINE_CACHE", str(tmp_path / "a-file" / "engines"))
    builds = Builds()
    with pytest.raises(OutputError, match="set EDGE_ENGINE_CACHE to a writable folder"):
        cached(models.camvid(), builds, [])
    assert builds.calls == []


# --- the builder, against the test double of tensorrt ------------------------------------------

def test_the_double_says_it_is_one(trt):
    assert trt.__edge_test_double__ is True and "NOT TensorRT" in trt.__doc__
    assert tensorrt_engine.import_tensorrt() is trt


@pytest.mark.parametrize("fp16", [True, False])
def test_fp16_flag_is_set_exactly_for_fp16(trt, models, tmp_path, fp16):
    plan = fake_build(models.camvid(), tmp_path, fp16=fp16)
    assert ("FP16" in plan["builder_flags"]) is fp16
    assert "OBEY_PRECISION_CONSTRAINTS" not in plan["builder_flags"]


def test_workspace_and_profile_reach_the_builder(trt, models, tmp_path):
    onnx_path = models.camvid(size=(48, 64))
    plan = fake_build(onnx_path, tmp_path, profile=(1, 8, 16), workspace_mb=512)
    assert plan["memory_pool_limits"] == {"WORKSPACE": 512 * 1024 * 1024}
    assert plan["inputs"] == {"pixels": {"shape": [-1, 48, 64, 3], "dtype": "uint8"}}
    assert plan["profiles"] == [{"pixels": [[1, 48, 64, 3], [8, 48, 64, 3], [16, 48, 64, 3]]}]
    assert plan["network_flags"] == 0  # explicit batch is TensorRT 10's only mode
    assert plan["parsed_path"] == os.path.abspath(onnx_path)  # where external weights would be found


def test_profile_follows_the_models_own_layout(trt, models, tmp_path):
    plan = fake_build(models.camvid(size=(40, 56), input_format="float32_nchw"), tmp_path, profile=(1, 4, 4))
    assert plan["profiles"] == [{"pixels": [[1, 3, 40, 56], [4, 3, 40, 56], [4, 3, 40, 56]]}]


def test_tensorrt_8_asks_for_explicit_batch(trt, models, tmp_path, monkeypatch):
    monkeypatch.setattr(trt, "__version__", "8.6.1")
    explicit_batch = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    assert fake_build(models.camvid(), tmp_path)["network_flags"] == explicit_batch


def test_timing_cache_is_read_and_written_back(trt, models, tmp_path):
    onnx_path, timing = models.camvid(), tmp_path / "timing.cache"
    first = fake_build(onnx_path, tmp_path)
    assert first["timing_cache"] == {"loaded_builds": None, "ignore_mismatch": False}  # created empty
    assert json.loads(timing.read_bytes()) == {"fake_timing_cache_builds": 1}
    second = fake_build(onnx_path, tmp_path)
    assert second["timing_cache"]["loaded_builds"] == 1
    assert json.loads(timing.read_bytes()) == {"fake_timing_cache_builds": 2}


def test_a_corrupt_timing_cache_is_replaced(trt, models, tmp_path):
    (tmp_path / "timing.cache").write_bytes(b"\x00garbage")
    assert fake_build(models.camvid(), tmp_path)["timing_cache"]["loaded_builds"] is None
    assert json.loads((tmp_path / "timing.cache").read_bytes()) == {"fake_timing_cache_builds": 1}


def test_fp32_layers_are_pinned_and_obeyed(trt, models, tmp_path):
    # makers_models' nodes are unnamed, so layers are named as TensorRT names them: node_of_<output>
    plan = fake_build(models.camvid(), tmp_path, fp32_layers=["node_of_void", "node_of_class*"])
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= set(plan["builder_flags"])
    assert plan["fp32_layers"] == {
        "node_of_void": {"precision": "float32", "output_types": {"0": "float32"}},
        # ArgMax computes on floats, so it is pinned; its int64 output keeps its type
        "node_of_classes": {"precision": "float32", "output_types": {}},
    }


def test_an_fp32_pattern_matching_nothing_is_a_usage_error(trt, models, tmp_path):
    with pytest.raises(UsageError, match=r"fp32 layer pattern '/head/\*' matches no layer .*node_of_rgb"):
        fake_build(models.camvid(), tmp_path, fp32_layers=["node_of_void", "/head/*"])


def test_fp32_layers_need_fp16(trt, models, tmp_path):
    with pytest.raises(ValueError, match="only to fp16"):
        fake_build(models.camvid(), tmp_path, fp16=False, fp32_layers=["node_of_void"])


def test_a_file_tensorrt_cannot_parse_is_a_one_line_model_error(trt, tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x0a\xffnot a protobuf")
    with pytest.raises(ModelError, match="TensorRT cannot parse this model: .*MODEL_DESERIALIZE_FAILED") as err:
        fake_build(path, tmp_path)
    assert "\n" not in str(err.value)


def test_an_unsupported_op_is_named_in_one_line(trt, models, tmp_path, monkeypatch):
    monkeypatch.setattr(trt, "UNSUPPORTED_OPS", {"ArgMax"})
    with pytest.raises(ModelError, match="In node 5 with name: node_of_classes and operator: ArgMax "
                                         "UNSUPPORTED_NODE: No importer registered for op: ArgMax") as err:
        fake_build(models.camvid(), tmp_path)
    assert "\n" not in str(err.value) and "--backend onnxruntime" in str(err.value)


def test_a_fixed_batch_graph_is_refused(trt, models, tmp_path):
    with pytest.raises(ModelError, match="batch axis is fixed at 2; .*dynamic batch"):
        fake_build(models.camvid(batch=2), tmp_path)


def test_a_failed_build_says_what_tensorrt_said(trt, models, tmp_path, monkeypatch):
    monkeypatch.setattr(trt, "BUILD_ERROR", "Requested amount of GPU memory (8 bytes)\ncould not be allocated")
    with pytest.raises(ModelError, match=r"could not build an engine: Requested amount of GPU memory \(8 bytes\) "
                                         "could not be allocated; try a larger workspace"):
        fake_build(models.camvid(), tmp_path)
    assert not (tmp_path / "timing.cache").exists()


def test_an_old_tensorrt_is_refused(trt, monkeypatch):
    monkeypatch.setattr(trt, "__version__", "8.4.3")
    with pytest.raises(UsageError, match="TensorRT 8.4.3 is too old; edge needs 8.5 or newer"):
        tensorrt_engine.import_tensorrt()


def test_a_tensorrt_without_fp16_flags_builds_fp32_only(trt, models, tmp_path, monkeypatch):
    monkeypatch.setattr(trt, "__version__", "11.0.0")
    monkeypatch.setattr(trt, "BuilderFlag", type("BuilderFlag", (), {}))  # weak typing removed
    with pytest.raises(UsageError, match="no fp16 flag; use --precision fp32"):
        fake_build(models.camvid(), tmp_path)
    assert fake_build(models.camvid(), tmp_path, fp16=False)["builder_flags"] == []


# --- without TensorRT or a GPU -----------------------------------------------------------------

def test_without_tensorrt_the_error_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(UsageError) as err:
        tensorrt_engine.gpu_info()
    assert str(err.value) == (
        "--backend tensorrt: TensorRT is not installed; install it from NVIDIA (JetPack on Jetson, "
        "`pip install tensorrt` from NVIDIA's index on x86) or use --backend onnxruntime")
    with pytest.raises(UsageError, match="TensorRT is not installed"):
        tensorrt_engine.build_engine(tmp_path / "m.onnx", fp16=True, profile=(1, 1, 1), workspace_mb=1,
                                     timing_cache_path=tmp_path / "t")


def test_a_broken_tensorrt_install_shows_why(monkeypatch):
    class BrokenTensorrt:
        def find_spec(self, name, path=None, target=None):
            if name == "tensorrt":
                raise ImportError("libnvinfer.so.10: cannot open shared object file")

    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenTensorrt(), *sys.meta_path])
    with pytest.raises(UsageError, match=r"not installed or broken \(libnvinfer.so.10: cannot open"):
        tensorrt_engine.import_tensorrt()


def test_edge_imports_without_tensorrt_or_torch():
    code = ("import sys; sys.modules['tensorrt'] = sys.modules['torch'] = None; "
            "import edge, edge.engine_cache, edge.tensorrt_engine, edge.backends.tensorrt")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_without_a_gpu_the_error_is_one_line(trt, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match=r"no CUDA GPU is visible .*or use --backend onnxruntime$"):
        tensorrt_engine.gpu_info()


def test_gpu_info_names_tensorrt_the_gpu_and_its_compute_capability(trt, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Orin")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (8, 7))
    assert tensorrt_engine.gpu_info() == {"trt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}


# --- the backend -------------------------------------------------------------------------------

class StubRunner:
    """Stands in for EngineRunner, which needs a GPU: reads the fake plan, records batch sizes."""

    def __init__(self, plan: bytes):
        (spec,) = json.loads(plan)["inputs"].values()
        self.input_shape = tuple(spec["shape"])
        self.input_dtype = np.dtype(spec["dtype"])
        self.sizes = []

    def run(self, batch):
        self.sizes.append(len(batch))
        return np.arange(len(batch))


@pytest.fixture
def fake_gpu(trt, cache, monkeypatch):
    monkeypatch.setattr(tensorrt_engine, "gpu_info", lambda: dict(SETUP))
    monkeypatch.setattr(tensorrt_engine, "EngineRunner", StubRunner)


def test_backend_builds_through_tensorrt_once_and_presents_the_contract(fake_gpu, models, capsys):
    onnx_path = models.camvid(size=(48, 64))
    backend = TensorrtBackend(onnx_path, batch=4, max_batch=8)
    assert "engine cache: building camvid (fp16, batch 1/4/8" in capsys.readouterr().err
    assert (backend.name, backend.device, backend.default_batch) == ("tensorrt", "cuda (TensorRT fp16)", 4)
    assert (backend.input_shape, backend.input_type) == ([None, 48, 64, 3], "tensor(uint8)")
    assert parse(backend.metadata).task == "camvid"
    check_io(onnx_path, backend, parse(backend.metadata))
    plan = json.loads(Path(backend.engine_path).read_bytes())
    assert plan["fake_tensorrt_plan"] and plan["profiles"][0]["pixels"][2] == [8, 48, 64, 3]
    again = TensorrtBackend(onnx_path, batch=4, max_batch=8)
    assert again.engine_path == backend.engine_path and capsys.readouterr().err == ""


def test_backend_runs_batches_above_the_engine_max_in_chunks(fake_gpu, models):
    backend = TensorrtBackend(models.camvid(), batch=8)
    out = backend.run(np.zeros((20, 48, 64, 3), np.uint8))
    assert backend.runner.sizes == [8, 8, 4] and out.tolist() == [*range(8), *range(8), *range(4)]


def test_backend_runs_an_engine_file_with_its_sidecar(fake_gpu, models):
    built = TensorrtBackend(models.camvid(), precision="fp32", batch=2)
    direct = TensorrtBackend(built.engine_path)
    assert direct.device == "cuda (TensorRT fp32)" and direct.metadata == built.metadata
    assert direct.default_batch == 2


def test_backend_refuses_an_engine_built_for_another_machine(fake_gpu, models, monkeypatch):
    path = TensorrtBackend(models.camvid()).engine_path
    monkeypatch.setattr(tensorrt_engine, "gpu_info", lambda: SETUP | {"trt_version": "10.7.0"})
    with pytest.raises(ModelError, match=r"built for another machine \(TensorRT 10.3.0 → 10.7.0\); rebuild it here "
                                         r"from .*camvid.onnx"):
        TensorrtBackend(path)


def test_backend_needs_the_engines_sidecar(fake_gpu, tmp_path):
    path = tmp_path / "camvid.engine"
    path.write_bytes(b"plan")
    with pytest.raises(ModelError, match="no engine sidecar camvid.engine.json next to it") as err:
        TensorrtBackend(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("options,message", [
    ({"device": "cpu"}, "runs on the GPU, not 'cpu'; use --device cuda, or --backend onnxruntime"),
    ({"precision": "int8"}, "precision 'int8' is not supported; allowed: fp16, fp32"),
    ({"batch": 0}, "batch must be an integer of 1 or more"),
    ({"precision": "fp32", "fp32_layers": ["x"]}, "only with precision fp16"),
])
def test_backend_options_are_usage_errors(models, options, message):
    with pytest.raises(UsageError, match=message):
        TensorrtBackend(models.camvid(), **options)


# --- real TensorRT on a GPU --------------------------------------------------------------------

@pytest.fixture
def gpu(cache):
    """Real TensorRT and a CUDA GPU; skips without them, fails instead when EDGE_REQUIRE_GPU=1."""
    try:
        import tensorrt

        reason = "tensorrt is the test double" if getattr(tensorrt, "__edge_test_double__", False) else None
    except ImportError:
        reason = "TensorRT is not installed"
    if reason is None:
        import torch

        reason = None if torch.cuda.is_available() else "no CUDA GPU"
    if reason:
        if os.environ.get("EDGE_REQUIRE_GPU") == "1":
            pytest.fail(f"EDGE_REQUIRE_GPU=1 but {reason}")
        pytest.skip(f"needs TensorRT and a CUDA GPU: {reason}")


def test_gpu_camvid_fp16_engine_agrees_with_onnxruntime(gpu, models, capsys):
    onnx_path = models.camvid()
    pixels = np.random.default_rng(0).integers(0, 256, (20, 48, 64, 3), dtype=np.uint8)
    expected = OrtBackend(onnx_path).run(pixels)
    backend = TensorrtBackend(onnx_path, batch=8)
    assert "building camvid" in capsys.readouterr().err
    check_io(onnx_path, backend, parse(backend.metadata))
    scores = np.sort(np.concatenate([np.full((20, 48, 64, 1), 64), pixels], axis=3), axis=3)
    clear = scores[..., -1] != scores[..., -2]  # where the argmax has no tie, fp16 must agree exactly
    got = backend.run(pixels)  # 8 + 8 + 4
    assert got.shape == expected.shape and np.array_equal(got[clear], expected[clear])
    assert np.array_equal(backend.run(pixels[:3])[clear[:3]], expected[:3][clear[:3]])
    again = TensorrtBackend(onnx_path, batch=8)
    assert capsys.readouterr().err == ""  # reused from the cache
    direct = TensorrtBackend(again.engine_path)
    assert np.array_equal(direct.run(pixels[:5])[clear[:5]], expected[:5][clear[:5]])


def test_gpu_planet_fp32_and_float_input_engines_agree_with_onnxruntime(gpu, models):
    pixels = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    planet = models.planet()
    got = TensorrtBackend(planet, precision="fp32", batch=4).run(pixels)
    assert np.allclose(got, OrtBackend(planet).run(pixels), atol=1e-4)
    camvid = models.camvid(input_format="float32_nchw")
    floats = np.random.default_rng(2).standard_normal((3, 3, 48, 64)).astype(np.float32)
    backend = TensorrtBackend(camvid, batch=3)
    assert backend.input_type == "tensor(float)"
    assert backend.run(floats).shape == OrtBackend(camvid).run(floats).shape


# --- --backend auto on the GPU ------------------------------------------------------------------


@pytest.mark.parametrize("facts, expected", [
    (dict(tensorrt=True, onnxruntime_gpu=True, torch_cuda=True, program="m.pt2"), ("tensorrt", "m.onnx")),
    (dict(tensorrt=False, onnxruntime_gpu=True, torch_cuda=True, program="m.pt2"), ("onnxruntime", "m.onnx")),
    (dict(tensorrt=False, onnxruntime_gpu=False, torch_cuda=True, program="m.pt2"), ("torch", "m.pt2")),
    # edge runs TensorRT through CUDA torch: without it, onnxruntime's provider
    (dict(tensorrt=True, onnxruntime_gpu=True, torch_cuda=False, program="m.pt2"), ("onnxruntime", "m.onnx")),
])
def test_auto_picks_the_fastest_backend_the_gpu_machine_has(facts, expected):
    assert backends.fastest("m.onnx", **facts) == expected


@pytest.mark.parametrize("facts, missing", [
    (dict(torch_cuda=True, program=None), "no torch program m.pt2"),
    (dict(torch_cuda=False, program="m.pt2"), "torch has no CUDA"),
])
def test_auto_with_nothing_for_the_gpu_says_what_is_missing(facts, missing):
    with pytest.raises(UsageError, match="nothing here runs the model on the GPU") as caught:
        backends.fastest("m.onnx", tensorrt=False, onnxruntime_gpu=False, **facts)
    assert missing in str(caught.value) and "--device cpu" in str(caught.value)


def test_auto_on_cuda_takes_tensorrt_when_it_imports(tmp_path, trt, monkeypatch):
    monkeypatch.setattr(backends, "_torch_cuda", lambda: True)
    model = makers_models.planet(tmp_path / "planet.onnx")
    notices = []
    assert backends.resolve(model, "auto", "cuda", notices.append) == ("tensorrt", model)
    assert "tensorrt" in notices[0] and "engine cache" in notices[0]
    assert backends.resolve(model, "auto", "cpu", notices.append) == ("onnxruntime", model)
    assert backends.resolve(model, "auto", None, notices.append) == ("onnxruntime", model) and len(notices) == 1
