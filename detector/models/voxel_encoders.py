"""Voxel feature encoders: each non-empty voxel's feature is the mean of its points.

``MeanVFE`` works on hard voxels (zero-padded (V, P, C) blocks with a point count);
``DynamicMeanVFE`` on dynamic voxelization (one voxel id per point, no cap on points per voxel).
"""
from __future__ import annotations

import torch
from torch import nn

from detector.models.types import VoxelBatch
from detector.registry import MODELS


@MODELS.register_module()
class MeanVFE(nn.Module):
    """Mean of the (at most P) points of each hard voxel. Args: num_features (C, default 5)."""

    def __init__(self, num_features: int = 5):
        super().__init__()
        self.num_features = num_features

    @property
    def out_channels(self) -> int:
        return self.num_features

    def forward(self, batch: VoxelBatch) -> torch.Tensor:
        if batch.voxels is None or batch.num_points is None:
            raise ValueError("MeanVFE needs hard voxels; set the data preprocessor's mode='hard'")
        if batch.voxels.shape[-1] != self.num_features:
            raise ValueError(f"MeanVFE(num_features={self.num_features}) got voxels with "
                             f"{batch.voxels.shape[-1]} features")
        # Padding slots are zero, so the plain sum over P is the sum of the real points.
        count = batch.num_points.clamp(min=1).to(batch.voxels.dtype).unsqueeze(1)
        return batch.voxels.sum(dim=1) / count


@MODELS.register_module()
class DynamicMeanVFE(MeanVFE):
    """Mean of all points of each voxel under dynamic voxelization (scatter-mean by voxel id)."""

    def forward(self, batch: VoxelBatch) -> torch.Tensor:
        if batch.points is None or batch.point_voxel_ids is None:
            raise ValueError("DynamicMeanVFE needs dynamic voxels; set the data preprocessor's "
                             "mode='dynamic'")
        pts = batch.points[:, :self.num_features]
        ids = batch.point_voxel_ids
        keep = ids >= 0
        pts, ids = pts[keep], ids[keep]
        v = batch.num_voxels
        sums = pts.new_zeros((v, pts.shape[1])).index_add_(0, ids, pts)
        counts = pts.new_zeros(v).index_add_(0, ids, torch.ones_like(ids, dtype=pts.dtype))
        return sums / counts.clamp(min=1).unsqueeze(1)
