"""The named things that flow between pipeline stages (instead of one shared mutable dict).

Box convention (docs/ARCHITECTURE.md): ``(cx, cy, cz, length, width, height, heading)`` float32 in
the vehicle frame, heading counter-clockwise from +x in [-pi, pi). Class labels are indices into
the model's ``class_names`` (e.g. ``("VEHICLE",)``); Waymo label types are mapped at the dataset
boundary (``WAYMO_TYPES``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# Waymo label.proto Type enum.
WAYMO_TYPES = {"UNKNOWN": 0, "VEHICLE": 1, "PEDESTRIAN": 2, "SIGN": 3, "CYCLIST": 4}
WAYMO_TYPE_NAMES = {v: k for k, v in WAYMO_TYPES.items()}

# Point features the model consumes, in this order (the dataset applies tanh to intensity).
MODEL_POINT_FEATURES = ("x", "y", "z", "tanh_intensity", "elongation")


@dataclass
class Det3DSample:
    """One frame's ground truth and identity, as the data loader hands it to the model.

    gt_boxes: (M, 7) float32; gt_labels: (M,) int64 class indices into the model's class_names.
    """
    gt_boxes: torch.Tensor
    gt_labels: torch.Tensor
    frame_id: int = 0
    context_name: str = ""
    timestamp_micros: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def to(self, device) -> "Det3DSample":
        return Det3DSample(self.gt_boxes.to(device), self.gt_labels.to(device), self.frame_id,
                           self.context_name, self.timestamp_micros, self.meta)


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
