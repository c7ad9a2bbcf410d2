"""The stride-8 sparse 3D encoder (SECOND / CenterPoint "VoxelResBackBone8x" family) and its
height compression into a BEV map.

Stages (channels by default 16-32-64-128): a submanifold input conv, then stage 1 (submanifold
blocks, stride 1) and stages 2-4 (each opened by a strided sparse conv, stride 2 in x, y, z, then
submanifold blocks). A last sparse conv with kernel (3, 1, 1) and stride (2, 1, 1) shrinks z
further; the result is densified and its z slices are stacked into channels:
``(B, C_out * D_out, H / 8, W / 8)``. Every conv is followed by BatchNorm + ReLU. With
``residual=True`` the submanifold blocks are two-conv residual blocks (SubM-BN-ReLU-SubM-BN,
identity add, ReLU), as in CenterPoint's residual variant.

Convolution implementation (``conv_impl``): ``"ops"`` uses ``ops.sparse_conv`` (this project's
CPU kernels: parallel over all cores and deterministic; on CUDA tensors its modules run spconv's
own kernels), ``"spconv"`` spconv 2.x (imported only through ``ops.spconv_utils``, whose CPU shim
makes backward work without CUDA and pins its CPU kernels to one thread), ``"auto"`` (default)
``"ops"``: on the idle 2-core machine a demo training step is 1.28x faster in wall time with it
than with spconv, its backbone pass 1.93x (docs/benchmarks/sparse_conv.md, round 5).
Both have the same modules, parameter names and weight layout, so checkpoints load into either.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from detector.models.types import VoxelBatch
from detector.registry import MODELS
from ops import sparse_conv as ops_sparse_conv
from ops.spconv_utils import spconv

CONV_IMPLS = ("auto", "ops", "spconv")


def resolve_conv_impl(conv_impl: str) -> str:
    """``"auto"`` -> ``"ops"`` (its modules run spconv's kernels on CUDA tensors, ours on the CPU)."""
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"SparseEncoder: conv_impl must be one of {list(CONV_IMPLS)}, got "
                         f"{conv_impl!r}")
    if conv_impl == "auto":
        return "ops"
    return conv_impl


def _convs(impl: str):
    """(SubMConv3d, SparseConv3d) of the implementation."""
    if impl == "ops":
        return ops_sparse_conv.SubMConv3d, ops_sparse_conv.SparseConv3d
    return spconv.SubMConv3d, spconv.SparseConv3d


def _conv_bn_relu(conv: nn.Module, channels: int, eps: float = 1e-3, momentum: float = 0.01):
    return spconv.SparseSequential(conv, nn.BatchNorm1d(channels, eps=eps, momentum=momentum),
                                   nn.ReLU(inplace=True))


def _subm(cin: int, cout: int, key: str, impl: str = "spconv"):
    subm, _ = _convs(impl)
    return _conv_bn_relu(subm(cin, cout, 3, padding=1, bias=False, indice_key=key), cout)


class SparseBasicBlock(spconv.SparseModule):
    """Residual block of two submanifold 3x3x3 convs sharing one rulebook."""

    def __init__(self, channels: int, key: str, impl: str = "spconv"):
        super().__init__()
        subm, _ = _convs(impl)
        self.conv1 = subm(channels, channels, 3, padding=1, bias=False, indice_key=key)
        self.bn1 = nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)
        self.conv2 = subm(channels, channels, 3, padding=1, bias=False, indice_key=key)
        self.bn2 = nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)

    def forward(self, x):
        identity = x.features
        out = self.conv1(x)
        out = out.replace_feature(torch.relu(self.bn1(out.features)))
        out = self.conv2(out)
        out = out.replace_feature(torch.relu(self.bn2(out.features) + identity))
        return out


