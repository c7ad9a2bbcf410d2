# CUDA 12 image for GPU training. Untested here: the development machines have no Docker engine.
#   docker build -t graddrop-det3d .
#   docker run --gpus all --shm-size 16g -v /data/waymo:/data/waymo graddrop-det3d \
#       configs/waymo/centerpoint_graddrop_waymo_vehicle.py --work-dir /data/work_dirs/gd
#   multi-GPU: docker run ... --entrypoint torchrun graddrop-det3d --nproc-per-node 8 \
#       tools/train.py configs/waymo/centerpoint_graddrop_waymo_vehicle.py --launcher pytorch
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# Python 3.11 (jammy's own package); Mesa/Vulkan libraries for Open3D's off-screen renderer.
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv libvulkan1 mesa-vulkan-drivers libgl1 libegl1 libgomp1 \
        libusb-1.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/graddrop-det3d
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first: PyPI's Linux wheel of torch 2.13 is the CUDA 12 build.
RUN pip install --upgrade pip && pip install "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY ops ops
COPY detector detector
RUN pip install -e ".[cu126]" \
    && pip install --no-deps "waymo-open-dataset-tf-2-12-0==1.6.7"
COPY tools tools
COPY configs configs

ENTRYPOINT ["python", "tools/train.py"]
CMD ["configs/waymo/centerpoint_graddrop_waymo_vehicle.py"]
