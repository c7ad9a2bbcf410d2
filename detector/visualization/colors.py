"""Colours for drawing frames: per-point colour schemes and one colour per Waymo object type.

Point columns are those of ``detector.datasets.converted.load_points``: x, y, z, intensity (raw),
elongation, return_index, lidar_id, nlz. Raw Waymo intensities are mostly below 1 with a long
tail of retro-reflectors far above it, so the intensity scheme maps ``tanh(intensity)`` (the
model's own feature) through a square root to spread the dark majority over the colour map.
"""
from __future__ import annotations

import numpy as np

from detector.structures import WAYMO_TYPES

# RGB in [0, 1]. Ground truth is drawn in the colour of its type; predictions in one colour
# that no type uses, so the two are told apart at a glance.
TYPE_COLORS = {
    WAYMO_TYPES["UNKNOWN"]: (0.70, 0.70, 0.70),
    WAYMO_TYPES["VEHICLE"]: (0.10, 0.90, 0.20),
    WAYMO_TYPES["PEDESTRIAN"]: (1.00, 0.85, 0.00),
    WAYMO_TYPES["SIGN"]: (0.70, 0.35, 1.00),
    WAYMO_TYPES["CYCLIST"]: (0.10, 0.75, 1.00),
}
PREDICTION_COLOR = (1.00, 0.15, 0.45)
EGO_COLOR = (1.00, 1.00, 1.00)
BACKGROUND_COLOR = (0.04, 0.04, 0.06)

# Categorical colours for lidar names (TOP=1 .. REAR=5) and return index (1 = first, 2 = second,
# as ``decode_frame`` writes them; 0 is unused).
LIDAR_COLORS = np.array([
    (0.6, 0.6, 0.6),    # 0: unknown
    (0.85, 0.85, 0.85),  # 1: TOP
    (1.0, 0.45, 0.1),   # 2: FRONT
    (0.2, 0.8, 0.3),    # 3: SIDE_LEFT
    (0.3, 0.55, 1.0),   # 4: SIDE_RIGHT
    (0.95, 0.3, 0.85),  # 5: REAR
], dtype=np.float64)
RETURN_COLORS = np.array([(0.6, 0.6, 0.6), (0.85, 0.85, 0.85), (1.0, 0.5, 0.1)],
                         dtype=np.float64)

POINT_COLOR_MODES = ("intensity", "height", "lidar", "return")
# Column each mode needs in the (N, 8) point array.
_MODE_COLUMN = {"intensity": 3, "height": 2, "lidar": 6, "return": 5}


def type_color(waymo_type: int) -> tuple[float, float, float]:
    """Colour of a Waymo object type (unknown values get the UNKNOWN colour)."""
    return TYPE_COLORS.get(int(waymo_type), TYPE_COLORS[WAYMO_TYPES["UNKNOWN"]])


def _colormap(values01: np.ndarray, name: str) -> np.ndarray:
    from matplotlib import colormaps
    return colormaps[name](np.clip(values01, 0.0, 1.0))[:, :3].astype(np.float64)


def point_colors(points, mode: str = "intensity",
                 z_range: tuple[float, float] = (-2.5, 4.0)) -> np.ndarray:
    """RGB colours (N, 3) float64 in [0, 1] for ``points`` (N, C) by ``mode``.

    Modes: ``intensity`` (column 3), ``height`` (z, clipped to ``z_range``), ``lidar``
    (column 6, lidar name), ``return`` (column 5, 1 = first return, 2 = second).
    """
    if mode not in _MODE_COLUMN:
        raise ValueError(f"unknown point colour mode {mode!r}: expected one of {POINT_COLOR_MODES}")
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points: expected shape (N, C >= 3), got {pts.shape}")
    col = _MODE_COLUMN[mode]
    if pts.shape[1] <= col:
        raise ValueError(f"point colour mode {mode!r} needs column {col} but the points have "
                         f"only {pts.shape[1]} columns (x, y, z, intensity, elongation, "
                         f"return_index, lidar_id, nlz); choose another mode")
    if pts.shape[0] == 0:
        return np.zeros((0, 3))
    v = pts[:, col].astype(np.float64)
    if mode == "intensity":
        return _colormap(np.sqrt(np.tanh(np.maximum(v, 0.0))), "inferno") * 0.9 + 0.1
    if mode == "height":
        lo, hi = z_range
        return _colormap((v - lo) / (hi - lo), "turbo")
    table = LIDAR_COLORS if mode == "lidar" else RETURN_COLORS
    idx = np.clip(np.rint(v).astype(np.int64), 0, len(table) - 1)
    return table[idx]
