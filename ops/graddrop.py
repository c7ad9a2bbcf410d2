"""GradDrop (Gradient Sign Dropout): the combination rule and the autograd layer.

Implements docs/GRADDROP.md (Chen et al., "Just Pick a Sign", NeurIPS 2020, arXiv 2010.06808,
with the renormalisation direction of the fixed lingvo layer). Section numbers below ("step 3")
refer to the "Forward and backward" list of that file.

Public API::

    from ops.graddrop import GradDrop, graddrop_combine, graddrop_combine_reference

    gd = GradDrop(num_tasks=2)              # nn.Module: x -> (x_task0, x_task1)
    out = graddrop_combine(grads, activation)

Three implementations of one rule, chosen by ``backend``:

- ``"reference"``: the spec's formulas written out literally with torch ops (used by tests).
- ``"numba"`` (default for CPU tensors of 16384 elements or more): a chunked, fused kernel.
  For each chunk of feature positions it reads the activation and the k gradients once from
  memory, keeps them in cache while it computes P, the random draw and the masks, and writes
  the combined gradient: the memory traffic of the plain sum plus one read of the activation,
  and no buffer but the output (about 1.8x the plain sum's time for 2 tasks here; see
  docs/benchmarks/graddrop.md).
- ``"torch"`` (default for other devices, i.e. CUDA, and for tiny CPU inputs): the same
  arithmetic as torch ops that never read a value back to the host (no ``.item()``, no
  data-dependent shapes), so it runs asynchronously on a GPU. Tests run it on the ``meta``
  device to prove that.

All three give bit-identical results for the same generator state (renormalisation aside, where
the global norms are reductions whose summation order differs: equal to ~1 ulp). For that, the
random draw U is not taken from torch's generator element by element: the generator supplies
two 32-bit seeds, and U at position index n is a fixed integer hash of (n, seeds), evaluated the
same way inside the Numba kernel and with int64 torch ops. U lies on the grid (2m + 1) / 2**24,
strictly inside (0, 1) and never exactly 0.5, so with the random-sign ablation exactly one sign
is kept at every position.

Choices where the spec leaves room (documented here, pinned by tests):

- A position where no G_i is negative keeps the positive side with probability 1 (and one with
  no positive G_i keeps the negative side), whatever f and eps are. With the literal formula
  `P = 0.5 (1 + sum G / (sum |G| + eps))` such a position has P slightly below 1 and, for
  `sigmoid` or a scale below 1, f(P) < 1: it would sometimes drop a gradient nobody disagrees
  with, contradicting the spec's property "where all G_i share one sign, nothing is dropped".
  The random-sign ablation (step 9) is left literal: it keeps one random sign everywhere.
- The weight `l_i + (1 - l_i) M_i` is evaluated as the select `1 if M_i else l_i` (equal for
  M_i in {0, 1}), so a kept gradient passes bit-exactly and all-leaks-1 equals the plain sum.
- With a single task (``len(grads) == 1``) the combination is the identity, as the spec requires
  ("with one task, GradDrop is the identity in both directions"), even where the literal rule
  would zero the gradient (G == 0 because the input is 0).
- Gradients that are ``None`` count as zero (they are simply left out of every sum). If all are
  ``None`` the result is zeros (the autograd layer returns ``None`` instead).
- Sums over the batch (step 2) and over tasks run in a fixed sequential order in every backend,
  in float32 for float16/bfloat16/float32 gradients and float64 for float64 gradients; the
  result has the gradients' dtype. The sigmoid keep probability is evaluated in float64 and
  rounded to the compute dtype.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["GradDrop", "graddrop_combine", "graddrop_combine_reference", "graddrop_uniform"]

KEEP_PROB_FUNCTIONS = ("linear", "sigmoid")
BACKENDS = ("auto", "numba", "torch", "reference")

# Feature positions per kernel chunk are chosen so that one chunk of one array holds about this
# many elements (B * positions): small enough that activation + k gradients + output of a chunk
# stay in the 1 MiB L2 cache between the two passes, large enough to amortise the per-chunk
# set-up (16384 was the fastest of 2K..64K for k = 2 and 6 here). Results never depend on it,
# except the renormalisation's summation order.
_CHUNK_ELEMENTS = 16384
# Below this many activation elements backend="auto" uses the torch ops on the CPU as well.
_NUMBA_MIN_ELEMENTS = 16384

# ---------------------------------------------------------------------------------------------
# The random draw: U(n) = hash(n, seed0, seed1), identical in Numba and in torch.
# The mixer is the "lowbias32" integer hash (two xor-shift-multiply rounds, constants found by
# C. Wellons' hash prospector); it is a bijection of 32-bit words, so distinct positions never
# share a hash within one draw.
# ---------------------------------------------------------------------------------------------
_MIX_MUL1 = 0x7FEB352D
_MIX_MUL2 = 0x846CA68B
_U32 = 0xFFFFFFFF
_U_STEP = 2.0 ** -24

_NB_U32 = np.uint64(_U32)
_NB_MUL1 = np.uint64(_MIX_MUL1)
_NB_MUL2 = np.uint64(_MIX_MUL2)
_NB_SH9 = np.uint64(9)
_NB_SH15 = np.uint64(15)
_NB_SH16 = np.uint64(16)
_NB_SH32 = np.uint64(32)
_NB_ONE = np.uint64(1)
_NB_TWO = np.uint64(2)
_NB_U_STEP = np.float32(_U_STEP)


@njit(cache=True, inline="always")
def _mix32_nb(x):
    # x: uint64 holding a 32-bit word; every constant is uint64 so Numba never goes to float.
    x ^= x >> _NB_SH16
    x = (x * _NB_MUL1) & _NB_U32
    x ^= x >> _NB_SH15
    x = (x * _NB_MUL2) & _NB_U32
    x ^= x >> _NB_SH16
    return x


@njit(cache=True, inline="always")
def _uniform_nb(index, seed0, seed1):
    n = np.uint64(index)
    x = _mix32_nb((n & _NB_U32) ^ seed0)
    x = _mix32_nb(x ^ (n >> _NB_SH32) ^ seed1)
    odd = (x >> _NB_SH9) * _NB_TWO + _NB_ONE  # < 2**24: exact in float32
    return np.float32(odd) * _NB_U_STEP


def _mulmod32_torch(x: Tensor, c: int) -> Tensor:
    # (x * c) mod 2**32 for x < 2**32 without ever overflowing int64: split c into 16-bit halves.
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _U32


def _mix32_torch(x: Tensor) -> Tensor:
    x = x ^ (x >> 16)
    x = _mulmod32_torch(x, _MIX_MUL1)
    x = x ^ (x >> 15)
    x = _mulmod32_torch(x, _MIX_MUL2)
    return x ^ (x >> 16)


def graddrop_uniform(seeds: Tensor, count: int, device: Optional[torch.device] = None) -> Tensor:
    """U for position indices 0..count-1 (float32, in (0, 1)), as the kernels draw it.

    ``seeds`` is an int64 tensor of two values in [0, 2**32) (see ``_draw_seeds``). Uses only
    device-side tensor ops, so it does not synchronise with a GPU.
    """
    device = seeds.device if device is None else device
    seeds = seeds.to(device)
    index = torch.arange(count, device=device, dtype=torch.int64)
    x = _mix32_torch((index & _U32) ^ seeds[0])
    x = _mix32_torch(x ^ (index >> 32) ^ seeds[1])
    odd = (x >> 9) * 2 + 1
    return odd.to(torch.float32) * _U_STEP


def _draw_seeds(generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    """Two 32-bit seeds for one GradDrop draw, from ``generator`` or the device's default one."""
    gen_device = generator.device if generator is not None else device
    seeds = torch.randint(0, 2 ** 32, (2,), generator=generator, device=gen_device,
                          dtype=torch.int64)
    return seeds.to(device)


