"""edge.backends.torch_backend: torch.export programs run as the runtime runs ONNX files.

GPU tests skip without CUDA, and fail instead when EDGE_REQUIRE_GPU=1.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastai")
pytest.importorskip("onnxruntime")

from fastai.layers import ConvLayer  # noqa: E402
from fastai.vision.learner import create_head  # noqa: E402
from fastai.vision.models.unet import DynamicUnet  # noqa: E402

from edge.backends.ort import OrtBackend  # noqa: E402
from edge.backends.torch_backend import CONTRACT_FILE, TorchBackend  # noqa: E402
from edge.errors import ModelError, UsageError  # noqa: E402
from edge.model import Contract, parse  # noqa: E402
from edge.run.models import check_io  # noqa: E402
from export.learner import strip_retyping  # noqa: E402
from export.onnx_export import ContractWrapper, export_onnx  # noqa: E402
from export.torch_program import save_program  # noqa: E402

SIZE = (40, 56)
STATS = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CONTRACTS = {
    "camvid": Contract(task="camvid", input_size=SIZE, input_format="uint8_nhwc", output="class_ids",
                       classes=("Road", "Sky", "Car"), palette=((128, 64, 128), (128, 128, 128), (64, 0, 128)),
                       producer="tests", **STATS),
    "planet": Contract(task="planet", input_size=SIZE, input_format="uint8_nhwc", output="probabilities",
                       classes=("clear", "haze"), thresholds=(0.2, 0.2), producer="tests", **STATS),
}


def require_cuda():
    if torch.cuda.is_available():
        return
    if os.environ.get("EDGE_REQUIRE_GPU") == "1":
        pytest.fail("EDGE_REQUIRE_GPU=1 but torch has no CUDA here")
    pytest.skip("torch has no CUDA here")


def tiny(task: str) -> torch.nn.Module:
    torch.manual_seed(0)
    body = torch.nn.Sequential(ConvLayer(3, 8, stride=2), ConvLayer(8, 16, stride=2), ConvLayer(16, 32, stride=2))
    if task == "camvid":
        return DynamicUnet(body, len(CONTRACTS[task].classes), SIZE)
    return torch.nn.Sequential(body, create_head(32, len(CONTRACTS[task].classes)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Per task: (ONNX file, torch program) of the same tiny model."""
    folder = tmp_path_factory.mktemp("programs")
    out = {}
    for task, contract in CONTRACTS.items():
        model = strip_retyping(tiny(task))
        out[task] = (export_onnx(model, contract, folder / f"{task}.onnx"),
                     save_program(ContractWrapper(model, contract), contract, folder / f"{task}.pt2"))
    return out


def images(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, *SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("task", CONTRACTS)
def test_a_program_runs_as_its_onnx_twin_and_carries_the_same_contract(files, task):
    onnx_path, program_path = files[task]
    onnx, program = OrtBackend(onnx_path), TorchBackend(program_path)
    assert (program.name, program.device, program.default_batch) == ("torch", "cpu", 4)
    assert parse(program.metadata) == parse(onnx.metadata) == CONTRACTS[task]
    assert program.input_type == "tensor(uint8)" and program.input_shape[1:] == [*SIZE, 3]
    assert isinstance(program.input_shape[0], str)  # the batch is dynamic
    check_io(program_path, program, parse(program.metadata))
    for n in (1, 3):
        ours, theirs = program.run(images(n)), onnx.run(images(n))
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        if task == "camvid":
            assert (ours == theirs).mean() >= 0.999
        else:
            assert np.abs(ours - theirs).max() <= 1e-5


def test_torch_export_refuses_fastais_tensor_subclass_in_one_line(tmp_path):
    """Why the exporter strips ToTensorBase: left in, torch.export cannot trace the U-Net."""
    contract = CONTRACTS["camvid"]
    with pytest.raises(ModelError, match="torch.export cannot export this camvid model") as err:
        save_program(ContractWrapper(tiny("camvid").eval(), contract), contract, tmp_path / "unet.pt2")
    assert "\n" not in str(err.value)


def test_files_that_are_not_programs_are_refused_in_one_line(files, tmp_path):
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    bare = tmp_path / "bare.pt2"  # a program without the edge contract
    torch.export.save(torch.export.export(torch.nn.ReLU(), (torch.zeros(2),)), str(bare))
    for path, message in ((tmp_path / "absent.pt2", "not found"), (tmp_path / "junk.pt2", "cannot load it as a program"),
                          (bare, CONTRACT_FILE), (files["planet"][0], "cannot load it as a program")):
        with pytest.raises(ModelError, match=message) as err:
            TorchBackend(str(path))
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_devices_are_checked_up_front(files):
    from edge import backends

    with pytest.raises(UsageError, match="allowed: cpu, cuda"):
        backends.load(files["planet"][1], backend="torch", device="tpu")
    if torch.cuda.is_available():
        return
    with pytest.raises(UsageError, match="--device cuda: torch has no CUDA here"):
        TorchBackend(files["planet"][1], device="cuda")


def test_the_backend_module_imports_without_torch():
    code = "import sys, edge.backends.torch_backend; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__))).returncode == 0


@pytest.mark.parametrize("task", CONTRACTS)
def test_cuda_runs_in_fp16_close_to_cpu(files, task):
    require_cuda()
    gpu, cpu = TorchBackend(files[task][1], device="cuda"), TorchBackend(files[task][1])
    assert gpu.device == "cuda (fp16)" and gpu.default_batch == 8
    batch = images(8)
    ours, theirs = gpu.run(batch), cpu.run(batch)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    if task == "camvid":
        assert (ours == theirs).mean() >= 0.99  # fp16 flips near-ties only
    else:
        assert np.abs(ours - theirs).max() <= 1e-2
