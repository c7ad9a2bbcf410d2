# CUDA 12 image for GPU training: the environment tools/setup_env.sh builds on a CUDA machine
# (the script itself runs here, so the pins are the same: torch 2.13.0, the `.[dev,cu126]`
# extras of pyproject.toml - spconv-cu126, numba-cuda[cu12] for Numba's CUDA kernels - and the
# Waymo protos), plus the repository.
#   docker build -t graddrop-det3d .
#   docker run --gpus all --shm-size 16g --entrypoint python graddrop-det3d tools/gpu_check.py
#       (prove the GPU path first: exit 0 = every check passed; report in work_dirs/gpu_check)
#   docker run --gpus all --shm-size 16g -v /data/waymo_converted:/opt/graddrop-det3d/data/waymo_converted \
#       -v /data/work_dirs:/opt/graddrop-det3d/work_dirs graddrop-det3d \
#       configs/waymo/centerpoint_graddrop_waymo_vehicle.py
#   multi-GPU: docker run ... --entrypoint torchrun graddrop-det3d --nproc-per-node 8 \
#       tools/train.py configs/waymo/centerpoint_graddrop_waymo_vehicle.py --launcher pytorch
# Not built on the development machines (no Docker engine there, no GPU).
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# Python 3.11 (jammy's own package); setup_env.sh installs Open3D's Mesa/Vulkan libraries itself.
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/graddrop-det3d
COPY pyproject.toml README.md Makefile ./
COPY tools tools
COPY ops ops
COPY detector detector
COPY configs configs
# The build has no GPU, so tell setup_env.sh which extra to install (it would pick "cpu").
RUN SETUP_EXTRA=cu126 PYTHON=python3.11 bash tools/setup_env.sh && rm -rf /root/.cache
ENV PATH=/opt/graddrop-det3d/.venv/bin:$PATH OMP_WAIT_POLICY=PASSIVE

# Health: the CUDA-vs-CPU kernel checks of tools/gpu_check.py (~1 min; the full check with the
# training runs and the throughput is the documented command above). Exit 2 (no GPU visible:
# container started without --gpus) reports unhealthy like any failure.
HEALTHCHECK --interval=24h --start-period=10s --timeout=10m --retries=1 \
    CMD python tools/gpu_check.py --only voxelize graddrop iou_nms > /dev/null || exit 1

ENTRYPOINT ["python", "tools/train.py"]
CMD ["configs/waymo/centerpoint_graddrop_waymo_vehicle.py"]
