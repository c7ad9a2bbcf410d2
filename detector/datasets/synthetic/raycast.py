"""Numba ray caster for the synthetic lidar: ground height field + yaw-oriented boxes.

Every ray is cast from its sensor origin along the exact direction the Waymo range-image decoder
assigns to its pixel (docs/WAYMO.md, "Range image -> points"), so the stored range decodes back to
the cast point. Per ray:

* ground: the height field ``z = h(x, y)`` (plane + three sinusoids, see ``scene.Ground``). The ray
  can only meet it where its height above the plane lies within the noise bound ``A``; that stretch
  is marched until ``f(t) = z_ray(t) - h(x(t), y(t))`` changes sign, in steps of
  ``max(0.25 m, f / L)`` with ``L`` a bound on ``|f'|`` (a step of ``f / L`` cannot jump over the
  surface), then the root is polished by safeguarded Newton (falls back to bisection), to
  ~1e-10 m. Only two roots closer than 0.25 m (a ray skimming a crest) can be missed;
* boxes: a coarse uniform 2D grid over the scene (CSR lists of the boxes overlapping each cell),
  walked cell by cell along the ray (Amanatides & Woo, 1987); each box is tested with the slab
  method in its own yaw-rotated frame. The walk stops as soon as the nearest hit lies inside the
  cells already visited, and never goes past the ground hit: nearest hit wins, so occlusion is real;
* second return: the beam has a footprint of radius ``beam_divergence * range``. When the first
  hit lies closer than that to an edge of the face it hit, part of the beam passes the edge and
  the next surface behind it (at least ``min_separation`` farther) gives the second return; the
  energy is split between the two by how much of the footprint each surface covers;
* sensor model: intensity from reflectivity and the cosine of the incidence angle (retro-reflectors
  barely depend on it), log-normal intensity noise; elongation grows with grazing incidence and
  for split (edge) returns; dropouts from the material (glass, foliage), grazing incidence and weak
  far returns; Gaussian range noise.

The fast kernels (``parallel=True``, ``cache=True``) are ``cast_rays`` (N independent rays) and
``cast_image`` (one lidar's range images, a task per row); both call the same per-ray function.
``cast_rays_reference`` is the slow, obviously correct version (brute force over all boxes, fine
march for the ground) that the tests compare ``cast_rays`` with. Random numbers are a pure
function of (key, ray index, stream) (a splitmix64 hash), so results do not depend on thread
scheduling.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["build_grid", "cast_rays", "cast_image", "cast_rays_reference", "ground_height",
           "NO_HIT", "GROUND_HIT", "sensor_params"]

NO_HIT = -1
GROUND_HIT = -2
_INF = np.inf
_GROUND_STEP = 0.25


def sensor_params(range_noise_std=0.015, dropout_base=0.005, beam_divergence=0.0025,
                  min_separation=0.3, intensity_noise=0.1, physics=True) -> np.ndarray:
    """Pack the sensor model's knobs for the kernel. ``physics=False`` turns off every random
    effect (noise, dropouts) so a ray's range is its exact geometric hit distance."""
    return np.array([range_noise_std if physics else 0.0, dropout_base if physics else 0.0,
                     beam_divergence, min_separation, intensity_noise if physics else 0.0,
                     1.0 if physics else 0.0], dtype=np.float64)



# ---------------------------------------------------------------------------------------------
# Ground
@njit(cache=True)
def _ground_f(t, ox, oy, oz, dx, dy, dz, gp):
    x = ox + t * dx
    y = oy + t * dy
    h = gp[0] + gp[1] * x + gp[2] * y
    dh = gp[1] * dx + gp[2] * dy
    for k in range(3):
        a = gp[3 + 4 * k]
        kx = gp[4 + 4 * k]
        ky = gp[5 + 4 * k]
        arg = kx * x + ky * y + gp[6 + 4 * k]
        h += a * math.sin(arg)
        dh += a * math.cos(arg) * (kx * dx + ky * dy)
    return oz + t * dz - h, dz - dh


