"""2D BEV backbone + neck in the SECOND-FPN style: a few conv stages that downsample, each
upsampled (transposed conv) or downsampled back to a common resolution, then concatenated.

Stage i: a 3x3 conv with stride ``layer_strides[i]`` then ``layer_nums[i]`` 3x3 convs, all
``out_channels[i]`` wide (each conv with BN + ReLU); its lateral branch resamples the stage's
output by ``upsample_strides[i]`` (a transposed conv, or a strided conv for values < 1) into
``upsample_channels[i]`` channels. All lateral outputs share one resolution and are concatenated.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import torch
from torch import nn

from detector.registry import MODELS


def _cbr(cin: int, cout: int, k: int, stride: int = 1, padding: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True)]


@MODELS.register_module()
class SECONDFPN(nn.Module):
    """SECOND backbone + FPN-style neck.

    Args:
        in_channels: BEV channels in (filled in by the detector from the 3D backbone).
        layer_nums: extra 3x3 convs per stage (default (5, 5)).
        layer_strides: stride of each stage's first conv (cumulative; default (1, 2)).
        out_channels: channels of each stage (default (128, 256)).
        upsample_strides: resampling of each stage's output, relative to that stage's resolution;
            values < 1 downsample with a strided conv (default (1, 2)).
        upsample_channels: channels of each lateral branch (default (256, 256)); the output has
            their sum.
    The output resolution is the input's times ``upsample_strides[i] / prod(layer_strides[:i+1])``
    (must agree across stages); ``out_stride`` is its inverse, relative to the input map.
    """

    def __init__(self, in_channels: int | None = None, layer_nums: Sequence[int] = (5, 5),
                 layer_strides: Sequence[int] = (1, 2), out_channels: Sequence[int] = (128, 256),
                 upsample_strides: Sequence[float] = (1, 2),
                 upsample_channels: Sequence[int] = (256, 256)):
        super().__init__()
        if in_channels is None:
            raise ValueError("SECONDFPN needs in_channels; CenterPointDetector fills it in")
        n = len(layer_nums)
        if not (len(layer_strides) == len(out_channels) == len(upsample_strides)
                == len(upsample_channels) == n) or n == 0:
            raise ValueError("SECONDFPN: layer_nums, layer_strides, out_channels, upsample_strides "
                             "and upsample_channels must have the same, non-zero length")
        self.blocks = nn.ModuleList()
        self.deblocks = nn.ModuleList()
        cin = in_channels
        total = Fraction(1)
        scales = set()
        for i in range(n):
            layers = _cbr(cin, out_channels[i], 3, layer_strides[i])
            for _ in range(layer_nums[i]):
                layers += _cbr(out_channels[i], out_channels[i], 3)
            self.blocks.append(nn.Sequential(*layers))
            total *= int(layer_strides[i])
            up = Fraction(upsample_strides[i]).limit_denominator(16)
            scales.add(total / up)
            if up >= 1:
                k = int(up)
                de = [nn.ConvTranspose2d(out_channels[i], upsample_channels[i], k, stride=k, bias=False),
                      nn.BatchNorm2d(upsample_channels[i], eps=1e-3, momentum=0.01), nn.ReLU(inplace=True)]
            else:
                k = int(round(1 / up))
                de = _cbr(out_channels[i], upsample_channels[i], k, stride=k, padding=0)
            self.deblocks.append(nn.Sequential(*de))
            cin = out_channels[i]
        if len(scales) != 1:
            raise ValueError(f"SECONDFPN: stages end at different resolutions {sorted(scales)}; "
                             "choose upsample_strides so that layer stride / upsample is equal")
        self.out_stride = scales.pop()  # Fraction, output stride relative to the input map
        self.out_channels = int(sum(upsample_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for block, deblock in zip(self.blocks, self.deblocks):
            x = block(x)
            outs.append(deblock(x))
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
