"""spconv 2.x, made to run forward *and* backward on a CPU-only machine.

spconv's Python layer asks for the current CUDA stream through
``spconv.pytorch.cppcore.get_current_stream`` in several places that run even for CPU tensors
(the backward of sparse convolutions among them), and that call raises when torch has no CUDA.
A stream handle of 0 is what spconv passes for CPU work everywhere else, so when CUDA is absent
we replace the function - in ``cppcore`` and in every spconv module that imported it by name -
with one that returns 0. On a CUDA machine nothing is changed.

A second CPU defect is fixed here too. spconv 2.3.8's CPU gather-GEMM-scatter path
(``ops.indice_conv`` / ``indice_conv_backward``, and the max-pool twins) gives wrong,
run-to-run different results when torch's intra-op thread pool has more than one thread: a
SubMConv3d on 40 voxels repeated 200 times differed from its first result (by up to ~0.5, not
rounding) in more than half of the runs with 2 threads and in none with 1
(``tests/test_spconv_shim.py::test_cpu_conv_is_deterministic`` pins this). So those four
functions run with one intra-op thread when their input is on the CPU; the thread count is
restored afterwards.

Import spconv through this module::

    from ops.spconv_utils import spconv   # == spconv.pytorch, shim applied when needed
"""
from __future__ import annotations

import functools
import importlib
import sys

import torch

import spconv.pytorch as spconv  # noqa: E402  (re-exported)
from spconv.pytorch import cppcore as _cppcore

__all__ = ["spconv", "apply_cpu_shim", "cpu_shim_applied"]

_ORIGINAL = _cppcore.get_current_stream


def _cpu_stream() -> int:
    # CUDA may still appear later in the same process only in exotic set-ups; keep the real
    # lookup available for that case.
    if torch.cuda.is_available():
        return _ORIGINAL()
    return 0


def apply_cpu_shim(force: bool = False) -> bool:
    """Patch spconv's stream lookup when CUDA is unavailable (or ``force``). Idempotent.

    Returns True when the shim is (now) in place.
    """
    if torch.cuda.is_available() and not force:
        return False
    for name, module in list(sys.modules.items()):
        if name.startswith("spconv.") and getattr(module, "get_current_stream", None) is _ORIGINAL:
            module.get_current_stream = _cpu_stream
    # Modules spconv imports lazily later pick the patched function up from cppcore.
    _cppcore.get_current_stream = _cpu_stream
    _serialise_cpu_kernels()
    return True


def _one_thread_on_cpu(fn):
    if getattr(fn, "_graddrop_det3d_single_thread", False):
        return fn

    @functools.wraps(fn)
    def wrapper(features, *args, **kwargs):
        if features.is_cuda:
            return fn(features, *args, **kwargs)
        threads = torch.get_num_threads()
        if threads == 1:
            return fn(features, *args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(features, *args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    wrapper._graddrop_det3d_single_thread = True
    return wrapper


def _serialise_cpu_kernels() -> None:
    from spconv.pytorch import ops as _ops
    for name in ("indice_conv", "indice_conv_backward", "indice_maxpool", "indice_maxpool_backward"):
        if hasattr(_ops, name):
            setattr(_ops, name, _one_thread_on_cpu(getattr(_ops, name)))


def cpu_shim_applied() -> bool:
    from spconv.pytorch import ops as _ops
    return (_cppcore.get_current_stream is _cpu_stream
            and getattr(_ops.indice_conv, "_graddrop_det3d_single_thread", False))


# Make sure every spconv submodule that binds the name at import time is loaded before patching.
for _mod in ("spconv.pytorch.ops", "spconv.pytorch.hash", "spconv.pytorch.functional",
             "spconv.pytorch.conv", "spconv.pytorch.pool"):
    try:
        importlib.import_module(_mod)
    except ImportError:  # pragma: no cover - optional modules of other spconv versions
        pass
apply_cpu_shim()
