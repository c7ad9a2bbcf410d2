"""Numba CPU kernels for hard and dynamic voxelization (semantics: ``grid.py``).

Why this layout: spconv's CPU ``PointToVoxel`` walks the points once and looks every point up
in a dense int32 table the size of the whole grid (90 M cells, 360 MB for Waymo's grid), whose
entries for one frame are spread over far more memory than the caches hold. Here the lookups
go to a small open-addressing
hash table (a few MB, sized so that it can never fill; the cells of a 4 x 4 tile share a
bucket so that consecutive points touch the same cache lines), split between the threads by
the top bits of the hash, and everything else is a streaming pass:

1. ``_assign`` (parallel over hash partitions): each thread scans all points in input order,
   computes their cell key ``z << (bx + by) | y << bx | x`` (bx, by: bits of nx, ny, so coords
   decode with shifts instead of int64 divisions) and handles the keys hashing into its
   partition, so within a partition voxels are created in order of their first point and a
   voxel's points arrive in input order (hard mode records the first P point indices of each
   voxel). A one-entry cache skips the table for consecutive points in the same cell (LiDAR
   scans are ordered, so this is common). Dynamic mode first stores the keys and counts per
   (block, partition) in ``_cell_keys`` (parallel over point blocks), which its last step needs.
2. ``_number_voxels`` (serial, a linear merge): global voxel id = order of the first point,
   obtained by merging the partitions' (already sorted) first-point lists.
3. ``_gather_hard`` (parallel over voxel blocks): outputs written voxel by voxel, sequentially,
   gathering the recorded point rows; ``_scatter_dynamic`` (parallel over point blocks): each
   point's voxel id through its partition's list, then the coords.

Scratch arrays are reused between calls (``_Workspace``); only the outputs are allocated.
The result does not depend on the number of threads. All functions are compiled once and
cached on disk (``cache=True``).
"""
from __future__ import annotations

import os
import threading

import numba
import numpy as np
from numba import njit, prange

__all__ = ["voxelize_cpu"]

_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)   # 2^64 / golden ratio (Fibonacci hashing)
_MIN_BLOCK = 8192                            # points per block below which threads don't pay


@njit(cache=True, inline="always")
def _hash(key, bx):
    """Hash of the 4 x 4 tile of cells (in x, y) holding ``key``: the cells of one tile share a
    16-slot bucket (see ``_fine``), so consecutive LiDAR points, which sweep through adjacent
    cells, insert into the same cache lines instead of a random line each."""
    tile = key & ~(np.int64(3) | (np.int64(3) << bx))
    return np.uint64(tile) * _HASH_MUL


@njit(cache=True, inline="always")
def _fine(key, bx):
    return (key & 3) | (((key >> bx) & 3) << 2)


@njit(cache=True, inline="always")
def _partition(key, bx, pbits):
    if pbits == 0:
        return 0
    return np.int64(_hash(key, bx) >> np.uint64(64 - pbits))


@njit(cache=True, inline="always")
def _cell_key(points, i, lo, size, shape, shift):
    """Cell key of point i, -1 outside the grid, -2 non-finite xyz."""
    x = points[i, 0]
    y = points[i, 1]
    z = points[i, 2]
    if not (np.isfinite(x) and np.isfinite(y) and np.isfinite(z)):
        return np.int64(-2)
    # Same expression and precision as spconv: (p - min) / size in the point's dtype.
    qx = (x - lo[0]) / size[0]
    qy = (y - lo[1]) / size[1]
    qz = (z - lo[2]) / size[2]
    # floor(q) in [0, n)  <=>  0 <= q < n; truncation then equals floor.
    if qx >= 0 and qx < shape[0] and qy >= 0 and qy < shape[1] and qz >= 0 and qz < shape[2]:
        return (np.int64(qz) << shift[1]) | (np.int64(qy) << shift[0]) | np.int64(qx)
    return np.int64(-1)


@njit(cache=True, parallel=True)
def _cell_keys(points, lo, size, shape, shift, pbits, nblocks, keys, counts):
    """keys[i] = cell key, -1 outside the grid, -2 non-finite xyz.
    counts[b, p] = valid points of block b in partition p; counts[b, nparts] non-finite,
    counts[b, nparts + 1] outside."""
    n = points.shape[0]
    nparts = 1 << pbits
    step = (n + nblocks - 1) // nblocks
    for b in prange(nblocks):
        for i in range(b * step, min(n, (b + 1) * step)):
            key = _cell_key(points, i, lo, size, shape, shift)
            keys[i] = key
            if key >= 0:
                counts[b, _partition(key, shift[0], pbits)] += 1
            else:
                counts[b, nparts + (1 if key == -1 else 0)] += 1


