"""The spconv CPU shim: sparse convolutions run forward and backward on the CPU, with exact gradients."""
import pytest
import torch

from ops.spconv_utils import cpu_shim_applied, spconv

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the shim only applies without CUDA")

SPATIAL = [6, 7, 8]
BATCH = 2


def _sparse_input(channels=3, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = set()
    while len(coords) < n:
        b = int(torch.randint(BATCH, (1,), generator=g))
        z, y, x = (int(torch.randint(s, (1,), generator=g)) for s in SPATIAL)
        coords.add((b, z, y, x))
    indices = torch.tensor(sorted(coords), dtype=torch.int32)
    feats = torch.randn(n, channels, dtype=torch.float64, generator=g)
    return feats, indices


def test_shim_is_applied_without_cuda():
    assert cpu_shim_applied()


@pytest.mark.parametrize("kind", ["subm", "strided"])
def test_gradcheck_sparse_conv_float64(kind):
    torch.manual_seed(0)
    feats, indices = _sparse_input()
    if kind == "subm":
        conv = spconv.SubMConv3d(3, 4, 3, padding=1, bias=True)
    else:
        conv = spconv.SparseConv3d(3, 4, 3, stride=2, padding=1, bias=True)
    conv = conv.double()
    weight = conv.weight.detach().clone().requires_grad_(True)
    bias = conv.bias.detach().clone().requires_grad_(True)
    feats.requires_grad_(True)

    def run(f, w, b):
        # spconv reads the module's parameters; route the gradcheck inputs through them.
        del conv.weight, conv.bias
        conv.weight, conv.bias = w, b
        out = conv(spconv.SparseConvTensor(f, indices, SPATIAL, BATCH)).features
        return out

    assert torch.autograd.gradcheck(run, (feats, weight, bias), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["subm", "strided"])
def test_cpu_conv_is_deterministic_with_several_threads(kind):
    """spconv's CPU conv raced with >1 torch thread; the shim serialises it (see ops/spconv_utils)."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        feats, indices = _sparse_input()
        if kind == "subm":
            conv = spconv.SubMConv3d(3, 4, 3, padding=1, bias=True)
        else:
            conv = spconv.SparseConv3d(3, 4, 3, stride=2, padding=1, bias=True)
        conv = conv.double()
        x = spconv.SparseConvTensor(feats, indices, SPATIAL, BATCH)
        first = conv(x).features.clone()
        dense = x.dense()
        w = conv.weight.permute(0, 4, 1, 2, 3).contiguous()  # (out, k, k, k, in) -> (out, in, k, k, k)
        stride = 1 if kind == "subm" else 2
        ref = torch.nn.functional.conv3d(dense, w, conv.bias, stride=stride, padding=1)
        out = conv(x)
        idx = out.indices.long()
        expected = ref[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]]
        torch.testing.assert_close(out.features, expected, rtol=0, atol=1e-12)
        for _ in range(100):
            assert torch.equal(conv(x).features, first)
    finally:
        torch.set_num_threads(old)