@MODELS.register_module()
class SparseEncoder(nn.Module):
    """Sparse 3D encoder, stride 8, with height compression.

    Args:
        in_channels: voxel feature channels (the VFE's output; default 5).
        grid_size: voxel grid ``(nx, ny, nz)``; the detector fills it in from its data
            preprocessor when absent. The sparse tensor's z extent is ``nz + 1`` (the usual
            choice, so that a 40-voxel Waymo z range ends as 2 BEV slices).
        base_channels: channels of the input conv and stage 1 (default 16).
        stage_channels: channels of stages 1-4 (default (16, 32, 64, 128)).
        blocks_per_stage: submanifold blocks after each stage's opening conv
            (default (1, 2, 2, 2); stage 1 has no opening conv).
        out_channels: channels of the final z-shrinking conv (default 128). Its kernel is
            (3, 1, 1) with z stride 2 - or, when fewer than 3 z slices are left, one kernel
            covering them all.
        residual: use residual blocks instead of single SubM convs (default False).
        conv_impl: ``"auto"`` (default, ``"ops"``), ``"ops"`` (``ops.sparse_conv``: its own kernels on
            CPU tensors, spconv's on CUDA) or
            ``"spconv"``. The parameters are the same either way.
    """

    stride = 8

    def __init__(self, in_channels: int = 5, grid_size: Sequence[int] | None = None,
                 base_channels: int = 16, stage_channels: Sequence[int] = (16, 32, 64, 128),
                 blocks_per_stage: Sequence[int] = (1, 2, 2, 2), out_channels: int = 128,
                 residual: bool = False, conv_impl: str = "auto"):
        super().__init__()
        self.conv_impl = resolve_conv_impl(conv_impl)
        impl = self.conv_impl
        _, sparse = _convs(impl)
        if grid_size is None:
            raise ValueError("SparseEncoder needs grid_size (nx, ny, nz); CenterPointDetector fills "
                             "it in from its data_preprocessor")
        if len(stage_channels) != 4 or len(blocks_per_stage) != 4:
            raise ValueError("SparseEncoder: stage_channels and blocks_per_stage need 4 entries, got "
                             f"{list(stage_channels)} and {list(blocks_per_stage)}")
        nx, ny, nz = (int(v) for v in grid_size)
        if nx % 8 or ny % 8:
            raise ValueError(f"SparseEncoder: grid x/y sizes must be multiples of 8, got {nx}, {ny}")
        self.sparse_shape = [nz + 1, ny, nx]  # (z, y, x) as spconv expects
        self.residual = residual

        def blocks(ch: int, n: int, key: str) -> list[nn.Module]:
            if residual:
                return [SparseBasicBlock(ch, key, impl) for _ in range(n)]
            return [_subm(ch, ch, key, impl) for _ in range(n)]

        c1, c2, c3, c4 = stage_channels
        self.conv_input = _subm(in_channels, base_channels, "subm1", impl)
        stage1 = [] if base_channels == c1 else [_subm(base_channels, c1, "subm1", impl)]
        self.conv1 = spconv.SparseSequential(*stage1, *blocks(c1, blocks_per_stage[0], "subm1"))
        stages = []
        cin = c1
        for i, (cout, n) in enumerate(zip((c2, c3, c4), blocks_per_stage[1:]), start=2):
            # Last stage: no z padding, so that z shrinks as in the standard encoder.
            pad = (0, 1, 1) if i == 4 else 1
            down = _conv_bn_relu(sparse(cin, cout, 3, stride=2, padding=pad, bias=False,
                                        indice_key=f"spconv{i}"), cout)
            stages.append(spconv.SparseSequential(down, *blocks(cout, n, f"subm{i}")))
            cin = cout
        self.conv2, self.conv3, self.conv4 = stages
        d4 = self._z_after_stages(nz + 1)
        if d4 < 1:
            raise ValueError(f"SparseEncoder: z grid of {nz} voxels is too small for stride 8")
        # Coarse z grids (the small CPU config) leave fewer than 3 slices: squeeze them in one.
        kz, sz = (3, 2) if d4 >= 3 else (d4, 1)
        self.conv_out = _conv_bn_relu(
            sparse(c4, out_channels, (kz, 1, 1), stride=(sz, 1, 1), padding=0, bias=False,
                   indice_key="spconv_down2"), out_channels)
        self.z_out = (d4 - kz) // sz + 1
        self.out_channels = out_channels * self.z_out
        self.bev_shape = (ny // 8, nx // 8)

    @staticmethod
    def _z_after_stages(d: int) -> int:
        for pad in (1, 1, 0):  # stages 2-4: kernel 3, stride 2
            d = (d + 2 * pad - 3) // 2 + 1
        return d

    def forward(self, features: torch.Tensor, batch: VoxelBatch) -> torch.Tensor:
        """Voxel features (V, C) and their (b, z, y, x) coords -> BEV map (B, C*D, H/8, W/8).

        A batch without any voxel (every frame empty, or all its points outside the range or
        non-finite) gives an all-zero map, as a sparse tensor without sites densifies to; it
        stays connected to ``features`` so that backward runs. spconv cannot convolve an empty
        tensor (its ``!empty()`` assert), ops.sparse_conv could: both take this path."""
        if batch.coords.shape[0] == 0:
            h, w = self.bev_shape
            return features.sum() * 0.0 + features.new_zeros(batch.batch_size, self.out_channels,
                                                              h, w)
        if features.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # neither spconv nor ops.sparse_conv has bfloat16 CPU kernels: under CPU autocast the
            # encoder runs in float32.
            with torch.autocast("cpu", enabled=False):
                return self.forward(features.float(), batch)
        x = spconv.SparseConvTensor(features, batch.coords.int(), self.sparse_shape, batch.batch_size)
        x = self.conv_input(x)
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.conv3(x)
        x = self.conv4(x)
        x = self.conv_out(x)
        dense = x.dense()  # (B, C, D, H, W)
        b, c, d, h, w = dense.shape
        return dense.reshape(b, c * d, h, w)
