"""Gather-GEMM-scatter of a sparse convolution over a
:class:`~ops.sparse_conv.rulebook.Rulebook`, forward and backward, deterministic at every
thread count. Two algorithms (``ALGORITHM``, or the ``algorithm`` argument):

``"pairs"`` (default): the real pairs only. The rows of the gather table (outputs forward,
inputs backward) are cut into about ``_TARGET_BLOCKS`` blocks of consecutive rows
(:meth:`Rulebook.pairs`: compacted pair lists per (block, kernel offset), built once per rulebook
and cached). Per block: the centre offset of a submanifold conv (every site reads itself) is a
dense GEMM on the block's own rows, written straight into the block's output rows; then the
block's pairs of all other offsets (ordered by offset) are gathered into a buffer, in chunks of
at most ``_PAIR_BYTES`` per buffer, one GEMM per offset multiplies its slice by that
offset's ``(C_in, C_out)`` weight, and the products are added into the block's output
rows in pair order (offset by offset). A block is one nogil Numba call that calls MKL's GEMM
itself (``_gemm2``); in the backward of layers of at most ``_NARROW`` channels the buffers hold
the rows as columns (MKL is much faster on the transposed narrow products). In float32 (and
up to ``kernels.MAX_WIDTH`` channels; ``FUSED``) a block instead calls the fused kernels of
``kernels.py`` once per offset, the centre included: each pair's product is formed in
registers from the source row in place and added into its destination row, with no gather
buffer, no separate GEMM and no scatter pass (2-4x less time per layer).
Backward runs over the transposed lists: per block of
input rows it gathers the output gradients its pairs read, multiplies them by the transposed
weights into the feature gradient (same scatter-add), and, with the same gathered rows and the
gathered inputs, the weight gradient of each offset (``x[rows]^T @ grad_out[pairs]``, added
chunk after chunk into one partial per block; the partials added in block order).

``"im2col"`` (the previous round's): per block of output rows, gather all ``K`` input rows each
output reads (the zero row where a site is empty) into a ``(rows, K * C_in)`` buffer and
multiply it by the weight laid out ``(K * C_in, C_out)``; backward to the features the same over
the transposed table; the weight gradient ``buffer^T @ grad_out`` per block. It does ~1/occupancy
times the necessary work (a 3x3x3 neighbourhood is ~27 % occupied on the demo's frames).

Parallelism. ``"pairs"``: one Numba ``prange`` over a layer's blocks (``_pairs_forward_all``,
``_pairs_backward_all``; blocks handed out one at a time), each block computed by one thread with
MKL set to one thread for it (``mkl_set_num_threads_local``), in that thread's scratch row of a
shared buffer whose rows and buffers all start on an ``_ALIGN`` boundary. ``"im2col"``: the
blocks run on a small pool of Python threads, each block's torch ops with one intra-op thread.
torch's GEMM (MKL) gives different bits at different thread counts when it splits a reduction,
so a block's result is computed one-threaded, in buffers aligned the same way in every thread;
blocks, their order and the order partial sums are added in do not depend on the number of
threads (the weight-gradient partials are added element by element in block order), hence
neither do the results. Every output row is written by one block only. A thread's buffers are a
few MiB (``"pairs"``: three of at most ``_PAIR_BYTES``; ``"im2col"``: one of ``_BLOCK_BYTES``)
whatever the voxel count.
"""
from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import torch
from numba import njit, prange, types

from ops.sparse_conv import kernels as _kernels
from ops.sparse_conv.kernels import KERNELS_UNAVAILABLE
from ops.sparse_conv.rulebook import Rulebook

__all__ = ["sparse_conv_apply", "gather_mm", "ALGORITHMS", "BLAS_UNAVAILABLE", "KERNELS_UNAVAILABLE"]

ALGORITHMS = ("pairs", "im2col")
ALGORITHM = os.environ.get("OPS_SPARSE_CONV_ALGORITHM", "pairs")   # the default of sparse_conv_apply
_warned_fallback = False
# "pairs" in float32: the fused register-blocked kernels (``kernels.py``) instead of gather, MKL
# GEMM and scatter-add for each (block, offset), where they built and the widths allow
# (``OPS_SPARSE_CONV_FUSED=0`` in the environment, or this flag, turns them off).
FUSED = os.environ.get("OPS_SPARSE_CONV_FUSED", "1") != "0"

_BLOCK_BYTES = 2 << 20        # gather buffer per block (2 MiB: stays in the L2/L3 caches)
_MIN_ROWS = 256
_PAIR_BYTES = 1 << 20         # "pairs": each per-thread buffer (gathered rows, products)
_MIN_CHUNK = 256              # "pairs": fewest pairs per chunk
_NARROW = 8                   # "pairs" backward: with C_in and C_out this narrow the products
                              # are computed transposed (rows as columns): MKL is 2.5-4x faster
                              # so on (rows x 8) @ (8 x 8) products
