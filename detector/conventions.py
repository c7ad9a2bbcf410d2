"""Conventions shared by every stage, in one torch-free module.

- ``WAYMO_TYPES`` / ``WAYMO_TYPE_NAMES``: the Waymo ``label.proto`` ``Label.Type`` enum;
- ``LIDAR_NAMES`` / ``LIDAR_IDS``: the ``LaserName`` enum (TOP=1 .. REAR=5);
- ``POINT_COLUMNS``: the columns of a decoded / converted point cloud (N, 8) float32: x, y, z in
  the vehicle frame (metres), raw intensity, elongation, return index (1.0 / 2.0), lidar id
  (1.0..5.0) and nlz (1.0 inside a no-label zone, else 0.0);
- ``MODEL_POINT_FEATURES``: the (N, 5) features the model consumes, made by :func:`model_points`
  (tanh squashes the raw intensity, whose range is unbounded);
- :func:`frame_id`: the single frame-id scheme (converted data, metric, Objects files);
- :func:`angle_to_axes`: how far a heading is from the frame's x / y axes (the street axes of
  the synthetic scenes).
"""
from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["WAYMO_TYPES", "WAYMO_TYPE_NAMES", "LIDAR_NAMES", "LIDAR_IDS", "POINT_COLUMNS",
           "NUM_POINT_COLUMNS", "MODEL_POINT_FEATURES", "frame_id", "model_points",
           "angle_to_axes"]

WAYMO_TYPES = {"UNKNOWN": 0, "VEHICLE": 1, "PEDESTRIAN": 2, "SIGN": 3, "CYCLIST": 4}
WAYMO_TYPE_NAMES = {v: k for k, v in WAYMO_TYPES.items()}

LIDAR_NAMES = {1: "TOP", 2: "FRONT", 3: "SIDE_LEFT", 4: "SIDE_RIGHT", 5: "REAR"}
LIDAR_IDS = {v: k for k, v in LIDAR_NAMES.items()}

POINT_COLUMNS = ("x", "y", "z", "intensity", "elongation", "return_index", "lidar_id", "nlz")
NUM_POINT_COLUMNS = len(POINT_COLUMNS)

MODEL_POINT_FEATURES = ("x", "y", "z", "tanh_intensity", "elongation")


def frame_id(context_name: str, timestamp_micros: int) -> int:
    """Stable unique int64 frame id (>= 0): the first 63 bits (little-endian) of
    sha256("<context_name>:<timestamp_micros>").

    Converted data stores these ids (``frames.npz`` ``frame_id``), so changing the scheme would
    need a reconversion; the Objects-file reader uses the same function.
    """
    h = hashlib.sha256(f"{context_name}:{int(timestamp_micros)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFFFFFFFFFFFFFF


def model_points(points) -> np.ndarray:
    """(N, >= 5) points in ``POINT_COLUMNS`` order -> (N, 5) float32 ``MODEL_POINT_FEATURES``."""
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] < 5:
        raise ValueError(f"points: expected (N, >= 5) columns x, y, z, intensity, elongation, "
                         f"got shape {pts.shape}")
    out = pts[:, :5].copy()
    out[:, 3] = np.tanh(out[:, 3])
    return out


def angle_to_axes(yaw):
    """Angle (radians, in [0, pi/4]) between heading(s) ``yaw`` and the nearest multiple of 90
    degrees; a float for a scalar, an array otherwise."""
    off = np.abs(np.mod(np.asarray(yaw, dtype=np.float64) + np.pi / 4, np.pi / 2) - np.pi / 4)
    return float(off) if off.ndim == 0 else off
