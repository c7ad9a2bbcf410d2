"""Low-level kernels with a plain array/tensor API.

voxelize (Numba CPU + Numba CUDA), graddrop (the GradDrop autograd layer), iou3d (rotated-box
IoU and NMS), boxes (points in boxes, angle wrapping) and spconv_utils (spconv with its CPU
shims). Nothing here imports `detector`.
"""

import os as _os

# torch's CPU wheel and Numba's parallel layer each bring their own OpenMP runtime. With the
# default active wait, threads of one spin while the other works: measured here, a BatchNorm1d
# after a Numba parallel kernel ran 10-40x slower and a small training step 2.5x slower. Passive
# waiting removes that. It only takes effect if set before torch/numba load their runtimes, so
# the entry points (tools/, tests/conftest.py, Makefile) set it too; users may override it.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
