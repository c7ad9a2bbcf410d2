"""Render the five Waymo lidars of one synthetic frame into range images.

For every pixel the ray direction is the one the Waymo decoder assigns to it (docs/WAYMO.md,
"Range image -> points"; see ``calibration.py``), so decoding the written images gives back
exactly the cast points:

* TOP (64 x 2650, 75 m): the sensor spins during the 0.1 s sweep while the ego moves. Column ``j``
  fires at ``t_frame + ((j + 0.5) / W - 0.5) * sweep_time``; its vehicle->global pose at that
  instant is stored per pixel (``range_image_pose``: roll, pitch, yaw, x, y, z as float32) and the
  ray is cast from exactly that (float32-rounded) pose, so the decoder's per-pixel ego-motion
  correction followed by ``inverse(Frame.pose)`` lands the point in the frame's vehicle frame.
* FRONT, SIDE_LEFT, SIDE_RIGHT, REAR (200 x 600, uniform inclinations, 20 m): no pixel pose, so
  they are cast from the vehicle pose at the frame timestamp.

Rays that run into the ego vehicle's own body return nothing (``calibration.ego_blocked``).
Points are also returned in the frame's vehicle frame (float32, as decoders output them) for
counting ``num_lidar_points_in_box``.

The local world frame of the scene maps to Waymo's global frame by ``G = [Rz(theta), offset]``,
so ``Frame.pose = G @ L(t)`` has realistic large translations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import calibration as cal
from .raycast import build_grid, cast_image, sensor_params
from .scene import Scene, rotation_rpy

__all__ = ["GlobalFrame", "LidarImage", "RenderedFrame", "render_frame"]


@dataclass(frozen=True)
class GlobalFrame:
    """Local scene frame -> Waymo global frame: rotation about z by ``yaw`` then ``offset``."""
    yaw: float
    offset: tuple

    @property
    def matrix(self) -> np.ndarray:
        G = np.eye(4)
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        G[:2, :2] = [[c, -s], [s, c]]
        G[:3, 3] = self.offset
        return G


@dataclass
class LidarImage:
    name: int
    range_image1: np.ndarray        # (H, W, 4) float32: range, intensity, elongation, nlz (-1)
    range_image2: np.ndarray
    pixel_pose: np.ndarray | None   # (H, W, 6) float32, TOP only
    points: np.ndarray              # (N, 3) float32 vehicle frame, return 1 then return 2
    hit_ids: np.ndarray             # (N,) int32 primitive index / GROUND_HIT of each point
    exact_t: np.ndarray             # (N,) float64 geometric hit distance of each point


@dataclass
class RenderedFrame:
    time: float
    pose_local: np.ndarray          # 4x4 vehicle -> local world at the frame time
    pose_global: np.ndarray         # 4x4 vehicle -> global (Frame.pose)
    lidars: dict                    # name -> LidarImage
    prim_owner: np.ndarray          # (P,) object index of each primitive (-1 = background)
    prims: np.ndarray               # (P, 8) primitives at the frame time (local world)


def _wrap(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def _top_columns(scene: Scene, t_frame: float, G: GlobalFrame, sweep: float):
    """Per-column float32 pixel pose (global) and the float64 local pose it implies."""
    spec = cal.LIDARS[cal.TOP]
    W = spec.width
    tcol = t_frame + ((np.arange(W) + 0.5) / W - 0.5) * sweep
    p = scene.ego_pose6(tcol)                                   # (W, 6) local
    cz, sz = math.cos(G.yaw), math.sin(G.yaw)
    pose_g = np.empty((W, 6))
    pose_g[:, 0:2] = p[:, 0:2]
    pose_g[:, 2] = _wrap(p[:, 2] + G.yaw)
    pose_g[:, 3] = cz * p[:, 3] - sz * p[:, 4] + G.offset[0]
    pose_g[:, 4] = sz * p[:, 3] + cz * p[:, 4] + G.offset[1]
    pose_g[:, 5] = p[:, 5] + G.offset[2]
    pose32 = pose_g.astype(np.float32)
    # Cast from what the file will say, not from the unrounded pose.
    q = pose32.astype(np.float64)
    R_pix = rotation_rpy(q[:, 0], q[:, 1], q[:, 2])             # (W, 3, 3) vehicle -> global
    Rz_inv = np.array([[cz, sz, 0.0], [-sz, cz, 0.0], [0.0, 0.0, 1.0]])
    R_loc = np.einsum("ij,wjk->wik", Rz_inv, R_pix)
    t_loc = (q[:, 3:6] - np.asarray(G.offset)) @ Rz_inv.T
    return pose32, R_loc, t_loc


def render_frame(scene: Scene, t_frame: float, G: GlobalFrame, rng: np.random.Generator,
                 physics: bool = True) -> RenderedFrame:
    """Ray-cast all five lidars at time ``t_frame`` (seconds from the segment start)."""
    cfg = scene.config
    L = scene.ego_pose(t_frame)
    L_R, L_t = L[:3, :3], L[:3, 3]
    prims, mats, owner = scene.primitives(t_frame)
    meta, nx, ny, start, items = build_grid(prims, cfg.grid_cell)
    params = sensor_params(cfg.range_noise_std, cfg.dropout_base, cfg.beam_divergence,
                           cfg.second_return_min_separation, cfg.intensity_noise, physics)
    gp = np.ascontiguousarray(scene.ground.params, np.float64)
    road = np.ascontiguousarray(scene.ground.road, np.float64)
    frame_key = int(rng.integers(0, 2 ** 63, dtype=np.int64))
    lidars = {}
    for name, spec in cal.LIDARS.items():
        H, W = spec.height, spec.width
        E = spec.extrinsic_matrix
        pixel_pose = None
        if name == cal.TOP:
            pose32, col_R, col_t = _top_columns(scene, t_frame, G, cfg.sweep_time)
            pixel_pose = np.ascontiguousarray(np.broadcast_to(pose32[None], (H, W, 6)))
            # vehicle(frame) <- vehicle(pixel time) = inv(L) o [col_R, col_t]
            out_R = np.einsum("ji,wjk->wik", L_R, col_R)
            out_t = (col_t - L_t) @ L_R
        else:
            col_R = np.broadcast_to(L_R, (W, 3, 3))
            col_t = np.broadcast_to(L_t, (W, 3))
            out_R = np.broadcast_to(np.eye(3), (W, 3, 3))
            out_t = np.zeros((W, 3))
        images = np.empty((2, H, W, 4), np.float32)
        points = np.empty((H, W, 2, 3), np.float32)
        hits = np.empty((H, W, 2), np.int32)
        exact_t = np.empty((H, W, 2), np.float64)
        key = np.uint64((frame_key + name * 0x632BE59BD9B4E019) % 2 ** 64)
        cast_image(cal.vehicle_directions(name), cal.ego_blocked(name),
                   np.ascontiguousarray(E[:3, 3]), np.ascontiguousarray(col_R),
                   np.ascontiguousarray(col_t), np.ascontiguousarray(out_R),
                   np.ascontiguousarray(out_t), float(spec.max_range), key, prims, mats, meta,
                   nx, ny, start, items, gp, road, params, images, points, hits, exact_t)
        pts, hit_list, ts = [], [], []
        for r in range(2):
            valid = images[r, :, :, 0] > 0                      # row-major, as decoders order
            pts.append(points[:, :, r][valid])
            hit_list.append(hits[:, :, r][valid])
            ts.append(exact_t[:, :, r][valid])
        lidars[name] = LidarImage(name, images[0], images[1], pixel_pose, np.concatenate(pts),
                                  np.concatenate(hit_list), np.concatenate(ts))
    return RenderedFrame(t_frame, L, G.matrix @ L, lidars, owner, prims)