@njit(cache=True, parallel=True)
def _assign(keys, points, lo, size, shape, shift, pbits, pbase, tab, packed, toff, tbits, hard,
            max_points, plocal, lidx, lfirst, lcount, nvox, invalid):
    """Per partition p, voxels get local numbers j in order of their first point.
    lfirst/lcount[pbase[p] + j] = first point and point count of its j-th voxel;
    hard: lidx[pbase[p] + j, r] = index of the voxel's r-th point (r < max_points);
    dynamic: plocal[pbase[p] + k] = local voxel of the partition's k-th point.

    Hard mode computes the keys from ``points`` on the fly (no key array, no counting pass;
    partition 0 counts invalid points into ``invalid``); dynamic mode reads ``keys``.
    Table entries are ``key << 32 | j`` in one int64 when ``packed`` (keys < 2^31: one load per
    probe, half the memory), else ``(key, j)`` pairs."""
    n = points.shape[0]
    nparts = 1 << pbits
    bx = shift[0]
    for p in prange(nparts):
        base = pbase[p]
        t0 = toff[p]
        tb = tbits[p]
        mask = (1 << tb) - 1
        nv = 0
        k = 0
        last_key = -1
        last_j = -1
        for i in range(n):
            if hard:
                key = _cell_key(points, i, lo, size, shape, shift)
                if key < 0:
                    if p == 0:
                        invalid[0 if key == -2 else 1] += 1
                    continue
            else:
                key = keys[i]
                if key < 0:
                    continue
            h = _hash(key, bx)
            if pbits > 0 and np.int64(h >> np.uint64(64 - pbits)) != p:
                continue
            if key == last_key:
                j = last_j
            else:
                # tile bucket from the hash bits below the partition bits, cell within it
                s = (np.int64((h << np.uint64(pbits)) >> np.uint64(64 - tb)) & ~np.int64(15)) \
                    | _fine(key, bx)
                while True:
                    e = t0 + s
                    if packed:
                        ent = tab[e]
                        tk = ent >> 32 if ent >= 0 else -1
                    else:
                        tk = tab[2 * e]
                    if tk == key:
                        j = (tab[e] & 0xFFFFFFFF) if packed else tab[2 * e + 1]
                        break
                    if tk == -1:
                        if packed:
                            tab[e] = (key << 32) | nv
                        else:
                            tab[2 * e] = key
                            tab[2 * e + 1] = nv
                        j = nv
                        lfirst[base + nv] = i
                        lcount[base + nv] = 0
                        nv += 1
                        break
                    s = (s + 1) & mask
                last_key = key
                last_j = j
            r = lcount[base + j]
            lcount[base + j] = r + 1
            if hard:
                if r < max_points:
                    lidx[base + j, r] = i
            else:
                plocal[base + k] = j
                k += 1
        nvox[p] = nv


@njit(cache=True)
def _number_voxels(pbase, nvox, lfirst, lcount, lvid, order, max_voxels, max_points, dropped):
    """Global voxel id = rank of its first point among all first points, by merging the
    partitions' (sorted) first-point lists: lvid[pbase[p] + j] = id, order[id] = pbase[p] + j.
    dropped = (points in voxels beyond max_voxels, points beyond max_points in kept voxels)."""
    nparts = nvox.shape[0]
    for p in range(nparts):   # serial: a linear merge, ~0.1 ms; not worth a thread barrier
        ptr = np.zeros(nparts, np.int64)
        for j in range(nvox[p]):
            f = lfirst[pbase[p] + j]
            before = j
            for q in range(nparts):
                if q != p:
                    while ptr[q] < nvox[q] and lfirst[pbase[q] + ptr[q]] < f:
                        ptr[q] += 1
                    before += ptr[q]
            lvid[pbase[p] + j] = before
            order[before] = pbase[p] + j
            c = lcount[pbase[p] + j]
            if before >= max_voxels:
                dropped[0] += c
            elif c > max_points:
                dropped[1] += c - max_points