@njit(cache=True)
def _ground_f_only(t, ox, oy, oz, dx, dy, dz, gp):
    x = ox + t * dx
    y = oy + t * dy
    h = gp[0] + gp[1] * x + gp[2] * y
    for k in range(3):
        h += gp[3 + 4 * k] * math.sin(gp[4 + 4 * k] * x + gp[5 + 4 * k] * y + gp[6 + 4 * k])
    return oz + t * dz - h


@njit(cache=True)
def ground_height(x, y, gp):
    h = gp[0] + gp[1] * x + gp[2] * y
    for k in range(3):
        h += gp[3 + 4 * k] * math.sin(gp[4 + 4 * k] * x + gp[5 + 4 * k] * y + gp[6 + 4 * k])
    return h


@njit(cache=True)
def _ground_normal(x, y, gp):
    gx = gp[1]
    gy = gp[2]
    for k in range(3):
        c = gp[3 + 4 * k] * math.cos(gp[4 + 4 * k] * x + gp[5 + 4 * k] * y + gp[6 + 4 * k])
        gx += c * gp[4 + 4 * k]
        gy += c * gp[5 + 4 * k]
    n = math.sqrt(gx * gx + gy * gy + 1.0)
    return -gx / n, -gy / n, 1.0 / n


@njit(cache=True)
def _ground_hit(ox, oy, oz, dx, dy, dz, tmax, gp):
    amp = abs(gp[3]) + abs(gp[7]) + abs(gp[11])
    c0 = oz - gp[0] - gp[1] * ox - gp[2] * oy   # height above the plane at t = 0
    c1 = dz - gp[1] * dx - gp[2] * dy            # its rate along the ray
    if c1 < 0.0:
        t_in = (c0 - amp) / -c1
        t_out = (c0 + amp) / -c1
    else:
        if c0 > amp:
            return _INF
        t_in = 0.0
        t_out = tmax
    if t_in < 0.0:
        t_in = 0.0
    if t_out > tmax:
        t_out = tmax
    if t_in > t_out:
        return _INF
    ta = t_in
    fa = _ground_f_only(ta, ox, oy, oz, dx, dy, dz, gp)
    if fa < 0.0:  # origin under the ground: no return
        return _INF
    if fa == 0.0:
        return ta
    # |f'| <= lip along the ray, so f cannot reach 0 within f / lip of a point: far above the
    # ground take those (safe) long steps, near it the fixed step.
    lip = abs(c1)
    for k in range(3):
        lip += abs(gp[3 + 4 * k]) * abs(gp[4 + 4 * k] * dx + gp[5 + 4 * k] * dy)
    while ta < t_out:
        tb = min(ta + max(_GROUND_STEP, fa / lip), t_out)
        fb = _ground_f_only(tb, ox, oy, oz, dx, dy, dz, gp)
        if fb <= 0.0:
            # f(ta) > 0 >= f(tb): safeguarded Newton inside the bracket.
            t = tb if fb == 0.0 else ta + (tb - ta) * fa / (fa - fb)
            for _ in range(60):
                f, df = _ground_f(t, ox, oy, oz, dx, dy, dz, gp)
                if abs(f) < 1e-10:  # 0.1 nm from the surface
                    return t
                if f > 0.0:
                    ta = t
                else:
                    tb = t
                if tb - ta < 1e-11:
                    break
                tn = t - f / df if df != 0.0 else 0.5 * (ta + tb)
                if not (ta < tn < tb):
                    tn = 0.5 * (ta + tb)
                if abs(tn - t) < 1e-12:
                    t = tn
                    break
                t = tn
            return t
        ta = tb
        fa = fb
    return _INF