_NARROW_FORWARD = 0           # the same for the forward (C_out <= this). Off (round 3): with
                              # it on, the tiny detector's third float32 training loss moved
                              # 2.8e-3 from spconv's. Understood since (round 7, the fused
                              # kernels did the same): that training's gradient jumps (L1
                              # terms), and float32 roundings pick a side; see the slow test
_TARGET_BLOCKS = 8            # "pairs": blocks per layer (fewer on small layers)
_MIN_BLOCK_PAIRS = 8192
_MIN_BLOCK_ROWS = 2048
_ALIGN = 4096
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1),
                                       thread_name_prefix="sparse_conv")
        return _pool


def _blocks(rows: int, width: int, itemsize: int) -> list[tuple[int, int]]:
    step = max(_MIN_ROWS, _BLOCK_BYTES // max(1, width * itemsize))
    return [(s, min(rows, s + step)) for s in range(0, rows, step)]


def _run(fn, blocks, threads: int) -> list:
    """fn(s, e) for every block; results in block order. Each call runs with one intra-op
    thread (set in the thread that runs it: MKL's count is per thread)."""
    def one(block):
        torch.set_num_threads(1)
        with torch.no_grad():
            return fn(*block)

    if threads <= 1 or len(blocks) <= 1:
        return [one(b) for b in blocks]
    return list(_executor().map(one, blocks))


class _ThreadScope:
    """Run the blocks with ``threads`` workers, then give torch its thread count back."""

    def __init__(self):
        self.threads = torch.get_num_threads()

    def __enter__(self):
        return self.threads

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)
        return False


@njit(cache=True, nogil=True)
def _im2col(x, table, s, e, buf):
    """buf[r - s, k * C:(k + 1) * C] = x[table[r, k]] (zeros where table[r, k] == len(x)).
    Runs in the pool's threads (nogil), one block per call."""
    n, c = x.shape
    nk = table.shape[1]
    for r in range(s, e):
        row = r - s
        for k in range(nk):
            i = table[r, k]
            base = k * c
            if i < n:
                for j in range(c):
                    buf[row, base + j] = x[i, j]
            else:
                for j in range(c):
                    buf[row, base + j] = 0


_scratch = threading.local()


def _gather(x_np: np.ndarray, table_np: np.ndarray, s: int, e: int) -> torch.Tensor:
    """The block's gather buffer, in memory reused by the calling thread (a fresh allocation
    per block would pay its page faults every time). Valid until the thread's next call."""
    width = table_np.shape[1] * x_np.shape[1]
    need = (e - s) * width * x_np.itemsize
    raw = getattr(_scratch, "raw", None)
    if raw is None or raw.nbytes < need:
        raw = _scratch.raw = np.empty(max(need, _BLOCK_BYTES), np.uint8)
    buf = raw[:need].view(x_np.dtype).reshape(e - s, width)
    _im2col(x_np, table_np, s, e, buf)
    return torch.from_numpy(buf)


def gather_mm(x: torch.Tensor, table: torch.Tensor, wmat: torch.Tensor, threads: int) -> torch.Tensor:
    """out[r] = concat_k(x_pad[table[r, k]]) @ wmat, ``x_pad`` = x with a zero row appended
    (``table`` entries equal to ``len(x)`` read it). ``wmat``: (K * C_in, C_out)."""
    rows, nk = table.shape
    out = x.new_empty(rows, wmat.shape[1])
    if rows == 0:
        return out
    if x.shape[0] == 0:
        return out.zero_()
    width = nk * x.shape[1]
    x_np, t_np = x.numpy(), table.numpy()

    def block(s, e):
        torch.mm(_gather(x_np, t_np, s, e), wmat, out=out[s:e])

    _run(block, _blocks(rows, width, x.element_size()), threads)
    return out


def _weight_grad(x: torch.Tensor, table: torch.Tensor, gout: torch.Tensor, threads: int,
                 want_bias: bool):
    """sum over blocks of concat_k(x_pad[table]) ^T @ gout (K * C_in, C_out), and the bias
    gradient, both added in block order."""
    rows, nk = table.shape
    width = nk * x.shape[1]
    gw = x.new_zeros(width, gout.shape[1])
    gb = gout.new_zeros(gout.shape[1]) if want_bias else None
    if rows == 0:
        return gw, gb
    x_np, t_np = x.numpy(), table.numpy()

    def block(s, e):
        g = _gather(x_np, t_np, s, e)
        part_w = torch.mm(g.t(), gout[s:e])
        part_b = gout[s:e].sum(0) if want_bias else None
        return part_w, part_b

    parts = _run(block, _blocks(rows, width, x.element_size()), threads)
    for part_w, part_b in parts:       # fixed order: independent of the thread count
        gw += part_w
        if want_bias:
            gb += part_b
    return gw, gb


