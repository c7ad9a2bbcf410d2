"""Box and camera geometry for drawing: the one place that turns boxes into corners and edges.

Boxes follow the project convention (docs/ARCHITECTURE.md, "Coordinate and box conventions"):
``(cx, cy, cz, length, width, height, heading)`` in the vehicle frame (x forward, y left, z up,
metres), centre at the geometric centre, length along the heading, heading counter-clockwise
from +x. Both renderers (Open3D and the matplotlib bird's-eye view) draw from
:func:`box_corners`, so a box looks the same everywhere.

Corner order (box frame: +x = along the heading, +y = to the box's left, +z = up)::

        7 -------- 4          top face:    4 front-left, 5 front-right,
       /|         /|                       6 rear-right, 7 rear-left
      6 -------- 5 |
      | |        | |   --> heading (+x of the box)
      | 3 -------|-0          bottom face: 0 front-left, 1 front-right,
      |/         |/                        2 rear-right, 3 rear-left
      2 -------- 1

Corner ``k + 4`` sits straight above corner ``k``; corners 0, 1, 4, 5 form the front face.

The camera helpers use the pinhole model with OpenCV axes (x right, y down, z forward), the
same model Open3D's ``OffscreenRenderer.setup_camera(intrinsic, extrinsic, w, h)`` takes, so a
3D point can be projected to the pixel where the renderer draws it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Signs of (x, y, z) of each corner in units of (length/2, width/2, height/2); order above.
_CORNER_SIGNS = np.array([
    [+1, +1, -1], [+1, -1, -1], [-1, -1, -1], [-1, +1, -1],
    [+1, +1, +1], [+1, -1, +1], [-1, -1, +1], [-1, +1, +1],
], dtype=np.float64)

# The 12 edges as corner-index pairs: bottom ring, top ring, then the four verticals.
BOX_EDGES = np.array([
    [0, 1], [1, 2], [2, 3], [3, 0],
    [4, 5], [5, 6], [6, 7], [7, 4],
    [0, 4], [1, 5], [2, 6], [3, 7],
], dtype=np.int64)

# Front face (corners 0, 1, 5, 4) crossed by its two diagonals, drawn as the heading marker,
# plus a line from the box centre to the centre of the front face.
FRONT_FACE = np.array([0, 1, 5, 4], dtype=np.int64)


def as_boxes(boxes, name: str = "boxes") -> np.ndarray:
    """Validate and return ``boxes`` as a float64 (M, 7) array (an empty input gives (0, 7))."""
    arr = np.asarray(boxes if boxes is not None else np.zeros((0, 7)), dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 7)
    if arr.ndim != 2 or arr.shape[1] != 7:
        raise ValueError(f"{name}: expected shape (M, 7) = (cx, cy, cz, length, width, height, "
                         f"heading), got {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ValueError(f"{name}: row {int(np.argmax(bad))} is not finite: {arr[bad][0].tolist()}")
    return arr


def box_corners(boxes) -> np.ndarray:
    """Corners of boxes ``(M, 7)`` -> ``(M, 8, 3)`` float64, in the order documented above."""
    b = as_boxes(boxes)
    half = b[:, None, 3:6] * 0.5 * _CORNER_SIGNS[None]          # (M, 8, 3) in the box frame
    c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
    x = c[:, None] * half[..., 0] - s[:, None] * half[..., 1]
    y = s[:, None] * half[..., 0] + c[:, None] * half[..., 1]
    return np.stack([x, y, half[..., 2]], axis=-1) + b[:, None, 0:3]


def box_edge_segments(boxes) -> np.ndarray:
    """The 12 wireframe edges of each box: ``(M, 12, 2, 3)`` endpoints, order of BOX_EDGES."""
    corners = box_corners(boxes)
    return corners[:, BOX_EDGES]


def heading_marker_segments(boxes) -> np.ndarray:
    """Heading marker of each box: ``(M, 3, 2, 3)`` segments.

    Segment 0 runs from the box centre to the centre of the front face (the heading direction);
    segments 1 and 2 are the diagonals of the front face (corners 0-5 and 1-4), an "X" that
    says which end is the front even when the box is seen from above.
    """
    b = as_boxes(boxes)
    corners = box_corners(b)
    front_centre = corners[:, FRONT_FACE].mean(axis=1)
    centre_to_front = np.stack([b[:, 0:3], front_centre], axis=1)
    diag_a = corners[:, [0, 5]]
    diag_b = corners[:, [1, 4]]
    return np.stack([centre_to_front, diag_a, diag_b], axis=1)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: ``intrinsic`` (3, 3), ``extrinsic`` (4, 4) world -> camera, image size.

    Camera axes are OpenCV's (x right, y down, z forward). A projected point (u, v) is (column,
    row) in continuous image coordinates: it falls in pixel ``image[int(v), int(u)]``.
    """
    intrinsic: np.ndarray
    extrinsic: np.ndarray
    width: int
    height: int

    @property
    def eye(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        r, t = self.extrinsic[:3, :3], self.extrinsic[:3, 3]
        return -r.T @ t

    def project(self, points) -> tuple[np.ndarray, np.ndarray]:
        """World points (..., 3) -> (pixel (..., 2) as (u, v), depth (...,) along the view axis)."""
        p = np.asarray(points, dtype=np.float64)
        cam = p @ self.extrinsic[:3, :3].T + self.extrinsic[:3, 3]
        depth = cam[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uvw = cam @ self.intrinsic.T
            uv = uvw[..., :2] / uvw[..., 2:3]
        return uv, depth

    def visible(self, points, margin: float = 0.0) -> np.ndarray:
        """Mask of points in front of the camera that project inside the image (less margin)."""
        uv, depth = self.project(points)
        return ((depth > 1e-6) & (uv[..., 0] >= margin) & (uv[..., 0] < self.width - margin)
                & (uv[..., 1] >= margin) & (uv[..., 1] < self.height - margin))


def look_at_camera(eye, target, up, vertical_fov_deg: float, width: int, height: int) -> Camera:
    """A camera at ``eye`` looking at ``target`` with ``up`` pointing up in the image."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    norm = np.linalg.norm(forward)
    if norm == 0:
        raise ValueError(f"look_at_camera: eye and target coincide at {eye.tolist()}")
    forward /= norm
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError(f"look_at_camera: up {up.tolist()} is parallel to the view direction")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward])                      # rows: camera axes in world
    extrinsic = np.eye(4)
    extrinsic[:3, :3] = rot
    extrinsic[:3, 3] = -rot @ eye
    focal = 0.5 * height / np.tan(np.radians(vertical_fov_deg) / 2)
    intrinsic = np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return Camera(intrinsic, extrinsic, int(width), int(height))


def chase_camera(width: int, height: int, distance_behind: float = 22.0, height_above: float = 20.0,
                 look_ahead: float = 22.0, vertical_fov_deg: float = 55.0) -> Camera:
    """The default view: high above and behind the ego vehicle, looking forward and down.

    The defaults frame the ~75 m that the Waymo top lidar sees ahead, with the ego vehicle near the
    bottom edge of the image and the sides of the road visible.
    """
    return look_at_camera(eye=(-distance_behind, 0.0, height_above), target=(look_ahead, 0.0, 0.0),
                          up=(0.0, 0.0, 1.0), vertical_fov_deg=vertical_fov_deg,
                          width=width, height=height)


def bev_camera(width: int, height: int, centre=(0.0, 0.0), half_extent_x: float = 78.0,
               half_extent_y: float = 42.0, vertical_fov_deg: float = 20.0) -> Camera:
    """Looking straight down on ``centre``, +x (forward) to the right and +y (left) up.

    The same orientation as the matplotlib bird's-eye view (``bev.py``), and a landscape image
    suits the road, which runs along x. The camera is placed high enough for
    ``[-half_extent_x, half_extent_x] x [-half_extent_y, half_extent_y]`` metres around the
    centre to fit at ground level; a narrow field of view from far above is close to
    orthographic.
    """
    tan_half = np.tan(np.radians(vertical_fov_deg) / 2)
    aspect = width / height
    altitude = max(half_extent_y / tan_half, half_extent_x / (aspect * tan_half))
    cx, cy = float(centre[0]), float(centre[1])
    return look_at_camera(eye=(cx, cy, altitude), target=(cx, cy, 0.0), up=(0.0, 1.0, 0.0),
                          vertical_fov_deg=vertical_fov_deg, width=width, height=height)


def make_camera(view: str, width: int, height: int) -> Camera:
    """Camera preset by name: ``"chase"`` (default) or ``"bev"``."""
    if view == "chase":
        return chase_camera(width, height)
    if view == "bev":
        return bev_camera(width, height)
    raise ValueError(f"unknown view {view!r}: expected 'chase' or 'bev'")
