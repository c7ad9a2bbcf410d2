"""Small hand-built Waymo ``Frame`` protos for tests and benchmarks of the decoder.

Not a scene simulator (that is ``detector/datasets/synthetic``): random range images with the
real layout (docs/WAYMO.md: TOP 64 x 2650 with explicit inclinations and a per-pixel pose, the others
200 x 600 with uniform inclinations), real-looking extrinsics, a vehicle pose at ~1e4 m global
coordinates, and a few labels. ``scale`` shrinks the image sizes for fast tests.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
from waymo_open_dataset import dataset_pb2

FULL_SIZES = {1: (64, 2650), 2: (200, 600), 3: (200, 600), 4: (200, 600), 5: (200, 600)}
# (x, y, z, yaw) of each lidar on the vehicle, roughly as in real calibrations
_MOUNTS = {1: (1.43, 0.0, 2.18, math.radians(148.0)), 2: (4.07, 0.0, 0.69, 0.005),
           3: (3.25, 1.03, 0.98, math.radians(90.3)), 4: (3.25, -1.03, 0.98, math.radians(-89.9)),
           5: (-1.15, 0.0, 0.45, math.radians(178.4))}


def _rot(roll, pitch, yaw):
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return Rz @ Ry @ Rx


def matrix_float(arr: np.ndarray) -> bytes:
    m = dataset_pb2.MatrixFloat()
    m.data.extend(np.asarray(arr, np.float32).ravel().tolist())
    m.shape.dims.extend(list(arr.shape))
    return m.SerializeToString()


def make_test_frame(seed: int = 0, scale: float = 1.0, lidars=(1, 2, 3, 4, 5),
                    second_return: bool = True, top_pose: bool = True, num_labels: int = 5,
                    valid_fraction: float = 0.7, context_name: str = "test_context",
                    timestamp_micros: int = 1_550_000_000_000_000,
                    sizes: dict | None = None) -> dataset_pb2.Frame:
    """``sizes`` ({lidar id: (H, W)}) overrides ``scale`` for the lidars it names."""
    rng = np.random.default_rng(seed)
    f = dataset_pb2.Frame()
    f.context.name = context_name
    f.timestamp_micros = timestamp_micros
    pose = np.eye(4)
    pose[:3, :3] = _rot(rng.normal(0, 0.01), rng.normal(0, 0.01), rng.uniform(-math.pi, math.pi))
    pose[:3, 3] = (rng.uniform(-3e4, 3e4), rng.uniform(-3e4, 3e4), rng.uniform(-200, 200))
    f.pose.transform.extend(pose.ravel().tolist())
    for lid in sorted(lidars):
        H, W = FULL_SIZES[lid]
        H, W = max(2, int(round(H * scale))), max(2, int(round(W * scale)))
        if sizes and lid in sizes:
            H, W = sizes[lid]
        c = f.context.laser_calibrations.add()
        c.name = lid
        x, y, z, yaw = _MOUNTS[lid]
        E = np.eye(4)
        E[:3, :3] = _rot(rng.normal(0, 0.01), rng.normal(0, 0.01), yaw + rng.normal(0, 0.01))
        E[:3, 3] = (x, y, z)
        c.extrinsic.transform.extend(E.ravel().tolist())
        if lid == 1:
            inc = np.sort(rng.uniform(-0.31, 0.045, H))  # explicit, ascending as in real data
            c.beam_inclinations.extend(inc.tolist())
            c.beam_inclination_min, c.beam_inclination_max = float(inc[0]), float(inc[-1])
        else:
            c.beam_inclination_min, c.beam_inclination_max = -math.pi / 2, math.pi / 6
        laser = f.lasers.add()
        laser.name = lid
        for r in (1, 2) if second_return else (1,):
            ri = np.zeros((H, W, 4), np.float32)
            valid = rng.random((H, W)) < (valid_fraction if r == 1 else valid_fraction / 4)
            ri[..., 0] = np.where(valid, rng.uniform(0.5, 75.0 if lid == 1 else 20.0, (H, W)),
                                  np.where(rng.random((H, W)) < 0.5, -1.0, 0.0))
            ri[..., 1] = rng.uniform(0, 2000, (H, W))
            ri[..., 2] = rng.uniform(0, 1.5, (H, W))
            ri[..., 3] = np.where(rng.random((H, W)) < 0.05, 1.0, -1.0)
            rimg = laser.ri_return1 if r == 1 else laser.ri_return2
            rimg.range_image_compressed = zlib.compress(matrix_float(ri), 6)
        if lid == 1 and top_pose:
            # per-pixel vehicle poses along a short trajectory around the frame pose
            p6 = np.zeros((H, W, 6), np.float32)
            ang = np.linspace(-0.05, 0.05, W)[None, :] * np.ones((H, 1))
            roll0, pitch0 = math.atan2(pose[2, 1], pose[2, 2]), -math.asin(pose[2, 0])
            yaw0 = math.atan2(pose[1, 0], pose[0, 0])
            p6[..., 0] = roll0 + 0.001 * ang
            p6[..., 1] = pitch0 - 0.001 * ang
            p6[..., 2] = yaw0 + ang * 0.2
            for k in range(3):
                p6[..., 3 + k] = pose[k, 3] + ang * (3.0 - k)
            laser.ri_return1.range_image_pose_compressed = zlib.compress(matrix_float(p6), 6)
    for k in range(num_labels):
        lab = f.laser_labels.add()
        lab.box.center_x, lab.box.center_y, lab.box.center_z = rng.uniform(-30, 30, 3)
        lab.box.length, lab.box.width, lab.box.height = rng.uniform(1, 5, 3)
        lab.box.heading = rng.uniform(-math.pi, math.pi)
        lab.type = int(rng.integers(1, 5))
        lab.id = f"obj{k}"
        lab.detection_difficulty_level = int(rng.integers(0, 3))
        lab.num_lidar_points_in_box = int(rng.integers(0, 500))
        lab.num_top_lidar_points_in_box = int(rng.integers(0, 300))
        lab.metadata.speed_x, lab.metadata.speed_y, lab.metadata.accel_x = rng.normal(0, 3, 3)
    return f