@njit(cache=True, parallel=True)
def _gather_hard(points, lo, size, shape, shift, order, lidx, lcount, lfirst, max_points, nblocks,
                 voxels, coords, num_points):
    """Fill the outputs voxel by voxel, so they are written sequentially (the point rows are
    read in nearly increasing order, as voxels are numbered by first point)."""
    nkeep = voxels.shape[0]
    nc = points.shape[1]
    mx = (np.int64(1) << shift[0]) - 1
    my = (np.int64(1) << (shift[1] - shift[0])) - 1
    step = (nkeep + nblocks - 1) // nblocks
    for b in prange(nblocks):
        for v in range(b * step, min(nkeep, (b + 1) * step)):
            lj = order[v]
            cnt = min(lcount[lj], max_points)
            num_points[v] = cnt
            for r in range(cnt):
                i = lidx[lj, r]
                for c in range(nc):
                    voxels[v, r, c] = points[i, c]
            for r in range(cnt, max_points):
                for c in range(nc):
                    voxels[v, r, c] = 0
            key = _cell_key(points, lfirst[lj], lo, size, shape, shift)
            coords[v, 0] = key >> shift[1]
            coords[v, 1] = (key >> shift[0]) & my
            coords[v, 2] = key & mx


@njit(cache=True, parallel=True)
def _scatter_dynamic(keys, pbits, nblocks, cursor0, pbase, plocal, lvid, order, lfirst, shift,
                     ids, coords):
    n = keys.shape[0]
    step = (n + nblocks - 1) // nblocks
    for b in prange(nblocks):
        cur = cursor0[b].copy()
        for i in range(b * step, min(n, (b + 1) * step)):
            key = keys[i]
            if key < 0:
                ids[i] = -1
                continue
            p = _partition(key, shift[0], pbits)
            k = cur[p]
            cur[p] = k + 1
            ids[i] = lvid[pbase[p] + plocal[k]]
    nv = coords.shape[0]
    mx = (np.int64(1) << shift[0]) - 1
    my = (np.int64(1) << (shift[1] - shift[0])) - 1
    vstep = (nv + nblocks - 1) // nblocks
    for b in prange(nblocks):
        for v in range(b * vstep, min(nv, (b + 1) * vstep)):
            key = keys[lfirst[order[v]]]
            coords[v, 0] = key >> shift[1]
            coords[v, 1] = (key >> shift[0]) & my
            coords[v, 2] = key & mx


def _threads_for(n: int) -> int:
    """Threads worth using for n points. Every parallel step ends in a barrier, so when the
    machine is already saturated (1-minute load average >= number of CPUs) a descheduled worker
    stalls the whole call, and a measured 2-thread run was then slower than 1 thread: stay on
    the calling thread. Below 2 blocks of points threads never pay."""
    threads = numba.get_num_threads()
    if threads == 1 or n < 2 * _MIN_BLOCK:
        return 1
    try:
        if os.getloadavg()[0] >= (os.cpu_count() or 1):
            return 1
    except OSError:  # pragma: no cover - no load average on this platform
        pass
    return threads