# ---------------------------------------------------------------------------------------------
# "pairs": compacted pair lists per (block, offset)

@njit(cache=True, nogil=True)
def _gather_rows(x, idx, p0, p1, buf):
    """buf[p - p0] = x[idx[p]] for p in [p0, p1). Given ``buf.T`` of a ``(C, chunk)`` buffer it
    stores the rows as columns (the transposed narrow products)."""
    c = x.shape[1]
    for p in range(p0, p1):
        i = idx[p]
        q = p - p0
        for j in range(c):
            buf[q, j] = x[i, j]


@njit(cache=True, nogil=True)
def _scatter_add_rows(out, idx, p0, p1, buf):
    """out[idx[p]] += buf[p - p0] for p in [p0, p1), in that order (``buf.T``: see
    ``_gather_rows``)."""
    c = out.shape[1]
    for p in range(p0, p1):
        o = idx[p]
        q = p - p0
        for j in range(c):
            out[o, j] += buf[q, j]


@njit(cache=True)
def _column_sums(g):
    """Sum over rows in float64, serially in row order (deterministic; the bias gradient)."""
    n, c = g.shape
    acc = np.zeros(c, np.float64)
    for i in range(n):
        for j in range(c):
            acc[j] += g[i, j]
    return acc


# ---------------------------------------------------------------------------------------------
# BLAS from Numba: the GEMMs of a whole block run inside one nogil Numba call (no Python-level
# torch call per (block, offset)). The routines are MKL's sgemm_/dgemm_, the same library torch's
# CPU matmul uses, loaded from libtorch_cpu (exported Fortran symbols, 32-bit integers), resolved
# by name so that the compiled functions can be cached. Thread count: MKL's per-thread setting,
# which ``_run`` sets to 1 (torch.set_num_threads) in every thread that runs a block.

def _load_blas() -> str | None:
    """Make MKL's ``sgemm_`` / ``dgemm_`` (the copies libtorch_cpu exports) resolvable from Numba
    code. Returns None when they are, else why not: a torch build without them (another BLAS,
    another platform's library name) then runs the "im2col" algorithm, whose GEMMs are torch's."""
    try:
        import llvmlite.binding as llvm
        libs = sorted(Path(torch.__file__).parent.joinpath("lib").glob("libtorch_cpu.*"))
        if not libs:
            return f"no libtorch_cpu library in {Path(torch.__file__).parent / 'lib'}"
        for lib in libs:
            llvm.load_library_permanently(str(lib))
        missing = [f for f in ("sgemm_", "dgemm_", "mkl_set_num_threads_local")
                   if not llvm.address_of_symbol(f)]
        if missing:
            return f"{libs[0].name} does not export {', '.join(missing)}"
    except Exception as e:  # noqa: BLE001 - any loader failure means: no direct BLAS
        return f"loading torch's BLAS failed: {type(e).__name__}: {e}"
    return None


# Why the "pairs" algorithm cannot run here, or None (it can).
BLAS_UNAVAILABLE = _load_blas()
_vp = types.voidptr
_sgemm = types.ExternalFunction("sgemm_", types.void(*([_vp] * 13)))
_dgemm = types.ExternalFunction("dgemm_", types.void(*([_vp] * 13)))
# mkl_set_num_threads_local: this thread's MKL thread count (0: the global one); returns the
# previous local value. The symbol libtorch_cpu exports is the Fortran-style entry (it shares the
# address of ``mkl_set_num_threads_local_``): the count is passed by pointer. Every block sets 1
# (see ``_pairs_forward_all``) and restores the previous value.
_mkl_set_local = types.ExternalFunction("mkl_set_num_threads_local", types.int32(_vp))


@njit(cache=True, nogil=True)
def _mkl_local(n):
    v = np.empty(1, np.int32)
    v[0] = n
    return _mkl_set_local(v.ctypes)


_N, _T = np.uint8(ord("N")), np.uint8(ord("T"))

# The fused kernels (kernels.py), one per number of 16-float vectors a row of the result takes.
_i8 = types.int64
_kern_sig = types.void(_vp, _i8, _vp, _i8, _vp, _vp, _i8, _vp, _i8, _i8)
_ggs_k = [types.ExternalFunction(_kernels.ggs_name(v), _kern_sig)
          for v in range(1, _kernels.MAX_VECTORS + 1)]
_wgrad_k = [types.ExternalFunction(_kernels.wgrad_name(v), _kern_sig)
            for v in range(1, _kernels.MAX_VECTORS + 1)]
_g1, _g2, _g3, _g4, _g5, _g6, _g7, _g8 = _ggs_k
_w1, _w2, _w3, _w4, _w5, _w6, _w7, _w8 = _wgrad_k


