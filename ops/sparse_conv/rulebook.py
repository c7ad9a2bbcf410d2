"""Rulebooks of 3D sparse convolutions, built with Numba from integer keys of the active sites:
through a dense grid of cells when the grid is small (``_use_grid``; no sort: the grid also
finds repeated sites), else by forward-only cursors over the sorted keys (and a hash collecting a
regular conv's outputs).

A rulebook here is a dense neighbour table ``nbr`` of shape ``(N_out, K)``, ``K`` the number of
kernel offsets (``kz * ky * kx``, flattened in that order, as spconv's KRSC weight is):
``nbr[o, k]`` is the row of the input voxel that kernel offset ``k`` of output ``o`` reads, or
``N_in`` (one past the last row: the gather reads a zero row there) when that site is empty. Its
transpose ``inv`` ``(N_in, K)`` gives, for each input row and offset, the output that reads it
(``N_out`` when none), which the backward pass uses the same way, so both directions are a
gather followed by a GEMM and no output is ever accumulated by more than one thread.

Geometry (per spatial axis, the usual convolution arithmetic, the same as spconv 2.x):

* regular conv: output ``o`` reads input ``o * stride - padding + k * dilation``; the output
  extent is ``(n + 2 * padding - dilation * (ksize - 1) - 1) // stride + 1``, and the active
  outputs are all sites that read at least one active input;
* submanifold conv: outputs are the input sites (same rows, same order); output ``o`` reads
  ``o + (k - ksize // 2) * dilation`` (padding is ignored, as in spconv).

Output order of a regular conv: sorted by (batch, z, y, x). Every step is deterministic and
independent of the number of threads: parallel loops only write rows they own, and the only
order-dependent step (collecting unique outputs) runs serially and is followed by a sort
(searches), or numbers the marked cells of a dense grid in key order over fixed spans
(grid: per-span counts in parallel, a serial prefix sum, then each span numbers its own cells).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from numba import njit, prange

__all__ = ["Rulebook", "PairBlocks", "build_rulebook", "conv_output_shape", "pair_blocks"]

_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)   # 2^64 / golden ratio (Fibonacci hashing)
_GRID_SPANS = 64       # the output grid's cells are numbered in this many spans (parallel)


def conv_output_shape(shape: Sequence[int], ksize: Sequence[int], stride: Sequence[int],
                      padding: Sequence[int], dilation: Sequence[int]) -> list[int]:
    return [(n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, k, s, p, d in zip(shape, ksize, stride, padding, dilation)]


@njit(cache=True, inline="always")
def _slot(key, bits):
    # Runs of 4 cells along x share a hashed tile and take consecutive slots: the 3 x-neighbours
    # of a lookup are then mostly in the same cache line.
    tile = np.int64((np.uint64(key >> 2) * _HASH_MUL) >> np.uint64(64 - bits))
    return (tile & ~np.int64(3)) | (key & 3)


@njit(cache=True)
def _table_bits(n):
    bits = 4
    while (1 << bits) < 2 * n:   # load factor <= 1/2: short probe sequences, never full
        bits += 1
    return bits


@njit(cache=True, parallel=True)
def _encode(indices, shape, bad):
    """(b, z, y, x) rows -> int64 keys ((b * D + z) * H + y) * W + x; bad[0] = first row out of
    the grid (or -1)."""
    n = indices.shape[0]
    keys = np.empty(n, np.int64)
    for i in prange(n):
        b = np.int64(indices[i, 0])
        z = np.int64(indices[i, 1])
        y = np.int64(indices[i, 2])
        x = np.int64(indices[i, 3])
        if b < 0 or z < 0 or y < 0 or x < 0 or z >= shape[0] or y >= shape[1] or x >= shape[2]:
            keys[i] = -1
        else:
            keys[i] = ((b * shape[0] + z) * shape[1] + y) * shape[2] + x
    for i in range(n):
        if keys[i] < 0:
            bad[0] = i
            break
    return keys


@njit(cache=True, inline="always")
def _unkey(key, shape):
    """The inverse of ``_encode``'s key: (b, z, y, x) of ``key`` in a grid of ``shape``."""
    x = key % shape[2]
    r = key // shape[2]
    y = r % shape[1]
    r = r // shape[1]
    return r // shape[0], r % shape[0], y, x


