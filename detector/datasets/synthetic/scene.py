"""Procedural street scenes for the synthetic Waymo generator: geometry, objects, ego motion.

A scene lives in a local world frame (main road along +x, the ego starts near the origin, z up)
and is made only of things a ray caster can hit exactly:

* a ground height field ``h(x, y) = h0 + sx x + sy y + sum_k A_k sin(kx_k x + ky_k y + phi_k)``
  (gentle slope plus smooth noise) whose reflectivity encodes asphalt, lane markings and
  sidewalks;
* yaw-oriented boxes ("primitives"): buildings, poles, trees, and the parts of every labelled
  object (vehicles are wheels + lower body + glass band + roof, trucks a cab and a cargo box,
  pedestrians legs/torso/arms/head, cyclists a bike frame, wheels and rider, signs a post and a
  retro-reflective plate).

Objects move with constant acceleration along their heading; the ego drives along its lane with
a slight lateral drift, so consecutive frames of a segment move consistently. Everything is drawn
from one ``numpy.random.Generator``, so a seed fixes the scene.

Typical sizes (length x width x height, the usual dimensions of the Waymo classes): car
~4.5 x 1.9 x 1.6 m, van ~5.2 x 2.0 x 2.1, truck ~8-10 x 2.5 x 3.2, pedestrian ~0.9 x 0.9 x 1.8,
cyclist ~1.8 x 0.8 x 1.7, sign ~0.1 x 0.8 x 2.5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .config import SceneConfig

__all__ = ["VEHICLE", "PEDESTRIAN", "SIGN", "CYCLIST", "SceneObject", "Ground", "EgoTrajectory",
           "Scene", "generate_scene", "rotation_rpy", "PRIM_COLUMNS"]

# label.proto Label.Type
VEHICLE, PEDESTRIAN, SIGN, CYCLIST = 1, 2, 3, 4

# A primitive row: centre (3), half extents (3), cos(yaw), sin(yaw). Separate arrays hold the
# reflectivity, dropout probability and owning object (-1 = background) of each row.
PRIM_COLUMNS = ("cx", "cy", "cz", "hx", "hy", "hz", "cos", "sin")

# Materials: (reflectivity, dropout probability). Reflectivity ~ Lambertian albedo; > 1 means
# retro-reflective (signs, licence plates), which the intensity model barely attenuates.
GLASS = (0.04, 0.55)      # windows: dark and often no return at all
TIRE = (0.03, 0.15)
PLATE = (1.8, 0.0)
SKIN = (0.25, 0.02)
METAL = (0.3, 0.02)
BARK = (0.12, 0.05)
FOLIAGE = (0.15, 0.35)    # leaves: porous, many dropouts
_ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


def rotation_rpy(roll, pitch, yaw) -> np.ndarray:
    """R = Rz(yaw) Ry(pitch) Rx(roll) (Waymo's pixel-pose convention); broadcasts to (..., 3, 3)."""
    roll, pitch, yaw = np.broadcast_arrays(np.asarray(roll, np.float64),
                                           np.asarray(pitch, np.float64),
                                           np.asarray(yaw, np.float64))
    cr, sr, cp, sp, cy, sy = (np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch),
                              np.cos(yaw), np.sin(yaw))
    R = np.empty(roll.shape + (3, 3))
    R[..., 0, 0] = cy * cp
    R[..., 0, 1] = cy * sp * sr - sy * cr
    R[..., 0, 2] = cy * sp * cr + sy * sr
    R[..., 1, 0] = sy * cp
    R[..., 1, 1] = sy * sp * sr + cy * cr
    R[..., 1, 2] = sy * sp * cr - cy * sr
    R[..., 2, 0] = -sp
    R[..., 2, 1] = cp * sr
    R[..., 2, 2] = cp * cr
    return R


