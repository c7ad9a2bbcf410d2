"""Resuming mmengine checkpoints under torch >= 2.6's ``torch.load(weights_only=True)`` default.

mmengine 0.10.7 loads checkpoints with a plain ``torch.load``; since torch 2.6 that refuses every
global that is not allow-listed, and an mmengine checkpoint holds a few: the message hub's
``HistoryBuffer`` objects (whose ``statistics_methods`` dict pickles the class's methods through
``getattr``), numpy arrays and scalars (log history), and numpy dtype classes. Rather than falling
back to ``weights_only=False`` - which would let a downloaded checkpoint run arbitrary code - we
allow exactly those classes, and replace ``getattr`` by a version that only returns the methods
``HistoryBuffer`` registers as statistics. Anything else in a file still fails to load.

Call :func:`allow_project_checkpoint_globals` once before ``Runner.resume`` / ``load_checkpoint``
(``tools/train.py`` and ``tools/test.py`` do).
"""
from __future__ import annotations

import builtins

import numpy as np
import torch

__all__ = ["allow_project_checkpoint_globals", "safe_checkpoint_globals", "restricted_getattr"]

_INSTALLED = False


def restricted_getattr(obj, name: str, *default):
    """``getattr`` for the unpickler: only ``HistoryBuffer``'s registered statistics methods."""
    from mmengine.logging.history_buffer import HistoryBuffer

    allowed = set(getattr(HistoryBuffer, "_statistics_methods", {})) | {
        "min", "max", "mean", "current"}
    if obj is HistoryBuffer and isinstance(name, str) and name in allowed:
        return builtins.getattr(obj, name, *default)
    raise RuntimeError(
        f"checkpoint asks for getattr({obj!r}, {name!r}); only HistoryBuffer statistics methods "
        f"{sorted(allowed)} are allowed when loading with weights_only=True")


def _numpy_globals() -> list:
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
    out = [core.multiarray._reconstruct, core.multiarray.scalar, np.dtype, np.ndarray]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            obj = getattr(dtypes, name)
            if isinstance(obj, type) and name.endswith("DType") and name not in (
                    "ObjectDType", "VoidDType"):  # object arrays could carry anything
                out.append(obj)
    return out


def safe_checkpoint_globals() -> list:
    """The allow-list entries (objects or ``(object, "pickle.name")`` pairs) we install."""
    from mmengine.logging.history_buffer import HistoryBuffer

    # pickle protocol 2 names it "__builtin__.getattr"; torch maps that to builtins.getattr
    return [HistoryBuffer, (restricted_getattr, "builtins.getattr"), *_numpy_globals()]


def allow_project_checkpoint_globals() -> None:
    """Allow-list the globals of this project's own checkpoints for ``weights_only`` loads. Idempotent."""
    global _INSTALLED
    if _INSTALLED or not hasattr(torch.serialization, "add_safe_globals"):
        return
    torch.serialization.add_safe_globals(safe_checkpoint_globals())
    _INSTALLED = True