@njit(cache=True, inline="always")
def _advance(skeys, p, t):
    """First position >= p of the sorted ``skeys`` whose key is >= t (galloping search)."""
    n = skeys.shape[0]
    if p >= n or skeys[p] >= t:
        return p
    step = 1
    while p + step < n and skeys[p + step] < t:
        step *= 2
    lo = p + step // 2
    hi = min(p + step, n)
    while lo < hi:      # skeys[lo] < t <= skeys[hi] (or hi == n)
        mid = (lo + hi) // 2
        if skeys[mid] < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, parallel=True)
def _neighbour_table(okeys, orows, oshape, skeys, srows, shape, ksize, stride, offset, dilation,
                     nseg):
    """nbr[orows[j], k] = input row read by offset k of the j-th output (outputs in key order).

    Output (b, z, y, x) reads input (z * stride + offset + a * dilation, ...) per axis. For a
    fixed k that input's key grows with the output's key, so one cursor per k walks the
    sorted input keys ``skeys`` forward (no hashing, sequential reads). The sorted outputs are
    cut into ``nseg`` contiguous segments, one per parallel task, each writing its own rows."""
    m = okeys.shape[0]
    n = skeys.shape[0]
    kz, ky, kx = ksize[0], ksize[1], ksize[2]
    nk = kz * ky * kx
    nbr = np.empty((m, nk), np.int32)
    step = (m + nseg - 1) // nseg
    for seg in prange(nseg):
        cur = np.zeros(nk, np.int64)
        for j in range(seg * step, min(m, (seg + 1) * step)):
            b, z, y, x = _unkey(okeys[j], oshape)
            row = orows[j]
            k = 0
            for a in range(kz):
                zi = z * stride[0] + offset[0] + a * dilation[0]
                for c in range(ky):
                    yi = y * stride[1] + offset[1] + c * dilation[1]
                    for e in range(kx):
                        xi = x * stride[2] + offset[2] + e * dilation[2]
                        hit = n
                        if zi >= 0 and yi >= 0 and xi >= 0 and zi < shape[0] and yi < shape[1] \
                                and xi < shape[2]:
                            t = ((b * shape[0] + zi) * shape[1] + yi) * shape[2] + xi
                            p = _advance(skeys, cur[k], t)
                            cur[k] = p
                            if p < n and skeys[p] == t:
                                hit = srows[p]
                        nbr[row, k] = hit
                        k += 1
    return nbr


@njit(cache=True, parallel=True)
def _grid_repeats(keys, grid):
    """Whether two of ``keys`` are equal, through a dense grid (``grid[key]`` = the row that
    stored last; all -1 on entry and again on return): a key with more than one row leaves some
    row that does not find itself in its cell. No sort (the sorted keys' repeat check names the
    row; the caller runs it when this says there is one)."""
    n = keys.shape[0]
    for i in prange(n):
        grid[keys[i]] = i
    lost = np.zeros(n, np.uint8)
    for i in prange(n):
        if grid[keys[i]] != i:
            lost[i] = 1
    for i in prange(n):
        grid[keys[i]] = -1
    return lost.any()


@njit(cache=True, parallel=True)
def _grid_subm_table(keys, idx, shape, ksize, offset, dilation, grid):
    """(submanifold ``nbr``, whether two sites are the same) through a dense grid of rows
    (``grid[key]`` = row, -1 elsewhere; all -1 on entry and again on return): one load per
    (site, offset), no search; each site writes its own row. A repeated site leaves a row that
    does not find itself in its cell (the table is then meaningless: the caller raises)."""
    n = keys.shape[0]
    kz, ky, kx = ksize[0], ksize[1], ksize[2]
    nk = kz * ky * kx
    for i in prange(n):          # distinct keys: every cell has one writer
        grid[keys[i]] = i
    nbr = np.empty((n, nk), np.int32)
    lost = np.zeros(n, np.uint8)
    for row in prange(n):
        if grid[keys[row]] != row:   # a repeated site: another row overwrote this one's cell
            lost[row] = 1
        b, z, y, x = np.int64(idx[row, 0]), idx[row, 1], idx[row, 2], idx[row, 3]
        k = 0
        for a in range(kz):
            zi = z + offset[0] + a * dilation[0]
            for c in range(ky):
                yi = y + offset[1] + c * dilation[1]
                base = (b * shape[0] + zi) * shape[1] + yi
                zy_in = zi >= 0 and yi >= 0 and zi < shape[0] and yi < shape[1]
                for e in range(kx):
                    xi = x + offset[2] + e * dilation[2]
                    hit = n
                    if zy_in and xi >= 0 and xi < shape[2]:
                        v = grid[base * shape[2] + xi]
                        if v >= 0:
                            hit = v
                    nbr[row, k] = hit
                    k += 1
    for i in prange(n):
        grid[keys[i]] = -1
    return nbr, lost.any()


