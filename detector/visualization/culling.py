"""Keep only the points a camera can show: the nearest point in each pixel.

Why: Open3D's off-screen renderer runs on the CPU here (Mesa llvmpipe), and its cost grows with
the number of points drawn (docs/benchmarks/visualization.md). A LiDAR frame
has 150k-450k points, and most of them share a pixel with a nearer point (dense rings near the
car, everything in a top-down view), so sending only the nearest point of each pixel - what the
depth test would keep anyway - cuts the work several times over. Points outside the picture
(behind the camera, off the sides) are dropped too. Pixels are counted over the image plus a
border of ``margin`` pixels, so points just outside the frame still draw their part of a
``point_size`` square at the edge.

For ``point_size`` 1 this is what the depth test does; for larger sizes a removed point could
have shown a sliver past the edge of the nearer point's square (sub-pixel offsets), which is
invisible in practice.

:func:`nearest_point_per_pixel` is a Numba kernel (one pass, a depth buffer); the NumPy
:func:`nearest_point_per_pixel_reference` (sort by depth, first point per pixel) is the slow,
obviously correct version the tests compare it with. Both project in float64 with the same
formulas, so they agree exactly, ties going to the lower point index.
"""
from __future__ import annotations

import numba
import numpy as np

from detector.visualization.geometry import Camera

_NEAR = 1e-3   # metres in front of the camera; nearer points are not drawn


def _camera_args(camera: Camera):
    r = np.ascontiguousarray(camera.extrinsic[:3, :3], dtype=np.float64)
    t = np.ascontiguousarray(camera.extrinsic[:3, 3], dtype=np.float64)
    k = camera.intrinsic
    return r, t, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])


@numba.njit(cache=True, nogil=True)
def _nearest_kernel(xyz, r, t, fx, fy, cx, cy, width, height, margin, near):
    gw = width + 2 * margin
    gh = height + 2 * margin
    depth = np.full(gw * gh, np.inf)
    best = np.full(gw * gh, -1, dtype=np.int64)
    for i in range(xyz.shape[0]):
        x = np.float64(xyz[i, 0])
        y = np.float64(xyz[i, 1])
        z = np.float64(xyz[i, 2])
        pz = r[2, 0] * x + r[2, 1] * y + r[2, 2] * z + t[2]
        if not pz > near:          # also drops NaN
            continue
        px = r[0, 0] * x + r[0, 1] * y + r[0, 2] * z + t[0]
        py = r[1, 0] * x + r[1, 1] * y + r[1, 2] * z + t[1]
        u = fx * (px / pz) + cx + margin
        v = fy * (py / pz) + cy + margin
        if not (u >= 0.0 and u < gw and v >= 0.0 and v < gh):
            continue
        k = int(v) * gw + int(u)
        if pz < depth[k]:
            depth[k] = pz
            best[k] = i
    n = 0
    for k in range(best.shape[0]):
        if best[k] >= 0:
            n += 1
    out = np.empty(n, dtype=np.int64)
    n = 0
    for k in range(best.shape[0]):
        if best[k] >= 0:
            out[n] = best[k]
            n += 1
    out.sort()
    return out


def nearest_point_per_pixel(points, camera: Camera, margin: int = 2) -> np.ndarray:
    """Sorted indices of the points that are the nearest in their pixel (image + ``margin``)."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points: expected shape (N, C >= 3), got {pts.shape}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    xyz = pts[:, :3]
    if xyz.dtype not in (np.float32, np.float64):
        xyz = xyz.astype(np.float64)
    return _nearest_kernel(xyz, *_camera_args(camera), int(camera.width), int(camera.height),
                           int(margin), _NEAR)


def nearest_point_per_pixel_reference(points, camera: Camera, margin: int = 2) -> np.ndarray:
    """Slow reference of :func:`nearest_point_per_pixel`: project, sort by depth, keep firsts."""
    xyz = np.asarray(points)[:, :3].astype(np.float64)
    r, t, fx, fy, cx, cy = _camera_args(camera)
    # Same formulas and order of operations as the kernel, column by column.
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    pz = r[2, 0] * x + r[2, 1] * y + r[2, 2] * z + t[2]
    px = r[0, 0] * x + r[0, 1] * y + r[0, 2] * z + t[0]
    py = r[1, 0] * x + r[1, 1] * y + r[1, 2] * z + t[1]
    gw, gh = camera.width + 2 * margin, camera.height + 2 * margin
    with np.errstate(divide="ignore", invalid="ignore"):
        u = fx * (px / pz) + cx + margin
        v = fy * (py / pz) + cy + margin
    ok = (pz > _NEAR) & (u >= 0) & (u < gw) & (v >= 0) & (v < gh)
    idx = np.flatnonzero(ok)
    pixel = v[idx].astype(np.int64) * gw + u[idx].astype(np.int64)
    order = np.lexsort((idx, pz[idx], pixel))          # by pixel, then depth, then index
    pixel_sorted = pixel[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = pixel_sorted[1:] != pixel_sorted[:-1]
    return np.sort(idx[order[first]])
