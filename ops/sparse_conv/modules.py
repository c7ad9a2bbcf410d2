"""``SubMConv3d`` and ``SparseConv3d`` running on this package's CPU kernels.

They subclass spconv's classes of the same names, so constructor, attributes, parameter names,
initialisation (the same random draws from the same seed), the KRSC weight
``(C_out, kz, ky, kx, C_in)``, state-dict hooks and ``SparseSequential`` membership are spconv's
own; only ``forward`` differs. On a tensor off the CPU (CUDA, meta) ``forward`` is spconv's.

``indice_key``: a layer with a key stores its rulebook in the tensor's ``indice_dict`` under that
key; a later submanifold layer with the same key reuses it (after the same checks spconv makes).
The dict holds our :class:`~ops.sparse_conv.rulebook.Rulebook` objects, so layers sharing a key
must all be ours or all spconv's. As in spconv, a 1x1x1 conv (submanifold, or stride 1) is a
plain matrix product that keeps the input's sites and stores no rulebook; it also reads the
weight's memory as spconv does there, as a ``(C_in, C_out)`` matrix.

Output sites: a submanifold conv keeps the input's rows; a regular conv's rows are sorted by
(batch, z, y, x) (spconv's CPU order differs; the set is the same).
"""
from __future__ import annotations

import numpy as np
import torch

from ops.sparse_conv.functional import sparse_conv_apply
from ops.sparse_conv.rulebook import Rulebook, build_rulebook
from ops.spconv_utils import spconv

__all__ = ["SubMConv3d", "SparseConv3d"]


class _CpuForward:
    """forward() of our sparse convs (mixed into spconv's classes)."""

    def forward(self, input, add_input=None):
        if input.features.device.type != "cpu":  # CUDA (and the meta device): spconv's own
            return super().forward(input, add_input)
        if add_input is not None:
            raise NotImplementedError(f"{type(self).__name__}: add_input (fused residual) is only "
                                      "supported by spconv")
        feats = input.features
        if feats.ndim != 2 or feats.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: features of shape {tuple(feats.shape)}, "
                             f"expected (N, {self.in_channels})")
        indice_dict = input.indice_dict
        if self.conv1x1:
            rb = _identity_rulebook(input, self.kernel_size)
        else:
            rb = input.find_indice_pair(self.indice_key)
            if rb is not None:
                self._check_reuse(input, rb)
            else:
                rb = build_rulebook(input.indices.detach().cpu().numpy(), input.spatial_shape,
                                    self.kernel_size, self.stride, self.padding, self.dilation,
                                    self.subm)
                if self.indice_key is not None:
                    indice_dict = dict(indice_dict)
                    indice_dict[self.indice_key] = rb
        weight = self.weight
        if self.conv1x1:
            # spconv multiplies by weight.view(C_in, C_out) here (not the KRSC transpose); do the
            # same, so that a checkpoint means the same layer in both.
            weight = weight.reshape(self.in_channels, self.out_channels).t().reshape(weight.shape)
        out = input.shadow_copy()
        out = out.replace_feature(sparse_conv_apply(feats, weight, self.bias, rb))
        if not (self.subm or self.conv1x1):
            out.indices = torch.from_numpy(rb.out_indices).to(input.indices.device)
        out.indice_dict = indice_dict
        out.spatial_shape = list(rb.out_spatial_shape)
        return out

    def _check_reuse(self, input, rb) -> None:
        name = f"{type(self).__name__}(indice_key={self.indice_key!r})"
        if not isinstance(rb, Rulebook):
            raise TypeError(f"{name}: the tensor's indice_dict entry is spconv's "
                            f"{type(rb).__name__}; layers sharing an indice_key must all be "
                            "ops.sparse_conv's or all spconv's")
        if not self.subm:
            raise ValueError(f"{name}: indice_key already exists in this sparse tensor (only "
                             "submanifold convs reuse a rulebook)")
        if not rb.subm:
            raise ValueError(f"{name}: the rulebook stored under this key is a regular conv's; "
                             "only submanifold rulebooks are reused")
        if list(self.kernel_size) != rb.ksize or list(self.dilation) != rb.dilation:
            raise ValueError(f"{name}: kernel {list(self.kernel_size)} / dilation "
                             f"{list(self.dilation)} differ from the stored rulebook's {rb.ksize} / "
                             f"{rb.dilation}")
        if list(input.spatial_shape) != rb.spatial_shape or input.indices.shape[0] != rb.n_in:
            raise ValueError(f"{name}: input of spatial shape {list(input.spatial_shape)} with "
                             f"{input.indices.shape[0]} sites, the stored rulebook was built for "
                             f"{rb.spatial_shape} with {rb.n_in}")


def _identity_rulebook(input, ksize) -> Rulebook:
    n = int(input.indices.shape[0])
    shape = [int(v) for v in input.spatial_shape]
    return Rulebook(nbr=np.arange(n, dtype=np.int64).reshape(n, 1), n_in=n, out_indices=None,
                    spatial_shape=shape, out_spatial_shape=shape, subm=True,
                    ksize=[int(k) for k in ksize], stride=[1, 1, 1], padding=[0, 0, 0],
                    dilation=[1, 1, 1])


class SubMConv3d(_CpuForward, spconv.SubMConv3d):
    """spconv.pytorch.SubMConv3d on ``ops.sparse_conv``'s CPU kernels (same signature)."""


class SparseConv3d(_CpuForward, spconv.SparseConv3d):
    """spconv.pytorch.SparseConv3d on ``ops.sparse_conv``'s CPU kernels (same signature)."""