# ---------------------------------------------------------------------------------------------
@dataclass
class Ground:
    """Height field and road layout. ``params`` (15,) = h0, sx, sy, then (A, kx, ky, phase) x 3;
    ``road`` (4,) = road half width, has-cross-street flag, cross street x, lane width."""
    params: np.ndarray
    road: np.ndarray

    @property
    def noise_bound(self) -> float:
        return float(np.abs(self.params[3::4]).sum())

    def height(self, x, y):
        p = self.params
        h = p[0] + p[1] * np.asarray(x, np.float64) + p[2] * np.asarray(y, np.float64)
        for k in range(3):
            A, kx, ky, ph = p[3 + 4 * k: 7 + 4 * k]
            h = h + A * np.sin(kx * x + ky * y + ph)
        return h

    def plane_gradient(self) -> tuple[float, float]:
        return float(self.params[1]), float(self.params[2])


@dataclass
class SceneObject:
    """A labelled object: label box size, parts in its own frame, and its motion."""
    kind: str               # car, van, truck, pedestrian, cyclist, sign
    type: int               # label.proto Type
    length: float
    width: float
    height: float
    parts: np.ndarray       # (P, 6) x0, x1, y0, y1, z0, z1 in the object frame (origin: bottom centre)
    materials: np.ndarray   # (P, 2) reflectivity, dropout
    x: float                # position and heading at t = 0 (local world frame)
    y: float
    yaw: float
    speed: float = 0.0      # along the heading, at t = 0
    accel: float = 0.0
    id: str = ""

    def position(self, t: float) -> tuple[float, float]:
        d = self.speed * t + 0.5 * self.accel * t * t
        return self.x + math.cos(self.yaw) * d, self.y + math.sin(self.yaw) * d

    def velocity(self, t: float) -> np.ndarray:
        v = self.speed + self.accel * t
        return np.array([math.cos(self.yaw) * v, math.sin(self.yaw) * v, 0.0])

    def acceleration(self) -> np.ndarray:
        return np.array([math.cos(self.yaw) * self.accel, math.sin(self.yaw) * self.accel, 0.0])


@dataclass
class EgoTrajectory:
    """Ego path: x = v t + a t^2 / 2 along the lane, y = y0 + drift(t); heading follows the path."""
    y0: float
    speed: float
    accel: float
    drift_amp: float
    drift_omega: float
    drift_phase: float

    def xy_yaw(self, t):
        t = np.asarray(t, np.float64)
        x = self.speed * t + 0.5 * self.accel * t * t
        ph = self.drift_omega * t + self.drift_phase
        y = self.y0 + self.drift_amp * (np.sin(ph) - math.sin(self.drift_phase))
        vx = self.speed + self.accel * t
        vy = self.drift_amp * self.drift_omega * np.cos(ph)
        # A stopped car keeps the heading of its lane.
        yaw = np.where(np.hypot(vx, vy) > 1e-3, np.arctan2(vy, np.maximum(vx, 1e-9)), 0.0)
        return x, y, yaw


