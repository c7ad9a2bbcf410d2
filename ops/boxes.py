"""Box geometry shared by the data pipeline, the targets and the synthetic data: which points lie
in which boxes, and angle wrapping.

Boxes are ``(cx, cy, cz, length, width, height, heading)`` (docs/ARCHITECTURE.md, "Coordinate
and box conventions"): centre at the geometric centre, length along the heading, heading
counter-clockwise from +x about z.

**Inside** means closed on every face: a point is in a box when, rotated into the box frame
(by -heading about the box centre),

    |dx cos(h) + dy sin(h)| <= length / 2,  |-dx sin(h) + dy cos(h)| <= width / 2,
    |dz| <= height / 2,

with ``d`` = point - centre. A point exactly on a face is inside. Both functions below evaluate
these expressions in this order; they can only disagree where numpy's and Numba's cos/sin of a
heading differ in the last bit and a point lies within that rounding of a face.

    mask = points_in_boxes(points, boxes)   # (N, M) bool; numpy (float64) or torch (its dtype)
    offsets, idx = points_in_boxes_indices(xyz, boxes)   # the same sets, fast, for big frames
    theta = wrap_angle(theta)               # into [-pi, pi); numpy or torch

``points_in_boxes`` is the simple dense definition (N x M work); on numpy inputs it runs in
float64 whatever the input dtype, on torch tensors in the tensor's dtype and device (the
targets run on the training device). ``points_in_boxes_indices`` is a Numba kernel for a whole
lidar frame (~1e5-1e6 points, ~1e2 boxes): it sorts the points into a BEV grid and tests each
box only against the points of the grid cells its bounding circle touches; the randomized test
in tests/test_boxes.py checks it against ``points_in_boxes``.
"""
from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["points_in_boxes", "points_in_boxes_indices", "wrap_angle"]


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def wrap_angle(theta):
    """Angles wrapped into [-pi, pi): ``(theta + pi) mod 2 pi - pi``.

    numpy in -> numpy out of the same dtype (float32 stays float32); a torch tensor -> a tensor
    (``torch.remainder``, on its device). Float rounding can return exactly +pi for inputs a
    hair below an odd multiple of -pi; callers that cast to a narrower dtype afterwards (the
    Waymo label decoder) map that value to -pi themselves.
    """
    if _is_torch(theta):
        import torch
        return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi
    theta = np.asarray(theta)
    return ((theta + np.pi) % (2 * np.pi) - np.pi).astype(theta.dtype, copy=False)


def points_in_boxes(points, boxes):
    """(N, M) bool: is point ``n`` (N, >=3; columns x, y, z first) inside box ``m`` (M, 7)?

    numpy inputs are computed in float64; torch tensors in their own dtype on their device
    (a (N, M, 3) intermediate: meant for the boxes of one frame, not for millions of points -
    use :func:`points_in_boxes_indices` there).
    """
    if _is_torch(points):
        import torch
        boxes = boxes.reshape(-1, 7)
        xyz = points[:, :3]
        if boxes.shape[0] == 0 or xyz.shape[0] == 0:
            return torch.zeros((xyz.shape[0], boxes.shape[0]), dtype=torch.bool,
                               device=points.device)
        c, s = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    else:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        xyz = np.asarray(points, dtype=np.float64)[:, :3]
        if len(boxes) == 0 or len(xyz) == 0:
            return np.zeros((len(xyz), len(boxes)), dtype=bool)
        c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    d = xyz[:, None, :] - boxes[None, :, :3]
    lx = d[..., 0] * c + d[..., 1] * s   # rotate into the box frame (by -heading)
    ly = -d[..., 0] * s + d[..., 1] * c
    return ((abs(lx) <= boxes[:, 3] / 2) & (abs(ly) <= boxes[:, 4] / 2)
            & (abs(d[..., 2]) <= boxes[:, 5] / 2))


@numba.njit(cache=True, nogil=True)
def _inside(px, py, pz, cx, cy, cz, c, s, hl, hw, hh):
    dx = px - cx
    dy = py - cy
    dz = pz - cz
    if dz > hh or dz < -hh:
        return False
    lx = dx * c + dy * s
    ly = -dx * s + dy * c
    return -hl <= lx <= hl and -hw <= ly <= hw


