"""Point cloud -> voxels, hard (at most P points per voxel, at most V voxels) and dynamic
(one voxel id per point), on the CPU (Numba) and on CUDA devices (Numba CUDA).

Semantics are those of spconv 2.x's ``PointToVoxel`` (``spconv.pytorch.utils``), and results are
identical to it (tests/test_voxelize.py checks this on random and adversarial clouds):

* a point belongs to cell ``floor((p - range_min) / voxel_size)`` computed in float32 for
  float32 points (float64 for float64 points, with the float32-rounded range and size), and is
  kept when that index is inside ``[0, grid_size)`` on every axis, ``grid_size =
  round((range_max - range_min) / voxel_size)`` in float32. Consequence found by probing spconv:
  the test is on the rounded index, so a point exactly on ``range_max`` can still be kept (with
  Waymo's grid, ``x = 75.2`` falls in cell 1503 because ``150.4f / 0.1f`` rounds below 1504);
  see ``grid.py``;
* NaN/inf in x, y or z: the point is dropped (and counted); other columns are copied unchanged;
* voxels are numbered in order of their first point; each keeps its first
  ``max_points_per_voxel`` points in input order, zero padded; voxels beyond ``max_voxels`` are
  dropped with all their points (``point_voxel_ids`` of such points are -1 in spconv, and the
  count is reported here);
* coords are ``(z, y, x)`` int32.

Public API::

    voxels, coords, num_points = voxelize_hard(points, voxel_size, point_cloud_range,
                                               max_points_per_voxel=5, max_voxels=150000)
    point_voxel_ids, coords = voxelize_dynamic(points, voxel_size, point_cloud_range)
    voxels, coords_bzyx, num_points = voxelize_batch_hard(points_list, ...)
    point_voxel_ids, coords_bzyx = voxelize_batch_dynamic(points_list, ...)

``points`` is an (N, C >= 3) float32 (or float64) numpy array, torch tensor (CPU or CUDA) or
Numba CUDA device array; results come back as the same kind of object on the same device. Pass
``return_stats=True`` to also get a :class:`VoxelizeStats`; without it, dropped voxels and
non-finite points raise a :class:`VoxelizeWarning` (Python shows it once per call site), so
nothing is lost silently.

Files: ``dispatch.py`` (these entry points), ``grid.py`` (the grid arithmetic), ``cpu.py`` and
``cuda.py`` (the kernels), ``reference.py`` (plain numpy, for the tests).
"""
from ops.voxelize.dispatch import (VoxelizeStats, VoxelizeWarning, voxelize_batch_dynamic,
                                   voxelize_batch_hard, voxelize_dynamic, voxelize_hard)
from ops.voxelize.grid import VoxelGrid, make_grid

__all__ = ["voxelize_hard", "voxelize_dynamic", "voxelize_batch_hard", "voxelize_batch_dynamic",
           "VoxelizeStats", "VoxelizeWarning", "VoxelGrid", "make_grid"]