@dataclass
class Scene:
    config: SceneConfig
    ground: Ground
    ego: EgoTrajectory
    static_prims: np.ndarray       # (S, 8) PRIM_COLUMNS
    static_materials: np.ndarray   # (S, 2)
    objects: list[SceneObject] = field(default_factory=list)

    # -- ego pose ---------------------------------------------------------------------------
    def ego_pose6(self, t) -> np.ndarray:
        """(..., 6) roll, pitch, yaw, x, y, z of the vehicle frame (local world) at times t."""
        x, y, yaw = self.ego.xy_yaw(t)
        z = self.ground.height(x, y)
        sx, sy = self.ground.plane_gradient()
        # Body attitude follows the plane part of the ground (the noise is too short to tilt it).
        slope_fwd = sx * np.cos(yaw) + sy * np.sin(yaw)
        slope_left = -sx * np.sin(yaw) + sy * np.cos(yaw)
        pitch = -np.arctan(slope_fwd)
        roll = np.arctan(slope_left)
        return np.stack(np.broadcast_arrays(roll, pitch, yaw, x, y, z), axis=-1)

    def ego_pose(self, t: float) -> np.ndarray:
        """4x4 vehicle -> local world at time t."""
        p = self.ego_pose6(t)
        T = np.eye(4)
        T[:3, :3] = rotation_rpy(p[0], p[1], p[2])
        T[:3, 3] = p[3:6]
        return T

    # -- geometry at a time -------------------------------------------------------------------
    def primitives(self, t: float):
        """All boxes at time t: (prims (N, 8), materials (N, 2), owner (N,) int32, -1 = static)."""
        rows, mats, owner = [self.static_prims], [self.static_materials], \
            [np.full(len(self.static_prims), -1, np.int32)]
        for k, ob in enumerate(self.objects):
            px, py = ob.position(t)
            gz = float(self.ground.height(px, py))
            c, s = math.cos(ob.yaw), math.sin(ob.yaw)
            p = ob.parts
            lx, ly = 0.5 * (p[:, 0] + p[:, 1]), 0.5 * (p[:, 2] + p[:, 3])
            r = np.empty((len(p), 8))
            r[:, 0] = px + c * lx - s * ly
            r[:, 1] = py + s * lx + c * ly
            r[:, 2] = gz + 0.5 * (p[:, 4] + p[:, 5])
            r[:, 3] = 0.5 * (p[:, 1] - p[:, 0])
            r[:, 4] = 0.5 * (p[:, 3] - p[:, 2])
            r[:, 5] = 0.5 * (p[:, 5] - p[:, 4])
            r[:, 6] = c
            r[:, 7] = s
            rows.append(r)
            mats.append(ob.materials)
            owner.append(np.full(len(p), k, np.int32))
        return (np.ascontiguousarray(np.concatenate(rows)),
                np.ascontiguousarray(np.concatenate(mats)), np.concatenate(owner))

    def label_box_world(self, k: int, t: float) -> np.ndarray:
        """(cx, cy, cz, l, w, h, yaw) of object k in the local world frame at time t."""
        ob = self.objects[k]
        px, py = ob.position(t)
        gz = float(self.ground.height(px, py))
        return np.array([px, py, gz + 0.5 * ob.height, ob.length, ob.width, ob.height, ob.yaw])


# ---------------------------------------------------------------------------------------------
# Object templates. Label boxes are (length, width, height); the parts stay INSET inside the
# label box so no surface coincides with a label face (a point's "in box" test is then never
# decided by float rounding) - like real labels, which are drawn slightly loose.
_INSET = 0.04


def _box(x0, x1, y0, y1, z0, z1, mat):
    return (x0, x1, y0, y1, z0, z1) + tuple(mat)


def _car_parts(L, W, H, paint, rng):
    l, w, h = L - 2 * _INSET, W - 2 * _INSET, H - _INSET
    r = 0.31 + 0.03 * rng.random()
    ax = l / 2 - 0.78
    parts = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            y_in, y_out = sy * (w / 2 - 0.26), sy * w / 2
            parts.append(_box(sx * ax - r, sx * ax + r, min(y_in, y_out), max(y_in, y_out),
                              0.0, 2 * r, TIRE))
    bw = w / 2 - 0.03
    belt = 0.58 * h
    parts.append(_box(-l / 2 + 0.015, l / 2 - 0.015, -bw, bw, 0.28, belt, paint))
    parts.append(_box(-0.33 * l, 0.2 * l, -0.44 * w, 0.44 * w, belt, 0.9 * h, GLASS))
    parts.append(_box(-0.31 * l, 0.17 * l, -0.43 * w, 0.43 * w, 0.9 * h, h, paint))
    for sx in (-1, 1):  # licence plates, slightly proud of the bumpers
        parts.append(_box(sx * l / 2 - 0.015, sx * l / 2 + 0.015, -0.26, 0.26, 0.42, 0.54, PLATE))
    return parts


def _van_parts(L, W, H, paint, rng):
    l, w, h = L - 2 * _INSET, W - 2 * _INSET, H - _INSET
    r = 0.35
    ax = l / 2 - 0.85
    parts = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            y_in, y_out = sy * (w / 2 - 0.27), sy * w / 2
            parts.append(_box(sx * ax - r, sx * ax + r, min(y_in, y_out), max(y_in, y_out),
                              0.0, 2 * r, TIRE))
    bw = w / 2 - 0.03
    parts.append(_box(-l / 2 + 0.015, l / 2 - 0.015, -bw, bw, 0.3, 0.5 * h, paint))
    parts.append(_box(-l / 2 + 0.015, 0.24 * l, -0.47 * w, 0.47 * w, 0.5 * h, h, paint))
    parts.append(_box(0.24 * l, 0.36 * l, -0.45 * w, 0.45 * w, 0.5 * h, 0.86 * h, GLASS))
    parts.append(_box(-l / 2 - 0.015, -l / 2 + 0.015, -0.26, 0.26, 0.45, 0.57, PLATE))
    parts.append(_box(l / 2 - 0.03, l / 2 + 0.015, -0.26, 0.26, 0.42, 0.54, PLATE))
    return parts