# ---------------------------------------------------------------------------------------------
# Validation shared by every backend.
# ---------------------------------------------------------------------------------------------
def _check_options(num_tasks: int, leaks, keep_prob: str, scale: float, eps: float,
                   where: str) -> tuple[float, ...]:
    if keep_prob not in KEEP_PROB_FUNCTIONS:
        raise ValueError(f"{where}: keep_prob must be one of {KEEP_PROB_FUNCTIONS}, "
                         f"got {keep_prob!r}")
    if not (isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"{where}: scale must be a finite number > 0 (f(P) must increase "
                         f"with P), got {scale!r}")
    if not (isinstance(eps, numbers.Real) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{where}: eps must be a finite number >= 0, got {eps!r}")
    if leaks is None:
        leaks = (0.0,) * num_tasks
    elif isinstance(leaks, numbers.Real):
        leaks = (float(leaks),) * num_tasks
    else:
        leaks = tuple(leaks)
        if len(leaks) != num_tasks:
            raise ValueError(f"{where}: leaks has {len(leaks)} values for {num_tasks} tasks")
    for i, leak in enumerate(leaks):
        if not (isinstance(leak, numbers.Real) and 0.0 <= float(leak) <= 1.0):
            raise ValueError(f"{where}: leaks[{i}] must be a number in [0, 1], got {leak!r}")
    return tuple(float(v) for v in leaks)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # P and all sums in float32 for AMP dtypes (spec: "compute P in float32"), float64 kept.
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------------
# Public function.
# ---------------------------------------------------------------------------------------------
def graddrop_combine(grads: Sequence[Optional[Tensor]], activation: Tensor,
                     leaks: Optional[Sequence[float] | float] = None,
                     batch_separated: bool = True, keep_prob: str = "linear", scale: float = 1.0,
                     renormalize: bool = False, use_input_sign: bool = True,
                     random_sign: bool = False, eps: float = 1e-7,
                     generator: Optional[torch.Generator] = None,
                     backend: str = "auto") -> Tensor:
    """Combine per-task gradients of one shared activation with GradDrop (docs/GRADDROP.md).

    Args:
        grads: k gradients ``dL_i/dA`` shaped like ``activation`` (one dtype for all), or ``None``
            for a task that did not use the activation (counts as zero).
        activation: the shared activation ``A`` (its sign, or value, weighs the gradients).
        leaks: per-task leak ``l_i`` in [0, 1]; ``None`` = all 0 (pure GradDrop); a single number
            applies to every task. ``l_i = 1`` passes task i through untouched.
        batch_separated: sum ``G_i`` over dim 0 and draw one mask per feature position
            (default True, the detection setting); False draws one per element.
        keep_prob: ``"linear"`` (``0.5 + scale (P - 0.5)`` clipped to [0, 1]; exactly P for
            scale 1) or ``"sigmoid"`` (``sigmoid(4 scale (P - 0.5))``).
        scale: the slope k of the keep-probability function, > 0. Default 1.0.
        renormalize: rescale the result to the L2 norm of the plain sum (default False).
        use_input_sign: ``G_i = sign(A) g_i`` with ``|A| <= eps`` as 0 (default True); False uses
            ``G_i = A g_i``.
        random_sign: the paper's ablation: keep probability 0.5 everywhere (default False).
        eps: the spec's epsilon (sign threshold, P denominator, renormalisation); default 1e-7.
        generator: a ``torch.Generator`` on the activation's device (or the CPU) for
            reproducible draws; ``None`` uses torch's default generator.
        backend: ``"auto"`` (Numba on CPU, torch ops elsewhere and for tiny CPU inputs),
            ``"numba"``, ``"torch"`` or ``"reference"``.

    Returns:
        The combined gradient, shaped like ``activation``, in the gradients' dtype.
    """
    where = "graddrop_combine"
    if not isinstance(activation, Tensor):
        raise TypeError(f"{where}: activation must be a torch.Tensor, "
                        f"got {type(activation).__name__}")
    if not activation.is_floating_point():
        raise TypeError(f"{where}: activation must be floating point, got {activation.dtype}")
    if batch_separated and activation.dim() == 0:
        raise ValueError(f"{where}: batch_separated=True needs a batch dim 0, got a 0-d activation")
    if isinstance(grads, Tensor) or not isinstance(grads, Sequence) or len(grads) == 0:
        raise TypeError(f"{where}: grads must be a non-empty list/tuple of tensors or None")
    if backend not in BACKENDS:
        raise ValueError(f"{where}: backend must be one of {BACKENDS}, got {backend!r}")
    leaks = _check_options(len(grads), leaks, keep_prob, scale, eps, where)

    present = []
    for i, g in enumerate(grads):
        if g is None:
            continue
        if not isinstance(g, Tensor):
            raise TypeError(f"{where}: grads[{i}] must be a tensor or None, got {type(g).__name__}")
        if g.shape != activation.shape:
            raise ValueError(f"{where}: grads[{i}] has shape {tuple(g.shape)}, the activation "
                             f"{tuple(activation.shape)}")
        if g.device != activation.device:
            raise ValueError(f"{where}: grads[{i}] is on {g.device}, the activation on "
                             f"{activation.device}")
        if not g.is_floating_point():
            raise TypeError(f"{where}: grads[{i}] must be floating point, got {g.dtype}")
        if present and g.dtype != present[0][1].dtype:
            raise TypeError(f"{where}: grads[{i}] is {g.dtype} but grads[{present[0][0]}] is "
                            f"{present[0][1].dtype}; all gradients must share one dtype")
        present.append((i, g))

    if not present:
        return torch.zeros_like(activation)
    if activation.numel() == 0:
        return torch.zeros_like(present[0][1])
    if len(grads) == 1:
        return grads[0]  # one task: nothing to resolve, the identity (spec property)

    task_leaks = tuple(leaks[i] for i, _ in present)
    task_grads = [g for _, g in present]
    activation = activation.detach()
    seeds = _draw_seeds(generator, activation.device)

    if backend == "auto":
        # Tiny CPU inputs go to the torch ops too: the parallel kernel's fixed launch cost
        # (~several ms here) exceeds their whole work. The results are identical either way.
        cpu_kernel = activation.device.type == "cpu" and activation.numel() >= _NUMBA_MIN_ELEMENTS
        backend = "numba" if cpu_kernel else "torch"
    if backend == "numba" and activation.device.type != "cpu":
        raise ValueError(f"{where}: backend='numba' needs CPU tensors, got {activation.device}")
    if backend == "numba" and len(task_grads) > _KERNEL_MAX_TASKS:
        backend = "torch"  # correct, only slower; see _KERNEL_MAX_TASKS
    impl = {"numba": _combine_numba, "torch": _combine_torch, "reference": _combine_reference}
    return impl[backend](task_grads, activation, task_leaks, seeds, batch_separated, keep_prob,
                         float(scale), renormalize, use_input_sign, random_sign, float(eps))


def graddrop_combine_reference(grads: Sequence[Optional[Tensor]], activation: Tensor,
                               leaks=None, batch_separated: bool = True,
                               keep_prob: str = "linear", scale: float = 1.0,
                               renormalize: bool = False, use_input_sign: bool = True,
                               random_sign: bool = False, eps: float = 1e-7,
                               generator: Optional[torch.Generator] = None) -> Tensor:
    """``graddrop_combine`` with the literal torch reference implementation (slow; for tests)."""
    return graddrop_combine(grads, activation, leaks, batch_separated, keep_prob, scale,
                            renormalize, use_input_sign, random_sign, eps, generator,
                            backend="reference")


# ---------------------------------------------------------------------------------------------
# Reference: the spec, step by step, in torch ops.
# ---------------------------------------------------------------------------------------------
def _keep_positive_probability(p: Tensor, has_pos: Tensor, has_neg: Tensor, keep_prob: str,
                               scale: float, random_sign: bool) -> Tensor:
    """f(P) of steps 4 and 9, with unanimous positions forced to keep their sign."""
    if random_sign:
        return torch.full_like(p, 0.5)
    if keep_prob == "linear":
        q = p if scale == 1.0 else torch.clamp(0.5 + scale * (p - 0.5), 0.0, 1.0)
    else:
        t = (4.0 * scale) * (p.to(torch.float64) - 0.5)
        q = (1.0 / (1.0 + torch.exp(-t))).to(p.dtype)
    q = torch.where(has_neg, q, torch.ones_like(q))
    return torch.where(has_pos | ~has_neg, q, torch.zeros_like(q))


def _combine_reference(grads, activation, leaks, seeds, batch_separated, keep_prob, scale,
                       renormalize, use_input_sign, random_sign, eps):
    cd = _compute_dtype(grads[0].dtype)
    a = activation.to(cd)
    g = [gi.to(cd) for gi in grads]
    eps_t = torch.full((), eps, dtype=cd, device=a.device)

    # Step 1: G_i = s(A) * g_i.
    if use_input_sign:
        s = torch.where(a.abs() <= eps_t, torch.zeros_like(a), torch.sign(a))
    else:
        s = a
    big_g = [s * gi for gi in g]
    # Step 2: sum over the batch, row by row (a fixed order every backend follows).
    if batch_separated:
        summed = []
        for gi in big_g:
            acc = torch.zeros_like(gi[0])
            for b in range(gi.shape[0]):
                acc = acc + gi[b]
            summed.append(acc)
        big_g = summed
    # Step 3: P = 0.5 (1 + sum G / (sum |G| + eps)).
    sum_g = torch.zeros_like(big_g[0])
    sum_abs = torch.zeros_like(big_g[0])
    for gi in big_g:
        sum_g = sum_g + gi
        sum_abs = sum_abs + gi.abs()
    p = 0.5 * (1.0 + sum_g / (sum_abs + eps_t))
    has_pos = torch.stack([gi > 0 for gi in big_g]).any(0)
    has_neg = torch.stack([gi < 0 for gi in big_g]).any(0)
    # Steps 4 and 9: keep probability of the positive side.
    q = _keep_positive_probability(p, has_pos, has_neg, keep_prob, scale, random_sign)
    # Step 5: U, one per position of P, indexed in row-major order.
    u = graddrop_uniform(seeds, p.numel(), device=a.device).reshape(p.shape)
    # Steps 6 and 7: masks, broadcast over the batch, and the leaky sum.
    out = torch.zeros_like(g[0])
    for gi, big_gi, leak in zip(g, big_g, leaks):
        m = ((q > u) & (big_gi > 0)) | ((q < u) & (big_gi < 0))
        w = torch.where(m, torch.ones_like(q), torch.full_like(q, leak))
        out = out + w * gi
    # Step 8: keep the L2 norm of the plain sum.
    if renormalize:
        plain = torch.zeros_like(g[0])
        for gi in g:
            plain = plain + gi
        ratio = (torch.linalg.vector_norm(plain.to(torch.float64))
                 / (torch.linalg.vector_norm(out.to(torch.float64)) + eps))
        out = out * ratio.to(cd)
    return out.to(grads[0].dtype)


# ---------------------------------------------------------------------------------------------
# Torch path for GPUs: the reference's arithmetic in the same order, with fewer temporaries and
# nothing read back to the host.
# ---------------------------------------------------------------------------------------------
def _combine_torch(grads, activation, leaks, seeds, batch_separated, keep_prob, scale,
                   renormalize, use_input_sign, random_sign, eps):
    cd = _compute_dtype(grads[0].dtype)
    shape = activation.shape
    rows = shape[0] if batch_separated else 1
    a = activation.reshape(rows, -1).to(cd)
    g = [gi.reshape(rows, -1).to(cd) for gi in grads]
    # 0-d constants made on the device (torch.full), not copied from the host.
    eps_t = torch.full((), eps, dtype=cd, device=a.device)
    one_t = torch.ones((), dtype=cd, device=a.device)

    if use_input_sign:
        s = (a > eps_t).to(cd) - (a < -eps_t).to(cd)
    else:
        s = a
    big_g = []
    for gi in g:
        acc = s[0] * gi[0]
        for b in range(1, rows):
            acc += s[b] * gi[b]
        big_g.append(acc)
    sum_g = big_g[0].clone()
    sum_abs = big_g[0].abs()
    has_pos = big_g[0] > 0
    has_neg = big_g[0] < 0
    for gi in big_g[1:]:
        sum_g += gi
        sum_abs += gi.abs()
        has_pos |= gi > 0
        has_neg |= gi < 0
    p = (sum_g / (sum_abs + eps_t) + 1.0) * 0.5
    q = _keep_positive_probability(p, has_pos, has_neg, keep_prob, scale, random_sign)
    u = graddrop_uniform(seeds, p.numel(), device=a.device)
    keep_pos = q > u
    keep_neg = q < u
    out = None
    for gi, big_gi, leak in zip(g, big_g, leaks):
        m = (keep_pos & (big_gi > 0)) | (keep_neg & (big_gi < 0))
        w = torch.where(m, one_t, torch.full((), leak, dtype=cd, device=a.device))
        term = gi * w
        out = term if out is None else out.add_(term)
    if renormalize:
        plain = g[0].clone()
        for gi in g[1:]:
            plain += gi
        ratio = (torch.linalg.vector_norm(plain, dtype=torch.float64)
                 / (torch.linalg.vector_norm(out, dtype=torch.float64) + eps))
        out.mul_(ratio.to(cd))
    return out.reshape(shape).to(grads[0].dtype)


# ---------------------------------------------------------------------------------------------
# Fused Numba CPU kernel.
# ---------------------------------------------------------------------------------------------
_MODE_IDENTITY, _MODE_LINEAR, _MODE_SIGMOID, _MODE_RANDOM = 0, 1, 2, 3
# The kernel takes the gradients as a fixed-length tuple (Numba compiles one version per tuple
# length; padding keeps that to one per dtype). More tasks than this go to the torch backend.
_KERNEL_MAX_TASKS = 16


@njit(parallel=True, cache=True)
def _graddrop_kernel(a, grads, k, leaks, consts, seed0, seed1, use_sign, mode, sigmoid_slope,
                     renorm, chunk, out, partials):
    """One pass over memory: per chunk of positions, G_i, P, U, masks and the leaky sum.

    a, grads[i < k], out: (B, N) C-contiguous, all of the compute dtype. grads is padded to
    _KERNEL_MAX_TASKS with dummies, so one compilation per dtype serves every k.
    consts = [0, 0.5, 1, eps, scale] in the compute dtype, so every float operation stays in it.
    partials: (nchunks, 2) float64 for renormalisation: sum out^2 and sum (sum_i g_i)^2.
    """
    rows, n = a.shape
    zero, half, one, eps, scale = consts[0], consts[1], consts[2], consts[3], consts[4]
    nchunks = (n + chunk - 1) // chunk
    for c in prange(nchunks):
        p0 = c * chunk
        p1 = min(p0 + chunk, n)
        size = p1 - p0
        sgn = np.empty((rows, size), a.dtype)
        big_g = np.empty((k, size), a.dtype)
        q = np.empty(size, a.dtype)
        keep = np.empty(size, np.int8)
        # Step 1: s(A) once per chunk; reused by every task.
        for b in range(rows):
            ab = a[b, p0:p1]
            sb = sgn[b]
            if use_sign:
                for j in range(size):
                    sb[j] = (one if ab[j] > eps else zero) - (one if ab[j] < -eps else zero)
            else:
                for j in range(size):
                    sb[j] = ab[j]
        # Step 2: G_i summed over the batch, rows in order (the reference's order).
        for i in range(k):
            gi = grads[i]
            acc = big_g[i]
            gb = gi[0, p0:p1]
            sb = sgn[0]
            for j in range(size):
                acc[j] = sb[j] * gb[j]  # = 0 + s g up to the sign of a zero, which P ignores
            for b in range(1, rows):
                gb = gi[b, p0:p1]
                sb = sgn[b]
                for j in range(size):
                    acc[j] += sb[j] * gb[j]
        # Steps 3-6: P, keep probability, U, which sign survives at each position. Written as
        # separate simple loops over the chunk (mode tests outside them) so LLVM vectorises them.
        # Largest and smallest G_i tell whether any is positive / negative (min/max vectorise
        # where boolean flags would not).
        sum_g = np.zeros(size, a.dtype)
        sum_abs = np.zeros(size, a.dtype)
        g_max = np.zeros(size, a.dtype)
        g_min = np.zeros(size, a.dtype)
        for i in range(k):
            gi = big_g[i]
            for j in range(size):
                v = gi[j]
                sum_g[j] += v
                sum_abs[j] += abs(v)
                g_max[j] = max(g_max[j], v)
                g_min[j] = min(g_min[j], v)
        if mode == _MODE_RANDOM:
            for j in range(size):
                q[j] = half
        else:
            for j in range(size):
                q[j] = half * (one + sum_g[j] / (sum_abs[j] + eps))
            if mode == _MODE_LINEAR:
                for j in range(size):
                    q[j] = min(max(half + scale * (q[j] - half), zero), one)
            elif mode == _MODE_SIGMOID:
                for j in range(size):
                    t = sigmoid_slope * (np.float64(q[j]) - 0.5)
                    q[j] = 1.0 / (1.0 + math.exp(-t))  # rounded to the compute dtype on store
            for j in range(size):
                q[j] = one if g_min[j] >= zero else (zero if g_max[j] <= zero else q[j])
        for j in range(size):
            u = _uniform_nb(p0 + j, seed0, seed1)
            keep[j] = np.int8(q[j] > u) - np.int8(q[j] < u)
        # Step 7 weights, in place of G_i: 1 where the mask keeps g_i, the leak elsewhere.
        for i in range(k):
            leak = leaks[i]
            w = big_g[i]
            for j in range(size):
                v = w[j]
                kept = (keep[j] > 0 and v > zero) or (keep[j] < 0 and v < zero)
                w[j] = one if kept else leak
        # Step 7 sum, while the chunk's gradients are still in cache.
        for b in range(rows):
            ob = out[b, p0:p1]
            w = big_g[0]
            gb = grads[0][b, p0:p1]
            if k == 1:
                for j in range(size):
                    ob[j] = w[j] * gb[j]
            else:  # first two tasks in one sweep: one pass less over the output chunk
                w1 = big_g[1]
                gb1 = grads[1][b, p0:p1]
                for j in range(size):
                    ob[j] = w[j] * gb[j] + w1[j] * gb1[j]
            for i in range(2, k):
                w = big_g[i]
                gb = grads[i][b, p0:p1]
                for j in range(size):
                    ob[j] += w[j] * gb[j]
        if renorm:
            sq_out = 0.0
            sq_sum = 0.0
            for b in range(rows):
                for j in range(size):
                    o = np.float64(out[b, p0 + j])
                    sq_out += o * o
                    plain = grads[0][b, p0 + j]
                    for i in range(1, k):
                        plain += grads[i][b, p0 + j]
                    sq_sum += np.float64(plain) * np.float64(plain)
            partials[c, 0] = sq_out
            partials[c, 1] = sq_sum


def _as_numpy_2d(t: Tensor, rows: int, dtype: torch.dtype) -> np.ndarray:
    t = t.detach().to(dtype)
    if not t.is_contiguous():
        t = t.contiguous()
    return t.reshape(rows, -1).numpy()


def _combine_numba(grads, activation, leaks, seeds, batch_separated, keep_prob, scale,
                   renormalize, use_input_sign, random_sign, eps):
    in_dtype = grads[0].dtype
    cd = _compute_dtype(in_dtype)
    np_cd = np.float64 if cd == torch.float64 else np.float32
    shape = activation.shape
    rows = shape[0] if batch_separated else 1
    a = _as_numpy_2d(activation, rows, cd)
    g = [_as_numpy_2d(gi, rows, cd) for gi in grads]
    k = len(g)
    g = tuple(g + [np.zeros((1, 1), np_cd)] * (_KERNEL_MAX_TASKS - k))
    out_t = torch.empty(shape, dtype=cd)
    out = out_t.reshape(rows, -1).numpy()
    if random_sign:
        mode = _MODE_RANDOM
    elif keep_prob == "sigmoid":
        mode = _MODE_SIGMOID
    else:
        mode = _MODE_IDENTITY if scale == 1.0 else _MODE_LINEAR
    chunk = max(1, _CHUNK_ELEMENTS // rows)
    nchunks = (a.shape[1] + chunk - 1) // chunk
    partials = np.zeros((nchunks if renormalize else 1, 2), np.float64)
    consts = np.array([0.0, 0.5, 1.0, eps, scale], dtype=np_cd)
    seed0, seed1 = (np.uint64(v) for v in seeds.tolist())
    with torch.no_grad():
        _graddrop_kernel(a, g, k, np.array(leaks, dtype=np_cd), consts, seed0, seed1,
                         bool(use_input_sign), mode, 4.0 * scale, bool(renormalize), chunk, out,
                         partials)
    if renormalize:
        sq_out, sq_sum = partials.sum(axis=0)
        ratio = math.sqrt(sq_sum) / (math.sqrt(sq_out) + eps)
        out_t.mul_(torch.tensor(ratio, dtype=cd))
    return out_t.to(in_dtype)


# ---------------------------------------------------------------------------------------------
# The autograd layer.
# ---------------------------------------------------------------------------------------------
class _GradDropFunction(torch.autograd.Function):
    """Forward: k views of A. Backward: graddrop_combine of the k task gradients."""

    @staticmethod
    def forward(ctx, x: Tensor, num_tasks: int, options: dict,
                generator: Optional[torch.Generator]):
        ctx.set_materialize_grads(False)  # unused copies arrive as None: no zero tensors made
        ctx.save_for_backward(x)
        ctx.options = options
        ctx.generator = generator
        # Views, not copies: no memory; autograd forbids in-place edits of multi-output views,
        # so one head cannot silently change another head's input.
        return tuple(x.view_as(x) for _ in range(num_tasks))

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        if all(g is None for g in grads):
            return None, None, None, None
        (x,) = ctx.saved_tensors
        out = graddrop_combine(list(grads), x, generator=ctx.generator, **ctx.options)
        return out, None, None, None


class GradDrop(nn.Module):
    """GradDrop layer: hands the shared activation to k task heads, combines their gradients.

    Forward is the identity: ``gd(x)`` returns a tuple of ``num_tasks`` tensors equal to ``x``
    (views in training mode; ``x`` itself in eval mode, under ``torch.no_grad()``, when ``x``
    needs no gradient, or with one task). Feed copy i to task i's head only. The backward turns
    the k task gradients into one gradient of ``x`` with ``graddrop_combine``.

    Args:
        num_tasks: number of tasks (copies), >= 1.
        leaks: per-task leak in [0, 1] (``None`` = all 0); see ``graddrop_combine``.
        batch_separated: one mask per feature position shared by the batch (default True).
        keep_prob: ``"linear"`` (default) or ``"sigmoid"``.
        scale: slope of the keep-probability function (default 1.0).
        renormalize: keep the L2 norm of the plain gradient sum (default False).
        use_input_sign: weigh gradients by sign(x) (default True) or by x.
        random_sign: the random-sign ablation (default False).
        eps: epsilon of the spec (default 1e-7).
        generator: optional ``torch.Generator`` for the random draws (attribute, may be set later).
        backend: ``"auto"`` (default), ``"numba"``, ``"torch"`` or ``"reference"``.
    """

    def __init__(self, num_tasks: int, leaks: Optional[Sequence[float] | float] = None,
                 batch_separated: bool = True, keep_prob: str = "linear", scale: float = 1.0,
                 renormalize: bool = False, use_input_sign: bool = True,
                 random_sign: bool = False, eps: float = 1e-7,
                 generator: Optional[torch.Generator] = None, backend: str = "auto"):
        super().__init__()
        if not (isinstance(num_tasks, numbers.Integral) and num_tasks >= 1):
            raise ValueError(f"GradDrop: num_tasks must be an integer >= 1, got {num_tasks!r}")
        if backend not in BACKENDS:
            raise ValueError(f"GradDrop: backend must be one of {BACKENDS}, got {backend!r}")
        self.num_tasks = int(num_tasks)
        self.leaks = _check_options(self.num_tasks, leaks, keep_prob, scale, eps, "GradDrop")
        self.batch_separated = bool(batch_separated)
        self.keep_prob = keep_prob
        self.scale = float(scale)
        self.renormalize = bool(renormalize)
        self.use_input_sign = bool(use_input_sign)
        self.random_sign = bool(random_sign)
        self.eps = float(eps)
        self.generator = generator
        self.backend = backend

    def _options(self) -> dict:
        return dict(leaks=self.leaks, batch_separated=self.batch_separated,
                    keep_prob=self.keep_prob, scale=self.scale, renormalize=self.renormalize,
                    use_input_sign=self.use_input_sign, random_sign=self.random_sign,
                    eps=self.eps, backend=self.backend)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if self.batch_separated and x.dim() == 0:
            raise ValueError("GradDrop: batch_separated=True needs an input with a batch dim 0, "
                             "got a 0-d tensor")
        active = self.training and torch.is_grad_enabled() and x.requires_grad
        if not active or self.num_tasks == 1:
            return (x,) * self.num_tasks
        return _GradDropFunction.apply(x, self.num_tasks, self._options(), self.generator)

    def extra_repr(self) -> str:
        return (f"num_tasks={self.num_tasks}, leaks={self.leaks}, "
                f"batch_separated={self.batch_separated}, keep_prob={self.keep_prob!r}, "
                f"scale={self.scale}, renormalize={self.renormalize}, "
                f"use_input_sign={self.use_input_sign}, random_sign={self.random_sign}, "
                f"eps={self.eps}, backend={self.backend!r}")
