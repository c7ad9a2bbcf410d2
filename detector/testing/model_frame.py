"""A quick LiDAR-like frame with vehicle boxes, for the model's tests and benchmarks only.

Not the project's synthetic Waymo generator (detector/datasets/synthetic, which ray-casts whole
scenes into real-format TFRecords): this is a cheap stand-in with the right point count and
sparsity pattern - a 64-beam spinning sensor 2 m above flat ground, walls of buildings around it,
plus points on the surfaces of each box -
so that model tests and timings do not depend on the data pipeline.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def make_frame(num_boxes: int = 20, beams: int = 64, azimuths: int = 2650, max_range: float = 75.0,
               box_range: float = 50.0, points_per_box: int = 400, seed: int = 0,
               boxes: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``points`` (N, 5) float32 (x, y, z, tanh(intensity), elongation) and ``boxes``
    (M, 7) float32 vehicle boxes resting on the ground (z = 0), centres within ``box_range``.

    At most ``beams * azimuths`` ground/wall points (64 x 2650 ~ a Waymo TOP frame; the beams
    that see the sky return nothing) plus ``points_per_box`` per box.
    """
    rng = np.random.default_rng(seed)
    if boxes is None:
        out = []
        while len(out) < num_boxes:
            c = rng.uniform(-box_range, box_range, 2)
            if np.hypot(*c) < 4 or any(np.hypot(*(c - b[:2])) < 7 for b in out):
                continue
            length, width, height = rng.uniform(3.8, 5.5), rng.uniform(1.7, 2.2), rng.uniform(1.4, 2.0)
            out.append([c[0], c[1], height / 2, length, width, height, rng.uniform(-math.pi, math.pi)])
        boxes = np.asarray(out, dtype=np.float64).reshape(-1, 7)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    elev = np.deg2rad(np.linspace(-17.6, 2.4, beams))
    az = np.linspace(-math.pi, math.pi, azimuths, endpoint=False)
    e, a = np.meshgrid(elev, az, indexing="ij")
    e = e.ravel() + rng.normal(0, 1e-4, e.size)
    a = a.ravel() + rng.normal(0, 1e-4, a.size)
    sensor_z = 2.0
    with np.errstate(divide="ignore"):
        ground = np.where(e < -1e-3, sensor_z / np.tan(-e), np.inf)
    # Buildings: a wall per 5-degree sector at 15 (or 0.6 max_range) to max_range m, 3-20 m tall;
    # beams that pass over the wall see the sky (no return), as on a real street.
    sector = ((a + math.pi) / np.deg2rad(5.0)).astype(int) % 72
    wall_r = rng.uniform(min(15.0, 0.6 * max_range), max_range, 72)[sector]
    wall_h = rng.uniform(3.0, 20.0, 72)[sector]
    r = np.minimum(ground, wall_r)
    z = np.where(ground <= wall_r, 0.0, sensor_z + wall_r * np.tan(e))
    keep = (r < max_range) & (z <= wall_h)
    r, z, a = r[keep], z[keep], a[keep]
    r = r + rng.normal(0, 0.015, r.size)
    xy = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    z = z + rng.normal(0, 0.03, r.size)
    pts = [np.column_stack([xy, z])]
    for b in boxes:
        # Uniform samples on the box's surface (the side faces and the roof).
        u = rng.uniform(-0.5, 0.5, (points_per_box, 3))
        face = rng.integers(0, 5, points_per_box)
        u[face == 0, 0] = 0.5
        u[face == 1, 0] = -0.5
        u[face == 2, 1] = 0.5
        u[face == 3, 1] = -0.5
        u[face == 4, 2] = 0.5
        local = u * b[3:6]
        c, s = math.cos(b[6]), math.sin(b[6])
        world = np.column_stack([b[0] + c * local[:, 0] - s * local[:, 1],
                                 b[1] + s * local[:, 0] + c * local[:, 1], b[2] + local[:, 2]])
        pts.append(world + rng.normal(0, 0.01, world.shape))
    xyz = np.concatenate(pts)
    feats = np.column_stack([xyz, np.tanh(rng.uniform(0, 2, len(xyz))), rng.uniform(0, 0.3, len(xyz))])
    return torch.from_numpy(feats.astype(np.float32)), torch.from_numpy(boxes.astype(np.float32))


def make_batch(batch: int, num_boxes: int = 30, seed: int = 0, box_range: float = 50.0):
    """``batch`` frames of :func:`make_frame` (seeds ``seed``, ``seed + 1``, ...) as the model's
    inputs: a list of point tensors and one VEHICLE-labelled ``Det3DSample`` per frame."""
    from detector.structures import Det3DSample

    pts, samples = [], []
    for i in range(batch):
        p, b = make_frame(num_boxes=num_boxes, seed=seed + i, box_range=box_range)
        pts.append(p)
        samples.append(Det3DSample(b, torch.zeros(len(b), dtype=torch.long), frame_id=i))
    return pts, samples