def _truck_parts(L, W, H, paint, rng):
    l, w, h = L - 2 * _INSET, W - 2 * _INSET, H - _INSET
    r = 0.5
    parts = []
    for ax in (l / 2 - 1.2, -l / 2 + 1.9, -l / 2 + 0.85):
        for sy in (-1, 1):
            y_in, y_out = sy * (w / 2 - 0.35), sy * w / 2
            parts.append(_box(ax - r, ax + r, min(y_in, y_out), max(y_in, y_out), 0.0, 2 * r, TIRE))
    cab0 = l / 2 - 2.3
    bw = w / 2 - 0.02
    parts.append(_box(cab0, l / 2, -bw, bw, 0.55, 0.55 * h, paint))
    parts.append(_box(cab0 + 0.1, l / 2 - 0.12, -0.47 * w, 0.47 * w, 0.55 * h, 0.78 * h, GLASS))
    parts.append(_box(cab0 + 0.1, l / 2 - 0.2, -0.47 * w, 0.47 * w, 0.78 * h, 0.88 * h, paint))
    cargo = (0.3 + 0.45 * rng.random(), 0.02)
    parts.append(_box(-l / 2, cab0 - 0.15, -w / 2, w / 2, 1.05, h, cargo))
    parts.append(_box(-l / 2 + 0.4, cab0, -0.35 * w, 0.35 * w, 0.55, 1.05, (0.05, 0.1)))
    return parts


def _pedestrian_parts(L, W, H, rng, walking):
    cloth = (0.05 + 0.35 * rng.random(), 0.02)
    cloth2 = (0.05 + 0.35 * rng.random(), 0.02)
    stride = 0.16 * rng.random() if walking else 0.0
    leg = 0.47 * H
    parts = [
        _box(-0.09 + stride, 0.09 + stride, 0.03, 0.19, 0.0, leg, cloth2),
        _box(-0.09 - stride, 0.09 - stride, -0.19, -0.03, 0.0, leg, cloth2),
        _box(-0.12, 0.12, -0.21, 0.21, leg, 0.83 * H, cloth),
        _box(-0.06, 0.06, 0.21, 0.29, 0.5 * H, 0.81 * H, cloth),
        _box(-0.06, 0.06, -0.29, -0.21, 0.5 * H, 0.81 * H, cloth),
        _box(-0.1, 0.1, -0.09, 0.09, 0.855 * H, H - 0.02, SKIN),
    ]
    return parts


def _cyclist_parts(L, W, H, rng):
    frame_mat = (0.1 + 0.4 * rng.random(), 0.05)
    cloth = (0.05 + 0.35 * rng.random(), 0.02)
    wr = 0.34
    hx = L / 2 - _INSET
    parts = [
        _box(hx - 2 * wr, hx, -0.03, 0.03, 0.0, 2 * wr, TIRE),
        _box(-hx, -hx + 2 * wr, -0.03, 0.03, 0.0, 2 * wr, TIRE),
        _box(-0.45, 0.45, -0.04, 0.04, 0.35, 0.85, frame_mat),
        _box(0.3, 0.4, -0.3, 0.3, 0.95, 1.05, METAL),   # handlebar
        _box(-0.12, 0.05, 0.08, 0.2, 0.45, 0.98, cloth),
        _box(-0.12, 0.05, -0.2, -0.08, 0.45, 0.98, cloth),
        _box(-0.25, 0.12, -0.19, 0.19, 0.98, 0.84 * H, cloth),
        _box(-0.05, 0.13, -0.09, 0.09, 0.86 * H, H - 0.02, SKIN),
    ]
    return parts


