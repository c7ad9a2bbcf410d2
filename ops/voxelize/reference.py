"""Slow, obviously correct voxelization in plain numpy + a Python dict (used only by tests).

Same semantics as ``ops.voxelize`` (and spconv's ``PointToVoxel``, see ``grid.py``): cell index
``floor((p - min) / size)`` in the point's precision, kept when inside ``[0, grid)`` on every
axis; voxels numbered in order of their first point; each keeps its first ``max_points`` points.
"""
from __future__ import annotations

import numpy as np

from ops.voxelize.grid import VoxelGrid

__all__ = ["reference_voxelize"]


def reference_voxelize(points: np.ndarray, grid: VoxelGrid, max_points: int, max_voxels: int):
    """Returns voxels (V, P, C), coords (V, 3) zyx int32, num_points (V,) int32,
    point_voxel_ids (N,) int64 (-1 when dropped) and the number of voxels beyond ``max_voxels``."""
    points = np.asarray(points)
    n, c = points.shape
    dt = points.dtype
    q = (points[:, :3] - grid.lo.astype(dt)) / grid.size.astype(dt)   # computed in dtype dt
    with np.errstate(invalid="ignore"):
        inside = np.all((q >= 0) & (q < np.array(grid.shape_xyz)), axis=1)
    cell = np.zeros((n, 3), np.int64)
    cell[inside] = np.floor(q[inside]).astype(np.int64)

    voxel_of_cell: dict[tuple[int, int, int], int] = {}
    members: list[list[int]] = []
    ids = np.full(n, -1, np.int64)
    for i in range(n):
        if not inside[i]:
            continue
        key = (int(cell[i, 2]), int(cell[i, 1]), int(cell[i, 0]))   # (z, y, x)
        if key not in voxel_of_cell:
            voxel_of_cell[key] = len(members)
            members.append([])
        v = voxel_of_cell[key]
        members[v].append(i)
        ids[i] = v if v < max_voxels else -1

    kept = min(len(members), max_voxels)
    voxels = np.zeros((kept, max_points, c), dt)
    coords = np.zeros((kept, 3), np.int32)
    num_points = np.zeros(kept, np.int32)
    for key, v in voxel_of_cell.items():
        if v >= kept:
            continue
        coords[v] = key
        first = members[v][:max_points]
        num_points[v] = len(first)
        voxels[v, :len(first)] = points[first]
    return voxels, coords, num_points, ids, len(members) - kept