@njit(cache=True)
def _ground_material(x, y, road):
    """(reflectivity, dropout) of the ground at (x, y): asphalt, paint, sidewalk."""
    half = road[0]
    has_cross = road[1] > 0.5
    xc = road[2]
    lw = road[3]
    on_main = abs(y) < half
    on_cross = has_cross and abs(x - xc) < half
    if not (on_main or on_cross):
        return 0.22, 0.01                      # concrete sidewalk
    if on_main and not on_cross:
        a = abs(y)
        along = x
    elif on_cross and not on_main:
        a = abs(x - xc)
        along = y
    else:
        return 0.08, 0.01                      # intersection: bare asphalt
    if a < 0.12:                               # centre line (double, solid)
        return 0.45, 0.0
    if abs(a - lw) < 0.075 and (along % 9.0) < 3.0:   # dashed lane divider
        return 0.6, 0.0
    if abs(a - 2.0 * lw) < 0.075:              # solid edge line
        return 0.6, 0.0
    return 0.08, 0.01


# ---------------------------------------------------------------------------------------------
# Boxes and the grid
@njit(cache=True)
def _ray_box(ox, oy, oz, dx, dy, dz, prims, k, tmin):
    """Entry distance and entry axis (0 x, 1 y, 2 z in the box frame) or (inf, -1)."""
    c = prims[k, 6]
    s = prims[k, 7]
    px = ox - prims[k, 0]
    py = oy - prims[k, 1]
    pz = oz - prims[k, 2]
    l0 = c * px + s * py
    l1 = -s * px + c * py
    l2 = pz
    d0 = c * dx + s * dy
    d1 = -s * dx + c * dy
    d2 = dz
    tn = -_INF
    tf = _INF
    ax = -1
    for a in range(3):
        if a == 0:
            lo, dd, h = l0, d0, prims[k, 3]
        elif a == 1:
            lo, dd, h = l1, d1, prims[k, 4]
        else:
            lo, dd, h = l2, d2, prims[k, 5]
        if abs(dd) < 1e-15:
            if abs(lo) > h:
                return _INF, -1
        else:
            t1 = (-h - lo) / dd
            t2 = (h - lo) / dd
            if t1 > t2:
                t1, t2 = t2, t1
            if t1 > tn:
                tn = t1
                ax = a
            if t2 < tf:
                tf = t2
    if tn > tf or tn <= tmin or ax < 0:
        return _INF, -1
    return tn, ax


@njit(cache=True)
def _box_face_info(ox, oy, oz, dx, dy, dz, t, prims, k, ax):
    """|cos incidence| and the distance from the hit point to the nearest edge of its face."""
    c = prims[k, 6]
    s = prims[k, 7]
    hx = ox + t * dx - prims[k, 0]
    hy = oy + t * dy - prims[k, 1]
    l0 = c * hx + s * hy
    l1 = -s * hx + c * hy
    l2 = oz + t * dz - prims[k, 2]
    d0 = c * dx + s * dy
    d1 = -s * dx + c * dy
    if ax == 0:
        cosi = abs(d0)
        e = min(prims[k, 4] - abs(l1), prims[k, 5] - abs(l2))
    elif ax == 1:
        cosi = abs(d1)
        e = min(prims[k, 3] - abs(l0), prims[k, 5] - abs(l2))
    else:
        cosi = abs(dz)
        e = min(prims[k, 3] - abs(l0), prims[k, 4] - abs(l1))
    return cosi, max(e, 0.0)


@njit(cache=True)
def _grid_counts(prims, gx0, gy0, cell, nx, ny):
    n = prims.shape[0]
    lo = np.empty((n, 2), np.int64)
    hi = np.empty((n, 2), np.int64)
    for k in range(n):
        c = abs(prims[k, 6])
        s = abs(prims[k, 7])
        ex = c * prims[k, 3] + s * prims[k, 4]
        ey = s * prims[k, 3] + c * prims[k, 4]
        lo[k, 0] = max(0, min(nx - 1, int(math.floor((prims[k, 0] - ex - gx0) / cell))))
        hi[k, 0] = max(0, min(nx - 1, int(math.floor((prims[k, 0] + ex - gx0) / cell))))
        lo[k, 1] = max(0, min(ny - 1, int(math.floor((prims[k, 1] - ey - gy0) / cell))))
        hi[k, 1] = max(0, min(ny - 1, int(math.floor((prims[k, 1] + ey - gy0) / cell))))
    start = np.zeros(nx * ny + 1, np.int64)
    for k in range(n):
        for iy in range(lo[k, 1], hi[k, 1] + 1):
            for ix in range(lo[k, 0], hi[k, 0] + 1):
                start[iy * nx + ix + 1] += 1
    for c in range(nx * ny):
        start[c + 1] += start[c]
    items = np.empty(start[nx * ny], np.int32)
    fill = start[:-1].copy()
    for k in range(n):
        for iy in range(lo[k, 1], hi[k, 1] + 1):
            for ix in range(lo[k, 0], hi[k, 0] + 1):
                items[fill[iy * nx + ix]] = k
                fill[iy * nx + ix] += 1
    return start, items


