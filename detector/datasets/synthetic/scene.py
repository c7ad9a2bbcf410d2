"""Procedural street scenes for the synthetic Waymo generator: geometry, objects, ego motion.

A scene lives in a local world frame (main road along +x, the ego starts near the origin, z up)
and is made only of things a ray caster can hit exactly:

* a ground height field ``h(x, y) = h0 + sx x + sy y + sum_k A_k sin(kx_k x + ky_k y + phi_k)``
  (gentle slope plus smooth noise) whose reflectivity encodes asphalt, lane markings and
  sidewalks;
* yaw-oriented boxes ("primitives"): buildings, poles, trees, and the parts of every labelled
  object. Vehicles (sedan, hatchback, SUV, van, box truck, bus; ``VEHICLE_SIZES``) are stepped
  boxes that follow real body profiles, so front and back differ: hood lower and longer than the
  trunk, raked windscreen, near-vertical tails, mirrors, head lamps at the front and
  retro-reflective tail lamps at the rear; pedestrians are legs/torso/arms/head (~0.9 x 0.9 x
  1.75 m boxes), cyclists a bike frame, wheels and rider (~1.8 x 0.85 x 1.75 m), signs a post and
  a retro-reflective plate.

Placement follows real streets: parked vehicles a few degrees off the kerb (some crooked, some
facing the other way), angled or perpendicular parking bays on some sides, two-way traffic that
faces its motion, vehicles turning at the junction on circular arcs, cyclists in the bike lanes,
pedestrians walking along the sidewalks or standing. Objects move with constant acceleration
along their heading (turning ones at constant speed and yaw rate); the ego drives along its lane
with a slight lateral drift, so consecutive frames of a segment move consistently. Everything is
drawn from one ``numpy.random.Generator``, so a seed fixes the scene.
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
    """A labelled object: label box size, parts in its own frame, and its motion.

    Motion: constant acceleration along the heading, or (``yaw_rate`` != 0, then ``accel`` = 0)
    a circular arc at constant speed whose heading turns at ``yaw_rate``: a vehicle always faces
    its direction of motion."""
    kind: str               # car, hatchback, suv, van, truck, bus, pedestrian, cyclist, sign
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
    yaw_rate: float = 0.0   # rad/s, positive = turning left

    def __post_init__(self):
        if self.yaw_rate != 0.0 and self.accel != 0.0:
            raise ValueError(f"SceneObject {self.kind}: a turning object (yaw_rate "
                             f"{self.yaw_rate}) must move at constant speed (accel {self.accel})")

    def heading(self, t: float) -> float:
        return self.yaw + self.yaw_rate * t

    def position(self, t: float) -> tuple[float, float]:
        if self.yaw_rate != 0.0:
            r = self.speed / self.yaw_rate
            h = self.heading(t)
            return (self.x + r * (math.sin(h) - math.sin(self.yaw)),
                    self.y - r * (math.cos(h) - math.cos(self.yaw)))
        d = self.speed * t + 0.5 * self.accel * t * t
        return self.x + math.cos(self.yaw) * d, self.y + math.sin(self.yaw) * d

    def velocity(self, t: float) -> np.ndarray:
        v, h = self.speed + self.accel * t, self.heading(t)
        return np.array([math.cos(h) * v, math.sin(h) * v, 0.0])

    def acceleration(self, t: float = 0.0) -> np.ndarray:
        h = self.heading(t)
        v = self.speed + self.accel * t
        # Tangential plus centripetal (v * yaw_rate, to the left of the heading).
        return np.array([math.cos(h) * self.accel - math.sin(h) * v * self.yaw_rate,
                         math.sin(h) * self.accel + math.cos(h) * v * self.yaw_rate, 0.0])


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
            h = ob.heading(t)
            c, s = math.cos(h), math.sin(h)
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
        return np.array([px, py, gz + 0.5 * ob.height, ob.length, ob.width, ob.height,
                         ob.heading(t)])


# ---------------------------------------------------------------------------------------------
# Object templates. Label boxes are (length, width, height); the parts stay INSET inside the
# label box so no surface coincides with a label face (a point's "in box" test is then never
# decided by float rounding) - like real labels, which are drawn slightly loose. Object frame:
# x forward (the heading), y left, z up from the bottom centre of the box.
#
# Vehicles are built from stepped boxes that follow real body profiles, so the front and the back
# differ the way they do on real vehicles: a hood lower and longer than the trunk, a raked
# windscreen, a near-vertical tail on hatchbacks, SUVs and vans, a cab ahead of the cargo box on
# trucks, bumpers, mirrors ahead of the front doors, head lamps at the front and retro-reflective
# tail lamps at the rear only (licence plates at both ends).
_INSET = 0.04
HEAD_LAMP = (0.7, 0.0)    # lens over a reflector: bright, but not retro-reflective
TAIL_LAMP = (1.3, 0.0)    # red retro-reflectors (> 1: retro-reflective, see the materials above)


def _box(x0, x1, y0, y1, z0, z1, mat):
    return (x0, x1, y0, y1, z0, z1) + tuple(mat)


def _wheels(parts, w, r, axles, tread=0.24):
    for ax in axles:
        for sy in (-1, 1):
            y_in, y_out = sy * (w / 2 - tread), sy * (w / 2 - 0.005)
            parts.append(_box(ax - r, ax + r, min(y_in, y_out), max(y_in, y_out), 0.0, 2 * r, TIRE))


def _greenhouse(parts, z0, z1, rear0, rear1, front0, front1, half_w0, half_w1, roof, paint,
                steps=3):
    """Windows between heights z0 and z1 as ``steps`` stacked glass slabs whose front edge moves
    from ``front0`` (bottom) to ``front1`` (top) and whose rear edge from ``rear0`` to ``rear1``
    (a raked windscreen and rear window as steps), narrowing from half width ``half_w0`` to
    ``half_w1`` (tumblehome); then a roof slab of thickness ``roof`` in paint on top."""
    for k in range(steps):
        f = (k + 0.5) / steps
        za, zb = z0 + (z1 - z0) * k / steps, z0 + (z1 - z0) * (k + 1) / steps
        hw = half_w0 + (half_w1 - half_w0) * f
        parts.append(_box(rear0 + (rear1 - rear0) * f, front0 + (front1 - front0) * f, -hw, hw,
                          za, zb, GLASS))
    parts.append(_box(rear1, front1, -half_w1, half_w1, z1, z1 + roof, paint))


def _ends(parts, l, w, z_plate, z_head, z_tail, tail_w=0.3, x_tail=None):
    """Licence plates at both ends, head lamps at the front, tail lamps at the rear only (on the
    rear face at ``x_tail``, default the rear end of the body)."""
    x_tail = -l / 2 if x_tail is None else x_tail
    for sx in (-1, 1):
        parts.append(_box(sx * l / 2 - 0.015, sx * l / 2 + 0.015, -0.26, 0.26, z_plate,
                          z_plate + 0.12, PLATE))
    for sy in (-1, 1):
        y0, y1 = sorted((sy * (w / 2 - 0.12), sy * (w / 2 - 0.12 - tail_w)))
        parts.append(_box(l / 2 - 0.02, l / 2 + 0.012, y0, y1, z_head, z_head + 0.12, HEAD_LAMP))
        parts.append(_box(x_tail - 0.012, x_tail + 0.02, y0, y1, z_tail, z_tail + 0.14,
                          TAIL_LAMP))


def _mirrors(parts, x, w, z, body_half):
    for sy in (-1, 1):
        y0, y1 = sorted((sy * body_half, sy * (w / 2 - 0.005)))
        parts.append(_box(x - 0.12, x + 0.06, y0, y1, z, z + 0.13, METAL))


def _passenger_parts(kind, L, W, H, paint, rng):
    """Sedan ("car"), "hatchback" or "suv": profile heights as fractions of the height H."""
    u = rng.random
    l, w, h = L - 2 * _INSET, W - 2 * _INSET, H - _INSET
    bh = w / 2 - 0.1                                   # body half width (mirrors stick out)
    if kind == "suv":
        r, clear = 0.36 + 0.04 * u(), 0.34
        fo, ro = 0.9 + 0.1 * u(), 0.95 + 0.15 * u()      # overhangs
        belt, hood = 0.56 * h, 0.6 * h                   # belt line, hood top
        hood_len = (0.2 + 0.03 * u()) * l
        ws_run = 0.55                                    # windscreen's horizontal run
        tail = -l / 2 + 0.1                              # near-vertical tail
        tail_run = 0.12
    elif kind == "hatchback":
        r, clear = 0.3 + 0.03 * u(), 0.26
        fo, ro = 0.8 + 0.1 * u(), 0.65 + 0.1 * u()
        belt, hood = 0.56 * h, 0.6 * h
        hood_len = (0.21 + 0.03 * u()) * l
        ws_run = 0.8
        tail = -l / 2 + 0.12
        tail_run = 0.25
    else:  # sedan: a trunk, a long hood, a raked rear window
        r, clear = 0.31 + 0.03 * u(), 0.28
        fo, ro = 0.85 + 0.1 * u(), 1.0 + 0.15 * u()
        belt, hood = 0.58 * h, 0.62 * h
        hood_len = (0.25 + 0.03 * u()) * l
        ws_run = 0.85
        trunk_len = (0.19 + 0.03 * u()) * l
        tail = -l / 2 + trunk_len
        tail_run = 0.6
    parts = []
    _wheels(parts, w, r, (l / 2 - fo, -l / 2 + ro))
    # Bumpers, lower body and the hood; the trunk lid (sedan) sits higher than the hood.
    parts.append(_box(l / 2 - 0.22, l / 2, -bh, bh, clear - 0.08, clear + 0.3, paint))
    parts.append(_box(-l / 2, -l / 2 + 0.22, -bh, bh, clear - 0.06, clear + 0.34, paint))
    parts.append(_box(-l / 2 + 0.03, l / 2 - 0.1, -bh, bh, clear, belt, paint))
    x_ws = l / 2 - hood_len                              # windscreen base
    parts.append(_box(x_ws, l / 2 - 0.14, -bh + 0.05, bh - 0.05, belt, hood, paint))
    roof = 0.07
    glass_top = h - roof
    if kind == "car":
        trunk_top = 0.7 * h
        parts.append(_box(-l / 2 + 0.03, tail, -bh + 0.05, bh - 0.05, belt, trunk_top, paint))
        _greenhouse(parts, belt, glass_top, tail + 0.05, tail + tail_run, x_ws, x_ws - ws_run,
                    bh - 0.03, bh - 0.13, roof, paint)
    else:
        _greenhouse(parts, belt, glass_top, tail, tail + tail_run, x_ws, x_ws - ws_run,
                    bh - 0.03, bh - 0.1, roof, paint)
    _mirrors(parts, x_ws - 0.1, w, belt + 0.02, bh)
    z_lamp = clear + 0.3
    _ends(parts, l, w, clear + 0.12, z_lamp - 0.05,
          0.7 * h - 0.16 if kind == "car" else belt - 0.05, x_tail=-l / 2 + 0.03)
    return parts


def _van_parts(L, W, H, paint, rng):
    """A one-box van: short low nose, steep windscreen, tall box down to a vertical tail."""
    l, w, h = L - 2 * _INSET, W - 2 * _INSET, H - _INSET
    r, clear = 0.35, 0.32
    bh = w / 2 - 0.1
    nose = (0.13 + 0.03 * rng.random()) * l
    parts = []
    _wheels(parts, w, r, (l / 2 - 0.9, -l / 2 + 1.0))
    parts.append(_box(l / 2 - 0.2, l / 2, -bh, bh, clear - 0.08, clear + 0.3, paint))
    parts.append(_box(-l / 2, -l / 2 + 0.15, -bh, bh, clear - 0.05, clear + 0.3, paint))
    x_ws = l / 2 - nose
    z_nose = 0.45 * h
    parts.append(_box(x_ws, l / 2 - 0.12, -bh, bh, clear, z_nose, paint))         # nose
    parts.append(_box(-l / 2 + 0.05, x_ws, -bh, bh, clear, 0.52 * h, paint))      # lower box
    # Cab windows (raked windscreen) ahead of a windowless cargo box up to the roof.
    cab_rear = x_ws - 1.3
    _greenhouse(parts, 0.52 * h, 0.86 * h, cab_rear, cab_rear, x_ws - 0.05, x_ws - 0.55,
                bh - 0.02, bh - 0.08, 0.0, paint, steps=3)
    parts.append(_box(cab_rear - 0.02, x_ws - 0.55, -bh + 0.06, bh - 0.06, 0.86 * h, h, paint))
    parts.append(_box(-l / 2 + 0.05, cab_rear, -bh, bh, 0.52 * h, h, paint))      # cargo box
    parts.append(_box(x_ws - 0.1, x_ws + 0.2, -bh + 0.1, bh - 0.1, z_nose, 0.52 * h, paint))
    _mirrors(parts, x_ws - 0.15, w, 0.5 * h, bh)
    _ends(parts, l, w, clear + 0.12, z_nose - 0.2, 0.5 * h, tail_w=0.22, x_tail=-l / 2 + 0.05)
    return parts


def _truck_parts(L, W, H, paint, rng):
    """A box truck: cab ahead, a gap, a taller cargo box (and a longer rear overhang)."""
    l, w, h = L - 2 * _INSET, W - 2 * _INSET, H - _INSET
    r = 0.5
    bh = w / 2 - 0.12
    parts = []
    _wheels(parts, w, r, (l / 2 - 1.25, -l / 2 + 2.2, -l / 2 + 1.15), tread=0.35)
    cab0 = l / 2 - 2.3
    cab_h = (0.78 + 0.06 * rng.random()) * h
    parts.append(_box(l / 2 - 0.25, l / 2, -bh, bh, 0.35, 0.85, METAL))           # bumper
    parts.append(_box(cab0, l / 2 - 0.05, -bh, bh, 0.55, 0.5 * cab_h + 0.3, paint))
    _greenhouse(parts, 0.5 * cab_h + 0.3, cab_h - 0.1, cab0 + 0.1, cab0 + 0.1, l / 2 - 0.1,
                l / 2 - 0.35, bh - 0.03, bh - 0.08, 0.1, paint, steps=2)
    _mirrors(parts, l / 2 - 0.4, w, 0.5 * cab_h + 0.2, bh)
    cargo = (0.3 + 0.45 * rng.random(), 0.02)
    parts.append(_box(-l / 2, cab0 - 0.15, -w / 2 + 0.005, w / 2 - 0.005, 1.05, h, cargo))
    parts.append(_box(-l / 2 + 0.4, cab0, -0.35 * w, 0.35 * w, 0.55, 1.05, (0.05, 0.1)))
    _ends(parts, l, w, 0.5, 0.75, 0.6, tail_w=0.25)
    return parts


def _bus_parts(L, W, H, paint, rng):
    """A city bus: a tall windscreen and the door at the front, a window band down the sides that
    stops short of the windowless engine bay at the rear, roof-mounted cooling over the rear."""
    l, w, h = L - 2 * _INSET, W - 2 * _INSET, H - _INSET
    r = 0.5
    bh = w / 2 - 0.1
    pod = 0.22
    parts = []
    _wheels(parts, w, r, (l / 2 - 2.6, -l / 2 + 3.1), tread=0.33)
    parts.append(_box(-l / 2 + 0.05, l / 2 - 0.05, -bh, bh, 0.32, 0.38 * h, paint))
    parts.append(_box(l / 2 - 0.1, l / 2, -bh, bh, 0.32, 0.38 * h, paint))        # front face
    parts.append(_box(l / 2 - 0.1, l / 2, -bh + 0.05, bh - 0.05, 0.38 * h, 0.92 * h, GLASS))
    engine = -l / 2 + 1.4
    parts.append(_box(engine + 0.05, l / 2 - 0.1, -bh, bh, 0.38 * h, 0.85 * h, GLASS))
    parts.append(_box(-l / 2 + 0.03, engine + 0.05, -bh, bh, 0.38 * h, h - pod, paint))
    parts.append(_box(engine + 0.05, l / 2 - 0.05, -bh, bh, 0.85 * h, h - pod, paint))
    parts.append(_box(-l / 2 + 0.3, -l / 2 + 0.3 + 0.3 * l, -0.38 * w, 0.38 * w, h - pod, h,
                      METAL))                                                    # cooling
    _mirrors(parts, l / 2 - 0.25, w, 0.7 * h, bh)
    _ends(parts, l, w, 0.5, 0.55, 0.7, tail_w=0.2, x_tail=-l / 2 + 0.03)
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


# Label box sizes (length, width, height): (mean, sd, low, high) per dimension, truncated normal.
# Passenger cars follow the common segments (Waymo's vehicle boxes: median about 4.6 x 2.0 x
# 1.7 m with a long tail of vans, trucks and buses, docs/synthetic.md).
VEHICLE_SIZES = {
    "car": ((4.75, 0.25, 4.3, 5.2), (1.93, 0.05, 1.82, 2.03), (1.53, 0.05, 1.44, 1.65)),
    "hatchback": ((4.15, 0.2, 3.7, 4.5), (1.88, 0.05, 1.78, 1.98), (1.56, 0.05, 1.47, 1.66)),
    "suv": ((4.8, 0.25, 4.35, 5.2), (2.03, 0.06, 1.92, 2.14), (1.8, 0.07, 1.66, 1.95)),
    "van": ((5.4, 0.35, 4.8, 6.2), (2.05, 0.06, 1.95, 2.2), (2.2, 0.2, 1.9, 2.7)),
    "truck": ((8.8, 1.2, 7.0, 11.5), (2.5, 0.05, 2.4, 2.6), (3.3, 0.25, 2.9, 3.8)),
    "bus": ((12.0, 0.6, 10.5, 13.0), (2.55, 0.03, 2.5, 2.6), (3.15, 0.1, 3.0, 3.4)),
}
VEHICLE_KINDS = tuple(VEHICLE_SIZES)


def _draw_size(rng, spec):
    return tuple(float(np.clip(rng.normal(m, s), lo, hi)) for m, s, lo, hi in spec)


def _make_object(kind, rng, x, y, yaw, speed=0.0, accel=0.0, walking=False,
                 yaw_rate=0.0) -> SceneObject:
    u = rng.random
    if kind in VEHICLE_SIZES:
        L, W, H = _draw_size(rng, VEHICLE_SIZES[kind])
        paint = (0.08 + 0.45 * u(), 0.03)
        if kind == "van":
            parts = _van_parts(L, W, H, paint, rng)
        elif kind == "truck":
            parts = _truck_parts(L, W, H, paint, rng)
        elif kind == "bus":
            parts = _bus_parts(L, W, H, paint, rng)
        else:
            parts = _passenger_parts(kind, L, W, H, paint, rng)
        typ = VEHICLE
    elif kind == "pedestrian":
        # Waymo pedestrian boxes: about 0.9 x 0.9 x 1.75 m (the box holds the swinging limbs).
        L, W, H = 0.75 + 0.3 * u(), 0.75 + 0.3 * u(), 1.6 + 0.3 * u()
        parts = _pedestrian_parts(L, W, H, rng, walking)
        typ = PEDESTRIAN
    elif kind == "cyclist":
        # Rider and bike together: about 1.8 x 0.85 x 1.75 m.
        L, W, H = 1.7 + 0.2 * u(), 0.75 + 0.2 * u(), 1.65 + 0.2 * u()
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
                       float(accel), ident, float(yaw_rate))


def _vehicle_kind(rng, cfg: SceneConfig) -> str:
    u = rng.random() * sum(cfg.vehicle_mix)
    acc = 0.0
    for kind, share in zip(VEHICLE_KINDS, cfg.vehicle_mix):
        acc += share
        if u < acc:
            return kind
    return VEHICLE_KINDS[-1]


def _static_box(rows, mats, cx, cy, cz, hx, hy, hz, yaw, mat):
    rows.append((cx, cy, cz, hx, hy, hz, math.cos(yaw), math.sin(yaw)))
    mats.append(tuple(mat))


# ---------------------------------------------------------------------------------------------
class _Footprints:
    """Oriented 2D rectangles already occupied (swept over the segment), for placement: rows of
    centre x, centre y, half length, half width, cos, sin; tested with separating axes."""

    def __init__(self):
        self.rects = np.zeros((0, 6))

    def free(self, rects) -> bool:
        for r in rects:
            if len(self.rects) and _overlaps(self.rects, np.asarray(r, np.float64)).any():
                return False
        return True

    def add(self, rects) -> None:
        self.rects = np.vstack([self.rects, np.asarray(rects, np.float64).reshape(-1, 6)])

    def add_aligned(self, x0, x1, y0, y1) -> None:
        self.add([(0.5 * (x0 + x1), 0.5 * (y0 + y1), 0.5 * (x1 - x0), 0.5 * (y1 - y0), 1.0, 0.0)])


def _overlaps(rects: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(N,) whether each oriented rectangle of ``rects`` (N, 6) overlaps ``r`` (6,) (touching
    counts as free): no separating axis among the four edge normals."""
    d = rects[:, :2] - r[:2]
    ax = np.stack([np.stack([rects[:, 4], rects[:, 5]], 1), np.stack([-rects[:, 5], rects[:, 4]], 1),
                   np.broadcast_to([r[4], r[5]], (len(rects), 2)),
                   np.broadcast_to([-r[5], r[4]], (len(rects), 2))], 1)       # (N, 4, 2)

    def extent(hl, hw, c, s):   # half projection of a rectangle on each axis
        return (hl[:, None] * np.abs(ax[..., 0] * c[:, None] + ax[..., 1] * s[:, None])
                + hw[:, None] * np.abs(-ax[..., 0] * s[:, None] + ax[..., 1] * c[:, None]))

    n = len(rects)
    ra = extent(rects[:, 2], rects[:, 3], rects[:, 4], rects[:, 5])
    rb = extent(np.full(n, r[2]), np.full(n, r[3]), np.full(n, r[4]), np.full(n, r[5]))
    dist = np.abs((ax * d[:, None, :]).sum(-1))
    return (dist < ra + rb).all(1)


