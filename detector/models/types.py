"""Named containers that flow between the detector's stages (no shared mutable dict)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class VoxelBatch:
    """A voxelized batch, as ``VoxelDataPreprocessor`` hands it to the voxel encoder.

    mode "hard": ``voxels`` (V, P, C) float32 (zero-padded), ``num_points`` (V,) int32.
    mode "dynamic": ``points`` (N, C) float32 of the whole batch and ``point_voxel_ids`` (N,)
    int64 (-1 = outside the range / dropped).
    Both: ``coords`` (V, 4) int32 ``(batch, z, y, x)``, ``batch_size``.
    """
    coords: torch.Tensor
    batch_size: int
    mode: str = "hard"
    voxels: torch.Tensor | None = None
    num_points: torch.Tensor | None = None
    points: torch.Tensor | None = None
    point_voxel_ids: torch.Tensor | None = None

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])


@dataclass
class HeadOutputs:
    """Raw head predictions: one dict per class group, branch name -> (B, C_branch, H, W).

    Branch names: ``heatmap`` (one channel per class of the group, logits), ``offset`` (2),
    ``z`` (1), ``size`` (3, log of length/width/height), ``heading`` (2, sin/cos), optionally
    ``iou`` (1). ``shared`` is the shared head activation (before GradDrop), kept for tests.
    """
    groups: list[dict[str, torch.Tensor]]
    shared: torch.Tensor | None = None
