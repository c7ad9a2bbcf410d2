"""Sparse 3D convolutions for the CPU: drop-in replacements of spconv 2.x's ``SubMConv3d`` and
``SparseConv3d`` (same constructor, parameters and KRSC weight layout, so state dicts load
both ways), taking and returning ``spconv.pytorch.SparseConvTensor``.

Rulebooks are built in Numba from integer keys of the active sites, through a dense grid of
cells when it is small, else by searches over the sorted keys (``rulebook.py``); the
convolution is a blocked gather-GEMM-scatter over the real pairs only (``functional.py``,
algorithm ``"pairs"``; the previous round's im2col is selectable), parallel and bit-for-bit
deterministic at any thread count. ``reference.py`` holds the slow, obviously correct version
they are tested against.
"""
from ops.sparse_conv.modules import SparseConv3d, SubMConv3d

__all__ = ["SubMConv3d", "SparseConv3d"]
