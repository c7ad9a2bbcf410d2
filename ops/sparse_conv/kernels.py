"""Register-blocked float32 micro-kernels of the "pairs" convolution, generated as LLVM IR with
llvmlite, compiled once per process for the host CPU and called from the Numba block functions
by symbol name (as MKL's GEMM is; see ``functional.py``).

Why by hand: the "pairs" path gathered the rows of each (block, kernel offset), multiplied them
with MKL and scatter-added the products, so every product crossed memory three times and the
GEMM itself was MKL's AVX2 code (on AMD CPUs MKL does not take its AVX-512 path). These kernels
fuse the three: a group of ``R`` pairs keeps its ``R x C_out`` partial products in vector
registers while the inner loop runs over the input channels, reading the source rows in place
and the weight row by row, and the group's sums are added into their destination rows once. No
library offers a gather-GEMM-scatter for the CPU (spconv's CPU path is gather, GEMM, scatter;
MKL and OpenBLAS have no indexed GEMM), and Numba's own vectorizer keeps such accumulators in
memory (measured: about a quarter of the speed), hence IR. Measured on the demo backbone's
shapes, one thread: 135-245 GFLOP/s against 14-52 for gather + MKL GEMM + index_add
(docs/benchmarks/sparse_conv.md, round 7).

Two kernels, each in variants for ``V = ceil(C / 16)`` vectors of 16 lanes (C up to
``MAX_WIDTH``; the last vector masked, so any width works):

* ``ops_sc_ggs_v{V}(a, lda, w, kin, src, dst, n, out, ldo, c)``:
  ``out[dst[p], :c] += a[src[p], :kin] @ w`` for ``p < n``, ``w`` a row-major ``(kin, c)``
  matrix. The forward (``a`` the features, ``w`` the offset's weight) and the feature gradient
  (``a`` the output gradient, ``w`` the transposed weight) are both this.
* ``ops_sc_wgrad_v{V}(a, lda, g, ldg, arow, grow, n, part, kin, c)``:
  ``part[:kin, :c] += a[arow[p], :kin]^T g[grow[p], :c]`` summed over ``p < n`` (the weight
  gradient of one offset; ``part`` row-major ``(kin, c)``).

Numerics: every product-sum is a chain of fused multiply-adds (``llvm.fma``, exact rounding on
any target) over the inner index in increasing order, starting from zero, then one addition into
the destination; pairs in list order. So the bits depend only on the inputs and the pair lists,
never on the thread count or on which CPU's vector width the code was compiled for.
"""
from __future__ import annotations

import llvmlite.ir as ir

__all__ = ["KERNELS_UNAVAILABLE", "MAX_WIDTH", "LANES", "ggs_name", "wgrad_name"]

LANES = 16                      # floats per vector
MAX_VECTORS = 8
MAX_WIDTH = LANES * MAX_VECTORS  # widest channel count with a kernel
# Pairs (ggs) / input channels (wgrad) per register group, by vectors per row: R * V
# accumulators plus V weight (or gradient) vectors stay within AVX-512's 32 registers.
_GROUP = {1: 12, 2: 8, 3: 5, 4: 4, 5: 3, 6: 2, 7: 2, 8: 2}
_WCHUNK = 64                    # wgrad: pairs per chunk (their rows stay in the L1 cache)

_f32, _i32, _i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
_vec = ir.VectorType(_f32, LANES)
_fptr, _iptr, _vptr = ir.PointerType(_f32), ir.PointerType(_i32), ir.PointerType(_vec)
_mask_t = ir.VectorType(ir.IntType(1), LANES)


def ggs_name(v: int) -> str:
    return f"ops_sc_ggs_v{v}"


def wgrad_name(v: int) -> str:
    return f"ops_sc_wgrad_v{v}"


def _i(v: int) -> ir.Constant:
    return ir.Constant(_i64, v)


