"""Gather-GEMM of a sparse convolution over a :class:`~ops.sparse_conv.rulebook.Rulebook`,
forward and backward, deterministic at every thread count.

Forward, for a block of output rows: gather the ``K`` input rows each output reads (the zero row
where a site is empty) into a ``(rows, K * C_in)`` buffer and multiply it by the weight laid
out as ``(K * C_in, C_out)``. Backward to the features is the same operation over the
transposed rulebook with the transposed weight (each input row gathers the output gradients of
the outputs that read it), so no row is ever accumulated by two threads. The weight gradient is
``buffer^T @ grad_out`` per block, and the blocks' partial sums are added in block order.

Parallelism: the blocks (a fixed number of rows each, chosen from the layer's shape only) run on
a small pool of Python threads, each block's torch ops with one intra-op thread. torch's GEMM
(MKL) gives different bits at different thread counts when it splits a reduction, so a block's
result is computed one-threaded; blocks and their order do not depend on the number of threads,
hence neither do the results. The gather buffer of a block is at most ``_BLOCK_BYTES`` and at
most one block per thread is alive, so memory stays bounded whatever the voxel count.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit

from ops.sparse_conv.rulebook import Rulebook

__all__ = ["sparse_conv_apply", "gather_mm"]

_BLOCK_BYTES = 2 << 20        # gather buffer per block (2 MiB: stays in the L2/L3 caches)
_MIN_ROWS = 256
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


class _SparseConvFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, features, weight, bias, nbr, inv_fn, threads):
        cout = weight.shape[0]
        cin = weight.shape[-1]
        nk = nbr.shape[1]
        w = weight.detach()
        wmat = w.reshape(cout, nk, cin).permute(1, 2, 0).reshape(nk * cin, cout)
        with _ThreadScope():
            out = gather_mm(features.detach().contiguous(), nbr, wmat.contiguous(), threads)
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
                      rulebook: Rulebook, threads: int | None = None) -> torch.Tensor:
    """Output features (N_out, C_out) of a sparse conv with spconv's KRSC ``weight``
    (C_out, kz, ky, kx, C_in) over ``rulebook``; differentiable in features, weight and bias."""
    if features.shape[0] != rulebook.n_in:
        raise ValueError(f"sparse conv: {features.shape[0]} feature rows for a rulebook of "
                         f"{rulebook.n_in} input sites")
    if features.shape[1] != weight.shape[-1]:
        raise ValueError(f"sparse conv: features have {features.shape[1]} channels, the weight "
                         f"{tuple(weight.shape)} expects {weight.shape[-1]}")
    if features.is_cuda:
        raise ValueError("ops.sparse_conv runs on the CPU; use spconv on CUDA")
    threads = torch.get_num_threads() if threads is None else int(threads)
    nbr, inv_fn = rulebook.tensors()
    return _SparseConvFunction.apply(features, weight, bias, nbr, inv_fn, threads)