def _sign_parts(L, W, H, rng):
    plate = (3.0 + 12.0 * rng.random(), 0.0)
    ph = 0.6 + 0.2 * rng.random()
    return [
        _box(-0.035, 0.035, -0.035, 0.035, 0.0, H - ph - 0.02, METAL),
        _box(-0.02, 0.02, -(W / 2 - 0.02), W / 2 - 0.02, H - ph - 0.02, H - 0.02, plate),
    ]


def _make_object(kind, rng, x, y, yaw, speed=0.0, accel=0.0, walking=False) -> SceneObject:
    u = rng.random
    if kind == "car":
        L, W, H = 4.2 + 0.75 * u(), 1.78 + 0.22 * u(), 1.45 + 0.4 * u()
        parts = _car_parts(L, W, H, (0.08 + 0.45 * u(), 0.03), rng)
        typ = VEHICLE
    elif kind == "van":
        L, W, H = 4.9 + 0.7 * u(), 1.95 + 0.15 * u(), 1.9 + 0.4 * u()
        parts = _van_parts(L, W, H, (0.1 + 0.45 * u(), 0.03), rng)
        typ = VEHICLE
    elif kind == "truck":
        L, W, H = 7.8 + 2.2 * u(), 2.4 + 0.2 * u(), 2.9 + 0.6 * u()
        parts = _truck_parts(L, W, H, (0.1 + 0.45 * u(), 0.03), rng)
        typ = VEHICLE
    elif kind == "pedestrian":
        L, W, H = 0.7 + 0.3 * u(), 0.65 + 0.3 * u(), 1.55 + 0.4 * u()
        parts = _pedestrian_parts(L, W, H, rng, walking)
        typ = PEDESTRIAN
    elif kind == "cyclist":
        L, W, H = 1.65 + 0.25 * u(), 0.65 + 0.2 * u(), 1.6 + 0.25 * u()
        parts = _cyclist_parts(L, W, H, rng)
        typ = CYCLIST
    elif kind == "sign":
        L, W, H = 0.1, 0.6 + 0.3 * u(), 2.2 + 0.6 * u()
        parts = _sign_parts(L, W, H, rng)
        typ = SIGN
    else:
        raise ValueError(f"unknown object kind {kind!r}")
    arr = np.asarray(parts, np.float64)
    ident = "".join(_ID_ALPHABET[rng.integers(0, len(_ID_ALPHABET), 22)])
    return SceneObject(kind, typ, float(L), float(W), float(H), arr[:, :6].copy(),
                       arr[:, 6:8].copy(), float(x), float(y), float(yaw), float(speed),
                       float(accel), ident)


def _vehicle_kind(rng, cfg: SceneConfig) -> str:
    u = rng.random()
    if u < cfg.truck_fraction:
        return "truck"
    if u < cfg.truck_fraction + cfg.van_fraction:
        return "van"
    return "car"


def _static_box(rows, mats, cx, cy, cz, hx, hy, hz, yaw, mat):
    rows.append((cx, cy, cz, hx, hy, hz, math.cos(yaw), math.sin(yaw)))
    mats.append(tuple(mat))


# ---------------------------------------------------------------------------------------------
class _Footprints:
    """Axis-aligned 2D rectangles already occupied (swept over the segment), for placement."""

    def __init__(self):
        self.rects: list[tuple[float, float, float, float]] = []

    def free(self, r) -> bool:
        x0, x1, y0, y1 = r
        return all(x1 <= a0 or x0 >= a1 or y1 <= b0 or y0 >= b1 for a0, a1, b0, b1 in self.rects)

    def add(self, r) -> None:
        self.rects.append(r)


def _swept_rect(ob: SceneObject, duration: float, pad: float = 0.3):
    pts = []
    c, s = math.cos(ob.yaw), math.sin(ob.yaw)
    for t in (0.0, duration):
        px, py = ob.position(t)
        for a in (-1, 1):
            for b in (-1, 1):
                pts.append((px + c * a * ob.length / 2 - s * b * ob.width / 2,
                            py + s * a * ob.length / 2 + c * b * ob.width / 2))
    pts = np.asarray(pts)
    return (pts[:, 0].min() - pad, pts[:, 0].max() + pad, pts[:, 1].min() - pad,
            pts[:, 1].max() + pad)