class _Emitter:
    """Shared pieces of one kernel function: intrinsics, the last vector's lane mask."""

    def __init__(self, mod: ir.Module, fn: ir.Function, b: ir.IRBuilder, c, nvec: int):
        self.fn, self.b, self.nvec = fn, b, nvec
        self.fma = _intrinsic(mod, "llvm.fma.v16f32", _vec, [_vec, _vec, _vec])
        self.mload = _intrinsic(mod, "llvm.masked.load.v16f32.p0", _vec,
                                [_vptr, _i32, _mask_t, _vec])
        self.mstore = _intrinsic(mod, "llvm.masked.store.v16f32.p0", ir.VoidType(),
                                 [_vec, _vptr, _i32, _mask_t])
        rem = b.sub(c, _i((nvec - 1) * LANES))              # lanes used in the last vector
        lanes = ir.Constant(ir.VectorType(_i64, LANES), list(range(LANES)))
        self.mask = b.icmp_unsigned("<", lanes, self.splat(rem, ir.VectorType(_i64, LANES)))
        self.zero = ir.Constant(_vec, [0.0] * LANES)

    def splat(self, value, vt=_vec):
        b = self.b
        one = b.insert_element(ir.Constant(vt, ir.Undefined), value, ir.Constant(_i32, 0))
        return b.shuffle_vector(one, ir.Constant(vt, ir.Undefined),
                                ir.Constant(ir.VectorType(_i32, LANES), [0] * LANES))

    def load(self, row, v):
        """Vector v of the row starting at float pointer ``row`` (the last one masked)."""
        b = self.b
        p = b.bitcast(b.gep(row, [_i(v * LANES)]), _vptr)
        if v < self.nvec - 1:
            return b.load(p, align=4)
        return b.call(self.mload, [p, ir.Constant(_i32, 4), self.mask, self.zero])

    def add_to(self, row, v, value):
        """row[vector v] += value (the last vector masked)."""
        b = self.b
        p = b.bitcast(b.gep(row, [_i(v * LANES)]), _vptr)
        if v < self.nvec - 1:
            b.store(b.fadd(b.load(p, align=4), value), p, align=4)
        else:
            old = b.call(self.mload, [p, ir.Constant(_i32, 4), self.mask, self.zero])
            b.call(self.mstore, [b.fadd(old, value), p, ir.Constant(_i32, 4), self.mask])

    def block(self):
        return self.fn.append_basic_block()


def _intrinsic(mod, name, ret, args):
    f = mod.globals.get(name)
    return f if f is not None else ir.Function(mod, ir.FunctionType(ret, args), name)


def _groups(e: _Emitter, n, size: int, body):
    """for (p = 0; p + size <= n; p += size) body(p, size, None); then, if items are left, one
    last group body(p, size, n): its rows past n repeat item n - 1 and are not stored (so a
    tail costs one group, not a group per item)."""
    b = e.b
    pre = b.block
    head, loop, tail, done = (e.block() for _ in range(4))
    b.branch(head)
    b.position_at_end(head)
    p = b.phi(_i64)
    p.add_incoming(_i(0), pre)
    b.cbranch(b.icmp_signed("<=", b.add(p, _i(size)), n), loop, tail)
    b.position_at_end(loop)
    body(p, size, None)
    p.add_incoming(b.add(p, _i(size)), b.block)
    b.branch(head)
    b.position_at_end(tail)
    last = e.block()
    b.cbranch(b.icmp_signed("<", p, n), last, done)
    b.position_at_end(last)
    body(p, size, n)
    b.branch(done)
    b.position_at_end(done)


def _row(e: _Emitter, p, r: int, limit):
    """Item p + r of a group, clamped to limit - 1 in a last group."""
    b = e.b
    q = b.add(p, _i(r))
    if limit is None:
        return q
    return b.select(b.icmp_signed("<", q, limit), q, b.sub(limit, _i(1)))


def _guarded(e: _Emitter, p, r: int, limit, store):
    """store() for row r of a group, skipped for a last group's rows past limit."""
    b = e.b
    if limit is None:
        store()
        return
    yes, after = e.block(), e.block()
    b.cbranch(b.icmp_signed("<", b.add(p, _i(r)), limit), yes, after)
    b.position_at_end(yes)
    store()
    b.branch(after)
    b.position_at_end(after)


