"""The data contracts that cross the dataset / model / metric boundary.

Split with ``detector/models/types.py``: this module holds what a data loader hands the model and
what the model hands back to the evaluator and the tools (``Det3DSample``, ``EvalGroundTruth``,
``Detections``); ``models/types.py`` holds what flows between the model's own stages (voxels,
head outputs, training targets) and never leaves the model.

Box convention (docs/ARCHITECTURE.md): ``(cx, cy, cz, length, width, height, heading)`` float32 in
the vehicle frame, heading counter-clockwise from +x in [-pi, pi). Class labels are indices into
the model's ``class_names`` (e.g. ``("VEHICLE",)``); Waymo label types are mapped at the dataset
boundary (``WAYMO_TYPES``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

from .conventions import MODEL_POINT_FEATURES, WAYMO_TYPE_NAMES, WAYMO_TYPES  # noqa: F401


@dataclass
class EvalGroundTruth:
    """One frame's ground truth as the metric needs it: unaugmented, unfiltered by point count,
    limited to the Waymo types the model predicts. Host numpy arrays (the metric runs on the
    host), so moving a batch to a device leaves them where they are.

    boxes (M, 7) float32; types (M,) int64 Waymo types; difficulty (M,) int64 (0 = UNKNOWN,
    1 = LEVEL_1, 2 = LEVEL_2 as labelled); num_points (M,) int64 lidar points in each box.
    """
    boxes: np.ndarray
    types: np.ndarray
    difficulty: np.ndarray
    num_points: np.ndarray

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 7)
        self.types = np.asarray(self.types, np.int64).reshape(-1)
        self.difficulty = np.asarray(self.difficulty, np.int64).reshape(-1)
        self.num_points = np.asarray(self.num_points, np.int64).reshape(-1)
        m = len(self.boxes)
        for name in ("types", "difficulty", "num_points"):
            if len(getattr(self, name)) != m:
                raise ValueError(f"EvalGroundTruth: {name} has {len(getattr(self, name))} rows, "
                                 f"boxes {m}")

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class Det3DSample:
    """One frame's ground truth and identity, as the data loader hands it to the model.

    gt_boxes: (M, 7) float32; gt_labels: (M,) int64 class indices into the model's class_names.
    eval_gt: the frame's evaluation ground truth (None where no metric needs it).
    meta: free-form bookkeeping (``sample_idx``, ``segment``, ``frame_index``); not read by the
    model or the metric.
    :meth:`to` moves every tensor field (the data preprocessor calls it, so the ground truth
    lives on the model's device like the points).
    """
    gt_boxes: torch.Tensor
    gt_labels: torch.Tensor
    frame_id: int = 0
    context_name: str = ""
    timestamp_micros: int = 0
    eval_gt: EvalGroundTruth | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to(self, device, non_blocking: bool = False) -> "Det3DSample":
        """A copy with every tensor field on ``device`` (the others shared)."""
        moved = {f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                 for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)


@dataclass
class Detections:
    """The detector's output for one frame: boxes (M, 7) float32, scores (M,), labels (M,) int64."""
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    frame_id: int = 0
    context_name: str = ""
    timestamp_micros: int = 0

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def cpu(self) -> "Detections":
        return Detections(self.boxes.detach().cpu(), self.scores.detach().cpu(),
                          self.labels.detach().cpu(), self.frame_id, self.context_name,
                          self.timestamp_micros)
