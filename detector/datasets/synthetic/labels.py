"""3D labels of a synthetic frame, computed the way Waymo's are.

* Boxes: each object's label box at the frame time, in the frame's vehicle frame,
  ``(cx, cy, cz, length, width, height, heading)`` with heading in [-pi, pi). Every value is
  rounded to float32 before it is written, so a reader that converts to float32 (as the project's
  decoder does) sees exactly the box the counts were made with.
* Only boxes whose centre is within ``label_range`` (75 m, the TOP lidar's range) of the vehicle
  origin (2D) are labelled - including boxes that no ray reached (zero points), as in real data.
* ``num_lidar_points_in_box``: decoded points of all five lidars and both returns inside the box
  (closed box test in the box frame); ``num_top_lidar_points_in_box``: the TOP lidar's share.
* ``detection_difficulty_level``: LEVEL_2 when the box has <= 5 points, else left UNKNOWN (0),
  which the official metric treats as LEVEL_1 (docs/WAYMO.md, "Official 3D detection metric";
  real frames leave most labels at UNKNOWN too).
* Metadata speed / acceleration: the object's global velocity and acceleration expressed in the
  frame's vehicle axes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ops.boxes import points_in_boxes, points_in_boxes_indices

from .scene import Scene

__all__ = ["FrameLabels", "count_points_in_boxes", "count_points_in_boxes_reference",
           "make_labels", "LEVEL_1", "LEVEL_2", "UNKNOWN_LEVEL"]

UNKNOWN_LEVEL, LEVEL_1, LEVEL_2 = 0, 1, 2
_F32_PI = float(np.float32(np.pi))


def count_points_in_boxes(points, boxes):
    """(M,) number of points (N, >=3) inside each box (M, 7) (closed box, box frame test:
    ``ops.boxes``, whose grid kernel visits only the points near each box)."""
    return np.diff(points_in_boxes_indices(points, boxes)[0])


def count_points_in_boxes_reference(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The dense definition of :func:`count_points_in_boxes` (tests only)."""
    return points_in_boxes(points, boxes).sum(0).astype(np.int64)


@dataclass
class FrameLabels:
    object_index: np.ndarray   # (M,) index into scene.objects
    boxes: np.ndarray          # (M, 7) float64 holding float32-exact values, vehicle frame
    types: np.ndarray          # (M,) int
    ids: list
    num_points: np.ndarray     # (M,) all lidars, both returns
    num_top_points: np.ndarray
    difficulty: np.ndarray
    speed: np.ndarray          # (M, 3) vehicle axes
    accel: np.ndarray


def _heading_f32(h: np.ndarray) -> np.ndarray:
    """Wrap to [-pi, pi) and round to float32 without leaving the interval."""
    h = (np.asarray(h, np.float64) + np.pi) % (2 * np.pi) - np.pi
    h32 = h.astype(np.float32).astype(np.float64)
    top = float(np.nextafter(np.float32(np.pi), np.float32(0)))
    h32 = np.where(h32 >= np.pi, np.where(h >= 0, top, -top), h32)
    h32 = np.where(h32 < -np.pi, -top, h32)
    return h32


def make_labels(scene: Scene, t: float, pose_local: np.ndarray, points_all: np.ndarray,
                points_top: np.ndarray) -> FrameLabels:
    """Labels of the objects within range at time t; counts from the given vehicle-frame points."""
    cfg = scene.config
    R, tr = pose_local[:3, :3], pose_local[:3, 3]
    idx, boxes, speed, accel = [], [], [], []
    for k, ob in enumerate(scene.objects):
        wb = scene.label_box_world(k, t)
        c = R.T @ (wb[:3] - tr)
        if math.hypot(c[0], c[1]) > cfg.label_range:
            continue
        h = ob.heading(t)
        fwd = R.T @ np.array([math.cos(h), math.sin(h), 0.0])
        boxes.append([c[0], c[1], c[2], ob.length, ob.width, ob.height,
                      math.atan2(fwd[1], fwd[0])])
        speed.append(R.T @ ob.velocity(t))
        accel.append(R.T @ ob.acceleration(t))
        idx.append(k)
    m = len(idx)
    boxes = np.asarray(boxes, np.float64).reshape(m, 7)
    if m:
        boxes[:, :6] = boxes[:, :6].astype(np.float32).astype(np.float64)
        boxes[:, 6] = _heading_f32(boxes[:, 6])
    pa = np.ascontiguousarray(points_all, np.float32)
    pt = np.ascontiguousarray(points_top, np.float32)
    n_all = count_points_in_boxes(pa, boxes) if m else np.zeros(0, np.int64)
    n_top = count_points_in_boxes(pt, boxes) if m else np.zeros(0, np.int64)
    diff = np.where(n_all <= 5, LEVEL_2, UNKNOWN_LEVEL).astype(np.int64)
    return FrameLabels(np.asarray(idx, np.int64), boxes,
                       np.asarray([scene.objects[k].type for k in idx], np.int64),
                       [scene.objects[k].id for k in idx], n_all, n_top, diff,
                       np.asarray(speed, np.float64).reshape(m, 3),
                       np.asarray(accel, np.float64).reshape(m, 3))
