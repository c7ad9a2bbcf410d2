"""The voxelization entry points: argument checks, dispatch to the Numba CPU kernels
(``cpu.py``) or the Numba CUDA kernels (``cuda.py``) by the kind of the input, batch helpers,
and the accounting of dropped points (:class:`VoxelizeStats`, :class:`VoxelizeWarning`).
The semantics are described in the package docstring (``ops/voxelize/__init__.py``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np

from ops.voxelize.grid import VoxelGrid, make_grid

__all__ = ["voxelize_hard", "voxelize_dynamic", "voxelize_batch_hard", "voxelize_batch_dynamic",
           "VoxelizeStats", "VoxelizeWarning"]


class VoxelizeWarning(UserWarning):
    """Points or voxels were dropped by voxelization (beyond max_voxels, or non-finite)."""


@dataclass
class VoxelizeStats:
    """What voxelization kept and dropped, for logging (summed over frames in batch helpers)."""
    num_points: int = 0                    # input points
    num_nonfinite: int = 0                 # dropped: NaN/inf in x, y or z
    num_out_of_range: int = 0              # dropped: finite but outside the grid
    num_voxels: int = 0                    # voxels returned
    num_dropped_voxels: int = 0            # voxels beyond max_voxels (hard only)
    num_points_in_dropped_voxels: int = 0  # their points (hard only)
    num_points_over_max_points: int = 0    # points beyond max_points_per_voxel (hard only)

    def __iadd__(self, other: "VoxelizeStats") -> "VoxelizeStats":
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


def _warn_if_lossy(stats: VoxelizeStats, what: str) -> None:
    msgs = []
    if stats.num_dropped_voxels:
        msgs.append(f"dropped {stats.num_dropped_voxels} voxels beyond max_voxels "
                    f"({stats.num_points_in_dropped_voxels} points)")
    if stats.num_nonfinite:
        msgs.append(f"dropped {stats.num_nonfinite} points with NaN/inf coordinates")
    if msgs:
        warnings.warn(f"{what}: " + "; ".join(msgs) + " (pass return_stats=True to get the counts)",
                      VoxelizeWarning, stacklevel=3)


# ----------------------------------------------------------------------------- input handling
def _kind(points: Any) -> str:
    """'numpy', 'torch' (CPU), 'torch_cuda' or 'cuda' (a Numba/CAI device array)."""
    if isinstance(points, np.ndarray):
        return "numpy"
    try:
        import torch
        if isinstance(points, torch.Tensor):
            return "torch_cuda" if points.is_cuda else "torch"
    except ImportError:  # pragma: no cover - torch is a project dependency
        pass
    # Numba device arrays (the CUDA simulator's lack __cuda_array_interface__) or any CAI array
    if hasattr(points, "__cuda_array_interface__") or hasattr(points, "copy_to_host"):
        return "cuda"
    raise TypeError(f"points must be a numpy array, a torch tensor or a CUDA device array, "
                    f"got {type(points).__name__}")


def _check_points(points: Any, name: str = "points") -> None:
    shape = tuple(points.shape)
    if len(shape) != 2 or shape[1] < 3:
        raise ValueError(f"{name} must have shape (N, C >= 3) with x, y, z first, got {shape}")
    dt = str(points.dtype).replace("torch.", "")
    if dt not in ("float32", "float64"):
        raise TypeError(f"{name} must be float32 or float64, got dtype {dt}")


def _check_caps(max_points_per_voxel: int, max_voxels: int) -> tuple[int, int]:
    p, v = int(max_points_per_voxel), int(max_voxels)
    if p < 1 or v < 0 or p != max_points_per_voxel or v != max_voxels:
        raise ValueError(f"max_points_per_voxel must be an integer >= 1 and max_voxels an integer "
                         f">= 0, got {max_points_per_voxel!r} and {max_voxels!r}")
    return p, v


def _run(points: Any, grid: VoxelGrid, max_points: int, max_voxels: int, hard: bool,
         num_threads: int | None = None):
    kind = _kind(points)
    _check_points(points)
    if kind in ("numpy", "torch"):
        from ops.voxelize.cpu import voxelize_cpu
        arr = points.detach().numpy() if kind == "torch" else points
        arr = np.ascontiguousarray(arr)
        outs, info = voxelize_cpu(arr, grid.lo, grid.size, grid.shape_xyz, max_points,
                                  max_voxels, hard, threads=num_threads)
        if kind == "torch":
            import torch
            outs = tuple(torch.from_numpy(o) for o in outs)
        return outs, VoxelizeStats(**info)
    from ops.voxelize.cuda import voxelize_cuda
    if kind == "torch_cuda":
        import torch
        from numba import cuda
        with torch.cuda.device(points.device):
            dev = cuda.as_cuda_array(points.detach().contiguous())
            stream = cuda.external_stream(torch.cuda.current_stream(points.device).cuda_stream)
            outs, info = voxelize_cuda(dev, grid.lo, grid.size, grid.shape_xyz, max_points,
                                       max_voxels, hard, stream=stream)
            outs = tuple(torch.as_tensor(o, device=points.device) for o in outs)
        return outs, VoxelizeStats(**info)
    outs, info = voxelize_cuda(points, grid.lo, grid.size, grid.shape_xyz, max_points,
                               max_voxels, hard)
    return outs, VoxelizeStats(**info)


# ----------------------------------------------------------------------------- public API
def voxelize_hard(points: Any, voxel_size: Sequence[float], point_cloud_range: Sequence[float],
                  max_points_per_voxel: int = 5, max_voxels: int = 150000,
                  return_stats: bool = False, num_threads: int | None = None):
    """Hard voxelization, identical to spconv's ``PointToVoxel``.

    Args:
        points: (N, C >= 3) float32/float64, columns x, y, z, features...
        voxel_size: (vx, vy, vz) metres.
        point_cloud_range: (x_min, y_min, z_min, x_max, y_max, z_max) metres.
        max_points_per_voxel: points kept per voxel, the first in input order (default 5).
        max_voxels: voxels kept, the first by first point (default 150000).
        return_stats: also return a :class:`VoxelizeStats` (default False: warn when lossy).
        num_threads: CPU threads (default None: Numba's thread count, or 1 for small clouds
            or when the machine is saturated, see ``cpu._threads_for``). Results never
            depend on it.

    Returns:
        voxels (V, P, C) same dtype as points, zero padded; coords (V, 3) int32 (z, y, x);
        num_points (V,) int32; [stats].
    """
    grid = make_grid(voxel_size, point_cloud_range)
    p, v = _check_caps(max_points_per_voxel, max_voxels)
    outs, stats = _run(points, grid, p, v, hard=True, num_threads=num_threads)
    if return_stats:
        return (*outs, stats)
    _warn_if_lossy(stats, "voxelize_hard")
    return outs


def voxelize_dynamic(points: Any, voxel_size: Sequence[float], point_cloud_range: Sequence[float],
                     return_stats: bool = False, num_threads: int | None = None):
    """Dynamic voxelization: every in-range point gets the id of its voxel (no caps).

    Returns:
        point_voxel_ids (N,) int64 index into coords, -1 for points outside the range or
        non-finite; coords (V, 3) int32 (z, y, x), voxels numbered by first point; [stats].
        Arguments as in :func:`voxelize_hard`.
    """
    grid = make_grid(voxel_size, point_cloud_range)
    outs, stats = _run(points, grid, 1, 0, hard=False, num_threads=num_threads)
    if return_stats:
        return (*outs, stats)
    _warn_if_lossy(stats, "voxelize_dynamic")
    return outs


def _batch_inputs(points_list: Sequence[Any]):
    import torch
    if isinstance(points_list, (np.ndarray, torch.Tensor)) or len(points_list) == 0:
        raise ValueError("points_list must be a non-empty list of (N_i, C) point clouds")
    tensors = []
    for i, p in enumerate(points_list):
        if isinstance(p, np.ndarray):
            p = torch.from_numpy(p)
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"points_list[{i}] must be a torch tensor or numpy array, "
                            f"got {type(p).__name__}")
        _check_points(p, f"points_list[{i}]")
        if tensors and p.device != tensors[0].device:
            raise ValueError(f"points_list[{i}] is on {p.device}, points_list[0] on "
                             f"{tensors[0].device}; all frames must be on one device")
        if tensors and p.shape[1] != tensors[0].shape[1]:
            raise ValueError(f"points_list[{i}] has {p.shape[1]} columns, points_list[0] has "
                             f"{tensors[0].shape[1]}")
        tensors.append(p)
    return tensors


def _with_batch_index(coords, b: int):
    import torch
    col = torch.full((coords.shape[0], 1), b, dtype=torch.int32, device=coords.device)
    return torch.cat([col, coords], dim=1)


def voxelize_batch_hard(points_list: Sequence[Any], voxel_size: Sequence[float],
                        point_cloud_range: Sequence[float], max_points_per_voxel: int = 5,
                        max_voxels: int = 150000, return_stats: bool = False):
    """Hard-voxelize each frame (``max_voxels`` applies per frame) and concatenate.

    Returns torch tensors on the frames' device: voxels (V, P, C), coords (V, 4) int32
    ``(b, z, y, x)`` ready for spconv, num_points (V,) int32; [stats summed over frames].
    """
    import torch
    tensors = _batch_inputs(points_list)
    grid = make_grid(voxel_size, point_cloud_range)
    p, v = _check_caps(max_points_per_voxel, max_voxels)
    total = VoxelizeStats()
    voxels, coords, nums = [], [], []
    for b, pts in enumerate(tensors):
        (vox, crd, num), stats = _run(pts, grid, p, v, hard=True)
        total += stats
        voxels.append(vox)
        coords.append(_with_batch_index(crd, b))
        nums.append(num)
    outs = (torch.cat(voxels), torch.cat(coords), torch.cat(nums))
    if return_stats:
        return (*outs, total)
    _warn_if_lossy(total, "voxelize_batch_hard")
    return outs


def voxelize_batch_dynamic(points_list: Sequence[Any], voxel_size: Sequence[float],
                           point_cloud_range: Sequence[float], return_stats: bool = False):
    """Dynamic-voxelize each frame and concatenate.

    Returns torch tensors: point_voxel_ids (sum N_i,) int64 into the batched coords (-1 for
    dropped points), coords (V, 4) int32 ``(b, z, y, x)``; [stats summed over frames].
    """
    import torch
    tensors = _batch_inputs(points_list)
    grid = make_grid(voxel_size, point_cloud_range)
    total = VoxelizeStats()
    ids, coords = [], []
    offset = 0
    for b, pts in enumerate(tensors):
        (pid, crd), stats = _run(pts, grid, 1, 0, hard=False)
        total += stats
        ids.append(torch.where(pid >= 0, pid + offset, pid))
        coords.append(_with_batch_index(crd, b))
        offset += crd.shape[0]
    outs = (torch.cat(ids), torch.cat(coords))
    if return_stats:
        return (*outs, total)
    _warn_if_lossy(total, "voxelize_batch_dynamic")
    return outs
