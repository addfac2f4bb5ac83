# edge on a Jetson (Orin, JetPack 6): JetPack's TensorRT and CUDA from the L4T base image,
# NVIDIA's PyTorch build for Jetson, PyAV and OpenCV from their aarch64 wheels.
#
#   docker build -f docker/jetson.Dockerfile -t edge:jetson .
#   docker run --rm --runtime nvidia -v "$PWD:/work" -v edge-engines:/root/.cache/edge edge:jetson \
#       /work/video.mp4 --task camvid --device cuda --out /work/edge-out
#
# Build it on the Jetson (or any aarch64 host with the NVIDIA container runtime). Jetson's video
# encoder is not NVENC as FFmpeg knows it (and the Orin Nano has none), so overlays are x264:
# keep --preset ultrafast. Not built in CI (no Jetson or NVIDIA registry there).
ARG L4T=r36.4.0
FROM nvcr.io/nvidia/l4t-jetpack:${L4T}
# NVIDIA's torch wheel for this JetPack ("Installing PyTorch for Jetson Platform"); its 24.06+
# builds also need cuSPARSELt, which that page installs first
ARG TORCH_WHEEL=https://developer.download.nvidia.com/compute/redist/jp/v61/pytorch/torch-2.5.0a0+872d972e41.nv24.08.17622132-cp310-cp310-linux_aarch64.whl

RUN apt-get update && apt-get install -y --no-install-recommends python3-pip libopenblas0 \
    && rm -rf /var/lib/apt/lists/*
# NVIDIA's torch is built against numpy 1: every later install keeps to it (OpenCV would pull numpy 2)
RUN echo "numpy<2" > /etc/pip-constraints.txt
ENV PIP_NO_CACHE_DIR=1 PIP_CONSTRAINT=/etc/pip-constraints.txt
RUN pip3 install "opencv-python-headless<4.11" "${TORCH_WHEEL}"
COPY . /src
RUN pip3 install /src && rm -rf /src
ENTRYPOINT ["edge-run"]
