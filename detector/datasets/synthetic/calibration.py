"""Lidar calibrations of the synthetic vehicle: the real Waymo sensor layout.

All five ``LaserCalibration`` values (TOP's 64 beam inclinations, its ``beam_inclination_min/max``
and every extrinsic) are copied from the real frame
``pvps_data_one_frame.tfrecord`` of the official Waymo repository's tests (context
``1024360143612057520_3580_000_3600_000``); ``tests/test_synthetic.py`` checks them against that
file. They are embedded so the generator runs on a machine without any Waymo data.

Ray geometry follows docs/WAYMO.md, "Range image -> points": row ``i`` uses the inclination table
reversed (row 0 = highest beam), column ``j`` the azimuth
``((W - j - 0.5) / W * 2 - 1) * pi - atan2(E[1, 0], E[0, 0])``. Casting every pixel along exactly
that direction is what makes the written range images decode to the cast points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["LidarSpec", "LIDARS", "TOP", "FRONT", "SIDE_LEFT", "SIDE_RIGHT", "REAR",
           "TOP_BEAM_INCLINATIONS", "row_inclinations", "column_azimuths",
           "sensor_directions", "vehicle_directions", "EGO_BODY_BOXES"]

TOP, FRONT, SIDE_LEFT, SIDE_RIGHT, REAR = 1, 2, 3, 4, 5

# Ascending, as stored in the proto (index 0 = lowest beam).
TOP_BEAM_INCLINATIONS = np.array([
    -0.3062496301683044, -0.29516893681303036, -0.28449344065521887, -0.2738296176840642,
    -0.26313358188635294, -0.25372659188569746, -0.2440640640990024, -0.2345344897853754,
    -0.225296834730498, -0.21580022272035237, -0.20634880274115197, -0.19778418616273097,
    -0.18901440446153273, -0.18097437867597632, -0.17253043625263098, -0.1644357579306479,
    -0.15633346596078224, -0.1487457268120973, -0.14105385093618628, -0.13343975875184566,
    -0.12650199856453948, -0.11947037211004607, -0.11270063862125146, -0.1063099263181444,
    -0.09975420854649997, -0.09356426735422207, -0.08768368105944369, -0.08170518141526317,
    -0.07619334777022346, -0.07100080722501634, -0.06581034306492084, -0.0604799188917613,
    -0.05600400918923287, -0.05105926130557581, -0.046572362230800524, -0.04254147875366732,
    -0.03821293431478101, -0.034294609174740254, -0.03066653441035938, -0.02689425708927229,
    -0.023857607169294193, -0.020745472812761845, -0.01779799770194912, -0.014747666226994971,
    -0.011916447844428468, -0.0088217165929656, -0.00596922589343496, -0.0033035380142032444,
    -0.00020284092259315045, 0.0028732110061144844, 0.0055878271187523865, 0.008436397490958703,
    0.01131329618399568, 0.014139782550373736, 0.017302758221248382, 0.020302563899257553,
    0.023075982893805413, 0.02607291412428836, 0.02880215294252597, 0.031781309964403315,
    0.03471180364289794, 0.03770246734582772, 0.04051627836095428, 0.04368278080575827,
], dtype=np.float64)


@dataclass(frozen=True)
class LidarSpec:
    """One lidar: its Waymo ``LaserName`` value, range-image size, calibration and range limit."""
    name: int
    label: str
    height: int
    width: int
    extrinsic: tuple           # 16 floats, row-major 4x4 lidar -> vehicle
    inclination_min: float
    inclination_max: float
    beam_inclinations: tuple   # empty = uniform between min and max
    max_range: float           # metres; nothing farther returns

    @property
    def extrinsic_matrix(self) -> np.ndarray:
        return np.asarray(self.extrinsic, dtype=np.float64).reshape(4, 4)


_SR_MIN, _SR_MAX = -1.5707963267948966, 0.5235987755982988  # [-90, +30] degrees

LIDARS: dict[int, LidarSpec] = {
    TOP: LidarSpec(
        TOP, "TOP", 64, 2650,
        (-0.8474174306637593, -0.5309062391880738, 0.004718410580754707, 1.43,
         0.5309246555731615, -0.8474074413998973, 0.0044315194458962185, 0.0,
         0.0016456949148019723, 0.006260467335217813, 0.9999790488990217, 2.184,
         0.0, 0.0, 0.0, 1.0),
        -0.31178997684594145, 0.045266032028160264, tuple(TOP_BEAM_INCLINATIONS.tolist()), 75.0),
    FRONT: LidarSpec(
        FRONT, "FRONT", 200, 600,
        (0.9997523663719984, 0.004852299647279404, 0.021717760513520562, 4.07,
         -0.004932529814268788, 0.9999812021728969, 0.0036421766128615723, 0.0,
         -0.021699679334519443, -0.0037483981886851964, 0.9997575073125474, 0.689,
         0.0, 0.0, 0.0, 1.0),
        _SR_MIN, _SR_MAX, (), 20.0),
    SIDE_LEFT: LidarSpec(
        SIDE_LEFT, "SIDE_LEFT", 200, 600,
        (0.021488981694881004, -0.9997519542327193, 0.005852663801690575, 3.245,
         0.9995050096640437, 0.021617478478973322, 0.022856515060064208, 1.025,
         -0.022977365432026487, 0.005358603555934645, 0.9997216242763449, 0.979,
         0.0, 0.0, 0.0, 1.0),
        _SR_MIN, _SR_MAX, (), 20.0),
    SIDE_RIGHT: LidarSpec(
        SIDE_RIGHT, "SIDE_RIGHT", 200, 600,
        (-0.03861769555452071, 0.9992465657605545, -0.0038696777379948095, 3.245,
         -0.9989653676493501, -0.03869933018213982, -0.023886315761381522, -1.025,
         -0.02401807292971383, 0.0029432395742283093, 0.9997071918884807, 0.979,
         0.0, 0.0, 0.0, 1.0),
        _SR_MIN, _SR_MAX, (), 20.0),
    REAR: LidarSpec(
        REAR, "REAR", 200, 600,
        (-0.9992289517496568, -0.028692999031940995, -0.026799511037238266, -1.155,
         0.028461949883804866, -0.999554687415378, 0.008963496792987495, 0.0,
         -0.02704476648251566, 0.008193819164415953, 0.9996006412229871, 0.464,
         0.0, 0.0, 0.0, 1.0),
        _SR_MIN, _SR_MAX, (), 20.0),
}

# The ego vehicle's own body (vehicle frame; x_min, x_max, y_min, y_max, z_min, z_max): a lower
# body and a cabin, sized so every lidar sits just outside them. A ray that enters the body is
# blocked (no return), which gives the short-range lidars their real ~180 degree field of view
# and the TOP lidar its small blind spot over the windscreen.
EGO_BODY_BOXES = np.array([
    [-1.13, 4.05, -1.0, 1.0, 0.15, 1.05],
    [-0.50, 2.30, -0.90, 0.90, 0.15, 1.75],
], dtype=np.float64)


def row_inclinations(spec: LidarSpec) -> np.ndarray:
    """(H,) inclination of each range-image row, row 0 = highest beam (docs/WAYMO.md step 1)."""
    if spec.beam_inclinations:
        inc = np.asarray(spec.beam_inclinations, dtype=np.float64)
    else:
        i = np.arange(spec.height, dtype=np.float64)
        inc = spec.inclination_min + (i + 0.5) / spec.height * (
            spec.inclination_max - spec.inclination_min)
    return inc[::-1].copy()


def column_azimuths(spec: LidarSpec) -> np.ndarray:
    """(W,) sensor-frame azimuth of each column (docs/WAYMO.md step 2)."""
    E = spec.extrinsic_matrix
    j = np.arange(spec.width, dtype=np.float64)
    return ((spec.width - j - 0.5) / spec.width * 2.0 - 1.0) * math.pi - math.atan2(E[1, 0], E[0, 0])


@lru_cache(maxsize=None)
def sensor_directions(name: int) -> np.ndarray:
    """(H, W, 3) unit ray directions in the lidar's own frame (docs/WAYMO.md step 3)."""
    spec = LIDARS[name]
    inc = row_inclinations(spec)[:, None]
    az = column_azimuths(spec)[None, :]
    d = np.stack([np.cos(az) * np.cos(inc), np.sin(az) * np.cos(inc),
                  np.broadcast_to(np.sin(inc), (spec.height, spec.width))], axis=-1)
    d.setflags(write=False)
    return d


@lru_cache(maxsize=None)
def vehicle_directions(name: int) -> np.ndarray:
    """(H, W, 3) unit ray directions rotated into the vehicle frame by the extrinsic."""
    d = sensor_directions(name) @ LIDARS[name].extrinsic_matrix[:3, :3].T
    d.setflags(write=False)
    return d


@lru_cache(maxsize=None)
def ego_blocked(name: int) -> np.ndarray:
    """(H, W) bool: rays of this lidar that run into the ego vehicle's own body."""
    spec = LIDARS[name]
    o = spec.extrinsic_matrix[:3, 3]
    d = vehicle_directions(name).reshape(-1, 3)
    blocked = np.zeros(d.shape[0], dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        for b in EGO_BODY_BOXES:
            lo = (b[0::2] - o) * inv
            hi = (b[1::2] - o) * inv
            t0 = np.nanmax(np.minimum(lo, hi), axis=1)
            t1 = np.nanmin(np.maximum(lo, hi), axis=1)
            blocked |= (t1 >= np.maximum(t0, 0.0)) & (t1 > 1e-9)
    out = blocked.reshape(spec.height, spec.width)
    out.setflags(write=False)
    return out