def _plan(n: int, threads: int) -> tuple[int, int]:
    """(partition bits, number of blocks) for n points on ``threads`` threads."""
    if threads == 1:
        return 0, 1
    pbits = min(6, int(np.ceil(np.log2(threads))))
    nblocks = int(max(1, min(4 * threads, n // _MIN_BLOCK)))
    return pbits, nblocks


class _Workspace(threading.local):
    """Scratch arrays reused across calls (per Python thread): fresh multi-MB allocations cost
    page faults on every call, which on a VM is a large part of the whole voxelization."""

    def __init__(self):
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, size: int, dtype) -> np.ndarray:
        buf = self.buffers.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = np.empty(max(size, 1024) + size // 2, dtype)
            self.buffers[name] = buf
        return buf[:size]


_WS = _Workspace()


def voxelize_cpu(points: np.ndarray, lo: np.ndarray, size: np.ndarray, shape_xyz, max_points: int,
                 max_voxels: int, hard: bool, threads: int | None = None):
    """Voxelize a C-contiguous (N, C) float32/float64 array.

    Returns ``(outputs, counts)``: outputs are ``(voxels, coords, num_points)`` when ``hard`` else
    ``(point_voxel_ids, coords)``; counts is a dict of the dropped/invalid numbers. ``threads``
    defaults to ``_threads_for(n)``; the result never depends on it.
    """
    n = points.shape[0]
    if n >= 2 ** 31 - 1:
        raise ValueError(f"points has {n} rows; at most 2^31 - 2 are supported")
    threads = _threads_for(n) if threads is None else max(1, min(int(threads),
                                                                   numba.get_num_threads()))
    before = numba.get_num_threads()
    numba.set_num_threads(threads)      # per calling thread in Numba; restored below
    try:
        return _voxelize(points, lo, size, shape_xyz, max_points, max_voxels, hard, threads)
    finally:
        numba.set_num_threads(before)


def _voxelize(points, lo, size, shape_xyz, max_points, max_voxels, hard, threads):
    n, nc = points.shape
    pbits, nblocks = _plan(n, threads)
    nparts = 1 << pbits
    shape = np.asarray(shape_xyz, np.int64)
    bits = [int(v - 1).bit_length() for v in shape_xyz]          # bits for 0 .. n-1
    shift = np.array([bits[0], bits[0] + bits[1]], np.int64)
    if sum(bits) > 62:
        raise ValueError(f"voxel grid {list(shape_xyz)} needs {sum(bits)} bits per cell key; "
                         f"at most 62 are supported")
    packed = sum(bits) <= 31
    if hard:
        # no counting pass: every partition gets room for all n points; a table of >= n slots
        # per partition (>= 2n with one partition) can never fill up
        keys = _WS.get("keys", 0, np.int64)
        counts = np.zeros((1, nparts + 2), np.int64)
        per_part = np.full(nparts, n, np.int64)
        tbits = np.full(nparts, max(4, int(np.ceil(np.log2(max(n * (2 if nparts == 1 else 1),
                                                                 1))))), np.int64)
    else:
        keys = _WS.get("keys", n, np.int64)
        counts = np.zeros((nblocks, nparts + 2), np.int64)
        _cell_keys(points, lo, size, shape, shift, pbits, nblocks, keys, counts)
        per_part = counts[:, :nparts].sum(axis=0)
        # table of each partition: power of two >= 2 x its points (load factor <= 0.5)
        tbits = np.maximum(4, np.ceil(np.log2(np.maximum(2 * per_part, 1)))).astype(np.int64)
    pbase = np.zeros(nparts, np.int64)
    pbase[1:] = np.cumsum(per_part)[:-1]
    cap_all = int(per_part.sum())
    tsize = np.left_shift(np.int64(1), tbits)
    toff = np.zeros(nparts, np.int64)
    toff[1:] = np.cumsum(tsize)[:-1]
    tab = _WS.get("table", int(tsize.sum()) * (1 if packed else 2), np.int64)
    tab.fill(-1)
    plocal = _WS.get("plocal", 0 if hard else cap_all, np.int32)
    lidx = _WS.get("lidx", cap_all * max_points if hard else 0, np.int32).reshape(-1, max_points)
    lfirst = _WS.get("lfirst", cap_all, np.int32)
    lcount = _WS.get("lcount", cap_all, np.int32)
    nvox = np.zeros(nparts, np.int64)
    invalid = np.zeros(2, np.int64)
    _assign(keys, points, lo, size, shape, shift, pbits, pbase, tab, packed, toff, tbits, hard,
            max_points, plocal, lidx, lfirst, lcount, nvox, invalid)
    if hard:
        counts[0, nparts:] = invalid

    total = int(nvox.sum())
    cap = max_voxels if hard else total
    lvid = _WS.get("lvid", cap_all, np.int32)
    order = _WS.get("order", cap_all, np.int32)
    dropped = np.zeros(2, np.int64)
    _number_voxels(pbase, nvox, lfirst, lcount, lvid, order, cap,
                   max_points if hard else n + 1, dropped)

    nkeep = min(total, cap)
    info = dict(num_points=n, num_nonfinite=int(counts[:, nparts].sum()),
                num_out_of_range=int(counts[:, nparts + 1].sum()), num_voxels=nkeep,
                num_dropped_voxels=total - nkeep, num_points_in_dropped_voxels=int(dropped[0]),
                num_points_over_max_points=int(dropped[1]) if hard else 0)
    coords = np.empty((nkeep, 3), np.int32)
    if hard:
        voxels = np.empty((nkeep, max_points, nc), points.dtype)
        num_points = np.empty(nkeep, np.int32)
        _gather_hard(points, lo, size, shape, shift, order, lidx, lcount, lfirst, max_points,
                     nblocks, voxels, coords, num_points)
        return (voxels, coords, num_points), info
    # where each block's points start in every partition's list
    cursor0 = np.zeros((nblocks, nparts), np.int64)
    cursor0[1:] = np.cumsum(counts[:-1, :nparts], axis=0)
    cursor0 += pbase
    ids = np.empty(n, np.int64)
    _scatter_dynamic(keys, pbits, nblocks, cursor0, pbase, plocal, lvid, order, lfirst, shift,
                     ids, coords)
    return (ids, coords), info
