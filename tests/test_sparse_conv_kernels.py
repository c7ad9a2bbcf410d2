"""The fused float32 micro-kernels of ops.sparse_conv (``kernels.py``): each kernel against a
float64 NumPy sum on random problems (every vector count, masked widths, group tails, row strides,
empty lists), bit-identical results from code compiled for a CPU without AVX-512, and the
"pairs" convolution with the kernels against the MKL path and a float64 reference on real
rulebooks (features and the three gradients)."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

from ops.sparse_conv import functional as F
from ops.sparse_conv import kernels as K
from ops.sparse_conv.functional import sparse_conv_apply
from ops.sparse_conv.rulebook import build_rulebook

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="ops.sparse_conv is the CPU path (spconv runs on CUDA)")

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIG = ctypes.CFUNCTYPE(None, _P, _I, _P, _I, _P, _P, _I, _P, _I, _I)


def _symbol(name: str) -> int:
    import llvmlite.binding as llvm
    return llvm.address_of_symbol(name)


def test_kernels_are_built_on_this_machine():
    """Linux x86-64 with llvmlite: the kernels compile (so the suite runs the fused path)."""
    assert K.KERNELS_UNAVAILABLE is None
    for v in range(1, K.MAX_VECTORS + 1):
        assert _symbol(K.ggs_name(v)) and _symbol(K.wgrad_name(v))
    assert F._fused(np.dtype(np.float32), 5, 128) and not F._fused(np.dtype(np.float32), 129)
    assert not F._fused(np.dtype(np.float64), 8)


def _problem(rng):
    kin = int(rng.integers(1, 70))
    c = int(rng.integers(1, K.MAX_WIDTH + 1))
    n_a, n_o = int(rng.integers(1, 60)), int(rng.integers(1, 60))
    n = int(rng.integers(0, 2 * n_o))
    lda, ldo = kin + int(rng.integers(0, 3)), c + int(rng.integers(0, 3))
    return kin, c, n_a, n_o, n, lda, ldo


def _call(fn, *args):
    fn(*[a.ctypes.data if isinstance(a, np.ndarray) else int(a) for a in args])


@pytest.mark.parametrize("seed", range(6))
def test_gather_gemm_scatter_kernel_matches_float64(seed):
    """out[dst[p], :c] += a[src[p], :kin] @ w, in float32, against the float64 sum; entries
    outside the first c columns of a row (the row stride is wider) are left as they were. dst
    repeats rows (the kernel must add each pair, also within a register group)."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        kin, c, n_a, n_o, n, lda, ldo = _problem(rng)
        a = rng.standard_normal((n_a, lda)).astype(np.float32)
        w = rng.standard_normal((kin, c)).astype(np.float32)
        src = rng.integers(0, n_a, n).astype(np.int32)
        dst = rng.integers(0, n_o, n).astype(np.int32)
        out = rng.standard_normal((n_o, ldo)).astype(np.float32)
        want = out.astype(np.float64)
        np.add.at(want[:, :c], dst, a[src, :kin].astype(np.float64) @ w.astype(np.float64))
        _call(_SIG(_symbol(K.ggs_name(-(-c // K.LANES)))), a, lda, w, kin, src, dst, n, out, ldo, c)
        scale = np.abs(want).max() + 1
        assert np.abs(out - want).max() <= 2e-6 * scale * np.sqrt(kin), (kin, c, n)
        assert np.array_equal(out[:, c:], want[:, c:].astype(np.float32))


@pytest.mark.parametrize("seed", range(6))
def test_weight_gradient_kernel_matches_float64(seed):
    """part[:kin, :c] += sum_p a[arow[p], :kin]^T g[grow[p], :c] against the float64 sum, with
    kin not a multiple of the register group (the tail rows) and n = 0 (part unchanged)."""
    rng = np.random.default_rng(100 + seed)
    for _ in range(40):
        kin, c, n_a, n_g, n, lda, ldg = _problem(rng)
        a = rng.standard_normal((n_a, lda)).astype(np.float32)
        g = rng.standard_normal((n_g, ldg)).astype(np.float32)
        arow = rng.integers(0, n_a, n).astype(np.int32)
        grow = rng.integers(0, n_g, n).astype(np.int32)
        part = rng.standard_normal((kin, c)).astype(np.float32)
        want = part.astype(np.float64) + a[arow, :kin].astype(np.float64).T @ g[grow, :c].astype(np.float64)
        _call(_SIG(_symbol(K.wgrad_name(-(-c // K.LANES)))), a, lda, g, ldg, arow, grow, n, part,
              kin, c)
        scale = np.abs(want).max() + 1
        assert np.abs(part - want).max() <= 2e-6 * scale * np.sqrt(max(n, 1)), (kin, c, n)


def test_same_bits_when_compiled_for_a_cpu_without_avx512():
    """The kernels' sums are chains of exactly rounded fused multiply-adds in a fixed order, so
    code compiled for a Haswell (AVX2, 8-float registers: every 16-float vector split in two)
    gives the same bits as the host build."""
    import llvmlite.binding as llvm
    tm = llvm.Target.from_default_triple().create_target_machine(cpu="haswell", features="",
                                                                 opt=2)
    mod = llvm.parse_assembly(K.module_ir())
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    rng = np.random.default_rng(7)
    for c, kin in ((5, 8), (16, 16), (40, 33), (64, 64), (128, 7)):
        v = -(-c // K.LANES)
        a = rng.standard_normal((50, kin)).astype(np.float32)
        w = rng.standard_normal((kin, c)).astype(np.float32)
        g = rng.standard_normal((40, c)).astype(np.float32)
        src, dst = rng.integers(0, 50, 37).astype(np.int32), rng.permutation(40)[:37].astype(np.int32)
        res = []
        for addr_of in (_symbol, engine.get_function_address):
            out = np.zeros((40, c), np.float32)
            _call(_SIG(addr_of(K.ggs_name(v))), a, kin, w, kin, src, dst, 37, out, c, c)
            part = np.zeros((kin, c), np.float32)
            _call(_SIG(addr_of(K.wgrad_name(v))), a, kin, g, c, src, dst, 37, part, kin, c)
            res.append((out, part))
        assert np.array_equal(res[0][0], res[1][0]) and np.array_equal(res[0][1], res[1][1]), c


def _sites(n, shape, batch, seed):
    g = np.random.default_rng(seed)
    per = int(np.prod(shape))
    flat = g.choice(batch * per, size=n, replace=False)
    b, r = np.divmod(flat, per)
    z, r = np.divmod(r, shape[1] * shape[2])
    y, x = np.divmod(r, shape[2])
    return np.stack([b, z, y, x], 1).astype(np.int32)


@pytest.mark.parametrize("subm,ks,st,pd", [(True, [3, 3, 3], [1, 1, 1], [1, 1, 1]),
                                           (False, [3, 3, 3], [2, 2, 2], [1, 1, 1]),
                                           (False, [3, 1, 1], [2, 1, 1], [0, 0, 0])])
def test_fused_pairs_match_mkl_pairs_and_float64(subm, ks, st, pd, monkeypatch):
    """The "pairs" convolution in float32 with the fused kernels and with MKL (FUSED off), on
    the same rulebooks, both within float32 rounding of the float64 result (features, feature,
    weight and bias gradients); channel counts from 3 to 128, with and without a centre offset,
    and with small blocks (many per layer)."""
    shape = [6, 9, 10]
    idx = _sites(300, shape, 2, seed=3)
    rb = build_rulebook(idx, shape, ks, st, pd, [1, 1, 1], subm)
    g = torch.Generator().manual_seed(5)
    for cin, cout in ((3, 5), (8, 8), (5, 12), (16, 32), (40, 70), (64, 64), (128, 17)):
        f = torch.randn(len(idx), cin, dtype=torch.float64, generator=g)
        w = torch.randn(cout, *ks, cin, dtype=torch.float64, generator=g)
        b = torch.randn(cout, dtype=torch.float64, generator=g)
        gout = torch.randn(rb.n_out, cout, dtype=torch.float64, generator=g)

        def grads(dtype):
            fi, wi, bi = (t.to(dtype).requires_grad_(True) for t in (f, w, b))
            out = sparse_conv_apply(fi, wi, bi, rb, algorithm="pairs")
            got = torch.autograd.grad((out * gout.to(dtype)).sum(), (fi, wi, bi))
            return [t.detach().double() for t in (out,) + got]

        want = grads(torch.float64)
        for fused, blocks in ((True, None), (False, None), (True, 7)):
            monkeypatch.setattr(F, "FUSED", fused)
            if blocks is not None:
                monkeypatch.setattr(F, "_MIN_BLOCK_PAIRS", blocks)
                monkeypatch.setattr(F, "_MIN_BLOCK_ROWS", 3)
                monkeypatch.setattr(F, "_TARGET_BLOCKS", 10 ** 9)
            for a, e in zip(grads(torch.float32), want):
                tol = 1e-5 * (e.abs().max().item() + 1)
                torch.testing.assert_close(a, e, rtol=0, atol=tol)
            monkeypatch.undo()


def test_fused_gate(monkeypatch):
    """``_fused`` decides per layer: float32 only, widths up to ``MAX_WIDTH``, the flag on and
    the kernels built (where they failed to build, the reason is kept and MKL's path runs)."""
    f32 = np.dtype(np.float32)
    assert F._fused(f32, 64, 64)
    monkeypatch.setattr(F, "FUSED", False)
    assert not F._fused(f32, 64, 64)
    monkeypatch.setattr(F, "FUSED", True)
    monkeypatch.setattr(F, "KERNELS_UNAVAILABLE", "no LLVM here")
    assert not F._fused(f32, 64, 64)


def test_compiled_kernels_are_cached_on_disk(tmp_path):
    """A first process compiles and stores the object (checksummed) in NUMBA_CACHE_DIR, a second
    loads it; a damaged file is compiled again and replaced. Each gives the same results."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import numpy as np; import ops.sparse_conv.kernels as K; "
            "import ops.sparse_conv.functional as F; assert K.KERNELS_UNAVAILABLE is None; "
            "x = np.arange(60, dtype=np.float32).reshape(20, 3) / 7; out = np.zeros((20, 5), np.float32); "
            "w = np.linspace(-1, 1, 15, dtype=np.float32).reshape(3, 5); i = np.arange(20, dtype=np.int32); "
            "F._ggs(x, w, i[::-1].copy(), i, 0, 20, out); print(out.tobytes().hex())")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    repo = Path(__file__).resolve().parents[1]

    def run():
        r = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout.strip()

    first = run()
    files = list((tmp_path / "ops_sparse_conv").glob("kernels-*.o"))
    assert len(files) == 1
    stored = files[0].read_bytes()
    assert run() == first and files[0].read_bytes() == stored       # loaded, not rewritten
    files[0].write_bytes(stored[:100])                               # damaged
    assert run() == first and files[0].read_bytes() == stored       # compiled again