def _swept_rects(ob: SceneObject, duration: float, pad: float = 0.3):
    """Oriented rectangles covering the object's footprint over [0, duration] (padded): one
    stretched along the path for a straight mover, one every ~1 m of arc for a turning one."""
    hl, hw = ob.length / 2 + pad, ob.width / 2 + pad
    if ob.yaw_rate == 0.0:
        (x0, y0), (x1, y1) = ob.position(0.0), ob.position(duration)
        c, s = math.cos(ob.yaw), math.sin(ob.yaw)
        travel = math.hypot(x1 - x0, y1 - y0)
        return [(0.5 * (x0 + x1), 0.5 * (y0 + y1), hl + 0.5 * travel, hw, c, s)]
    arc = abs(ob.speed) * duration
    n = max(2, int(math.ceil(arc / 1.0)) + 1)
    out = []
    for t in np.linspace(0.0, duration, n):
        px, py = ob.position(float(t))
        h = ob.heading(float(t))
        out.append((px, py, hl + 0.5 * arc / (n - 1), hw, math.cos(h), math.sin(h)))
    return out


def _wrap_angle(a: float) -> float:
    return math.atan2(math.sin(a), math.cos(a))


def _turning_vehicle(rng, cfg: SceneConfig, xc: float, lw: float, park: float,
                     duration: float) -> SceneObject:
    """A vehicle on one of the junction's eight turns (four approaches x left/right), somewhere
    along its quarter circle, at constant speed, facing its motion.

    Canonical turn: approaching along +x on the y < 0 side. Right turn from the outer lane
    (y = -1.5 lw) around the kerb corner (xc - park, -park), radius park - 1.5 lw; left turn from
    the inner lane (y = -0.5 lw) around (xc - park, park), radius park + 0.5 lw. The other three
    approaches are the canonical turn rotated by a multiple of 90 degrees about (xc, 0)."""
    right = rng.random() < 0.5
    if right:
        R, cx, cy, sense = park - 1.5 * lw, xc - park, -park, -1.0
        a_start = math.pi / 2          # angle of the position around the centre
    else:
        R, cx, cy, sense = park + 0.5 * lw, xc - park, park, 1.0
        a_start = -math.pi / 2
    v = float(rng.uniform(*cfg.turning_speed))
    sweep = v * duration / R           # angle travelled during the segment
    if sweep > 0.95 * math.pi / 2:
        v *= 0.95 * (math.pi / 2) / sweep
        sweep = v * duration / R
    a0 = a_start + sense * float(rng.uniform(0.0, math.pi / 2 - sweep))
    px, py = cx + R * math.cos(a0), cy + R * math.sin(a0)
    heading = a0 + sense * math.pi / 2
    rot = float(rng.integers(0, 4)) * math.pi / 2
    c, s = math.cos(rot), math.sin(rot)
    dx, dy = px - xc, py
    kind = _vehicle_kind(rng, cfg)
    while kind in ("truck", "bus"):    # the junction's corners are too tight for them
        kind = _vehicle_kind(rng, cfg)
    return _make_object(kind, rng, xc + c * dx - s * dy, s * dx + c * dy,
                        _wrap_angle(heading + rot), v, 0.0, yaw_rate=sense * v / R)


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

    # Parking along each side of the main road: parallel to the kerb, or angled / perpendicular
    # bays, which push the kerb of that side out into the sidewalk (poles, signs and pedestrians
    # follow the kerb).
    modes = ("parallel", "angled", "perpendicular")
    side_mode = {sd: modes[int(rng.choice(3, p=np.asarray(cfg.parking_modes) / sum(cfg.parking_modes)))]
                 for sd in (-1, 1)}
    bay_depth = {"parallel": cfg.parking_width, "angled": 4.8, "perpendicular": 5.2}
    kerb = {sd: min(bike + bay_depth[side_mode[sd]], walk - 1.6) for sd in (-1, 1)}

    # Poles and trees on the sidewalks.
    for side in (-1, 1):
        x = x_lo + float(rng.uniform(0, 10))
        while x < x_hi:
            if not in_cross(x, 2.0):
                py = side * (kerb[side] + 0.4)
                gz = float(ground.height(x, py))
                h = float(rng.uniform(5.0, 8.0))
                _static_box(rows, mats, x, py, gz + h / 2 - 0.5, 0.13, 0.13, h / 2 + 0.5, 0.0, METAL)
                occupied.add_aligned(x - 0.4, x + 0.4, py - 0.4, py + 0.4)
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
                occupied.add_aligned(x - 0.5, x + 0.5, ty - 0.5, ty + 0.5)
            x += float(rng.uniform(8.0, 20.0))

    objects: list[SceneObject] = []

    def try_add(ob: SceneObject) -> bool:
        r = _swept_rects(ob, duration)
        if not occupied.free(r):
            return False
        occupied.add(r)
        objects.append(ob)
        return True

    # The ego's own swept footprint keeps every object off it.
    ex, ey, _ = ego.xy_yaw(np.array([0.0, duration]))
    occupied.add_aligned(float(ex.min()) - 3.5, float(ex.max()) + 6.0, float(ey.min()) - 1.6,
                         float(ey.max()) + 1.6)

    def parked_yaw(base):
        """Parked vehicles stand a few degrees off their bay's axis, some clearly crooked."""
        jitter = cfg.parked_yaw_std * (3.0 if rng.random() < 0.1 else 1.0)
        return _wrap_angle(base + float(rng.normal(0.0, jitter)))

    # Parked vehicles. Right-hand traffic: the near lane of side -1 (y < 0) drives towards +x.
    fill = float(rng.uniform(*cfg.parked_fill))
    for side in (-1, 1):
        mode = side_mode[side]
        drive = 1.0 if side < 0 else -1.0            # direction of the near lane along x
        x = x_lo + float(rng.uniform(0, 5))
        while x < x_hi:
            kind = _vehicle_kind(rng, cfg)
            if kind == "bus" or rng.random() >= fill:  # no buses in parking bays
                x += float(rng.uniform(3.0, 7.0))
                continue
            if mode == "parallel":
                yaw = 0.0 if drive > 0 else math.pi
                if rng.random() < 0.1:                 # parked facing the other way
                    yaw += math.pi
                y = side * (bike + cfg.parking_width / 2) + float(rng.normal(0.0, 0.12))
                ob = _make_object(kind, rng, x, y, parked_yaw(yaw))
                ob.x += ob.length / 2
                step = ob.length + float(rng.uniform(0.6, 3.0))
            else:
                theta = math.pi / 2 if mode == "perpendicular" else \
                    math.radians(float(rng.uniform(45.0, 60.0)))
                nose_in = rng.random() < (0.7 if mode == "perpendicular" else 0.95)
                base = math.atan2(side * math.sin(theta), drive * math.cos(theta))
                ob = _make_object(kind, rng, x, 0.0, parked_yaw(base if nose_in else base + math.pi))
                depth = ob.length * math.sin(theta) + ob.width * abs(math.cos(theta))
                if bike + depth + 0.2 > kerb[side] + 0.3:   # too long for the bay
                    x += float(rng.uniform(3.0, 7.0))
                    continue
                ob.y = side * (bike + 0.2 + depth / 2) + float(rng.normal(0.0, 0.1))
                ob.x += 0.5 * (ob.length * abs(math.cos(theta)) + ob.width * math.sin(theta))
                step = ob.width / math.sin(theta) + float(rng.uniform(0.5, 1.2))
            if not in_cross(ob.x, ob.length / 2 + 1.0):
                try_add(ob)
            x += step
        if has_cross:
            for sgn in (-1, 1):
                y = sgn * (park + 1.0)
                while abs(y) < y_far:
                    kind = _vehicle_kind(rng, cfg)
                    if kind != "bus" and rng.random() < fill:
                        yaw = parked_yaw(math.pi / 2 if side < 0 else -math.pi / 2)
                        ob = _make_object(kind, rng, xc - side * (bike + cfg.parking_width / 2),
                                          y + sgn * 3.0, yaw)
                        try_add(ob)
                        y += sgn * (ob.length + float(rng.uniform(0.6, 3.0)))
                    else:
                        y += sgn * float(rng.uniform(3.0, 7.0))

    # Moving traffic, both directions: each lane has one speed, so vehicles in it keep their
    # spacing; every moving vehicle faces its motion.
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
                                  yaw + float(rng.normal(0, 0.015)), v, a)
                if try_add(ob):
                    break

    if has_cross:
        # Cross-street traffic never enters the intersection during the segment.
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
        # Vehicles turning at the junction, on quarter circles from an approach lane to the lane
        # of the same direction of the other street (right turns from the outer lane around the
        # kerb corner, left turns from the inner lane).
        n = int(rng.integers(cfg.turning_vehicles[0], cfg.turning_vehicles[1] + 1))
        for _ in range(n):
            for _attempt in range(10):
                ob = _turning_vehicle(rng, cfg, xc, lw, park, duration)
                if try_add(ob):
                    break

    # Cyclists in the bike lanes, one speed per side, riding with the traffic.
    n_cyc = int(rng.integers(cfg.cyclists[0], cfg.cyclists[1] + 1))
    side_speed = {-1: float(rng.uniform(3.0, 7.0)), 1: float(rng.uniform(3.0, 7.0))}
    for _ in range(n_cyc):
        for _attempt in range(10):
            side = -1 if rng.random() < 0.5 else 1
            yaw = (0.0 if side < 0 else -math.pi) + float(rng.normal(0, 0.03))
            ob = _make_object("cyclist", rng, float(rng.uniform(x_lo + 10, x_hi - 10)),
                              side * (road_lanes + cfg.bike_lane_width / 2), yaw, side_speed[side])
            if not in_cross(ob.x, 12.0) and try_add(ob):
                break

    # Pedestrians on the sidewalks, walking along them (facing their motion) or standing.
    n_ped = int(rng.integers(cfg.pedestrians[0], cfg.pedestrians[1] + 1))
    for _ in range(n_ped):
        for _attempt in range(10):
            side = -1 if rng.random() < 0.5 else 1
            walking = rng.random() < 0.7
            lo, hi = kerb[side] + 0.8, walk - 0.6
            y = side * float(rng.uniform(lo, max(lo, hi)))
            if walking:
                yaw = (0.0 if rng.random() < 0.5 else -math.pi) + float(rng.normal(0, 0.05))
                v = float(rng.uniform(0.8, 1.7))
            else:
                yaw, v = float(rng.uniform(-math.pi, math.pi)), 0.0
            ob = _make_object("pedestrian", rng, float(rng.uniform(x_lo + 5, x_hi - 5)), y, yaw, v,
                              walking=walking)
            if not in_cross(ob.x, 3.0) and try_add(ob):
                break

    # Signs at the kerb, facing the oncoming traffic of their side.
    n_sign = int(rng.integers(cfg.signs[0], cfg.signs[1] + 1))
    for _ in range(n_sign):
        for _attempt in range(10):
            side = -1 if rng.random() < 0.5 else 1
            yaw = _wrap_angle((math.pi if side < 0 else 0.0) + float(rng.normal(0, 0.05)))
            ob = _make_object("sign", rng, float(rng.uniform(x_lo + 5, x_hi - 5)),
                              side * (kerb[side] + 0.25), yaw)
            if not in_cross(ob.x, 1.0) and try_add(ob):
                break

    if rows:
        static = np.asarray(rows, np.float64)
        smats = np.asarray(mats, np.float64)
    else:
        static, smats = np.zeros((0, 8)), np.zeros((0, 2))
    return Scene(cfg, ground, ego, static, smats, objects)
