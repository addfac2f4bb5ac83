#!/usr/bin/env bash
# The GPU check: run it whenever a CUDA machine is at hand, and commit what it writes.
#
#   bash bench/gpu_check.sh [OUT]        (default OUT: bench/results/gpu)
#
# Needs a CUDA build of torch and onnxruntime (its CPU build will do); no TensorRT, no internet.
# Python packages the machine lacks (PyAV, usually) go as wheels in .whl/ at the repository's
# root, installed here into /tmp/site: from a machine with pip,
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl av
# (36 MB). It is meant to take under 5 minutes (it prints how long it took) and writes into OUT:
#   environment.txt   the GPU, driver, torch, onnxruntime, whether NVENC opens
#   tests.txt         the GPU tests (EDGE_REQUIRE_GPU=1: a CUDA case that would skip fails instead)
#   bench/            edge-bench on the three default models through torch on cuda, fp16 and fp32,
#                     batches 1 to 16, with the pipeline against inference alone (report.md)
#   agreement.md      fp16 against fp32 over the clip: camvid pixels, planet tags, biwi points
#   upload.md         camvid's whole pipeline with frames sent to the GPU as I420 planes and as RGB
#   host/             edge-bench --host --host-device cuda: edge's device path with free models (the
#                     defaults' contracts, trivial graphs, built here with onnx and torch: camvid blends
#                     on the GPU, overlays with NVENC) against FFmpeg encoding with the same encoder, on
#                     the first 300 frames: the ceiling the host sets on this box (report.md); skipped,
#                     saying so, where the machine has no ffmpeg command
# and exits non-zero if a test failed or fp16 and fp32 disagree beyond the goals.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/gpu}
mkdir -p "$out"
status=0
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || echo "no nvidia-smi"
  python3 -c "
import av, onnxruntime, torch
from edge.writer import nvenc_opens
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())
print('PyAV', av.__version__, 'NVENC opens at 1280x720:', nvenc_opens(1280, 720))
"
} 2>&1 | tee "$out/environment.txt"
python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" || { echo "torch sees no CUDA GPU"; exit 1; }
# What the rest needs, named up front; and the shipped torch programs must load in this torch.
python3 -c "
import importlib, sys
missing = [m for m in ('av', 'cv2', 'numpy', 'onnx', 'onnxruntime', 'pytest', 'matplotlib')
           if importlib.util.find_spec(m) is None]
sys.exit(f'missing: {\" \".join(missing)}; carry their wheels in .whl/' if missing else 0)
" || exit 1
python3 -c "
from edge.backends.torch_backend import TorchBackend
for task in ('camvid', 'planet', 'biwi'):
    TorchBackend(f'edge/models/{task}.pt2', device='cuda')
" 2>&1 | tee -a "$out/environment.txt" || status=1

# A 20 s 1280x720 clip with sound: moving blocks and a face-like dot over a changing scene.
clip=/tmp/edge-gpu-check.mp4
python3 - "$clip" << 'EOF'
import math, sys
import numpy as np
from tests.makers_clips import make_clip

H, W, FPS = 720, 1280, 25
def frame(i):
    t = i / FPS
    rng = np.random.default_rng(i // 50)
    image = np.empty((H, W, 3), np.uint8)
    image[: H // 2] = (70 + 40 * math.sin(t), 120, 200)  # sky
    image[H // 2 :] = (90, 90, 95)  # road
    for k in range(6):  # cars and walls
        x = int((k * 260 + 90 * t * (1 + k % 3)) % (W + 200)) - 200
        image[H // 2 + 40 * (k % 3) : H // 2 + 120 + 40 * (k % 3), max(x, 0) : max(x + 180, 0)] = rng.integers(0, 255, 3)
    cx, cy = int(W / 2 + 300 * math.cos(t)), int(H / 3 + 100 * math.sin(t))
    image[cy - 30 : cy + 30, cx - 24 : cx + 24] = (230, 190, 160)
    return image
make_clip(sys.argv[1], (frame(i) for i in range(20 * FPS)), fps=FPS, audio=True)
EOF

EDGE_REQUIRE_GPU=1 python3 -m pytest -q -p no:cacheprovider tests/test_device.py 2>&1 | tee "$out/tests.txt" || status=1
python3 -m pytest -q -p no:cacheprovider tests/test_media.py -k nvenc -rs 2>&1 | tee -a "$out/tests.txt" || status=1

models=(--model edge/models/camvid.onnx --model edge/models/planet.onnx --model edge/models/biwi.onnx)
python3 -m bench.cli "$clip" "${models[@]}" --backends torch --device cuda --precision fp16,fp32 \
  --batch 1,2,4,8,16 --frames 300 --repeat 2 --warmup 1 --quiet --out "$out/bench" || status=1
python3 -m bench.agreement "$clip" "${models[@]}" --device cuda --out "$out" || status=1
# frames to the GPU as I420 planes (half the bytes, converted there) or as RGB: which is cheaper end to end
for upload in planes rgb; do
  python3 -m edge.cli "$clip" --model edge/models/camvid.onnx --device cuda --upload $upload --json \
    --out /tmp/edge-upload-$upload > "$out/upload-$upload.json" || status=1
done
python3 - "$out" << 'EOF' || status=1
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
lines = ["# camvid through the whole pipeline on cuda, by how frames go to the GPU", "",
         "| upload | frames/s | total s | CPU s | decode busy s |", "|---|---|---|---|---|"]
for upload in ("planes", "rgb"):
    (s,) = json.loads((out / f"upload-{upload}.json").read_text())
    lines.append(f"| {upload} | {s['frames_per_s']} | {s['seconds']['total']} | {s['seconds']['cpu']} | "
                 f"{s['seconds']['decode']} |")
(out / "upload.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
# The host's ceiling on this box: FFmpeg is the anchor, and this machine cannot install it if it lacks it.
if command -v ffmpeg > /dev/null; then
  python3 -m bench.cli "$clip" --host --host-device cuda --frames 300 --repeat 3 --quiet --out "$out/host" || status=1
else
  echo "host/: skipped: no ffmpeg command on this machine, which edge-bench --host measures edge against" \
    | tee -a "$out/environment.txt"
fi
# the outputs compared (agreement.md and .json keep the figures), and the free models (bench/free_models.py builds them)
rm -rf "$out/agreement" "$out/host/free-models"

echo "gpu_check: ${SECONDS} s, exit ${status}" | tee -a "$out/environment.txt"
exit $status