def build_grid(prims: np.ndarray, cell: float):
    """CSR grid of the boxes' 2D bounding rectangles: (meta [gx0, gy0, cell], nx, ny, start, items)."""
    prims = np.ascontiguousarray(prims, dtype=np.float64)
    if len(prims) == 0:
        return np.array([0.0, 0.0, cell]), 1, 1, np.zeros(2, np.int64), np.zeros(0, np.int32)
    c, s = np.abs(prims[:, 6]), np.abs(prims[:, 7])
    ex = c * prims[:, 3] + s * prims[:, 4]
    ey = s * prims[:, 3] + c * prims[:, 4]
    gx0 = float(np.min(prims[:, 0] - ex)) - 1.0
    gy0 = float(np.min(prims[:, 1] - ey)) - 1.0
    nx = int(math.ceil((float(np.max(prims[:, 0] + ex)) + 1.0 - gx0) / cell))
    ny = int(math.ceil((float(np.max(prims[:, 1] + ey)) + 1.0 - gy0) / cell))
    start, items = _grid_counts(prims, gx0, gy0, float(cell), nx, ny)
    return np.array([gx0, gy0, float(cell)]), nx, ny, start, items


@njit(cache=True)
def _trace_boxes(ox, oy, oz, dx, dy, dz, tmin, tlim, prims, meta, nx, ny, start, items):
    """Nearest box entry in (tmin, tlim]: (t, box, axis) or (inf, -1, -1)."""
    gx0 = meta[0]
    gy0 = meta[1]
    cell = meta[2]
    gx1 = gx0 + nx * cell
    gy1 = gy0 + ny * cell
    t0 = max(tmin, 0.0)
    t1 = tlim
    if abs(dx) < 1e-15:
        if ox < gx0 or ox >= gx1:
            return _INF, -1, -1
    else:
        ta = (gx0 - ox) / dx
        tb = (gx1 - ox) / dx
        if ta > tb:
            ta, tb = tb, ta
        t0 = max(t0, ta)
        t1 = min(t1, tb)
    if abs(dy) < 1e-15:
        if oy < gy0 or oy >= gy1:
            return _INF, -1, -1
    else:
        ta = (gy0 - oy) / dy
        tb = (gy1 - oy) / dy
        if ta > tb:
            ta, tb = tb, ta
        t0 = max(t0, ta)
        t1 = min(t1, tb)
    if t0 > t1:
        return _INF, -1, -1
    x = ox + dx * t0
    y = oy + dy * t0
    ix = min(nx - 1, max(0, int(math.floor((x - gx0) / cell))))
    iy = min(ny - 1, max(0, int(math.floor((y - gy0) / cell))))
    if dx > 1e-15:
        sx = 1
        tmx = (gx0 + (ix + 1) * cell - ox) / dx
        tdx = cell / dx
    elif dx < -1e-15:
        sx = -1
        tmx = (gx0 + ix * cell - ox) / dx
        tdx = -cell / dx
    else:
        sx = 0
        tmx = _INF
        tdx = _INF
    if dy > 1e-15:
        sy = 1
        tmy = (gy0 + (iy + 1) * cell - oy) / dy
        tdy = cell / dy
    elif dy < -1e-15:
        sy = -1
        tmy = (gy0 + iy * cell - oy) / dy
        tdy = -cell / dy
    else:
        sy = 0
        tmy = _INF
        tdy = _INF
    best = _INF
    bk = -1
    bax = -1
    while True:
        c = iy * nx + ix
        for q in range(start[c], start[c + 1]):
            k = items[q]
            t, ax = _ray_box(ox, oy, oz, dx, dy, dz, prims, k, tmin)
            if t < best and t <= tlim:
                best = t
                bk = k
                bax = ax
        t_exit = min(tmx, tmy)
        if best <= t_exit or t_exit >= t1:
            break
        if tmx < tmy:
            ix += sx
            tmx += tdx
            if ix < 0 or ix >= nx:
                break
        else:
            iy += sy
            tmy += tdy
            if iy < 0 or iy >= ny:
                break
    return best, bk, bax