def _axis_taps(n: int, on: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    """(n, k) int64: for input coordinate x along one axis and kernel tap e, the output
    coordinate that reads x through e (``(x + p - e * d) / s`` when whole and inside
    ``[0, on)``), else -1. A table, so the rulebook kernels divide by no stride."""
    t = np.arange(n, dtype=np.int64)[:, None] + p - np.arange(k, dtype=np.int64)[None, :] * d
    ok = (t >= 0) & (t % s == 0) & (t // s < on)
    return np.where(ok, t // s, -1)


@njit(cache=True, parallel=True)
def _grid_conv_tables(idx, oshape, tz_of, ty_of, tx_of, grid, ncells):
    """A regular conv's output keys (sorted), ``nbr`` and ``inv`` through a dense grid over the
    output cells (``ncells`` = batch * prod(oshape)): mark every output an active input reaches,
    number the marked cells in key order (a serial scan: the rows come out sorted), then each
    input writes its (output, offset) entries of both tables (each entry has one writer when
    the sites are distinct). Also returns whether a repeated site was seen (some input's entry
    in ``nbr`` is another row's) and whether some input is read by no output (its repeats
    would not show). ``idx``: the (b, z, y, x) input sites; ``t*_of``: ``_axis_taps`` per axis.
    ``grid``: at least ``ncells`` cells, all -1 on entry and again on return."""
    n = idx.shape[0]
    kz, ky, kx = tz_of.shape[1], ty_of.shape[1], tx_of.shape[1]
    nk = kz * ky * kx
    # Mark (parallel over the inputs): several inputs may mark one cell, all with the same 0, so
    # the result is the same whichever store lands last.
    for i in prange(n):
        b, z, y, x = np.int64(idx[i, 0]), idx[i, 1], idx[i, 2], idx[i, 3]
        for a in range(kz):
            oz = tz_of[z, a]
            if oz < 0:
                continue
            for c in range(ky):
                oy = ty_of[y, c]
                if oy < 0:
                    continue
                base = ((b * oshape[0] + oz) * oshape[1] + oy) * oshape[2]
                for e in range(kx):
                    ox = tx_of[x, e]
                    if ox >= 0:
                        grid[base + ox] = 0
    # Number the marked cells in key order: a count per fixed span of cells (parallel), the
    # spans' first numbers by a serial prefix sum, then each span numbers its own cells.
    nspan = _GRID_SPANS
    span = (ncells + nspan - 1) // nspan
    cnt = np.zeros(nspan + 1, np.int64)
    for t in prange(nspan):
        c = 0
        for cell in range(t * span, min(ncells, (t + 1) * span)):
            if grid[cell] == 0:
                c += 1
        cnt[t + 1] = c
    for t in range(nspan):
        cnt[t + 1] += cnt[t]
    m = cnt[nspan]
    okeys = np.empty(m, np.int64)
    for t in prange(nspan):
        j = cnt[t]
        for cell in range(t * span, min(ncells, (t + 1) * span)):
            if grid[cell] == 0:
                grid[cell] = j
                okeys[j] = cell
                j += 1
    nbr = np.empty((m, nk), np.int32)
    for o in prange(m):
        for k in range(nk):
            nbr[o, k] = n
    inv = np.empty((n, nk), np.int32)
    for i in prange(n):
        b, z, y, x = np.int64(idx[i, 0]), idx[i, 1], idx[i, 2], idx[i, 3]
        for k in range(nk):
            inv[i, k] = m
        for a in range(kz):
            oz = tz_of[z, a]
            if oz < 0:
                continue
            for c in range(ky):
                oy = ty_of[y, c]
                if oy < 0:
                    continue
                base = ((b * oshape[0] + oz) * oshape[1] + oy) * oshape[2]
                k = (a * ky + c) * kx
                for e in range(kx):
                    ox = tx_of[x, e]
                    if ox >= 0:
                        o = grid[base + ox]
                        nbr[o, k + e] = i
                        inv[i, k + e] = o
    # Repeated sites: two rows of one site reach the same (output, offset) entries, and only
    # one of them can be in nbr, so checking each input's first entry finds a repeat; an input
    # read by no output cannot be checked this way.
    lost = np.zeros(n, np.uint8)
    unread = np.zeros(n, np.uint8)
    for i in prange(n):
        unread[i] = 1
        for k in range(nk):
            o = inv[i, k]
            if o < m:
                unread[i] = 0
                if nbr[o, k] != i:
                    lost[i] = 1
                break
    for o in prange(m):
        grid[okeys[o]] = -1
    return okeys, nbr, inv, lost.any(), unread.any()


@njit(cache=True, parallel=True)
def _decode(okeys, oshape):
    m = okeys.shape[0]
    out = np.empty((m, 4), np.int32)
    for o in prange(m):
        b, z, y, x = _unkey(okeys[o], oshape)
        out[o, 0] = b
        out[o, 1] = z
        out[o, 2] = y
        out[o, 3] = x
    return out


@njit(cache=True)
def _conv_outputs(keys, shape, oshape, ksize, stride, padding, dilation, max_per_input):
    """Unique keys (in the output grid) of all outputs reading at least one active input,
    sorted. ``max_per_input``: the most outputs one input can reach (sizes the table)."""
    n = keys.shape[0]
    cap = max(16, n * max_per_input)
    bits = _table_bits(cap)
    mask = (1 << bits) - 1
    table = np.full(1 << bits, -1, np.int64)   # keys only
    out = np.empty(cap, np.int64)
    m = 0
    for i in range(n):
        b, z, y, x = _unkey(keys[i], shape)
        for a in range(ksize[0]):
            tz = z + padding[0] - a * dilation[0]
            if tz < 0 or tz % stride[0] != 0 or tz // stride[0] >= oshape[0]:
                continue
            for c in range(ksize[1]):
                ty = y + padding[1] - c * dilation[1]
                if ty < 0 or ty % stride[1] != 0 or ty // stride[1] >= oshape[1]:
                    continue
                for e in range(ksize[2]):
                    tx = x + padding[2] - e * dilation[2]
                    if tx < 0 or tx % stride[2] != 0 or tx // stride[2] >= oshape[2]:
                        continue
                    okey = ((b * oshape[0] + tz // stride[0]) * oshape[1] + ty // stride[1]) \
                        * oshape[2] + tx // stride[2]
                    s = _slot(okey, bits)
                    while table[s] != -1 and table[s] != okey:
                        s = (s + 1) & mask
                    if table[s] == -1:
                        table[s] = okey
                        out[m] = okey
                        m += 1
    return np.sort(out[:m])


@njit(cache=True, parallel=True)
def _transpose(nbr, n_in):
    """inv[i, k] = o with nbr[o, k] == i, else n_out. Each (i, k) is written at most once (an
    input is read by at most one output per offset), so the parallel writes never collide."""
    m, nk = nbr.shape
    inv = np.full((n_in, nk), m, np.int32)
    for o in prange(m):
        for k in range(nk):
            i = nbr[o, k]
            if i < n_in:
                inv[i, k] = o
    return inv


@njit(cache=True, parallel=True)
def _flip(nbr, n):
    """Submanifold transpose: i reads o at offset k  <=>  o reads i at offset K - 1 - k."""
    m, nk = nbr.shape
    inv = np.empty((m, nk), np.int32)
    for o in prange(m):
        for k in range(nk):
            inv[o, k] = nbr[o, nk - 1 - k]
    return inv


@njit(cache=True, parallel=True)
def _pair_blocks(table, n_src, centre, min_pairs, min_rows, target):
    """Compacted pair lists of a gather table, cut into blocks of consecutive rows.

    ``table`` (N, K): ``table[r, k]`` the source row that offset ``k`` of row ``r`` reads, or
    ``n_src`` (none). Offset ``centre`` (-1: none) is left out (the caller does it as a dense
    GEMM). Blocks: consecutive rows, cut before a row that would take the block over
    ``max_pairs = max(min_pairs, ceil(P / target))`` pairs (``P`` all pairs) or
    ``max_rows = max(min_rows, ceil(N / target))`` rows (a block holds at least one row): about
    ``target`` blocks on big tables, fewer on small ones. Inside a block
    the pairs are ordered by offset, then by row; ``ptr[b * K + k]:ptr[b * K + k + 1]`` are the
    pairs of block ``b`` and offset ``k``, ``dst`` their rows, ``src`` their source rows.
    The cuts are a serial scan, the filling is parallel over blocks (each writes its own
    range), so the result does not depend on the thread count."""
    n, nk = table.shape
    cnt = np.zeros(n, np.int64)
    for r in prange(n):
        c = 0
        for k in range(nk):
            if k != centre and table[r, k] < n_src:
                c += 1
        cnt[r] = c
    all_pairs = 0
    for r in range(n):
        all_pairs += cnt[r]
    max_pairs = max(min_pairs, (all_pairs + target - 1) // target)
    max_rows = max(min_rows, (n + target - 1) // target)
    bnd = np.empty(n + 1, np.int64)
    first = np.empty(n + 1, np.int64)     # pair offset of each block's first pair
    bnd[0] = 0
    first[0] = 0
    nb = 0
    cur = 0
    start = 0
    total = 0
    for r in range(n):
        if r > start and (cur + cnt[r] > max_pairs or r - start >= max_rows):
            nb += 1
            bnd[nb] = r
            first[nb] = total
            start = r
            cur = 0
        cur += cnt[r]
        total += cnt[r]
    if n > 0:
        nb += 1
        bnd[nb] = n
        first[nb] = total
    ptr = np.empty(nb * nk + 1, np.int64)
    ptr[nb * nk] = total
    dst = np.empty(total, np.int32)
    src = np.empty(total, np.int32)
    for b in prange(nb):
        p = first[b]
        for k in range(nk):
            ptr[b * nk + k] = p
            if k == centre:
                continue
            for r in range(bnd[b], bnd[b + 1]):
                v = table[r, k]
                if v < n_src:
                    dst[p] = r
                    src[p] = v
                    p += 1
    return bnd[:nb + 1].copy(), ptr, dst, src, max_pairs, max_rows


@dataclass
class PairBlocks:
    """A gather table as compacted pair lists per (block of rows, offset); see ``_pair_blocks``."""
    bounds: np.ndarray      # (B + 1,) int64 row bounds of the blocks
    ptr: np.ndarray         # (B * K + 1,) int64 pair offsets per (block, offset)
    dst: np.ndarray         # (P,) int32 row of each pair (output row forward, input row backward)
    src: np.ndarray         # (P,) int32 source row of each pair
    centre: int             # offset done densely (row r reads source row r), -1 if none
    max_pairs: int          # the caps the blocks were cut with
    max_rows: int
    flipped: bool = False   # the lists are of the table whose offset k is this one's K - 1 - k

    @property
    def n_blocks(self) -> int:
        return len(self.bounds) - 1


def pair_blocks(table: np.ndarray, n_src: int, centre: int, min_pairs: int, min_rows: int,
                target: int) -> PairBlocks:
    """Python entry to ``_pair_blocks`` (see there)."""
    bnd, ptr, dst, src, mp, mr = _pair_blocks(np.ascontiguousarray(table, dtype=np.int32),
                                              int(n_src), int(centre), int(min_pairs),
                                              int(min_rows), max(1, int(target)))
    return PairBlocks(bounds=bnd, ptr=ptr, dst=dst, src=src, centre=int(centre),
                      max_pairs=int(mp), max_rows=int(mr))


@dataclass
class Rulebook:
    """One layer's (or one ``indice_key``'s) gather tables; see the module docstring."""
    nbr: np.ndarray                  # (N_out, K) int32, N_in = empty
    n_in: int
    out_indices: np.ndarray          # (N_out, 4) int32 (b, z, y, x)
    spatial_shape: list[int]
    out_spatial_shape: list[int]
    subm: bool
    ksize: list[int]
    stride: list[int]
    padding: list[int]
    dilation: list[int]
    _inv: np.ndarray | None = field(default=None, repr=False)
    _pairs: dict = field(default_factory=dict, repr=False)

    @property
    def n_out(self) -> int:
        return int(self.nbr.shape[0])

    def tensors(self):
        """(nbr as a torch tensor, a function returning inv as one), both shared, not copied."""
        import torch
        nbr = torch.from_numpy(self.nbr)
        return nbr, lambda: torch.from_numpy(self.inv)

    @property
    def centre(self) -> int:
        """The offset every output reads its own row at (submanifold convs with odd kernels:
        ``nbr[o, centre] == o``), or -1."""
        if self.subm and all(k % 2 == 1 for k in self.ksize):
            return int(np.prod(self.ksize)) // 2
        return -1

    def pairs(self, transposed: bool, min_pairs: int, min_rows: int, target: int) -> PairBlocks:
        """Compacted pair blocks of ``nbr`` (or of ``inv`` when ``transposed``; see
        ``_pair_blocks``), cached (layers sharing this rulebook share them)."""
        key = (transposed, int(min_pairs), int(min_rows), int(target))
        pb = self._pairs.get(key)
        if pb is None:
            if transposed and self.centre >= 0:
                # Submanifold, odd kernel: inv[i, k] == nbr[i, K - 1 - k], so the transposed
                # lists are the forward ones with the offsets reversed (nothing to build).
                fwd = self.pairs(False, min_pairs, min_rows, target)
                pb = PairBlocks(bounds=fwd.bounds, ptr=fwd.ptr, dst=fwd.dst, src=fwd.src,
                                centre=fwd.centre, max_pairs=fwd.max_pairs,
                                max_rows=fwd.max_rows, flipped=True)
            elif transposed:
                pb = pair_blocks(self.inv, self.n_out, self.centre, min_pairs, min_rows, target)
            else:
                pb = pair_blocks(self.nbr, self.n_in, self.centre, min_pairs, min_rows, target)
            self._pairs[key] = pb
        return pb

    @property
    def inv(self) -> np.ndarray:
        """(N_in, K) int32, N_out = no output reads this input at this offset."""
        if self._inv is None:
            if self.subm and all(k % 2 == 1 for k in self.ksize):
                self._inv = _flip(self.nbr, self.n_in)
            else:
                self._inv = _transpose(self.nbr, self.n_in)
        return self._inv


_GRID_CELLS = 1 << 24           # dense grids up to 64 MiB of int32 cells ...
_GRID_CELLS_PER_SITE = 256      # ... and at most this many cells per active site


_grid_lock = threading.Lock()
_grid_memory = np.empty(0, np.int32)   # all -1 between builds (the kernels restore what they set)


def _grid(ncells: int) -> np.ndarray:
    """The shared dense grid (all -1), grown to at least ``ncells`` cells; use under _grid_lock.
    Kept between builds, so a build pays no fill (nor page faults) for it."""
    global _grid_memory
    if _grid_memory.shape[0] < ncells:
        _grid_memory = np.full(ncells, -1, np.int32)
    return _grid_memory


def _use_grid(ncells: int, n: int) -> bool:
    """Whether a dense grid over ``ncells`` cells beats searching the sorted keys of ``n``
    sites (its fill and scan cost ~``ncells``; big sparse grids take the searches)."""
    return 0 < ncells <= min(_GRID_CELLS, _GRID_CELLS_PER_SITE * max(n, 1))


def _sorted_sites(keys: np.ndarray, order_of: np.ndarray):
    """(the keys sorted, their rows as int32); raises naming the row when two rows of
    ``order_of`` (the indices the keys encode) are the same site."""
    order = np.argsort(keys, kind="stable")
    skeys = keys[order]
    if keys.shape[0] > 1:
        same = np.flatnonzero(skeys[1:] == skeys[:-1])
        if same.size:
            dup = int(max(order[same[0]], order[same[0] + 1]))
            raise ValueError(f"sparse conv: indices row {dup} = {order_of[dup].tolist()} repeats "
                             "an earlier row (active sites must be distinct)")
    return skeys, order.astype(np.int32)


def _raise_repeat(keys: np.ndarray, order_of: np.ndarray):
    """Raise the error naming a repeated row (a grid path saw that there is one)."""
    _sorted_sites(keys, order_of)
    raise AssertionError("sparse conv: a repeated site was seen but the sorted keys have none")


def build_rulebook(indices: np.ndarray, spatial_shape: Sequence[int], ksize: Sequence[int],
                   stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                   subm: bool) -> Rulebook:
    """Rulebook of a 3D sparse (``subm=False``) or submanifold conv over active sites
    ``indices`` ((N, 4) int (b, z, y, x), distinct, inside ``spatial_shape`` (z, y, x))."""
    idx = np.ascontiguousarray(indices, dtype=np.int32)
    if idx.ndim != 2 or idx.shape[1] != 4:
        raise ValueError(f"sparse conv: indices must be (N, 4) (b, z, y, x), got {idx.shape}")
    shape = np.asarray(spatial_shape, np.int64)
    ks = np.asarray(ksize, np.int64)
    st = np.asarray(stride, np.int64)
    pd = np.asarray(padding, np.int64)
    dl = np.asarray(dilation, np.int64)
    n = idx.shape[0]
    bad = np.full(1, -1, np.int64)
    keys = _encode(idx, shape, bad)
    if bad[0] >= 0:
        raise ValueError(f"sparse conv: indices row {int(bad[0])} = {idx[bad[0]].tolist()} is "
                         f"outside the spatial shape {list(spatial_shape)} (or has a negative "
                         "batch index)")
    batch = int(idx[:, 0].max()) + 1 if n else 1
    in_cells = batch * int(np.prod(shape))
    # Distinct sites: the grid paths find repeats as they build (the keys are sorted only to
    # name the repeated row, or when a search path needs them sorted).
    common = dict(spatial_shape=[int(v) for v in spatial_shape], subm=subm,
                  ksize=[int(v) for v in ksize], stride=[int(v) for v in stride],
                  padding=[int(v) for v in padding], dilation=[int(v) for v in dilation])
    nseg = max(1, min(64, n // 2048))   # fixed by the size alone, not by the thread count
    if subm:
        offset = np.asarray([-(k // 2) * d for k, d in zip(ksize, dilation)], np.int64)
        if _use_grid(in_cells, n):
            with _grid_lock:
                nbr, repeated = _grid_subm_table(keys, idx, shape, ks, offset, dl,
                                                 _grid(in_cells))
            if repeated:
                _raise_repeat(keys, idx)
        else:
            skeys, srows = _sorted_sites(keys, order_of=idx)
            nbr = _neighbour_table(skeys, srows, shape, skeys, srows, shape, ks,
                                   np.ones(3, np.int64), offset, dl, nseg)
        return Rulebook(nbr=nbr, n_in=n, out_indices=idx,
                        out_spatial_shape=list(common["spatial_shape"]), **common)
    oshape = conv_output_shape(spatial_shape, ksize, stride, padding, dilation)
    if min(oshape) < 1:
        raise ValueError(f"sparse conv: spatial shape {list(spatial_shape)} is too small for "
                         f"kernel {list(ksize)}, stride {list(stride)}, padding {list(padding)}")
    oshape_a = np.asarray(oshape, np.int64)
    ncells = batch * int(np.prod(oshape))
    if _use_grid(ncells, n):
        with _grid_lock:
            taps = [_axis_taps(int(spatial_shape[a]), oshape[a], int(ksize[a]), int(stride[a]),
                               int(padding[a]), int(dilation[a])) for a in range(3)]
            okeys, nbr, inv, repeated, unread = _grid_conv_tables(idx, oshape_a, *taps,
                                                                  _grid(ncells), ncells)
            if unread and not repeated:       # not seen through the tables: check directly
                repeated = (_grid_repeats(keys, _grid(in_cells)) if _use_grid(in_cells, n)
                            else _sorted_sites(keys, order_of=idx) is None)
        if repeated:
            _raise_repeat(keys, idx)
        return Rulebook(nbr=nbr, n_in=n, out_indices=_decode(okeys, oshape_a),
                        out_spatial_shape=oshape, _inv=inv, **common)
    skeys, srows = _sorted_sites(keys, order_of=idx)
    max_per = 1
    for k, st_, d in zip(ksize, stride, dilation):
        max_per *= k if d != 1 else min(k, -(-k // st_))
    okeys = _conv_outputs(skeys, shape, oshape_a, ks, st, pd, dl, max_per)
    m = okeys.shape[0]
    nbr = _neighbour_table(okeys, np.arange(m, dtype=np.int32), oshape_a, skeys, srows, shape, ks,
                           st, -pd, dl, max(1, min(64, m // 2048)))
    return Rulebook(nbr=nbr, n_in=n, out_indices=_decode(okeys, oshape_a), out_spatial_shape=oshape,
                    **common)
