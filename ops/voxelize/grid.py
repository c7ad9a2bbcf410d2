"""Voxel grid metadata, computed with exactly spconv 2.x's float32 arithmetic.

spconv's ``PointToVoxel`` (``Point2VoxelCommon::calc_meta_data`` in spconv 2.3) receives the
voxel size and range as C++ ``float``; the grid size on each axis is
``std::round((max - min) / size)`` evaluated in float32 (round half away from zero), and a
point's cell index is ``floor((p - min) / size)`` with ``p - min`` and the division evaluated in
the point's own precision (float32 for float32 points; float64 for float64 points, with ``min``
and ``size`` still the float32-rounded values). A point is kept when that index lies in
``[0, grid_size)`` on every axis - so the *effective* range test is on the float32 index, not on
the metric coordinate: e.g. with range [-75.2, 75.2] and size 0.1, ``x = 75.2`` gives
``(75.2f + 75.2f) / 0.1f = 1503.9999`` and lands in the last cell, while points just below
``range_min`` are dropped. NaN/inf coordinates fail the index test (spconv relies on the int
conversion yielding INT_MIN; we test the float quotient instead, which gives the same answer
without undefined behaviour).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["VoxelGrid", "make_grid"]


@dataclass(frozen=True)
class VoxelGrid:
    """A voxel grid, x/y/z order. ``lo`` and ``size`` are float32 as spconv sees them."""
    lo: np.ndarray        # (3,) float32, range minimum (x, y, z)
    size: np.ndarray      # (3,) float32, voxel size (x, y, z)
    shape_xyz: tuple[int, int, int]  # (nx, ny, nz) number of cells

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Spatial shape ``(nz, ny, nx)`` as spconv's ``SparseConvTensor`` expects it."""
        return self.shape_xyz[2], self.shape_xyz[1], self.shape_xyz[0]

    @property
    def num_cells(self) -> int:
        nx, ny, nz = self.shape_xyz
        return nx * ny * nz


def make_grid(voxel_size: Sequence[float], point_cloud_range: Sequence[float]) -> VoxelGrid:
    """Validate ``voxel_size`` (3) and ``point_cloud_range`` (6, min xyz then max xyz)."""
    vs = np.asarray(voxel_size, dtype=np.float64).reshape(-1)
    pcr = np.asarray(point_cloud_range, dtype=np.float64).reshape(-1)
    if vs.shape != (3,) or pcr.shape != (6,):
        raise ValueError(f"voxel_size must have 3 values and point_cloud_range 6 "
                         f"(x_min, y_min, z_min, x_max, y_max, z_max); got voxel_size="
                         f"{vs.tolist()}, point_cloud_range={pcr.tolist()}")
    if not (np.all(np.isfinite(vs)) and np.all(np.isfinite(pcr))):
        raise ValueError(f"voxel_size {vs.tolist()} and point_cloud_range {pcr.tolist()} "
                         f"must be finite")
    size = vs.astype(np.float32)
    lo = pcr[:3].astype(np.float32)
    hi = pcr[3:].astype(np.float32)
    if np.any(size <= 0):
        raise ValueError(f"voxel_size must be positive on every axis, got {vs.tolist()}")
    # float32 subtraction and division, as in spconv; then round half away from zero (the
    # float32 quotient is exact in float64, so floor(q + 0.5) in float64 is std::round).
    q = ((hi - lo) / size).astype(np.float32).astype(np.float64)
    n = np.floor(q + 0.5)
    if np.any(n < 1):
        raise ValueError(f"point_cloud_range {pcr.tolist()} holds less than one voxel of size "
                         f"{vs.tolist()} on some axis (grid {n.tolist()})")
    if np.prod(n) >= 2 ** 62:
        raise ValueError(f"voxel grid {n.tolist()} is too large to index with int64")
    return VoxelGrid(lo=lo, size=size, shape_xyz=(int(n[0]), int(n[1]), int(n[2])))
