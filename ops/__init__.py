"""Low-level kernels with a plain array/tensor API.

voxelize (Numba CPU + Numba CUDA), graddrop (the GradDrop autograd layer), iou3d (rotated-box
geometry and NMS) and spconv_utils (spconv with its CPU-backward shim). Nothing here imports
`detector`.
"""
