"""Slow, obviously correct sparse 3D convolution (pure Python / NumPy), for tests.

Same geometry as ``rulebook.py`` (and spconv): a regular conv's output ``o`` reads input
``o * stride - padding + k * dilation`` per axis and exists when it reads any active site; a
submanifold conv's outputs are the input sites and read ``o + (k - ksize // 2) * dilation``.
Weight layout KRSC: ``(C_out, kz, ky, kx, C_in)``.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

__all__ = ["reference_rulebook", "reference_sparse_conv"]


def _offsets(ksize):
    return list(itertools.product(*(range(k) for k in ksize)))   # (a, c, e), z-y-x, row-major


def reference_rulebook(indices: np.ndarray, spatial_shape: Sequence[int], ksize, stride, padding,
                       dilation, subm: bool):
    """(out_indices (M, 4), pairs) with pairs a list of (input row, output row, k)."""
    sites = {tuple(int(v) for v in row): i for i, row in enumerate(np.asarray(indices))}
    offs = _offsets(ksize)
    if subm:
        outs = [tuple(int(v) for v in row) for row in np.asarray(indices)]
        out_shape = list(spatial_shape)
    else:
        out_shape = [(n + 2 * p - d * (k - 1) - 1) // s + 1
                     for n, k, s, p, d in zip(spatial_shape, ksize, stride, padding, dilation)]
        found = set()
        for (b, *pos) in sites:
            for off in offs:
                o = []
                for ax in range(3):
                    t = pos[ax] + padding[ax] - off[ax] * dilation[ax]
                    if t % stride[ax] or not 0 <= t // stride[ax] < out_shape[ax]:
                        break
                    o.append(t // stride[ax])
                else:
                    found.add((b, *o))
        outs = sorted(found)
    pairs = []
    for j, (b, *o) in enumerate(outs):
        for k, off in enumerate(offs):
            if subm:
                src = [o[ax] + (off[ax] - ksize[ax] // 2) * dilation[ax] for ax in range(3)]
            else:
                src = [o[ax] * stride[ax] - padding[ax] + off[ax] * dilation[ax] for ax in range(3)]
            i = sites.get((b, *src))
            if i is not None:
                pairs.append((i, j, k))
    return np.asarray(outs, np.int64).reshape(-1, 4), out_shape, pairs


def reference_sparse_conv(indices, features, weight, bias, spatial_shape, ksize, stride, padding,
                          dilation, subm: bool):
    """(out_indices, out_spatial_shape, out_features) in float64, by summing over pairs."""
    ksize, stride, padding, dilation = ([int(v) for v in a] for a in (ksize, stride, padding,
                                                                      dilation))
    out_idx, out_shape, pairs = reference_rulebook(indices, spatial_shape, ksize, stride, padding,
                                                   dilation, subm)
    f = np.asarray(features, np.float64)
    w = np.asarray(weight, np.float64)
    cout, cin = w.shape[0], w.shape[-1]
    wk = w.reshape(cout, -1, cin)                      # (C_out, K, C_in)
    out = np.zeros((len(out_idx), cout))
    for i, j, k in pairs:
        out[j] += wk[:, k, :] @ f[i]
    if bias is not None:
        out += np.asarray(bias, np.float64)
    return out_idx, out_shape, out
