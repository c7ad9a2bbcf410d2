"""Numba CUDA kernels for hard and dynamic voxelization, same results as ``cpu.py``.

One thread per point throughout; the order-dependent parts (voxel numbering by first point,
each voxel keeping its first P points) are made deterministic with ``atomic.min`` on point
indices instead of relying on the order in which threads arrive:

1. ``_k_keys``: cell key per point (-1 outside, -2 non-finite), counted with atomics.
2. ``_k_insert``: open-addressing hash table (power of two >= 2N slots) keyed with
   ``atomic.cas``; per slot the smallest point index (``atomic.min``) and the point count.
3. ``_k_flag_first`` + a chunked exclusive scan: voxel id = number of voxel-first points before
   this voxel's first point, i.e. voxels numbered in order of their first point.
4. hard only: rank rounds r = 1 .. P-1 - every not yet ranked point proposes itself for its slot
   with ``atomic.min``; the winner (the earliest remaining point) gets rank r.
5. ``_k_scatter_hard`` / ``_k_scatter_dynamic``: write voxels, coords, counts or per-point ids.

Runs on a GPU or, with ``NUMBA_ENABLE_CUDASIM=1``, in Numba's CUDA simulator (tests).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

__all__ = ["voxelize_cuda"]

_THREADS = 128
_SCAN_CHUNK = 1024


@cuda.jit(device=True)
def _slot_hash(key, mask):
    # Mixed with a multiply that cannot overflow int64 (27-bit x 32-bit); the middle bits of
    # the product are well mixed. Quality only affects speed, never the result.
    h = ((key ^ (key >> 27)) & 0x7FFFFFF) * 0x9E3779B1
    return (h >> 20) & mask


@cuda.jit
def _k_keys(points, lo, size, shape, keys, counters):
    i = cuda.grid(1)
    if i >= points.shape[0]:
        return
    x = points[i, 0]
    y = points[i, 1]
    z = points[i, 2]
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
        keys[i] = -2
        cuda.atomic.add(counters, 0, 1)
        return
    qx = (x - lo[0]) / size[0]    # the point's precision, as spconv (grid.py)
    qy = (y - lo[1]) / size[1]
    qz = (z - lo[2]) / size[2]
    if qx >= 0 and qx < shape[0] and qy >= 0 and qy < shape[1] and qz >= 0 and qz < shape[2]:
        keys[i] = (np.int64(qz) * shape[1] + np.int64(qy)) * shape[0] + np.int64(qx)
    else:
        keys[i] = -1
        cuda.atomic.add(counters, 1, 1)


@cuda.jit
def _k_fill(arr, value):
    i = cuda.grid(1)
    if i < arr.shape[0]:
        arr[i] = value


@cuda.jit
def _k_insert(keys, tkeys, tfirst, tcount, slot, mask):
    i = cuda.grid(1)
    if i >= keys.shape[0]:
        return
    key = keys[i]
    if key < 0:
        slot[i] = -1
        return
    s = _slot_hash(key, mask)
    while True:
        prev = cuda.atomic.cas(tkeys, s, -1, key)
        if prev == -1 or prev == key:
            break
        s = (s + 1) & mask
    slot[i] = s
    cuda.atomic.min(tfirst, s, i)
    cuda.atomic.add(tcount, s, 1)


@cuda.jit
def _k_flag_first(slot, tfirst, flag):
    i = cuda.grid(1)
    if i < slot.shape[0]:
        s = slot[i]
        flag[i] = 1 if (s >= 0 and tfirst[s] == i) else 0


@cuda.jit
def _k_chunk_sums(flag, chunk, sums):
    c = cuda.grid(1)
    if c < sums.shape[0]:
        acc = 0
        for i in range(c * chunk, min(flag.shape[0], (c + 1) * chunk)):
            acc += flag[i]
        sums[c] = acc


@cuda.jit
def _k_scan_sums(sums, total):
    # one thread: the number of chunks is small (N / 1024)
    if cuda.grid(1) == 0:
        acc = 0
        for c in range(sums.shape[0]):
            v = sums[c]
            sums[c] = acc
            acc += v
        total[0] = acc


@cuda.jit
def _k_chunk_scan(flag, chunk, sums, excl):
    c = cuda.grid(1)
    if c < sums.shape[0]:
        acc = sums[c]
        for i in range(c * chunk, min(flag.shape[0], (c + 1) * chunk)):
            excl[i] = acc
            acc += flag[i]


@cuda.jit
def _k_rank_first(slot, tfirst, rank):
    i = cuda.grid(1)
    if i < slot.shape[0]:
        s = slot[i]
        rank[i] = 0 if (s >= 0 and tfirst[s] == i) else -1


@cuda.jit
def _k_rank_reset(slot, rank, cand, sentinel):
    i = cuda.grid(1)
    if i < slot.shape[0] and slot[i] >= 0 and rank[i] < 0:
        cand[slot[i]] = sentinel


@cuda.jit
def _k_rank_propose(slot, rank, cand):
    i = cuda.grid(1)
    if i < slot.shape[0] and slot[i] >= 0 and rank[i] < 0:
        cuda.atomic.min(cand, slot[i], i)


@cuda.jit
def _k_rank_accept(slot, rank, cand, r):
    i = cuda.grid(1)
    if i < slot.shape[0] and slot[i] >= 0 and rank[i] < 0 and cand[slot[i]] == i:
        rank[i] = r


@cuda.jit
def _k_zero3(voxels):
    v = cuda.grid(1)
    if v < voxels.shape[0]:
        for a in range(voxels.shape[1]):
            for b in range(voxels.shape[2]):
                voxels[v, a, b] = 0


@cuda.jit
def _k_scatter_hard(points, keys, slot, tfirst, tcount, excl, rank, shape, max_points, nkeep,
                    voxels, coords, num_points, counters):
    i = cuda.grid(1)
    if i >= points.shape[0]:
        return
    s = slot[i]
    if s < 0:
        return
    v = excl[tfirst[s]]
    if v >= nkeep:
        cuda.atomic.add(counters, 2, 1)
        return
    r = rank[i]
    if r < 0:
        cuda.atomic.add(counters, 3, 1)
        return
    for c in range(points.shape[1]):
        voxels[v, r, c] = points[i, c]
    if r == 0:
        key = keys[i]
        num_points[v] = min(tcount[s], max_points)
        coords[v, 0] = key // (shape[0] * shape[1])
        coords[v, 1] = (key // shape[0]) % shape[1]
        coords[v, 2] = key % shape[0]


@cuda.jit
def _k_scatter_dynamic(keys, slot, tfirst, excl, shape, ids, coords):
    i = cuda.grid(1)
    if i >= keys.shape[0]:
        return
    s = slot[i]
    if s < 0:
        ids[i] = -1
        return
    f = tfirst[s]
    v = excl[f]
    ids[i] = v
    if f == i:
        key = keys[i]
        coords[v, 0] = key // (shape[0] * shape[1])
        coords[v, 1] = (key // shape[0]) % shape[1]
        coords[v, 2] = key % shape[0]


def _to_host(arr, stream):
    out = arr.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()
    return out


def _blocks(n: int) -> int:
    return max(1, (n + _THREADS - 1) // _THREADS)


def voxelize_cuda(points, lo: np.ndarray, size: np.ndarray, shape_xyz, max_points: int,
                  max_voxels: int, hard: bool, stream=0):
    """Voxelize an (N, C) float32/float64 CUDA device array (anything with
    ``__cuda_array_interface__``). Returns device arrays, like ``cpu.voxelize_cpu``.
    Everything is queued on ``stream`` (0: Numba's default stream; the torch entry point passes
    torch's current stream so that the kernels are ordered with the caller's work)."""
    if not hasattr(points, "copy_to_host"):   # e.g. a torch CUDA tensor: wrap, don't copy
        points = cuda.as_cuda_array(points)
    n, nc = points.shape
    dtype = np.dtype(points.dtype)
    info = dict(num_points=n, num_nonfinite=0, num_out_of_range=0, num_voxels=0,
                num_dropped_voxels=0, num_points_in_dropped_voxels=0,
                num_points_over_max_points=0)
    if n == 0:
        coords = cuda.device_array((0, 3), np.int32)
        if hard:
            return (cuda.device_array((0, max_points, nc), dtype), coords,
                    cuda.device_array(0, np.int32)), info
        return (cuda.device_array(0, np.int64), coords), info
    lo_d = cuda.to_device(lo, stream=stream)
    size_d = cuda.to_device(size, stream=stream)
    shape = cuda.to_device(np.asarray(shape_xyz, np.int64), stream=stream)
    counters = cuda.to_device(np.zeros(4, np.int64), stream=stream)
    keys = cuda.device_array(n, np.int64)
    nb = _blocks(n)
    _k_keys[nb, _THREADS, stream](points, lo_d, size_d, shape, keys, counters)

    tsize = 1 << max(6, int(math.ceil(math.log2(2 * n))))
    tkeys = cuda.device_array(tsize, np.int64)
    tfirst = cuda.device_array(tsize, np.int64)
    tcount = cuda.device_array(tsize, np.int64)
    _k_fill[_blocks(tsize), _THREADS, stream](tkeys, -1)
    _k_fill[_blocks(tsize), _THREADS, stream](tfirst, n)
    _k_fill[_blocks(tsize), _THREADS, stream](tcount, 0)
    slot = cuda.device_array(n, np.int64)
    _k_insert[nb, _THREADS, stream](keys, tkeys, tfirst, tcount, slot, tsize - 1)

    flag = cuda.device_array(n, np.int64)
    _k_flag_first[nb, _THREADS, stream](slot, tfirst, flag)
    nchunks = (n + _SCAN_CHUNK - 1) // _SCAN_CHUNK
    sums = cuda.device_array(nchunks, np.int64)
    total_d = cuda.device_array(1, np.int64)
    excl = cuda.device_array(n, np.int64)
    _k_chunk_sums[_blocks(nchunks), _THREADS, stream](flag, _SCAN_CHUNK, sums)
    _k_scan_sums[1, 1, stream](sums, total_d)
    _k_chunk_scan[_blocks(nchunks), _THREADS, stream](flag, _SCAN_CHUNK, sums, excl)
    total = int(_to_host(total_d, stream)[0])

    if hard:
        nkeep = min(total, max_voxels)
        rank = cuda.device_array(n, np.int64)
        _k_rank_first[nb, _THREADS, stream](slot, tfirst, rank)
        cand = cuda.device_array(tsize, np.int64)
        for r in range(1, max_points):
            _k_rank_reset[nb, _THREADS, stream](slot, rank, cand, n)
            _k_rank_propose[nb, _THREADS, stream](slot, rank, cand)
            _k_rank_accept[nb, _THREADS, stream](slot, rank, cand, r)
        voxels = cuda.device_array((nkeep, max_points, nc), dtype)
        coords = cuda.device_array((nkeep, 3), np.int32)
        num_points = cuda.device_array(nkeep, np.int32)
        if nkeep:
            _k_zero3[_blocks(nkeep), _THREADS, stream](voxels)
        _k_scatter_hard[nb, _THREADS, stream](points, keys, slot, tfirst, tcount, excl, rank, shape,
                                      max_points, nkeep, voxels, coords, num_points, counters)
        outs = (voxels, coords, num_points)
    else:
        nkeep = total
        ids = cuda.device_array(n, np.int64)
        coords = cuda.device_array((nkeep, 3), np.int32)
        _k_scatter_dynamic[nb, _THREADS, stream](keys, slot, tfirst, excl, shape, ids, coords)
        outs = (ids, coords)
    c = _to_host(counters, stream)
    info.update(num_nonfinite=int(c[0]), num_out_of_range=int(c[1]), num_voxels=nkeep,
                num_dropped_voxels=total - nkeep, num_points_in_dropped_voxels=int(c[2]),
                num_points_over_max_points=int(c[3]))
    return outs, info