@njit(cache=True, nogil=True)
def _ggs(a, w, src, dst, lo, hi, out):
    """out[dst[p]] += a[src[p]] @ w for p in lo:hi (float32, C-contiguous; w (C_a, C_out));
    kernels.py's ``ops_sc_ggs_v*``."""
    n = hi - lo
    if n <= 0:
        return
    c = out.shape[1]
    v = (c + 15) // 16
    args = (a.ctypes, a.shape[1], w.ctypes, w.shape[0], src[lo:].ctypes, dst[lo:].ctypes, n,
            out.ctypes, out.shape[1], c)
    if v == 1:
        _g1(*args)
    elif v == 2:
        _g2(*args)
    elif v == 3:
        _g3(*args)
    elif v == 4:
        _g4(*args)
    elif v == 5:
        _g5(*args)
    elif v == 6:
        _g6(*args)
    elif v == 7:
        _g7(*args)
    else:
        _g8(*args)


@njit(cache=True, nogil=True)
def _wgrad(a, g, arow, grow, lo, hi, part):
    """part (C_a, C_g) += sum over p in lo:hi of a[arow[p]]^T g[grow[p]] (float32, C-contiguous);
    kernels.py's ``ops_sc_wgrad_v*``."""
    n = hi - lo
    if n <= 0:
        return
    c = part.shape[1]
    v = (c + 15) // 16
    args = (a.ctypes, a.shape[1], g.ctypes, g.shape[1], arow[lo:].ctypes, grow[lo:].ctypes, n,
            part.ctypes, part.shape[0], c)
    if v == 1:
        _w1(*args)
    elif v == 2:
        _w2(*args)
    elif v == 3:
        _w3(*args)
    elif v == 4:
        _w4(*args)
    elif v == 5:
        _w5(*args)
    elif v == 6:
        _w6(*args)
    elif v == 7:
        _w7(*args)
    else:
        _w8(*args)


