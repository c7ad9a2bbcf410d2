#!/usr/bin/env bash
# Creates or refreshes the project's environments. Idempotent: it does nothing when the
# stamp (a hash of this script and pyproject.toml) matches what is installed.
#   tools/setup_env.sh           main environment in .venv
#   tools/setup_env.sh oracle    the optional official-metric oracle in .venv-waymo-official
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
WAYMO_PKG="waymo-open-dataset-tf-2-12-0==1.6.7"

apt_install() {
    # Debian packages Open3D needs to render off screen on the CPU (Mesa's software Vulkan).
    local need=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
    [ ${#need[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "setup_env: missing Debian packages ${need[*]}; run as root or install them" >&2
        return 0
    fi
    echo "setup_env: apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

if [ "${1:-main}" = oracle ]; then
    VENV=.venv-waymo-official
    STAMP="$VENV/.stamp"
    want="oracle:$WAYMO_PKG"
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then exit 0; fi
    echo "setup_env: creating $VENV (official $WAYMO_PKG with TensorFlow 2.13; ~3 min)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "$WAYMO_PKG"
    "$VENV/bin/python" -c "from waymo_open_dataset.metrics.ops import py_metrics_ops" >/dev/null
    echo "$want" > "$STAMP"
    exit 0
fi

VENV=.venv
STAMP="$VENV/.stamp"
want=$(cat tools/setup_env.sh pyproject.toml | sha256sum | cut -d' ' -f1)
apt_install libvulkan1 mesa-vulkan-drivers libgl1 libegl1 libgomp1 libusb-1.0-0
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then exit 0; fi
echo "setup_env: installing the main environment into $VENV"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip
# torch first, so that nothing else pulls another build. Without a GPU this machine's pip finds the
# CPU wheel on disk; on a CUDA machine PyPI's default Linux wheel is the CUDA 12 build.
"$PIP" install -q "torch==2.13.0"
if [ -n "${SETUP_EXTRA:-}" ]; then
    EXTRA=$SETUP_EXTRA  # e.g. cu126 in the Dockerfile: images are built without a GPU
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    EXTRA=cu126
else
    EXTRA=cpu
fi
"$PIP" install -q -e ".[dev,$EXTRA]"
# The Waymo package only for its generated protobuf modules: its own pins (TF 2.13, numpy 1.23)
# conflict with torch, so no dependencies.
"$PIP" install -q --no-deps "$WAYMO_PKG"
"$VENV/bin/python" -c "import torch, spconv.pytorch, numba, open3d, mmengine, crc32c; from waymo_open_dataset import dataset_pb2; from waymo_open_dataset.protos import metrics_pb2" 
echo "$want" > "$STAMP"
echo "setup_env: done"