def generate_scene(rng: np.random.Generator, config: SceneConfig, duration: float) -> Scene:
    """Draw one street scene whose objects and ego move for ``duration`` seconds."""
    cfg = config
    cfg.validate()
    lw = cfg.lane_width
    road_lanes = 2 * lw                       # |y| below this: traffic lanes
    bike = road_lanes + cfg.bike_lane_width   # bike lane outer edge
    park = bike + cfg.parking_width           # parking lane outer edge = curb
    walk = park + cfg.sidewalk_width          # sidewalk outer edge
    b0 = walk + 0.5                           # building fronts

    # Ego.
    stopped = rng.random() < cfg.ego_stopped_prob
    v_ego = 0.0 if stopped else float(rng.uniform(*cfg.ego_speed))
    a_ego = 0.0 if stopped else float(rng.uniform(-1.0, 1.0))
    if v_ego + a_ego * duration < 0:
        a_ego = -v_ego / max(duration, 1e-6)
    ego = EgoTrajectory(y0=-lw / 2, speed=v_ego, accel=a_ego,
                        drift_amp=0.25 * min(v_ego, 1.0) * rng.random(),
                        drift_omega=float(rng.uniform(0.2, 0.8)),
                        drift_phase=float(rng.uniform(0, 2 * math.pi)))
    travel = v_ego * duration + 0.5 * max(a_ego, 0.0) * duration ** 2
    x_lo, x_hi = -cfg.half_length, cfg.half_length + travel
    y_far = cfg.half_length * 0.75

    # Ground.
    gp = np.zeros(15)
    gp[0] = float(rng.uniform(-0.3, 0.3))
    gp[1:3] = rng.uniform(-cfg.max_slope, cfg.max_slope, 2)
    for k in range(3):
        lam = rng.uniform(*cfg.ground_noise_wavelength)
        ang = rng.uniform(0, 2 * math.pi)
        gp[3 + 4 * k] = cfg.ground_noise_amplitude * rng.uniform(0.3, 1.0)
        gp[4 + 4 * k] = 2 * math.pi / lam * math.cos(ang)
        gp[5 + 4 * k] = 2 * math.pi / lam * math.sin(ang)
        gp[6 + 4 * k] = rng.uniform(0, 2 * math.pi)
    has_cross = rng.random() < cfg.cross_street_prob
    xc = float(rng.uniform(25.0, 65.0)) if has_cross else 0.0
    ground = Ground(gp, np.array([park, 1.0 if has_cross else 0.0, xc, lw]))

    def in_cross(x, margin=0.0):
        return has_cross and abs(x - xc) < park + margin

    rows: list = []
    mats: list = []
    occupied = _Footprints()

    # Buildings along both sides of the main road (and of the cross street).
    def building_row(along_lo, along_hi, side, cross_axis: bool):
        a = along_lo
        while a < along_hi:
            length = float(rng.uniform(8.0, 30.0))
            if rng.random() < cfg.building_gap_prob:
                a += float(rng.uniform(4.0, 15.0))
                continue
            a1 = min(a + length, along_hi)
            if a1 - a < 3.0:
                break
            depth = float(rng.uniform(*cfg.building_depth))
            height = float(rng.uniform(*cfg.building_height))
            front = b0 + float(rng.uniform(0.0, 1.5))
            mid_along = 0.5 * (a + a1)
            mid_across = side * (front + depth / 2)
            if cross_axis:
                cx, cy = xc + mid_across, mid_along
                hx, hy = depth / 2, (a1 - a) / 2
            else:
                cx, cy = mid_along, mid_across
                hx, hy = (a1 - a) / 2, depth / 2
            zb = float(ground.height(cx, cy)) - 3.0  # foundations below any ground undulation
            _static_box(rows, mats, cx, cy, 0.5 * (zb + height + zb + 3.0), hx, hy,
                        0.5 * (height + 3.0), 0.0, (float(rng.uniform(0.12, 0.5)), 0.03))
            a = a1 + float(rng.uniform(0.0, 3.0))

    for side in (-1, 1):
        if has_cross:
            building_row(x_lo, xc - b0, side, False)
            building_row(xc + b0, x_hi, side, False)
            building_row(-y_far, -b0, side, True)
            building_row(b0, y_far, side, True)
        else:
            building_row(x_lo, x_hi, side, False)

    # Poles and trees on the sidewalks.
    for side in (-1, 1):
        x = x_lo + float(rng.uniform(0, 10))
        while x < x_hi:
            if not in_cross(x, 2.0):
                py = side * (park + 0.5)
                gz = float(ground.height(x, py))
                h = float(rng.uniform(5.0, 8.0))
                _static_box(rows, mats, x, py, gz + h / 2 - 0.5, 0.13, 0.13, h / 2 + 0.5, 0.0, METAL)
                occupied.add((x - 0.4, x + 0.4, py - 0.4, py + 0.4))
            x += float(rng.uniform(*cfg.poles_spacing))
        x = x_lo + float(rng.uniform(0, 10))
        while x < x_hi:
            if rng.random() < cfg.tree_prob and not in_cross(x, 4.0):
                ty = side * (walk - 0.8)
                gz = float(ground.height(x, ty))
                trunk = float(rng.uniform(2.4, 3.2))
                crown = float(rng.uniform(1.2, 2.0))
                _static_box(rows, mats, x, ty, gz + trunk / 2 - 0.5, 0.15, 0.15, trunk / 2 + 0.5,
                            0.0, BARK)
                _static_box(rows, mats, x, ty, gz + trunk + crown, crown, crown, crown,
                            float(rng.uniform(0, math.pi)), FOLIAGE)
                occupied.add((x - 0.5, x + 0.5, ty - 0.5, ty + 0.5))
            x += float(rng.uniform(8.0, 20.0))

    objects: list[SceneObject] = []

    def try_add(ob: SceneObject) -> bool:
        r = _swept_rect(ob, duration)
        if not occupied.free(r):
            return False
        occupied.add(r)
        objects.append(ob)
        return True

    # The ego's own swept footprint keeps every object off it.
    ex, ey, _ = ego.xy_yaw(np.array([0.0, duration]))
    occupied.add((float(ex.min()) - 3.5, float(ex.max()) + 6.0, float(ey.min()) - 1.6,
                  float(ey.max()) + 1.6))

    # Parked vehicles along the curbs (facing the traffic of their side, sometimes not).
    fill = float(rng.uniform(*cfg.parked_fill))
    for side in (-1, 1):
        x = x_lo + float(rng.uniform(0, 5))
        while x < x_hi:
            kind = _vehicle_kind(rng, cfg)
            if rng.random() < fill:
                yaw = 0.0 if side < 0 else -math.pi
                if rng.random() < 0.1:
                    yaw = math.pi if yaw == 0.0 else 0.0
                yaw += float(rng.normal(0.0, 0.03))
                ob = _make_object(kind, rng, x, side * (bike + cfg.parking_width / 2), yaw)
                ob.x += ob.length / 2
                if not in_cross(ob.x, ob.length / 2 + 1.0):
                    try_add(ob)
                x += ob.length + float(rng.uniform(0.6, 3.0))
            else:
                x += float(rng.uniform(3.0, 7.0))
        if has_cross:
            for sgn in (-1, 1):
                y = sgn * (park + 1.0)
                while abs(y) < y_far:
                    if rng.random() < fill:
                        yaw = (math.pi / 2 if side < 0 else -math.pi / 2) + float(rng.normal(0, 0.03))
                        ob = _make_object(_vehicle_kind(rng, cfg), rng,
                                          xc - side * (bike + cfg.parking_width / 2),
                                          y + sgn * 3.0, yaw)
                        try_add(ob)
                        y += sgn * (ob.length + float(rng.uniform(0.6, 3.0)))
                    else:
                        y += sgn * float(rng.uniform(3.0, 7.0))

    # Moving traffic: each lane has one speed, so vehicles in it keep their spacing.
    lanes = [(-1.5 * lw, 0.0), (-0.5 * lw, 0.0), (0.5 * lw, -math.pi), (1.5 * lw, -math.pi)]
    for ly, yaw in lanes:
        same_as_ego = abs(ly - ego.y0) < 1e-6
        v = v_ego if same_as_ego else float(rng.uniform(*cfg.traffic_speed))
        a = a_ego if same_as_ego else 0.0
        n = int(rng.integers(cfg.moving_vehicles_per_lane[0], cfg.moving_vehicles_per_lane[1] + 1))
        for _ in range(n):
            for _attempt in range(10):
                x = float(rng.uniform(x_lo + 10, x_hi - 10))
                ob = _make_object(_vehicle_kind(rng, cfg), rng, x, ly + float(rng.normal(0, 0.15)),
                                  yaw + float(rng.normal(0, 0.01)), v, a)
                if try_add(ob):
                    break

    # Cross-street traffic never enters the intersection during the segment.
    if has_cross:
        n = int(rng.integers(cfg.cross_vehicles[0], cfg.cross_vehicles[1] + 1))
        for _ in range(n):
            for _attempt in range(10):
                lane = int(rng.integers(0, 4))
                lx = xc + (-1.5, -0.5, 0.5, 1.5)[lane] * lw
                yaw = math.pi / 2 if lane >= 2 else -math.pi / 2   # right-hand traffic
                v = float(rng.uniform(*cfg.traffic_speed))
                y = float(rng.uniform(-y_far + 5, y_far - 5))
                ob = _make_object(_vehicle_kind(rng, cfg), rng, lx, y, yaw, v)
                ys = [ob.position(t)[1] for t in (0.0, duration)]
                if min(abs(ys[0]), abs(ys[1])) < park + ob.length / 2 + 1.0 or ys[0] * ys[1] < 0:
                    continue
                if try_add(ob):
                    break

    # Cyclists in the bike lanes, one speed per side.
    n_cyc = int(rng.integers(cfg.cyclists[0], cfg.cyclists[1] + 1))
    side_speed = {-1: float(rng.uniform(3.0, 7.0)), 1: float(rng.uniform(3.0, 7.0))}
    for _ in range(n_cyc):
        for _attempt in range(10):
            side = -1 if rng.random() < 0.5 else 1
            yaw = 0.0 if side < 0 else -math.pi
            ob = _make_object("cyclist", rng, float(rng.uniform(x_lo + 10, x_hi - 10)),
                              side * (road_lanes + cfg.bike_lane_width / 2), yaw, side_speed[side])
            if not in_cross(ob.x, 12.0) and try_add(ob):
                break

    # Pedestrians on the sidewalks, walking along them or standing.
    n_ped = int(rng.integers(cfg.pedestrians[0], cfg.pedestrians[1] + 1))
    for _ in range(n_ped):
        for _attempt in range(10):
            side = -1 if rng.random() < 0.5 else 1
            walking = rng.random() < 0.7
            y = side * float(rng.uniform(park + 1.3, walk - 1.6))
            if walking:
                yaw = (0.0 if rng.random() < 0.5 else -math.pi) + float(rng.normal(0, 0.05))
                v = float(rng.uniform(0.8, 1.7))
            else:
                yaw, v = float(rng.uniform(-math.pi, math.pi)), 0.0
            ob = _make_object("pedestrian", rng, float(rng.uniform(x_lo + 5, x_hi - 5)), y, yaw, v,
                              walking=walking)
            if not in_cross(ob.x, 3.0) and try_add(ob):
                break

    # Signs at the curb, facing the oncoming traffic of their side.
    n_sign = int(rng.integers(cfg.signs[0], cfg.signs[1] + 1))
    for _ in range(n_sign):
        for _attempt in range(10):
            side = -1 if rng.random() < 0.5 else 1
            yaw = (math.pi if side < 0 else 0.0) + float(rng.normal(0, 0.05))
            yaw = math.atan2(math.sin(yaw), math.cos(yaw))
            ob = _make_object("sign", rng, float(rng.uniform(x_lo + 5, x_hi - 5)),
                              side * (park + 0.35), yaw)
            if not in_cross(ob.x, 1.0) and try_add(ob):
                break

    if rows:
        static = np.asarray(rows, np.float64)
        smats = np.asarray(mats, np.float64)
    else:
        static, smats = np.zeros((0, 8)), np.zeros((0, 2))
    return Scene(cfg, ground, ego, static, smats, objects)
