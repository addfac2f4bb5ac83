# edge on an x86-64 machine with an NVIDIA RTX (or any CUDA) GPU: TensorRT fp16 engines, frames
# on the GPU through a CUDA torch, NVENC for the overlays where the GPU has it.
#
#   docker build -f docker/rtx.Dockerfile -t edge:rtx .
#   docker run --rm --gpus all -v "$PWD:/work" -v edge-engines:/root/.cache/edge edge:rtx \
#       /work/video.mp4 --task camvid --device cuda --out /work/edge-out
#
# The engine cache is a volume, so an engine is built once per GPU and TensorRT version, not on
# every run. Not built in CI (no GPU or NVIDIA registry there).
# The base image is only Ubuntu with the driver's hooks: torch and TensorRT bring their CUDA libraries.
FROM nvcr.io/nvidia/cuda:12.6.3-base-ubuntu24.04
# the container runtime mounts NVENC's library (libnvidia-encode) only when asked for "video"
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,video

RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/edge
ENV PATH=/opt/edge/bin:$PATH PIP_NO_CACHE_DIR=1
# torch's CUDA build from PyTorch's index, TensorRT from NVIDIA's; both match CUDA 12
RUN pip install torch --index-url https://download.pytorch.org/whl/cu126 \
    && pip install --extra-index-url https://pypi.nvidia.com "tensorrt-cu12>=10,<11"
COPY . /src
RUN pip install /src && rm -rf /src
ENTRYPOINT ["edge-run"]