def _accumulate(e: _Emitter, start, stop, nacc: int, step):
    """A loop ``j = start .. stop - 1`` carrying ``nacc`` vector accumulators (zero at the
    start); ``step(j, accs)`` returns the new ones. Returns the final accumulators
    (stop > start)."""
    b = e.b
    pre = b.block
    loop, done = e.block(), e.block()
    b.branch(loop)
    b.position_at_end(loop)
    j = b.phi(_i64)
    j.add_incoming(start, pre)
    accs = []
    for _ in range(nacc):
        ph = b.phi(_vec)
        ph.add_incoming(e.zero, pre)
        accs.append(ph)
    new = step(j, accs)
    j2 = b.add(j, _i(1))
    end = b.block
    j.add_incoming(j2, end)
    for ph, v in zip(accs, new):
        ph.add_incoming(v, end)
    b.cbranch(b.icmp_signed("<", j2, stop), loop, done)
    b.position_at_end(done)
    return new


_PARAMS = [_fptr, _i64, _fptr, _i64, _iptr, _iptr, _i64, _fptr, _i64, _i64]   # both kernels


def _kernel(mod, name: str, nvec: int):
    """A kernel function with the shared signature (pointer arguments noalias), positioned in
    the block that runs when ``n`` (argument 6) and ``kin`` (argument 3 of ggs, 8 of wgrad)
    are both positive. Returns (args, emitter, the return block)."""
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), _PARAMS), name)
    for a in fn.args:
        if isinstance(a.type, ir.PointerType):
            a.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    args = fn.args
    e = _Emitter(mod, fn, b, args[9], nvec)
    kin = args[3] if name == ggs_name(nvec) else args[8]
    work, ret = e.block(), e.block()
    b.cbranch(b.and_(b.icmp_signed(">", args[6], _i(0)), b.icmp_signed(">", kin, _i(0))),
              work, ret)
    b.position_at_end(work)
    return args, e, ret


def _finish(e: _Emitter, ret) -> None:
    e.b.branch(ret)
    e.b.position_at_end(ret)
    e.b.ret_void()


def _emit_ggs(mod: ir.Module, nvec: int) -> None:
    (a, lda, w, kin, src, dst, n, out, ldo, c), e, ret = _kernel(mod, ggs_name(nvec), nvec)
    b = e.b

    def group(p, rows, limit):
        arow, orow = [], []
        for r in range(rows):
            pr = _row(e, p, r, limit)
            s = b.sext(b.load(b.gep(src, [pr])), _i64)
            d = b.sext(b.load(b.gep(dst, [pr])), _i64)
            arow.append(b.gep(a, [b.mul(s, lda)]))
            orow.append(b.gep(out, [b.mul(d, ldo)]))

        def step(i, accs):
            wrow = b.gep(w, [b.mul(i, c)])
            wv = [e.load(wrow, v) for v in range(nvec)]
            new = []
            for r in range(rows):
                av = e.splat(b.load(b.gep(arow[r], [i])))
                new.extend(b.call(e.fma, [av, wv[v], accs[r * nvec + v]]) for v in range(nvec))
            return new

        acc = _accumulate(e, _i(0), kin, rows * nvec, step)
        for r in range(rows):
            _guarded(e, p, r, limit, lambda r=r: [e.add_to(orow[r], v, acc[r * nvec + v])
                                                  for v in range(nvec)])

    _groups(e, n, _GROUP[nvec], group)
    _finish(e, ret)


def _emit_wgrad(mod: ir.Module, nvec: int) -> None:
    (a, lda, g, ldg, arow, grow, n, part, kin, c), e, ret = _kernel(mod, wgrad_name(nvec), nvec)
    b = e.b
    # Pairs in chunks of _WCHUNK: every tile of input channels runs over one chunk's rows while
    # they are in the L1 cache, and adds its sums into part chunk after chunk.
    pre = b.block
    head, body, done = e.block(), e.block(), e.block()
    b.branch(head)
    b.position_at_end(head)
    c0 = b.phi(_i64)
    c0.add_incoming(_i(0), pre)
    b.cbranch(b.icmp_signed("<", c0, n), body, done)
    b.position_at_end(body)
    c1 = b.add(c0, _i(_WCHUNK))
    c1 = b.select(b.icmp_signed("<", c1, n), c1, n)

    def tile(i0, rows, limit):
        cols = [_row(e, i0, r, limit) for r in range(rows)]

        def step(p, accs):
            gr = b.sext(b.load(b.gep(grow, [p])), _i64)
            ar = b.sext(b.load(b.gep(arow, [p])), _i64)
            grow_p = b.gep(g, [b.mul(gr, ldg)])
            arow_p = b.gep(a, [b.mul(ar, lda)])
            gv = [e.load(grow_p, v) for v in range(nvec)]
            new = []
            for r in range(rows):
                av = e.splat(b.load(b.gep(arow_p, [cols[r]])))
                new.extend(b.call(e.fma, [av, gv[v], accs[r * nvec + v]]) for v in range(nvec))
            return new

        acc = _accumulate(e, c0, c1, rows * nvec, step)
        for r in range(rows):
            prow = b.gep(part, [b.mul(cols[r], c)])
            _guarded(e, i0, r, limit, lambda r=r, prow=prow: [
                e.add_to(prow, v, acc[r * nvec + v]) for v in range(nvec)])

    _groups(e, kin, _GROUP[nvec], tile)
    c0.add_incoming(c1, b.block)
    b.branch(head)
    b.position_at_end(done)
    _finish(e, ret)