@numba.njit(cache=True, nogil=True)
def _points_in_boxes_kernel(xyz, boxes, cell):
    """Counting-sort the points into a BEV grid, then test each box only against the points of
    the cells its bounding circle touches: O(N + points near boxes) instead of O(N * M)."""
    n, m = xyz.shape[0], boxes.shape[0]
    offsets = np.zeros(m + 1, np.int64)
    if n == 0 or m == 0:
        return offsets, np.empty(0, np.int64)
    x0, y0 = np.inf, np.inf
    x1, y1 = -np.inf, -np.inf
    for i in range(n):
        x0 = min(x0, xyz[i, 0])
        x1 = max(x1, xyz[i, 0])
        y0 = min(y0, xyz[i, 1])
        y1 = max(y1, xyz[i, 1])
    while (x1 - x0) / cell * (y1 - y0) / cell > 4.0e6:   # bound the grid's memory
        cell *= 2.0
    nx = int((x1 - x0) / cell) + 1
    ny = int((y1 - y0) / cell) + 1
    cell_of = np.empty(n, np.int64)
    start = np.zeros(nx * ny + 1, np.int64)
    for i in range(n):
        k = int((xyz[i, 0] - x0) / cell) * ny + int((xyz[i, 1] - y0) / cell)
        cell_of[i] = k
        start[k + 1] += 1
    for k in range(nx * ny):
        start[k + 1] += start[k]
    order = np.empty(n, np.int64)
    fill = start[:-1].copy()
    for i in range(n):       # ascending i within each cell
        order[fill[cell_of[i]]] = i
        fill[cell_of[i]] += 1
    for pass_ in range(2):
        if pass_ == 1:
            for b in range(m):
                offsets[b + 1] += offsets[b]
            idx = np.empty(offsets[m], np.int64)
            pos = offsets[:m].copy()
        for b in range(m):
            cx, cy, cz = boxes[b, 0], boxes[b, 1], boxes[b, 2]
            hl, hw, hh = boxes[b, 3] / 2.0, boxes[b, 4] / 2.0, boxes[b, 5] / 2.0
            c, s = np.cos(boxes[b, 6]), np.sin(boxes[b, 6])
            r = np.sqrt(hl * hl + hw * hw)
            ia = max(0, int(np.floor((cx - r - x0) / cell)))
            ib = min(nx - 1, int(np.floor((cx + r - x0) / cell)))
            ja = max(0, int(np.floor((cy - r - y0) / cell)))
            jb = min(ny - 1, int(np.floor((cy + r - y0) / cell)))
            for gi in range(ia, ib + 1):
                for gj in range(ja, jb + 1):
                    k = gi * ny + gj
                    for q in range(start[k], start[k + 1]):
                        i = order[q]
                        if _inside(np.float64(xyz[i, 0]), np.float64(xyz[i, 1]),
                                   np.float64(xyz[i, 2]), cx, cy, cz, c, s, hl, hw, hh):
                            if pass_ == 0:
                                offsets[b + 1] += 1
                            else:
                                idx[pos[b]] = i
                                pos[b] += 1
        if pass_ == 1:
            for b in range(m):
                idx[offsets[b]:offsets[b + 1]].sort()
    return offsets, idx


def points_in_boxes_indices(xyz: np.ndarray, boxes: np.ndarray, cell: float = 2.0
                            ) -> tuple[np.ndarray, np.ndarray]:
    """For (N, >=3) points and (M, 7) boxes: ``offsets`` (M+1,) int64 and ``idx`` int64 such
    that the points in box ``b`` are ``idx[offsets[b]:offsets[b+1]]`` (ascending), i.e. the
    column ``b`` of :func:`points_in_boxes` as indices; computed in float64. ``cell`` is the BEV
    grid's cell size in metres (doubled as needed to bound the grid at 4e6 cells); it changes
    the speed only, never the result."""
    xyz = np.asarray(xyz)
    if xyz.dtype != np.float32 and xyz.dtype != np.float64:
        xyz = xyz.astype(np.float64)
    boxes = np.ascontiguousarray(boxes, dtype=np.float64).reshape(-1, 7)
    return _points_in_boxes_kernel(xyz[:, :3], boxes, float(cell))