@njit(cache=True, nogil=True)
def _gemm2(a, trans_a, b, trans_b, c, beta):
    """Row-major ``c = op(a) @ op(b) + beta * c`` (op: transposed when ``trans_*``). Each a 2D
    view with unit stride along its rows (any row stride: blocks of columns of a buffer too),
    same dtype (float32 or float64)."""
    if trans_a:
        k, m = a.shape
    else:
        m, k = a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    if m == 0 or n == 0:
        return
    isz = a.itemsize
    # Column-major view: c^T (n x m) = op(b)^T (n x k) @ op(a)^T (k x m), the flags unchanged.
    dims = np.empty(6, np.int32)
    dims[0] = n
    dims[1] = m
    dims[2] = k
    dims[3] = max(1, b.strides[0] // isz if b.shape[0] > 1 else b.shape[1])
    dims[4] = max(1, a.strides[0] // isz if a.shape[0] > 1 else a.shape[1])
    dims[5] = max(1, c.strides[0] // isz if c.shape[0] > 1 else c.shape[1])
    ch = np.empty(2, np.uint8)
    ch[0] = _T if trans_b else _N
    ch[1] = _T if trans_a else _N
    sc = np.empty(2, a.dtype)
    sc[0] = 1
    sc[1] = beta
    if isz == 4:
        _sgemm(ch[0:].ctypes, ch[1:].ctypes, dims[0:].ctypes, dims[1:].ctypes, dims[2:].ctypes,
               sc[0:].ctypes, b.ctypes, dims[3:].ctypes, a.ctypes, dims[4:].ctypes,
               sc[1:].ctypes, c.ctypes, dims[5:].ctypes)
    else:
        _dgemm(ch[0:].ctypes, ch[1:].ctypes, dims[0:].ctypes, dims[1:].ctypes, dims[2:].ctypes,
               sc[0:].ctypes, b.ctypes, dims[3:].ctypes, a.ctypes, dims[4:].ctypes,
               sc[1:].ctypes, c.ctypes, dims[5:].ctypes)


@njit(cache=True, nogil=True)
def _gemm(a, b, c, trans_a, beta):
    """Row-major ``c = op(a) @ b + beta * c`` (see ``_gemm2``)."""
    _gemm2(a, trans_a, b, False, c, beta)


@njit(cache=True, nogil=True)
def _pairs_forward_block(x, w, out, s, e, seg, dst, src, centre, chunk, g, pr, tr, fused, ident):
    """One block of ``_pairs_forward``: out[s:e] = (centre: x[s:e] @ w[centre], else 0) + the
    products of the block's pairs (``seg[k]:seg[k + 1]``: offset k), gathered ``chunk`` pairs at
    a time into ``g``, multiplied per offset into ``pr`` and added into their rows in pair order.
    ``tr``: ``g`` and ``pr`` hold the rows as columns (``(C, chunk)``: MKL is several times
    faster on the transposed product when C_out <= 8)."""
    nk = w.shape[0]
    if fused:                 # offset by offset, each pair's product added into its row
        out[s:e, :] = 0
        if centre >= 0:       # (the centre: row r reads row r; ``ident[r] == r``)
            _ggs(x, w[centre], ident, ident, s, e, out)
        for k in range(nk):
            _ggs(x, w[k], src, dst, seg[k], seg[k + 1], out)
        return
    if centre >= 0:
        _gemm(x[s:e], w[centre], out[s:e], False, 0.0)
    else:
        out[s:e, :] = 0
    c0 = seg[0]
    end = seg[nk]
    while c0 < end:
        c1 = min(c0 + chunk, end)
        if tr:    # g (C_in, chunk), pr (C_out, chunk): pr^T-side products (narrow C_out)
            _gather_rows(x, src, c0, c1, g.T)
            for k in range(nk):
                lo = max(seg[k], c0)
                hi = min(seg[k + 1], c1)
                if hi > lo:
                    _gemm2(w[k], True, g[:, lo - c0:hi - c0], False, pr[:, lo - c0:hi - c0], 0.0)
            _scatter_add_rows(out, dst, c0, c1, pr.T)
        else:
            _gather_rows(x, src, c0, c1, g)
            for k in range(nk):
                lo = max(seg[k], c0)
                hi = min(seg[k + 1], c1)
                if hi > lo:
                    _gemm(g[lo - c0:hi - c0], w[k], pr[lo - c0:hi - c0], False, 0.0)
            _scatter_add_rows(out, dst, c0, c1, pr)
        c0 = c1


@njit(cache=True, nogil=True)
def _pairs_backward_block(x, gout, wt, gx, part, s, e, seg, dst, src, centre, wk, chunk, gg, xg,
                          pr, want_x, want_w, tr, fused, ident):
    """One block of ``_pairs_backward`` (input rows s:e): gx[s:e] (centre: gout[s:e] @
    wt[centre]; the rows are zero otherwise) plus the block's pairs' gout[src] @ wt[k] added in
    pair order, and ``part[k]`` (zero on entry) = this block's sum of x[dst]^T gout[src] for
    offset k, chunk after chunk. ``wk[k]``: the weight offset of list offset k. ``tr``: the
    buffers hold the rows as columns (as in ``_pairs_forward_block``; for C_in <= 8)."""
    nk = wt.shape[0]
    if fused:                 # gx rows and part are zero on entry
        if centre >= 0:
            if want_x:
                _ggs(gout, wt[centre], ident, ident, s, e, gx)
            if want_w:
                _wgrad(x, gout, ident, ident, s, e, part[centre])
        for k in range(nk):
            if want_x:
                _ggs(gout, wt[wk[k]], src, dst, seg[k], seg[k + 1], gx)
            if want_w:
                _wgrad(x, gout, dst, src, seg[k], seg[k + 1], part[wk[k]])
        return
    if centre >= 0:
        if want_x:
            _gemm(gout[s:e], wt[centre], gx[s:e], False, 0.0)
        if want_w:
            _gemm(x[s:e], gout[s:e], part[centre], True, 0.0)
    c0 = seg[0]
    end = seg[nk]
    while c0 < end:
        c1 = min(c0 + chunk, end)
        if tr:    # gg (C_out, chunk), xg and pr (C_in, chunk): rows as columns (narrow C_in)
            _gather_rows(gout, src, c0, c1, gg.T)
            if want_w:
                _gather_rows(x, dst, c0, c1, xg.T)
            for k in range(nk):
                lo = max(seg[k], c0)
                hi = min(seg[k + 1], c1)
                if hi > lo:
                    ggk = gg[:, lo - c0:hi - c0]
                    if want_x:
                        _gemm2(wt[wk[k]], True, ggk, False, pr[:, lo - c0:hi - c0], 0.0)
                    if want_w:
                        _gemm2(xg[:, lo - c0:hi - c0], False, ggk, True, part[wk[k]], 1.0)
            if want_x:
                _scatter_add_rows(gx, dst, c0, c1, pr.T)
        else:
            _gather_rows(gout, src, c0, c1, gg)
            if want_w:
                _gather_rows(x, dst, c0, c1, xg)
            for k in range(nk):
                lo = max(seg[k], c0)
                hi = min(seg[k + 1], c1)
                if hi > lo:
                    if want_x:
                        _gemm(gg[lo - c0:hi - c0], wt[wk[k]], pr[lo - c0:hi - c0], False, 0.0)
                    if want_w:                    # chunks of one offset add up in pair order
                        _gemm(xg[lo - c0:hi - c0], gg[lo - c0:hi - c0], part[wk[k]], True, 1.0)
            if want_x:
                _scatter_add_rows(gx, dst, c0, c1, pr)
        c0 = c1


@njit(cache=True, nogil=True, inline="always")
def _scratch_view(scratch, offs, shapes, i):
    """Buffer ``i`` (shape ``shapes[i]``, at element offset ``offs[i]``) of the running thread's
    scratch row."""
    t = numba.get_thread_id()
    r, c = shapes[i, 0], shapes[i, 1]
    return scratch[t, offs[i]:offs[i] + r * c].reshape((r, c))


@njit(cache=True, nogil=True, parallel=True)
def _pairs_forward_all(x, w, out, bnd, ptr, dst, src, centre, chunk, scratch, offs, shapes, tr,
                       fused, ident):
    """Every block of ``_pairs_forward`` (``prange`` over the blocks, each on one thread with MKL
    at one thread), in the running thread's scratch row (``offs``: element offsets of its two
    buffers, ``shapes`` (2, 2) their shapes). Which thread runs a block changes nothing:
    a block writes only its own output rows, in buffers aligned the same way in every row."""
    nb = bnd.shape[0] - 1
    nk = w.shape[0]
    for b in prange(nb):
        prev = _mkl_local(1)
        g = _scratch_view(scratch, offs, shapes, 0)
        pr = _scratch_view(scratch, offs, shapes, 1)
        _pairs_forward_block(x, w, out, bnd[b], bnd[b + 1], ptr[b * nk:(b + 1) * nk + 1], dst,
                             src, centre, chunk, g, pr, tr, fused, ident)
        _mkl_local(prev)


@njit(cache=True, nogil=True, parallel=True)
def _pairs_backward_all(x, gout, wt, gx, parts, bnd, ptr, dst, src, centre, wk, chunk, scratch,
                        offs, shapes, want_x, want_w, tr, fused, ident):
    """Every block of ``_pairs_backward`` (as ``_pairs_forward_all``); ``parts[b]`` receives block
    b's weight-gradient partial (the caller adds them in block order)."""
    nb = bnd.shape[0] - 1
    nk = wt.shape[0]
    for b in prange(nb):
        prev = _mkl_local(1)
        gg = _scratch_view(scratch, offs, shapes, 0)
        xg = _scratch_view(scratch, offs, shapes, 1)
        pr = _scratch_view(scratch, offs, shapes, 2)
        part = parts[b] if want_w else parts[0]
        _pairs_backward_block(x, gout, wt, gx, part, bnd[b], bnd[b + 1],
                              ptr[b * nk:(b + 1) * nk + 1], dst, src, centre, wk, chunk, gg, xg,
                              pr, want_x, want_w, tr, fused, ident)
        _mkl_local(prev)


@njit(cache=True, parallel=True)
def _sum_parts(parts, out):
    """out += parts[0] + parts[1] + ... with every element added up in block order (parallel over
    spans of elements: the same bits at every thread count)."""
    nb = parts.shape[0]
    flat = parts.reshape((nb, -1))
    o = out.reshape(-1)
    n = o.shape[0]
    span = 4096
    for t in prange((n + span - 1) // span):
        for b in range(nb):
            for j in range(t * span, min(n, (t + 1) * span)):
                o[j] += flat[b, j]


_par_lock = threading.Lock()         # one parallel layer at a time (shared scratch; Numba's
_par_scratch: dict = {}              # OpenMP layer is not re-entrant from several Python threads)


def _thread_scratch(dtype: np.dtype, shapes, nthreads: int):
    """(scratch (nthreads, stride) of ``dtype``, element offsets of ``shapes`` in a row): each row
    and each buffer start on an ``_ALIGN`` boundary. Kept and grown; use under ``_par_lock``."""
    item = dtype.itemsize
    al = _ALIGN // item
    offs, pos = [], 0
    for r, c in shapes:
        offs.append(pos)
        pos += -(-(r * c) // al) * al
    stride = max(al, pos)
    key = dtype.str
    raw = _par_scratch.get(key)
    if raw is None or raw[1] < stride or raw[2] < nthreads:
        stride = max(stride, raw[1] if raw else 0, 3 * _PAIR_BYTES // item)
        stride = -(-stride // al) * al
        n = max(nthreads, raw[2] if raw else 0)
        mem = np.empty(n * stride + al, dtype)
        start = (-mem.ctypes.data % _ALIGN) // item
        raw = _par_scratch[key] = (mem[start:start + n * stride].reshape(n, stride), stride, n)
    return raw[0], np.asarray(offs, np.int64)


class _NumbaThreads:
    """Numba's thread count set to ``threads`` (capped at its pool size) for the with-block."""

    def __init__(self, threads: int):
        self.want = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))

    def __enter__(self):
        self.before = numba.get_num_threads()
        numba.set_num_threads(self.want)
        # Blocks are handed out one at a time (they differ in cost); which thread runs which
        # block does not change the result.
        self.chunk = numba.set_parallel_chunksize(1)
        return self.want

    def __exit__(self, *exc):
        numba.set_parallel_chunksize(self.chunk)
        numba.set_num_threads(self.before)
        return False


def _fused(dtype: np.dtype, *widths: int) -> bool:
    """Whether the fused kernels run a layer's blocks: float32, every result width within
    ``kernels.MAX_WIDTH``, the kernels built, ``FUSED`` on."""
    return (FUSED and KERNELS_UNAVAILABLE is None and dtype == np.float32
            and max(widths) <= _kernels.MAX_WIDTH)


_ident = np.arange(1 << 16, dtype=np.int32)


def _identity(n: int) -> np.ndarray:
    """int32 0, 1, ..., at least n long (the centre offset's pair list: row r with itself)."""
    global _ident
    if _ident.shape[0] < n:
        _ident = np.arange(max(n, 2 * _ident.shape[0]), dtype=np.int32)
    return _ident


def _chunk_rows(cin: int, cout: int, itemsize: int) -> int:
    """Pairs per chunk (gathered and multiplied at once): each buffer at most ``_PAIR_BYTES``."""
    return max(_MIN_CHUNK, _PAIR_BYTES // (max(cin, cout, 1) * itemsize))


def _block_pairs(rb: Rulebook, transposed: bool):
    return rb.pairs(transposed, _MIN_BLOCK_PAIRS, _MIN_BLOCK_ROWS, _TARGET_BLOCKS)


def _pairs_forward(x: torch.Tensor, w: torch.Tensor, rb: Rulebook, threads: int) -> torch.Tensor:
    """Output features (N_out, C_out) = sum over pairs of x[src] @ w[k]; w (K, C_in, C_out)."""
    nk, cin, cout = w.shape
    out = x.new_empty(rb.n_out, cout)
    if rb.n_out == 0:
        return out
    if x.shape[0] == 0:
        return out.zero_()
    pb = _block_pairs(rb, False)
    chunk = _chunk_rows(cin, cout, x.element_size())
    x_np, w_np, out_np = x.numpy(), w.numpy(), out.numpy()
    dt = x_np.dtype

    tr = cout <= _NARROW_FORWARD
    shapes = [(cin, chunk), (cout, chunk)] if tr else [(chunk, cin), (chunk, cout)]

    with _par_lock, _NumbaThreads(threads):
        scratch, offs = _thread_scratch(dt, shapes, numba.config.NUMBA_NUM_THREADS)
        _pairs_forward_all(x_np, w_np, out_np, pb.bounds, pb.ptr, pb.dst, pb.src, pb.centre,
                           chunk, scratch, offs, np.asarray(shapes, np.int64), tr,
                           _fused(dt, cout), _identity(rb.n_out))
    return out


def _pairs_backward(x: torch.Tensor, w: torch.Tensor, gout: torch.Tensor, rb: Rulebook,
                    threads: int, want_x: bool, want_w: bool):
    """(grad features (N_in, C_in) or None, grad weight (K, C_in, C_out) or None), over the
    transposed table: per block of input rows i and offset k with output o = inv[i, k],
    gx[i] += gout[o] @ w[k]^T and gw[k] += x[i]^T gout[o]."""
    nk, cin, cout = w.shape
    gx = x.new_zeros(x.shape) if want_x else None
    gw = x.new_zeros(nk, cin, cout) if want_w else None
    if rb.n_in == 0 or rb.n_out == 0:
        return gx, gw
    pb = _block_pairs(rb, True)
    chunk = _chunk_rows(cin, cout, x.element_size())
    wt_np = w.transpose(1, 2).contiguous().numpy()          # (K, C_out, C_in)
    x_np, g_np_all = x.numpy(), gout.numpy()
    gx_np = gx.numpy() if want_x else np.empty((0, cin), x_np.dtype)
    # weight offset of each list segment (reversed when the lists are the forward table's)
    wk = np.arange(nk - 1, -1, -1) if pb.flipped else np.arange(nk)
    dt = x_np.dtype

    tr = max(cin, cout) <= _NARROW     # (C_in 8, C_out 16: the weight gradient loses more)
    if tr:
        shapes = [(cout, chunk), (cin, chunk) if want_w else (cin, 0),
                  (cin, chunk) if want_x else (cin, 0)]
    else:
        shapes = [(chunk, cout), (chunk, cin) if want_w else (0, cin),
                  (chunk, cin) if want_x else (0, cin)]

    parts = np.zeros((pb.n_blocks if want_w else 1, nk, cin, cout), dt)
    with _par_lock, _NumbaThreads(threads):
        scratch, offs = _thread_scratch(dt, shapes, numba.config.NUMBA_NUM_THREADS)
        _pairs_backward_all(x_np, g_np_all, wt_np, gx_np, parts, pb.bounds, pb.ptr, pb.dst,
                            pb.src, pb.centre, wk, chunk, scratch, offs,
                            np.asarray(shapes, np.int64), want_x, want_w, tr,
                            _fused(dt, cin, cout), _identity(rb.n_in))
    if want_w:                                # block order: independent of the thread count
        _sum_parts(parts, gw.numpy())
    return gx, gw


def _weight_k_in_out(weight: torch.Tensor) -> torch.Tensor:
    """spconv's KRSC weight (C_out, kz, ky, kx, C_in), detached, as (K, C_in, C_out) contiguous:
    the matrix of kernel offset k is ``[k]``."""
    cout, cin = weight.shape[0], weight.shape[-1]
    return weight.detach().reshape(cout, -1, cin).permute(1, 2, 0).contiguous()


class _PairConvFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, features, weight, bias, rb, threads):
        out = _pairs_forward(features.detach().contiguous(), _weight_k_in_out(weight), rb, threads)
        if bias is not None:
            out += bias.detach()
        ctx.save_for_backward(features, weight)
        ctx.rb = rb
        ctx.threads = threads
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, gout):
        features, weight = ctx.saved_tensors
        gout = gout.contiguous()
        w = _weight_k_in_out(weight)
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = gw = gb = None
        if want_x or want_w:
            gx, gwk = _pairs_backward(features.detach().contiguous(), w, gout, ctx.rb, ctx.threads,
                                      want_x, want_w)
            if want_w:
                gw = gwk.permute(2, 0, 1).reshape(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = torch.from_numpy(_column_sums(gout.numpy())).to(gout.dtype)
        return gx, gw, gb, None, None


class _SparseConvFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, features, weight, bias, nbr, inv_fn, threads):
        wmat = _weight_k_in_out(weight).reshape(-1, weight.shape[0])      # (K * C_in, C_out)
        with _ThreadScope():
            out = gather_mm(features.detach().contiguous(), nbr, wmat, threads)
        if bias is not None:
            out += bias.detach()
        ctx.save_for_backward(features, weight)
        ctx.nbr = nbr
        ctx.inv_fn = inv_fn
        ctx.threads = threads
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, gout):
        features, weight = ctx.saved_tensors
        gout = gout.contiguous()
        cout = weight.shape[0]
        cin = weight.shape[-1]
        nk = ctx.nbr.shape[1]
        gx = gw = gb = None
        with _ThreadScope():
            if ctx.needs_input_grad[0]:
                wmat_t = weight.detach().reshape(cout, nk, cin).permute(1, 0, 2) \
                    .reshape(nk * cout, cin).contiguous()
                gx = gather_mm(gout, ctx.inv_fn(), wmat_t, ctx.threads)
            want_b = ctx.has_bias and ctx.needs_input_grad[2]
            if ctx.needs_input_grad[1] or want_b:
                gwm, gb = _weight_grad(features.detach().contiguous(), ctx.nbr, gout,
                                       ctx.threads, want_b)
                if ctx.needs_input_grad[1]:
                    gw = gwm.view(nk, cin, cout).permute(2, 0, 1).reshape(weight.shape)
        return gx, gw, gb, None, None, None


def sparse_conv_apply(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      rulebook: Rulebook, threads: int | None = None,
                      algorithm: str | None = None) -> torch.Tensor:
    """Output features (N_out, C_out) of a sparse conv with spconv's KRSC ``weight``
    (C_out, kz, ky, kx, C_in) over ``rulebook``; differentiable in features, weight and bias.
    ``threads``: default torch's intra-op thread count; ``algorithm``: ``"pairs"`` or
    ``"im2col"`` (default ``ALGORITHM``: the environment's ``OPS_SPARSE_CONV_ALGORITHM`` or
    ``"pairs"``; "im2col", with a warning, where torch exports no GEMM ``BLAS_UNAVAILABLE``)."""
    if features.shape[0] != rulebook.n_in:
        raise ValueError(f"sparse conv: {features.shape[0]} feature rows for a rulebook of "
                         f"{rulebook.n_in} input sites")
    if features.shape[1] != weight.shape[-1]:
        raise ValueError(f"sparse conv: features have {features.shape[1]} channels, the weight "
                         f"{tuple(weight.shape)} expects {weight.shape[-1]}")
    if features.is_cuda:
        raise ValueError("ops.sparse_conv runs on the CPU; use spconv on CUDA")
    threads = torch.get_num_threads() if threads is None else int(threads)
    algorithm = ALGORITHM if algorithm is None else algorithm
    if algorithm == "pairs" and BLAS_UNAVAILABLE is not None:
        global _warned_fallback
        if not _warned_fallback:
            warnings.warn(f"ops.sparse_conv: the 'pairs' algorithm needs MKL's GEMM from torch "
                          f"({BLAS_UNAVAILABLE}); running 'im2col' instead (same results, slower)",
                          RuntimeWarning, stacklevel=2)
            _warned_fallback = True
        algorithm = "im2col"
    if algorithm == "pairs":
        return _PairConvFunction.apply(features, weight, bias, rulebook, threads)
    if algorithm != "im2col":
        raise ValueError(f"sparse conv: algorithm must be one of {list(ALGORITHMS)}, got "
                         f"{algorithm!r}")
    nbr, inv_fn = rulebook.tensors()
    return _SparseConvFunction.apply(features, weight, bias, nbr, inv_fn, threads)