def module_ir() -> str:
    """The LLVM IR of all kernels (text)."""
    mod = ir.Module("ops_sparse_conv_kernels")
    for v in range(1, MAX_VECTORS + 1):
        _emit_ggs(mod, v)
        _emit_wgrad(mod, v)
    return str(mod)


_engine = None   # the compiled code must outlive every caller: kept for the process


def _cache_path(key: str):
    """Where the compiled object of this IR for this CPU is kept (Numba's cache directory when
    set, else this package's __pycache__), or None when that is not writable."""
    import os
    from pathlib import Path
    root = os.environ.get("NUMBA_CACHE_DIR")
    d = Path(root) / "ops_sparse_conv" if root else Path(__file__).parent / "__pycache__"
    try:
        d.mkdir(parents=True, exist_ok=True)
        if not os.access(d, os.W_OK):
            return None
    except OSError:
        return None
    return d / f"kernels-{key}.o"


def _read_cache(path):
    """The cached object's bytes, or None (no file, or one whose checksum does not match: it is
    then compiled again and the file replaced)."""
    import hashlib
    if path is None or not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    digest, obj = data[:32], data[32:]
    return obj if obj and hashlib.sha256(obj).digest() == digest else None


def _build() -> str | None:
    """Compile the kernels for this CPU and make their names resolvable from Numba code.
    Returns None when they are, else why not (the "pairs" blocks then keep MKL's GEMM). The
    object code is cached on disk, keyed by the IR, the CPU and its features and the LLVM
    version (compiling takes ~0.6 s; loading the cached object a few ms)."""
    global _engine
    try:
        import hashlib
        import os

        import llvmlite
        import llvmlite.binding as llvm
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
        text = module_ir()
        key = hashlib.sha256("\n".join([text, cpu, features, llvmlite.__version__,
                                         str(llvm.llvm_version_info)]).encode()).hexdigest()[:20]
        path = _cache_path(key)
        cached = _read_cache(path)
        tm = llvm.Target.from_default_triple().create_target_machine(
            cpu=cpu, features=features, opt=3, reloc="default", codemodel="jitdefault")
        mod = llvm.parse_assembly(text)
        mod.triple = tm.triple
        mod.data_layout = str(tm.target_data)
        mod.verify()
        if cached is None:
            pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
            pb.getModulePassManager().run(mod, pb)

        def store(_mod, buf):
            if path is None or cached is not None:
                return
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            try:                                  # atomic: a reader sees all of it or nothing
                tmp.write_bytes(hashlib.sha256(buf).digest() + buf)
                os.replace(tmp, path)
            except OSError:
                tmp.unlink(missing_ok=True)

        engine = llvm.create_mcjit_compiler(mod, tm)
        engine.set_object_cache(store, lambda _mod: cached)
        engine.finalize_object()
        for v in range(1, MAX_VECTORS + 1):
            for name in (ggs_name(v), wgrad_name(v)):
                addr = engine.get_function_address(name)
                if not addr:
                    return f"compiled kernel {name} has no address"
                llvm.add_symbol(name, addr)
        _engine = engine
    except Exception as e:  # noqa: BLE001 - any failure: keep the MKL path
        return f"building the LLVM kernels failed: {type(e).__name__}: {e}"
    return None


# Why the micro-kernels cannot run here, or None (they can).
KERNELS_UNAVAILABLE = _build()
