"""Moves a batch to the model's device and voxelizes it (ops/voxelize), as the model's
mmengine data preprocessor.

Input (from the data loader): ``dict(inputs=dict(points=[Tensor (N_i, C)]), data_samples=[...])``
with columns ``MODEL_POINT_FEATURES``. Output: the same dict with ``inputs["voxels"]`` a
:class:`VoxelBatch` added (the per-frame point lists stay, for dynamic encoders and target
filtering), everything on the model's device: the points through mmengine's ``cast_data``, the
``Det3DSample``s (plain dataclasses, which ``cast_data`` passes over) through their ``.to()``.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from mmengine.model import BaseDataPreprocessor

from detector.models.types import VoxelBatch
from detector.registry import MODELS


def grid_size_of(voxel_size: Sequence[float], point_cloud_range: Sequence[float]) -> tuple[int, int, int]:
    """Voxel grid size ``(nx, ny, nz)`` of a range; the range must be a whole number of voxels."""
    vs = np.asarray(voxel_size, dtype=np.float64)
    pcr = np.asarray(point_cloud_range, dtype=np.float64)
    if vs.shape != (3,) or pcr.shape != (6,):
        raise ValueError(f"voxel_size must have 3 values and point_cloud_range 6, got "
                         f"voxel_size={list(voxel_size)}, point_cloud_range={list(point_cloud_range)}")
    extent = pcr[3:] - pcr[:3]
    if np.any(vs <= 0) or np.any(extent <= 0):
        raise ValueError(f"voxel_size {list(voxel_size)} and the extent of point_cloud_range "
                         f"{list(point_cloud_range)} must be positive")
    n = extent / vs
    rounded = np.round(n)
    if np.any(np.abs(n - rounded) > 1e-4):
        raise ValueError(f"point_cloud_range {list(point_cloud_range)} is not a whole number of "
                         f"voxels of size {list(voxel_size)} (got {n.tolist()} voxels)")
    return tuple(int(v) for v in rounded)


@MODELS.register_module()
class VoxelDataPreprocessor(BaseDataPreprocessor):
    """Voxelizes point clouds on the fly.

    Args:
        voxel_size: (vx, vy, vz) metres.
        point_cloud_range: (x_min, y_min, z_min, x_max, y_max, z_max) metres.
        max_points_per_voxel: hard mode only; points beyond it are dropped (default 5).
        max_voxels: hard mode only; ``(train, test)`` caps per frame, or one int for both.
        mode: ``"hard"`` (voxels (V, P, C) for ``MeanVFE``) or ``"dynamic"`` (per-point voxel ids
            for ``DynamicMeanVFE``).
    """

    def __init__(self, voxel_size: Sequence[float], point_cloud_range: Sequence[float],
                 max_points_per_voxel: int = 5, max_voxels: int | Sequence[int] = (150000, 150000),
                 mode: str = "hard", non_blocking: bool = False):
        super().__init__(non_blocking=non_blocking)
        if mode not in ("hard", "dynamic"):
            raise ValueError(f"VoxelDataPreprocessor.mode must be 'hard' or 'dynamic', got {mode!r}")
        self.voxel_size = [float(v) for v in voxel_size]
        self.point_cloud_range = [float(v) for v in point_cloud_range]
        self.grid_size = grid_size_of(self.voxel_size, self.point_cloud_range)
        self.max_points_per_voxel = int(max_points_per_voxel)
        if isinstance(max_voxels, int):
            max_voxels = (max_voxels, max_voxels)
        if len(max_voxels) != 2:
            raise ValueError(f"max_voxels must be an int or (train, test), got {max_voxels!r}")
        self.max_voxels = (int(max_voxels[0]), int(max_voxels[1]))
        self.mode = mode

    def voxelize(self, points_list: list[torch.Tensor], training: bool) -> VoxelBatch:
        """Voxelize a list of per-frame ``(N_i, C)`` point tensors into one :class:`VoxelBatch`."""
        from ops.voxelize import voxelize_batch_dynamic, voxelize_batch_hard

        for i, p in enumerate(points_list):
            if p.ndim != 2 or p.shape[1] < 3:
                raise ValueError(f"inputs['points'][{i}] must be (N, C>=3), got shape {tuple(p.shape)}")
        device = points_list[0].device if points_list else torch.device("cpu")
        if self.mode == "hard":
            voxels, coords, num_points = voxelize_batch_hard(
                points_list, self.voxel_size, self.point_cloud_range, self.max_points_per_voxel,
                self.max_voxels[0] if training else self.max_voxels[1])
            return VoxelBatch(coords=torch.as_tensor(coords, device=device).int(),
                              batch_size=len(points_list), mode="hard",
                              voxels=torch.as_tensor(voxels, device=device).float(),
                              num_points=torch.as_tensor(num_points, device=device).int())
        ids, coords = voxelize_batch_dynamic(points_list, self.voxel_size, self.point_cloud_range)
        return VoxelBatch(coords=torch.as_tensor(coords, device=device).int(),
                          batch_size=len(points_list), mode="dynamic",
                          points=torch.cat([p.float() for p in points_list], 0),
                          point_voxel_ids=torch.as_tensor(ids, device=device).long())

    def move_samples(self, samples):
        """The data samples on the model's device (each ``Det3DSample.to``; None stays None)."""
        if samples is None:
            return None
        return [s.to(self.device, non_blocking=self._non_blocking) if hasattr(s, "to") else s
                for s in samples]

    def _finite(self, i: int, p: torch.Tensor) -> torch.Tensor:
        """Drop points with NaN/inf x, y or z (counted in ``nonfinite_points_dropped``, warned)
        before they reach the voxelizer, the encoders and the target filter. Applied to CPU
        tensors (what the data loader gives) before they move; points handed over already on an
        accelerator are not filtered, since that would read a value back to the host."""
        if p.ndim != 2 or p.shape[1] < 3 or p.shape[0] == 0:
            return p
        finite = torch.isfinite(p[:, :3]).all(1)
        if bool(finite.all()):
            return p
        bad = int((~finite).sum())
        self.nonfinite_points_dropped = getattr(self, "nonfinite_points_dropped", 0) + bad
        warnings.warn(f"VoxelDataPreprocessor: inputs['points'][{i}]: dropped {bad} of "
                      f"{p.shape[0]} points with NaN/inf x, y or z")
        return p[finite]

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs = dict(data["inputs"])
        if "points" not in inputs:
            raise KeyError("VoxelDataPreprocessor expects data['inputs']['points'] "
                           f"(a list of (N, C) tensors); got keys {sorted(inputs)}")
        points = inputs["points"]
        if isinstance(points, torch.Tensor):
            points = [points]
        # non-finite points leave while the batch is still where the loader made it (the CPU):
        # a mask there costs no device-to-host read
        inputs["points"] = [self._finite(i, p) if p.device.type == "cpu" else p
                            for i, p in enumerate(points)]
        data = self.cast_data({**data, "inputs": inputs})
        samples = self.move_samples(data.get("data_samples"))
        inputs = dict(data["inputs"])
        inputs["points"] = [p.float() for p in inputs["points"]]
        inputs["voxels"] = self.voxelize(inputs["points"], training)
        return dict(inputs=inputs, data_samples=samples)