# ---------------------------------------------------------------------------------------------
# Sensor model
@njit(cache=True)
def _surface(ox, oy, oz, dx, dy, dz, t, k, ax, prims, mats, gp, road):
    """(cos incidence, edge distance, reflectivity, dropout) of a hit (k = box or GROUND_HIT)."""
    if k == GROUND_HIT:
        x = ox + t * dx
        y = oy + t * dy
        nx_, ny_, nz_ = _ground_normal(x, y, gp)
        cosi = abs(nx_ * dx + ny_ * dy + nz_ * dz)
        refl, drop = _ground_material(x, y, road)
        return cosi, _INF, refl, drop
    cosi, e = _box_face_info(ox, oy, oz, dx, dy, dz, t, prims, k, ax)
    return cosi, e, mats[k, 0], mats[k, 1]


@njit(cache=True)
def _intensity(refl, cosi):
    if refl > 1.0:  # retro-reflector: sends light back almost regardless of incidence
        return refl * (0.6 + 0.4 * cosi)
    return refl * cosi


@njit(cache=True)
def _drop_probability(refl, drop, cosi, t, params):
    if params[5] < 0.5:
        return 0.0
    # Near-tangent incidence (the last few degrees) scatters almost nothing back.
    p = params[1] + drop + 0.3 * max(0.0, 1.0 - cosi / 0.04)
    # Weak echoes from dark, grazing, far surfaces fall under the detection threshold.
    signal = _intensity(refl, cosi) * (30.0 / max(t, 30.0)) ** 2
    if signal < 0.001:
        p += 0.6 * (1.0 - signal / 0.001)
    return min(p, 1.0)


@njit(cache=True)
def _cast_one(ox, oy, oz, dx, dy, dz, tmax, prims, mats, meta, nx, ny, start, items, gp, road):
    """Geometry of one ray: (t1, k1, ax1, t2, k2, ax2) before dropouts; k = box, GROUND_HIT, NO_HIT."""
    tg = _ground_hit(ox, oy, oz, dx, dy, dz, tmax, gp)
    tb, kb, axb = _trace_boxes(ox, oy, oz, dx, dy, dz, 0.0, min(tg, tmax), prims, meta, nx, ny,
                               start, items)
    if tb < tg and tb <= tmax:
        return tb, kb, axb, tg, GROUND_HIT, -1
    if tg <= tmax:
        return tg, GROUND_HIT, -1, _INF, NO_HIT, -1
    return _INF, NO_HIT, -1, _INF, NO_HIT, -1


