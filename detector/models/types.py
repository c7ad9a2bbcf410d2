"""Named containers that flow between the detector's own stages (no shared mutable dict).

Split with ``detector/structures.py``: that module holds the contracts at the model's boundary
(what the data loader hands in, ``Det3DSample``, and what comes out, ``Detections``); this one
holds what stays inside the model - the voxelized batch, the head's raw outputs and the
training targets.
"""
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


@dataclass
class FrameTargets:
    """One frame's targets for one class group (``targets.encode_targets``); K = max_objs slots.

    heatmap (C, H, W) float32; indices (K,) int64 flat cell index y * W + x; mask (K,) bool
    (used slots); reg: branch -> (K, channels) float32; boxes (K, 7) the ground truth box of
    each slot; centre (K,) bool: used slots at an object's centre cell (== mask unless
    ``add_neighbour_slots`` appended neighbour slots).
    """
    heatmap: torch.Tensor
    indices: torch.Tensor
    mask: torch.Tensor
    reg: dict
    boxes: torch.Tensor
    centre: torch.Tensor


@dataclass
class GroupTargets:
    """A batch's targets for one class group (``CenterHead.targets``): the fields of
    :class:`FrameTargets` stacked over the B frames - heatmap (B, C, H, W), indices / mask /
    centre (B, K), reg: branch -> (B, K, channels), boxes (B, K, 7)."""
    heatmap: torch.Tensor
    indices: torch.Tensor
    mask: torch.Tensor
    reg: dict
    boxes: torch.Tensor
    centre: torch.Tensor

    @classmethod
    def stack(cls, frames: list[FrameTargets]) -> "GroupTargets":
        if not frames:
            raise ValueError("GroupTargets.stack: no frames")
        return cls(heatmap=torch.stack([f.heatmap for f in frames]),
                   indices=torch.stack([f.indices for f in frames]),
                   mask=torch.stack([f.mask for f in frames]),
                   reg={k: torch.stack([f.reg[k] for f in frames]) for k in frames[0].reg},
                   boxes=torch.stack([f.boxes for f in frames]),
                   centre=torch.stack([f.centre for f in frames]))