@njit(cache=True)
def _mix64(z):
    """splitmix64 finaliser: a well-mixed 64-bit hash of a 64-bit counter."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _uniform(key, ray, stream):
    """Counter-based uniform in (0, 1): a pure function of (key, ray, stream), so the result
    does not depend on which thread casts which ray."""
    z = _mix64(key + np.uint64(ray) * np.uint64(0x9E3779B97F4A7C15)
               + np.uint64(stream) * np.uint64(0xD1B54A32D192ED03))
    return (float(z >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _normal_pair(key, ray, stream):
    u1 = _uniform(key, ray, stream)
    u2 = _uniform(key, ray, stream + 1)
    r = math.sqrt(-2.0 * math.log(u1))
    return r * math.cos(2.0 * math.pi * u2), r * math.sin(2.0 * math.pi * u2)


@njit(cache=True)
def _cast_full(ox, oy, oz, dx, dy, dz, tmax, key, ray, prims, mats, meta, nx, ny, start, items,
               gp, road, params, res):
    """Both returns of one ray into res (10,): r1, i1, e1, hit1, t1, r2, i2, e2, hit2, t2.
    A range of 0 means no return; t is the exact hit distance (inf if nothing was hit, kept
    even when the return is dropped)."""
    res[0] = 0.0
    res[1] = 0.0
    res[2] = 0.0
    res[3] = NO_HIT
    res[4] = _INF
    res[5] = 0.0
    res[6] = 0.0
    res[7] = 0.0
    res[8] = NO_HIT
    res[9] = _INF
    t1, k1, ax1, tg, _, _ = _cast_one(ox, oy, oz, dx, dy, dz, tmax, prims, mats, meta, nx, ny,
                                      start, items, gp, road)
    if k1 == NO_HIT:
        return
    res[4] = t1
    cos1, e1, refl1, drop1 = _surface(ox, oy, oz, dx, dy, dz, t1, k1, ax1, prims, mats, gp, road)
    if _uniform(key, ray, 0) < _drop_probability(refl1, drop1, cos1, t1, params):
        return
    footprint = params[2] * t1
    frac1 = 1.0
    t2 = _INF
    k2 = NO_HIT
    ax2 = -1
    if k1 >= 0 and e1 < footprint:
        # The beam straddles an edge: the part that misses gives a second echo behind it.
        frac1 = 0.5 + 0.5 * e1 / footprint
        tmin2 = t1 + params[3]
        tb, kb, axb = _trace_boxes(ox, oy, oz, dx, dy, dz, tmin2, min(tg, tmax), prims,
                                   meta, nx, ny, start, items)
        if tb < tg and tb <= tmax:
            t2, k2, ax2 = tb, kb, axb
        elif tg <= tmax and tg > tmin2:
            t2, k2, ax2 = tg, GROUND_HIT, -1
    nr1, nr2 = _normal_pair(key, ray, 2)
    ni1, ni2 = _normal_pair(key, ray, 4)
    g1 = 1.0 - cos1
    res[0] = max(t1 + params[0] * nr1, 0.05)
    res[1] = _intensity(refl1, cos1) * frac1 * math.exp(params[4] * ni1)
    res[2] = 0.05 + 0.6 * g1 * g1 + 0.8 * (1.0 - frac1) + 0.02 * abs(ni1)
    res[3] = k1
    if k2 == NO_HIT:
        return
    res[9] = t2
    cos2, e2, refl2, drop2 = _surface(ox, oy, oz, dx, dy, dz, t2, k2, ax2, prims, mats, gp, road)
    if _uniform(key, ray, 1) < _drop_probability(refl2, drop2, cos2, t2, params):
        return
    g2 = 1.0 - cos2
    res[5] = max(t2 + params[0] * nr2, 0.05)
    res[6] = _intensity(refl2, cos2) * (1.0 - frac1) * math.exp(params[4] * ni2)
    res[7] = 0.05 + 0.6 * g2 * g2 + 0.8 * frac1 + 0.02 * abs(ni2)
    res[8] = k2


@njit(parallel=True, cache=True)
def cast_rays(orig, dirs, tmax, key, prims, mats, meta, nx, ny, start, items, gp, road, params):
    """Cast N independent rays (orig, dirs (N, 3) float64, unit dirs); ray i draws its random
    numbers from (key, i). Returns (N, 10) float64 rows as in ``_cast_full``."""
    n = orig.shape[0]
    out = np.empty((n, 10))
    for i in prange(n):
        _cast_full(orig[i, 0], orig[i, 1], orig[i, 2], dirs[i, 0], dirs[i, 1], dirs[i, 2], tmax,
                   key, i, prims, mats, meta, nx, ny, start, items, gp, road, params, out[i])
    return out


@njit(parallel=True, cache=True)
def cast_image(vdirs, blocked, sensor_t, col_R, col_t, out_R, out_t, tmax, key, prims, mats,
               meta, nx, ny, start, items, gp, road, params, images, points, hits, exact_t):
    """Render one lidar's two range images.

    vdirs (H, W, 3): pixel directions in the vehicle frame (extrinsic applied); blocked (H, W):
    rays that hit the ego body; sensor_t (3,): lidar origin in the vehicle frame. Column j is
    cast with vehicle -> local world rotation col_R[j] (3, 3) and translation col_t[j]; out_R[j],
    out_t[j] map that column's vehicle frame to the frame's vehicle frame, in which ``points``
    (H, W, 2, 3) float32 are written. images (2, H, W, 4) float32 (range, intensity,
    elongation, nlz = -1), hits (H, W, 2) int32, exact_t (H, W, 2) float64.
    """
    H = vdirs.shape[0]
    W = vdirs.shape[1]
    for i in prange(H):  # a row per task: one scratch buffer per row, not per pixel
        res = np.empty(10)
        for j in range(W):
            _cast_pixel(i, j, W, vdirs, blocked, sensor_t, col_R, col_t, out_R, out_t, tmax,
                        key, prims, mats, meta, nx, ny, start, items, gp, road, params, images,
                        points, hits, exact_t, res)


@njit(cache=True)
def _cast_pixel(i, j, W, vdirs, blocked, sensor_t, col_R, col_t, out_R, out_t, tmax, key, prims,
                mats, meta, nx, ny, start, items, gp, road, params, images, points, hits, exact_t,
                res):
    for r in range(2):
        images[r, i, j, 0] = 0.0
        images[r, i, j, 1] = 0.0
        images[r, i, j, 2] = 0.0
        images[r, i, j, 3] = -1.0
        hits[i, j, r] = NO_HIT
        exact_t[i, j, r] = _INF
        points[i, j, r, 0] = 0.0
        points[i, j, r, 1] = 0.0
        points[i, j, r, 2] = 0.0
    if blocked[i, j]:
        return
    v0 = vdirs[i, j, 0]
    v1 = vdirs[i, j, 1]
    v2 = vdirs[i, j, 2]
    s0 = sensor_t[0]
    s1 = sensor_t[1]
    s2 = sensor_t[2]
    ox = col_R[j, 0, 0] * s0 + col_R[j, 0, 1] * s1 + col_R[j, 0, 2] * s2 + col_t[j, 0]
    oy = col_R[j, 1, 0] * s0 + col_R[j, 1, 1] * s1 + col_R[j, 1, 2] * s2 + col_t[j, 1]
    oz = col_R[j, 2, 0] * s0 + col_R[j, 2, 1] * s1 + col_R[j, 2, 2] * s2 + col_t[j, 2]
    dx = col_R[j, 0, 0] * v0 + col_R[j, 0, 1] * v1 + col_R[j, 0, 2] * v2
    dy = col_R[j, 1, 0] * v0 + col_R[j, 1, 1] * v1 + col_R[j, 1, 2] * v2
    dz = col_R[j, 2, 0] * v0 + col_R[j, 2, 1] * v1 + col_R[j, 2, 2] * v2
    _cast_full(ox, oy, oz, dx, dy, dz, tmax, key, i * W + j, prims, mats, meta, nx, ny, start,
               items, gp, road, params, res)
    for r in range(2):
        rr = np.float32(res[5 * r])
        images[r, i, j, 0] = rr
        images[r, i, j, 1] = res[5 * r + 1]
        images[r, i, j, 2] = res[5 * r + 2]
        hits[i, j, r] = int(res[5 * r + 3])
        exact_t[i, j, r] = res[5 * r + 4]
        if rr > 0:
            # What a float64 decoder computes from the stored float32 range.
            q0 = s0 + float(rr) * v0
            q1 = s1 + float(rr) * v1
            q2 = s2 + float(rr) * v2
            for a in range(3):
                points[i, j, r, a] = (out_R[j, a, 0] * q0 + out_R[j, a, 1] * q1
                                      + out_R[j, a, 2] * q2 + out_t[j, a])


# ---------------------------------------------------------------------------------------------
# Slow reference (tests only)
def _ref_ground(o, d, tmax, gp, step=0.005):
    """First sign change of z_ray - h along the whole ray, marched finely, then bisected."""
    def f(t):
        x, y, z = o + t * d
        return z - ground_height(x, y, gp)
    ts = np.arange(0.0, tmax + step, step)
    ts[-1] = min(ts[-1], tmax)
    pts = o[None, :] + ts[:, None] * d[None, :]
    h = gp[0] + gp[1] * pts[:, 0] + gp[2] * pts[:, 1]
    for k in range(3):
        h = h + gp[3 + 4 * k] * np.sin(gp[4 + 4 * k] * pts[:, 0] + gp[5 + 4 * k] * pts[:, 1]
                                       + gp[6 + 4 * k])
    fz = pts[:, 2] - h
    if fz[0] < 0:
        return np.inf
    idx = np.nonzero(fz <= 0)[0]
    if len(idx) == 0:
        return np.inf
    j = idx[0]
    if j == 0:
        return 0.0
    a, b = ts[j - 1], ts[j]
    for _ in range(80):
        m = 0.5 * (a + b)
        if f(m) > 0:
            a = m
        else:
            b = m
    return 0.5 * (a + b)


def _ref_boxes(o, d, prims, tmin):
    """Entry distance of the ray into every box (inf where it misses or enters before tmin)."""
    c, s = prims[:, 6], prims[:, 7]
    p = o[None, :] - prims[:, :3]
    lo = np.stack([c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1], p[:, 2]], 1)
    ld = np.stack([c * d[0] + s * d[1], -s * d[0] + c * d[1], np.full_like(c, d[2])], 1)
    h = prims[:, 3:6]
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-h - lo) / ld
        t2 = (h - lo) / ld
    par = np.abs(ld) < 1e-15
    t1 = np.where(par, np.where(np.abs(lo) > h, np.inf, -np.inf), t1)
    t2 = np.where(par, np.where(np.abs(lo) > h, -np.inf, np.inf), t2)
    tn = np.minimum(t1, t2).max(1)
    tf = np.maximum(t1, t2).min(1)
    ok = (tn <= tf) & (tn > tmin)
    return np.where(ok, tn, np.inf)


def cast_rays_reference(orig, dirs, tmax, prims, gp, beam_divergence, min_separation):
    """Geometry only (no noise, no dropouts): (N, 2) hit distances and (N, 2) hit ids, brute force."""
    n = len(orig)
    out_t = np.full((n, 2), np.inf)
    out_k = np.full((n, 2), NO_HIT, np.int64)
    for i in range(n):
        o, d = orig[i].astype(np.float64), dirs[i].astype(np.float64)
        tg = _ref_ground(o, d, tmax, gp)
        tb = _ref_boxes(o, d, prims, 0.0) if len(prims) else np.zeros(0)
        kb = int(np.argmin(tb)) if len(tb) else -1
        if kb >= 0 and tb[kb] < tg and tb[kb] <= tmax:
            t1, k1 = tb[kb], kb
        elif tg <= tmax:
            t1, k1 = tg, GROUND_HIT
        else:
            continue
        out_t[i, 0], out_k[i, 0] = t1, k1
        if k1 < 0:
            continue
        # Distance from the hit to the nearest edge of the face it entered.
        q = o + t1 * d - prims[k1, :3]
        c, s = prims[k1, 6], prims[k1, 7]
        loc = np.array([c * q[0] + s * q[1], -s * q[0] + c * q[1], q[2]])
        gaps = prims[k1, 3:6] - np.abs(loc)
        face = int(np.argmin(np.abs(gaps)))        # the entered face: |loc| == half extent
        edge = max(np.delete(gaps, face).min(), 0.0)
        if edge >= beam_divergence * t1:
            continue
        tmin2 = t1 + min_separation
        tb2 = _ref_boxes(o, d, prims, tmin2)
        k2 = int(np.argmin(tb2))
        if tb2[k2] < tg and tb2[k2] <= tmax:
            out_t[i, 1], out_k[i, 1] = tb2[k2], k2
        elif tmin2 < tg <= tmax:
            out_t[i, 1], out_k[i, 1] = tg, GROUND_HIT
    return out_t, out_k
