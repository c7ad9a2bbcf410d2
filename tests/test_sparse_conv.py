"""ops.sparse_conv against spconv 2.x (with the project's one-thread CPU shim) and against the
NumPy reference: output sites, spatial shapes, features and the three gradients; float64
gradcheck; bit-identical results at 1 and 2 threads and run to run; state dicts both ways;
indice_key reuse; empty inputs; and the whole detector trained with each implementation."""
from __future__ import annotations

import copy
import warnings

import numba
import numpy as np
import pytest
import torch

from ops.sparse_conv import SparseConv3d, SubMConv3d
from ops.sparse_conv.functional import sparse_conv_apply
from ops.sparse_conv.reference import reference_rulebook, reference_sparse_conv
from ops.sparse_conv.rulebook import build_rulebook
from ops.spconv_utils import spconv

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="ops.sparse_conv is the CPU path (spconv runs on CUDA)")


def random_sites(n, shape, batch, seed, empty_items=()):
    """n distinct (b, z, y, x) sites (int32), none in the batch items ``empty_items``."""
    g = np.random.default_rng(seed)
    items = [b for b in range(batch) if b not in empty_items]
    per = int(np.prod(shape))
    flat = g.choice(len(items) * per, size=min(n, len(items) * per), replace=False)
    b, r = np.divmod(flat, per)
    z, r = np.divmod(r, shape[1] * shape[2])
    y, x = np.divmod(r, shape[2])
    b = np.asarray(items)[b]
    return torch.from_numpy(np.stack([b, z, y, x], 1).astype(np.int32))


def pair(kind, cin, cout, bias=True, seed=0, **kw):
    """(spconv layer, our layer) with the same parameters."""
    torch.manual_seed(seed)
    theirs = (spconv.SubMConv3d if kind == "subm" else spconv.SparseConv3d)(cin, cout, bias=bias, **kw)
    torch.manual_seed(seed)
    ours = (SubMConv3d if kind == "subm" else SparseConv3d)(cin, cout, bias=bias, **kw)
    assert torch.equal(theirs.weight, ours.weight)      # same init draws from the same seed
    return theirs, ours


def run(layer, idx, feats, shape, batch):
    f = feats.clone().requires_grad_(True)
    out = layer(spconv.SparseConvTensor(f, idx, shape, batch))
    return out, f


def order_by_site(indices: torch.Tensor) -> torch.Tensor:
    key = indices.long()
    key = ((key[:, 0] * 4096 + key[:, 1]) * 4096 + key[:, 2]) * 4096 + key[:, 3]
    return torch.argsort(key)


def assert_same_as_spconv(ours, theirs, oo, fo, ot, ft):
    """Our layer's output ``oo`` (input features ``fo``) against spconv's ``ot`` (``ft``): the
    same sites (rows matched by site), features, and feature / weight / bias gradients for one
    random output gradient. Returns our site order and the output gradient used."""
    pt, po = order_by_site(ot.indices), order_by_site(oo.indices)
    assert torch.equal(ot.indices[pt], oo.indices[po])
    torch.testing.assert_close(oo.features[po], ot.features[pt], rtol=1e-5, atol=1e-5)
    gout = torch.randn(oo.features.shape, generator=torch.Generator().manual_seed(2))
    g_t = torch.empty_like(gout)
    g_t[pt] = gout[po]
    ot.features.backward(g_t)
    oo.features.backward(gout)
    torch.testing.assert_close(fo.grad, ft.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad, rtol=1e-5, atol=1e-4)
    return po, gout


CASES = [
    # kind, spatial shape, batch, n sites, cin, cout, kernel, stride, padding, empty items
    ("subm", [9, 10, 11], 2, 300, 4, 5, 3, 1, 1, ()),
    ("subm", [5, 20, 7], 3, 150, 3, 8, 3, 1, 0, (1,)),
    ("subm", [6, 6, 6], 1, 80, 5, 4, 1, 1, 0, ()),
    ("conv", [9, 10, 11], 2, 300, 4, 5, 3, 2, 1, ()),
    ("conv", [8, 13, 12], 2, 200, 6, 3, 3, 2, 0, (0,)),
    ("conv", [9, 10, 11], 2, 250, 4, 6, 3, 2, (0, 1, 1), ()),
    ("conv", [7, 9, 9], 3, 200, 4, 4, (3, 1, 1), (2, 1, 1), 0, (2,)),
    ("conv", [10, 8, 8], 2, 100, 3, 5, 1, 2, 0, ()),
    ("conv", [6, 7, 8], 1, 90, 4, 4, 3, 1, 1, ()),
    ("subm", [9, 10, 11], 2, 1, 4, 5, 3, 1, 1, ()),          # a single voxel
    ("conv", [9, 10, 11], 2, 1, 4, 5, 3, 2, 1, ()),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-b{c[2]}-n{c[3]}-k{c[6]}-s{c[7]}-p{c[8]}"
                                             for c in CASES])
def test_matches_spconv(case):
    kind, shape, batch, n, cin, cout, k, s, p, empty = case
    idx = random_sites(n, shape, batch, seed=n + cin, empty_items=empty)
    feats = torch.randn(len(idx), cin, generator=torch.Generator().manual_seed(1))
    kw = dict(kernel_size=k, padding=p) if kind == "subm" else dict(kernel_size=k, stride=s, padding=p)
    theirs, ours = pair(kind, cin, cout, **kw)
    ot, ft = run(theirs, idx, feats, shape, batch)
    oo, fo = run(ours, idx, feats, shape, batch)
    assert oo.spatial_shape == ot.spatial_shape
    assert oo.indices.dtype == torch.int32 and oo.features.dtype == torch.float32
    po, _ = assert_same_as_spconv(ours, theirs, oo, fo, ot, ft)
    if kind == "subm":                                   # submanifold: the input's rows, in order
        assert torch.equal(oo.indices, idx)
    else:                                                # ours: sorted by (b, z, y, x)
        assert torch.equal(po, torch.arange(len(po)))
    dense_t, dense_o = ot.dense(), oo.dense()
    torch.testing.assert_close(dense_o, dense_t, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,kw", [
    ("subm", dict(kernel_size=3, padding=1)),
    ("conv", dict(kernel_size=3, stride=2, padding=1)),
    ("conv", dict(kernel_size=3, stride=(2, 1, 1), padding=(0, 1, 1))),
    ("conv", dict(kernel_size=(3, 1, 1), stride=(2, 1, 1), padding=0)),
])
def test_matches_numpy_reference(kind, kw):
    shape, batch = [7, 8, 9], 2
    idx = random_sites(120, shape, batch, seed=7)
    feats = torch.randn(len(idx), 3, dtype=torch.float64)
    torch.manual_seed(0)
    layer = (SubMConv3d if kind == "subm" else SparseConv3d)(3, 4, bias=True, **kw).double()
    out = layer(spconv.SparseConvTensor(feats, idx, shape, batch))
    ref_idx, ref_shape, ref = reference_sparse_conv(
        idx.numpy(), feats.numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(),
        shape, layer.kernel_size, layer.stride, layer.padding, layer.dilation, kind == "subm")
    assert out.spatial_shape == ref_shape
    assert np.array_equal(out.indices.numpy(), ref_idx)   # same order: input rows / sorted sites
    np.testing.assert_allclose(out.features.detach().numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("subm,kw", [
    (True, dict(ksize=[3, 3, 3], stride=[1, 1, 1], padding=[1, 1, 1])),
    (True, dict(ksize=[3, 1, 3], stride=[1, 1, 1], padding=[0, 0, 0])),
    (False, dict(ksize=[3, 3, 3], stride=[2, 2, 2], padding=[1, 1, 1])),
    (False, dict(ksize=[3, 3, 3], stride=[2, 2, 2], padding=[0, 1, 1])),
    (False, dict(ksize=[2, 3, 1], stride=[2, 1, 3], padding=[0, 1, 0])),
])
@pytest.mark.parametrize("path", ["grid", "search"])
def test_rulebook_matches_reference(subm, kw, path, monkeypatch):
    """Both ways of building the tables: the dense grid (the default on grids this small) and
    the searches over the sorted keys (taken when the grid would be too big)."""
    import ops.sparse_conv.rulebook as R
    if path == "search":
        monkeypatch.setattr(R, "_GRID_CELLS", 0)
    shape = [6, 9, 7]
    idx = random_sites(150, shape, 3, seed=3, empty_items=(1,)).numpy()
    rb = build_rulebook(idx, shape, dilation=[1, 1, 1], subm=subm, **kw)
    if path == "grid":
        assert rb.subm or rb._inv is not None          # the grid built the transpose too
        assert (R._grid_memory == -1).all()            # and left the shared grid clean
    ref_idx, ref_shape, pairs = reference_rulebook(idx, shape, kw["ksize"], kw["stride"],
                                                   kw["padding"], [1, 1, 1], subm)
    assert rb.out_spatial_shape == ref_shape
    assert np.array_equal(rb.out_indices, ref_idx)
    got = {(int(rb.nbr[o, k]), o, k) for o, k in zip(*np.nonzero(rb.nbr < rb.n_in))}
    assert got == set(pairs)
    inv = {(i, int(rb.inv[i, k]), k) for i, k in zip(*np.nonzero(rb.inv < rb.n_out))}
    assert inv == set(pairs)


@pytest.mark.parametrize("subm,kw", [
    (True, dict(ksize=[3, 3, 3], stride=[1, 1, 1], padding=[1, 1, 1], dilation=[1, 2, 1])),
    (True, dict(ksize=[5, 3, 3], stride=[1, 1, 1], padding=[0, 0, 0], dilation=[1, 1, 1])),
    (False, dict(ksize=[3, 3, 3], stride=[2, 2, 2], padding=[1, 1, 1], dilation=[1, 1, 2])),
    (False, dict(ksize=[3, 1, 1], stride=[2, 1, 1], padding=[0, 0, 0], dilation=[1, 1, 1])),
    (False, dict(ksize=[3, 3, 3], stride=[1, 1, 1], padding=[2, 0, 1], dilation=[1, 1, 1])),
])
def test_rulebook_grid_and_search_give_the_same_tables(subm, kw, monkeypatch):
    import ops.sparse_conv.rulebook as R
    shape = [10, 13, 11]
    for seed, n in [(0, 900), (1, 40), (2, 1)]:
        idx = random_sites(n, shape, 2, seed=seed).numpy()
        grid = build_rulebook(idx, shape, subm=subm, **kw)
        with monkeypatch.context() as m:
            m.setattr(R, "_GRID_CELLS", 0)
            search = build_rulebook(idx, shape, subm=subm, **kw)
        assert np.array_equal(grid.out_indices, search.out_indices)
        assert np.array_equal(grid.nbr, search.nbr)
        assert np.array_equal(grid.inv, search.inv)
        assert (R._grid_memory == -1).all()


@pytest.mark.parametrize("path", ["grid", "search"])
@pytest.mark.parametrize("subm", [True, False])
def test_rulebook_rejects_bad_sites(subm, path, monkeypatch):
    """Out-of-grid and repeated sites are named by row on both paths (the grid finds repeats
    without sorting; the sort names the row) and leave the shared grid clean."""
    import ops.sparse_conv.rulebook as R
    if path == "search":
        monkeypatch.setattr(R, "_GRID_CELLS", 0)
    conv = dict(ksize=[3] * 3, stride=[1 if subm else 2] * 3, padding=[1] * 3, dilation=[1] * 3)
    with pytest.raises(ValueError, match="row 1 .* outside the spatial shape"):
        build_rulebook(np.array([[0, 1, 1, 1], [0, 6, 0, 0]]), [6, 6, 6], subm=subm, **conv)
    with pytest.raises(ValueError, match="row 2 .* repeats an earlier row"):
        build_rulebook(np.array([[0, 1, 1, 1], [0, 2, 2, 2], [0, 1, 1, 1]]), [6, 6, 6],
                       subm=subm, **conv)
    # One repeat among thousands of rows (the grid's check runs in parallel over them).
    shape = [10, 13, 11]
    idx = random_sites(2000, shape, 2, seed=5).numpy()
    idx = np.concatenate([idx[:1500], idx[700:701], idx[1500:]])
    with pytest.raises(ValueError, match=rf"row 1500 = {idx[700].tolist()} repeats".replace(
            "[", r"\[").replace("]", r"\]")):
        build_rulebook(idx, shape, subm=subm, **conv)
    if not subm:
        # A 1x1x1 stride-2 conv reads no input with an odd coordinate: a repeat there does not
        # show in the tables (the grid path then checks the sites themselves); at an even one
        # it does.
        one = dict(ksize=[1] * 3, stride=[2] * 3, padding=[0] * 3, dilation=[1] * 3)
        for site in ([0, 1, 1, 1], [0, 2, 2, 2]):
            with pytest.raises(ValueError, match=r"row 2 = \[0, \d, \d, \d\] repeats"):
                build_rulebook(np.array([[0, 4, 0, 0], site, site]), [6, 6, 6], subm=False,
                               **one)
    assert R._grid_memory.size == 0 or (R._grid_memory == -1).all()


@pytest.mark.parametrize("kind,kw", [
    ("subm", dict(kernel_size=3, padding=1)),
    ("conv", dict(kernel_size=3, stride=2, padding=1)),
    ("conv", dict(kernel_size=(3, 1, 1), stride=(2, 1, 1), padding=0)),
])
def test_gradcheck_float64(kind, kw):
    shape = [5, 6, 7]
    idx = random_sites(40, shape, 2, seed=11)
    torch.manual_seed(0)
    layer = (SubMConv3d if kind == "subm" else SparseConv3d)(3, 4, bias=True, **kw).double()
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    f = torch.randn(len(idx), 3, dtype=torch.float64, requires_grad=True)

    rb = build_rulebook(idx.numpy(), shape, layer.kernel_size, layer.stride, layer.padding,
                        layer.dilation, layer.subm)
    assert rb.n_out > 0 and (rb.nbr < rb.n_in).sum() > rb.n_out   # outputs read several inputs
    assert torch.autograd.gradcheck(lambda f, w, b: sparse_conv_apply(f, w, b, rb), (f, w, b),
                                    eps=1e-6, atol=1e-7)
    # and through the module, features only
    assert torch.autograd.gradcheck(
        lambda f: layer(spconv.SparseConvTensor(f, idx, shape, 2)).features, (f,), eps=1e-6,
        atol=1e-7)



def _train_like_pass(threads: int):
    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    shape, batch = [11, 40, 40], 2
    idx = random_sites(6000, shape, batch, seed=5)
    feats = torch.randn(len(idx), 16, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    net = spconv.SparseSequential(
        SubMConv3d(16, 16, 3, padding=1, bias=True, indice_key="s1"),
        SubMConv3d(16, 32, 3, padding=1, bias=False, indice_key="s1"),
        SparseConv3d(32, 32, 3, stride=2, padding=1, bias=True, indice_key="c2"))
    f = feats.clone().requires_grad_(True)
    out = net(spconv.SparseConvTensor(f, idx, shape, batch))
    (out.features * torch.linspace(-1, 1, out.features.numel()).view_as(out.features)).sum().backward()
    return [out.features.detach(), f.grad] + [p.grad for p in net.parameters()]


def test_same_bits_at_one_and_two_threads_and_run_to_run():
    t0, n0 = torch.get_num_threads(), numba.get_num_threads()
    try:
        one = _train_like_pass(1)
        two = _train_like_pass(2)
        again = _train_like_pass(2)
    finally:
        torch.set_num_threads(t0)
        numba.set_num_threads(n0)
    assert len(one) == 7          # output, feature grad, 5 parameter grads
    for a, b, c in zip(one, two, again):
        assert torch.equal(a, b) and torch.equal(b, c)


def test_state_dict_round_trip_both_ways():
    theirs, ours = pair("subm", 4, 6, kernel_size=3, padding=1, seed=0)
    torch.manual_seed(5)
    other_t = spconv.SparseConv3d(4, 6, 3, stride=2, padding=1, bias=True)
    other_o = SparseConv3d(4, 6, 3, stride=2, padding=1, bias=True)
    other_o.load_state_dict(other_t.state_dict())            # spconv -> ours
    assert other_o.weight.shape == (6, 3, 3, 3, 4) and torch.equal(other_o.weight, other_t.weight)
    with torch.no_grad():
        ours.weight.mul_(2)
    theirs.load_state_dict(ours.state_dict())               # ours -> spconv
    assert torch.equal(theirs.weight, ours.weight) and torch.equal(theirs.bias, ours.bias)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "bias"]


def test_indice_key_reuse_and_checks():
    shape = [6, 8, 8]
    idx = random_sites(100, shape, 2, seed=1)
    x = spconv.SparseConvTensor(torch.randn(len(idx), 4), idx, shape, 2)
    a = SubMConv3d(4, 4, 3, padding=1, indice_key="k")
    b = SubMConv3d(4, 4, 3, padding=1, indice_key="k")
    ya = a(x)
    yb = b(ya)
    assert yb.indice_dict["k"] is ya.indice_dict["k"]        # built once, reused
    assert "k" not in x.indice_dict                          # the input's dict is left alone
    with pytest.raises(ValueError, match="kernel .* differ"):
        SubMConv3d(4, 4, (3, 1, 1), padding=1, indice_key="k")(ya)
    with pytest.raises(TypeError, match="spconv's"):
        SubMConv3d(4, 4, 3, padding=1, indice_key="t")(spconv.SubMConv3d(4, 4, 3, padding=1,
                                                                         indice_key="t")(x))
    down = SparseConv3d(4, 4, 3, stride=2, padding=1, indice_key="d")(yb)
    assert down.indice_dict["d"].n_out == len(down.indices)
    with pytest.raises(ValueError, match="already exists"):
        SparseConv3d(4, 4, 3, stride=2, padding=1, indice_key="d")(down)


def test_empty_input_gives_empty_output_and_zero_grads():
    shape = [6, 8, 8]
    idx = torch.zeros((0, 4), dtype=torch.int32)
    f = torch.zeros((0, 4), requires_grad=True)
    net = spconv.SparseSequential(SubMConv3d(4, 5, 3, padding=1, indice_key="a"),
                                  torch.nn.BatchNorm1d(5), torch.nn.ReLU(),
                                  SparseConv3d(5, 6, 3, stride=2, padding=1, bias=True))
    out = net(spconv.SparseConvTensor(f, idx, shape, 2))
    assert out.features.shape == (0, 6) and out.indices.shape == (0, 4)
    assert out.spatial_shape == [3, 4, 4]
    dense = out.dense()
    assert dense.shape == (2, 6, 3, 4, 4) and not dense.any()
    dense.sum().backward()
    assert f.grad.shape == (0, 4)
    for p in net.parameters():
        if p.dim() == 5:
            assert p.grad is not None and not p.grad.any()


def _tiny_detector(impl: str, perturb: float = 0.0, dtype: torch.dtype = torch.float32):
    """(model in train mode, its inputs, samples): the tiny detector from seed 0 on two frames,
    the backbone on ``impl``, its weights times 1 + perturb, all in ``dtype``."""
    import dataclasses

    from test_model import build, frames, tiny_cfg

    pts, samples = frames(2, num_boxes=3)
    cfg = copy.deepcopy(tiny_cfg(graddrop=dict(mode="off")))
    cfg["backbone_3d"]["conv_impl"] = impl
    model = build(cfg, seed=0)
    assert model.backbone_3d.conv_impl == impl
    with torch.no_grad():
        for p in model.backbone_3d.parameters():
            p.mul_(1.0 + perturb)
    model = model.to(dtype)
    model.train()
    data = model.data_preprocessor(dict(inputs=dict(points=pts), data_samples=samples), True)
    vox = data["inputs"]["voxels"]
    data["inputs"]["voxels"] = dataclasses.replace(vox, voxels=vox.voxels.to(dtype))
    return model, data["inputs"], samples


def _train_losses(impl: str, steps: int, perturb: float = 0.0,
                  dtype: torch.dtype = torch.float32) -> list[float]:
    model, inputs, samples = _tiny_detector(impl, perturb, dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seq = []
    for _ in range(steps):
        loss = sum(model(inputs, samples, "loss").values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        seq.append(loss.item())
    return seq


def _initial_gradients(impl: str, dtype: torch.dtype = torch.float32) -> dict:
    """Every parameter's gradient (float64) of the tiny detector's first loss."""
    model, inputs, samples = _tiny_detector(impl, dtype=dtype)
    sum(model(inputs, samples, "loss").values()).backward()
    return {n: p.grad.double() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow
def test_detector_trains_the_same_with_ours_and_spconv():
    """20 SGD steps of a small detector from one seed with each implementation.

    This training is chaotic, and its gradient is not even continuous: the L1 regression terms'
    gradient is the sign of each residual. At the float64 run's parameters after one step,
    spconv's float32 gradients differ from float64's by up to 12 % (a size-head weight), ours
    by 6e-6: a float32 rounding decides on which side of such a jump a trajectory lands, and
    from there the runs part (measured: our float32 run's third loss 2.9e-3 from float64's,
    spconv's 7e-7; at the float64 parameters the two swap roles). So in float32 the test
    compares what is continuous: the first two losses, and every gradient at the initial
    parameters against float64 (for both implementations); both must train. Over all 20 steps
    the comparison is in float64, where the roundings are ~1e-14 and the trajectories must
    coincide while the perturbed run shows that the bound could fail."""
    ours = np.asarray(_train_losses("ops", 20))
    theirs = np.asarray(_train_losses("spconv", 20))
    np.testing.assert_allclose(ours[:2], theirs[:2], rtol=1e-5)
    assert ours[-1] < 0.5 * ours[0] and theirs[-1] < 0.5 * theirs[0]       # both train

    want = _initial_gradients("ops", torch.float64)
    for impl in ("ops", "spconv"):
        got = _initial_gradients(impl)
        assert got.keys() == want.keys()
        for name, g in want.items():
            err = (got[name] - g).abs().max().item()
            assert err <= 1e-4 * g.abs().max().item() + 1e-12, (impl, name, err)

    ours64 = np.asarray(_train_losses("ops", 20, dtype=torch.float64))
    theirs64 = np.asarray(_train_losses("spconv", 20, dtype=torch.float64))
    floor64 = np.asarray(_train_losses("spconv", 20, perturb=1e-6, dtype=torch.float64))
    assert ours64[-1] < 0.5 * ours64[0]
    gap = np.abs(ours64 - theirs64) / theirs64
    noise = np.abs(floor64 - theirs64) / theirs64
    assert noise.max() > 1e-2, noise.max()   # the training is sensitive enough to show a gap
    assert gap.max() <= 1e-9, (gap.max(), noise.max())


# --- the "pairs" algorithm: compacted pair lists per (block, offset) -----------------------------

from ops.sparse_conv import functional as F            # noqa: E402
from ops.sparse_conv.rulebook import pair_blocks        # noqa: E402


def check_pair_blocks(pb, table, n_src, centre):
    """pb against the table, with NumPy: greedy block cuts under its caps, and per (block,
    offset) exactly the table's valid entries of the block's rows, in row order."""
    max_pairs, max_rows = pb.max_pairs, pb.max_rows
    n, nk = table.shape
    valid = table < n_src
    if centre >= 0:
        valid[:, centre] = False
    cnt = valid.sum(1)
    bnd = pb.bounds
    assert bnd[0] == 0 and bnd[-1] == n and np.all(np.diff(bnd) > 0) if n else list(bnd) == [0]
    for b in range(len(bnd) - 1):
        s, e = bnd[b], bnd[b + 1]
        assert e - s <= max_rows
        assert e - s == 1 or cnt[s:e].sum() <= max_pairs           # only a lone row may exceed
        if e < n:                                                   # greedy: the next row did not fit
            assert cnt[s:e + 1].sum() > max_pairs or e + 1 - s > max_rows
        for k in range(nk):
            a, z = pb.ptr[b * nk + k], pb.ptr[b * nk + k + 1]
            rows = np.arange(s, e)[valid[s:e, k]]
            assert np.array_equal(pb.dst[a:z], rows)
            assert np.array_equal(pb.src[a:z], table[rows, k])
    assert pb.ptr[-1] == valid.sum() == len(pb.dst) == len(pb.src)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_pairs,max_rows", [(1, 1), (5, 3), (40, 1000), (10 ** 6, 10 ** 6)])
def test_pair_blocks_match_numpy_on_random_tables(seed, max_pairs, max_rows):
    g = np.random.default_rng(seed)
    n, nk, n_src = int(g.integers(0, 60)), int(g.choice([1, 3, 7, 27])), int(g.integers(1, 50))
    table = g.integers(0, n_src, size=(n, nk)).astype(np.int32)
    table[g.random((n, nk)) < g.choice([0.0, 0.5, 0.9, 1.0])] = n_src    # empty entries
    if nk > 1 and n:
        table[:, 1] = n_src                                              # an offset with no pairs
        table[: n // 3] = n_src                                          # rows without any pair
    for centre in (-1, nk // 2):
        pb = pair_blocks(table, n_src, centre, max_pairs, max_rows, 10 ** 9)   # the minima rule
        assert (pb.max_pairs, pb.max_rows) == (max_pairs, max_rows)
        check_pair_blocks(pb, table, n_src, centre)
        valid = table < n_src
        if centre >= 0:
            valid[:, centre] = False
        pb = pair_blocks(table, n_src, centre, 1, 1, 4)                       # ~4 blocks
        assert pb.max_pairs == max(1, -(-int(valid.sum()) // 4))
        assert pb.max_rows == max(1, -(-n // 4))
        check_pair_blocks(pb, table, n_src, centre)


@pytest.mark.parametrize("subm,kw", [
    (True, dict(ksize=[3, 3, 3], stride=[1, 1, 1], padding=[1, 1, 1])),
    (False, dict(ksize=[3, 3, 3], stride=[2, 2, 2], padding=[1, 1, 1])),
    (False, dict(ksize=[1, 1, 1], stride=[2, 2, 2], padding=[0, 0, 0])),
])
def test_rulebook_pair_lists_both_directions(subm, kw):
    shape = [6, 9, 7]
    idx = random_sites(150, shape, 2, seed=4).numpy()
    rb = build_rulebook(idx, shape, dilation=[1, 1, 1], subm=subm, **kw)
    centre = rb.centre
    assert centre == (13 if subm else -1)
    if subm:
        assert np.array_equal(rb.nbr[:, centre], np.arange(rb.n_out))
    fwd = rb.pairs(False, 17, 9, 10 ** 9)
    assert fwd.n_blocks > 1
    check_pair_blocks(fwd, rb.nbr.copy(), rb.n_in, centre)
    bwd = rb.pairs(True, 17, 9, 10 ** 9)
    assert rb.pairs(True, 17, 9, 10 ** 9) is bwd            # cached
    inv = rb.inv.copy()
    if bwd.flipped:                                         # segment k holds inv's offset K-1-k
        assert subm
        check_pair_blocks(bwd, inv[:, ::-1].copy(), rb.n_out, centre)
    else:
        check_pair_blocks(bwd, inv, rb.n_out, centre)


def _isolated_sites(shape, batch):
    """Sites two cells apart in every axis: no submanifold 3x3x3 pair but the centre."""
    z, y, x = np.meshgrid(*(np.arange(0, n, 2) for n in shape), indexing="ij")
    one = np.stack([z.ravel(), y.ravel(), x.ravel()], 1)
    return torch.from_numpy(np.concatenate([np.c_[np.full(len(one), b), one] for b in range(batch)])
                            .astype(np.int32))


def _flat_sites(shape, batch, n, seed):
    """Sites in one z plane: every offset with dz != 0 has no pair."""
    idx = random_sites(n, [1] + list(shape[1:]), batch, seed=seed)
    idx[:, 1] = shape[0] // 2
    return idx


def small_blocks_and_chunks(monkeypatch, block_pairs, block_rows, chunk):
    """Blocks of at most ``block_pairs`` pairs / ``block_rows`` rows, chunks of ``chunk``
    pairs (with 4-channel float32 / float64 rows), so that chunks cut offsets' pair lists."""
    monkeypatch.setattr(F, "_MIN_BLOCK_PAIRS", block_pairs)
    monkeypatch.setattr(F, "_MIN_BLOCK_ROWS", block_rows)
    monkeypatch.setattr(F, "_TARGET_BLOCKS", 10 ** 9)
    monkeypatch.setattr(F, "_MIN_CHUNK", 1)
    monkeypatch.setattr(F, "_PAIR_BYTES", chunk * 4 * 8)


GEOMETRIES = [
    ("subm", "isolated", dict(kernel_size=3, padding=1)),
    ("subm", "flat", dict(kernel_size=3, padding=1)),
    ("conv", "flat", dict(kernel_size=3, stride=2, padding=1)),
    ("conv", "isolated", dict(kernel_size=3, stride=2, padding=0)),
    ("conv", "random", dict(kernel_size=1, stride=2, padding=0)),   # odd inputs: read by no output
]


@pytest.mark.parametrize("small_blocks", [False, True])
@pytest.mark.parametrize("kind,sites,kw", GEOMETRIES, ids=[f"{g[0]}-{g[1]}-{g[2]}" for g in GEOMETRIES])
def test_empty_offsets_and_empty_blocks_match_spconv(kind, sites, kw, small_blocks, monkeypatch):
    """Offsets without any pair, and blocks (forward or backward) without any pair besides the
    centre: against spconv, and against the im2col algorithm."""
    if small_blocks:                      # many small blocks: most of them hold no pair at all
        small_blocks_and_chunks(monkeypatch, 5, 3, 2)
    shape, batch = [7, 10, 9], 2
    idx = {"isolated": lambda: _isolated_sites(shape, batch),
           "flat": lambda: _flat_sites(shape, batch, 60, seed=2),
           "random": lambda: random_sites(150, shape, batch, seed=9)}[sites]()
    feats = torch.randn(len(idx), 4, generator=torch.Generator().manual_seed(1))
    theirs, ours = pair(kind, 4, 6, **kw)
    rb = build_rulebook(idx.numpy(), shape, ours.kernel_size, ours.stride, ours.padding,
                        ours.dilation, ours.subm)
    nk = rb.nbr.shape[1]
    occupied = {int(k) for k in np.nonzero((rb.nbr < rb.n_in).any(0))[0]}
    unread = bool((rb.inv >= rb.n_out).all(1).any())               # an input no output reads
    assert len(occupied) < nk or unread                             # some offset has no pair
    ot, ft = run(theirs, idx, feats, shape, batch)
    oo, fo = run(ours, idx, feats, shape, batch)
    _, gout = assert_same_as_spconv(ours, theirs, oo, fo, ot, ft)
    # the same in float64 against the im2col algorithm, through sparse_conv_apply
    f64 = feats.double().requires_grad_(True)
    w64 = ours.weight.detach().double().requires_grad_(True)
    b64 = ours.bias.detach().double().requires_grad_(True)
    res = {}
    for algo in ("pairs", "im2col"):
        out = sparse_conv_apply(f64, w64, b64, rb, algorithm=algo)
        grads = torch.autograd.grad((out * gout.double()).sum(), (f64, w64, b64))
        res[algo] = (out.detach(),) + grads
    for a, b in zip(res["pairs"], res["im2col"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("subm,ks,st,pd", [(True, [3, 3, 3], [1, 1, 1], [1, 1, 1]),
                                           (False, [3, 3, 3], [2, 2, 2], [1, 1, 1]),
                                           (False, [3, 1, 1], [2, 1, 1], [0, 0, 0])])
def test_pairs_row_and_column_buffers_agree(subm, ks, st, pd, chunk, monkeypatch):
    """The "pairs" kernels with the gathered rows stored as rows (wide layers) and as columns
    (narrow ones: ``_NARROW`` backward, ``_NARROW_FORWARD``), forced both ways on the same
    layers, in float64 against "im2col": features and the three gradients; narrow and wide
    channel counts."""
    if chunk is not None:
        small_blocks_and_chunks(monkeypatch, 7, 4, chunk)
    shape = [6, 7, 8]
    idx = random_sites(120, shape, 2, seed=5)
    rb = build_rulebook(idx.numpy(), shape, ks, st, pd, [1, 1, 1], subm)
    g = torch.Generator().manual_seed(4)
    for cin, cout in ((3, 5), (5, 12), (12, 4)):
        f = torch.randn(len(idx), cin, dtype=torch.float64, generator=g)
        w = torch.randn(cout, *ks, cin, dtype=torch.float64, generator=g)
        b = torch.randn(cout, dtype=torch.float64, generator=g)
        gout = torch.randn(rb.n_out, cout, dtype=torch.float64, generator=g)
        res = {}
        for name, narrow, algo in (("rows", 0, "pairs"), ("columns", 10 ** 6, "pairs"),
                                   ("im2col", 0, "im2col")):
            monkeypatch.setattr(F, "_NARROW", narrow)
            monkeypatch.setattr(F, "_NARROW_FORWARD", narrow)
            fi, wi, bi = (t.clone().requires_grad_(True) for t in (f, w, b))
            out = sparse_conv_apply(fi, wi, bi, rb, algorithm=algo)
            res[name] = (out.detach(),) + torch.autograd.grad((out * gout).sum(), (fi, wi, bi))
        for other in ("columns", "im2col"):
            for a, c in zip(res["rows"], res[other]):
                torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)


def test_pairs_gradcheck_with_small_blocks(monkeypatch):
    small_blocks_and_chunks(monkeypatch, 5, 3, 2)
    shape = [5, 6, 7]
    idx = random_sites(40, shape, 2, seed=11)
    for subm, ks, st, pd in ((True, [3, 3, 3], [1, 1, 1], [1, 1, 1]),
                             (False, [3, 3, 3], [2, 2, 2], [1, 1, 1])):
        rb = build_rulebook(idx.numpy(), shape, ks, st, pd, [1, 1, 1], subm)
        assert F._block_pairs(rb, False).n_blocks > 5 and F._chunk_rows(3, 4, 8) == 2
        f = torch.randn(len(idx), 3, dtype=torch.float64, requires_grad=True)
        w = torch.randn(4, *ks, 3, dtype=torch.float64, requires_grad=True)
        b = torch.randn(4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda f, w, b: sparse_conv_apply(f, w, b, rb, algorithm="pairs"),
                                        (f, w, b), eps=1e-6, atol=1e-7)


def test_pairs_same_bits_at_one_and_two_threads_with_many_blocks(monkeypatch):
    """Many blocks per layer (small buffers), so both threads take part in every layer."""
    small_blocks_and_chunks(monkeypatch, 300, 100, 16)
    t0, n0 = torch.get_num_threads(), numba.get_num_threads()
    try:
        one = _train_like_pass(1)
        two = _train_like_pass(2)
        again = _train_like_pass(2)
    finally:
        torch.set_num_threads(t0)
        numba.set_num_threads(n0)
    for a, b, c in zip(one, two, again):
        assert torch.equal(a, b) and torch.equal(b, c)


def test_pairs_leaves_the_thread_settings_as_they_were():
    """The parallel block drivers set Numba's thread count, its chunk size and MKL's per-thread
    count for their own run only: afterwards torch's matmul, Numba and MKL see the caller's
    settings again (a leaked MKL count of 1 would silently slow every later torch matmul)."""
    from ops.sparse_conv.functional import _mkl_local
    shape = [6, 7, 8]
    idx = random_sites(200, shape, 2, seed=4)
    rb = build_rulebook(idx.numpy(), shape, [3] * 3, [1] * 3, [1] * 3, [1] * 3, True)
    f = torch.randn(len(idx), 4, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, 4, requires_grad=True)
    t0, n0 = torch.get_num_threads(), numba.get_num_threads()
    c0 = numba.get_parallel_chunksize()
    before = _mkl_local(0)           # this thread's local MKL count (0: none set) ...
    _mkl_local(before)               # ... put back
    try:
        torch.set_num_threads(2)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        nb = numba.get_num_threads()
        sparse_conv_apply(f, w, None, rb, algorithm="pairs").square().sum().backward()
        assert torch.get_num_threads() == 2 and numba.get_num_threads() == nb
        assert numba.get_parallel_chunksize() == c0
        after = _mkl_local(0)
        _mkl_local(after)
        assert after == before
    finally:
        torch.set_num_threads(t0)
        numba.set_num_threads(n0)
    assert f.grad is not None and w.grad is not None


def test_algorithm_choice():
    assert F.ALGORITHM in F.ALGORITHMS
    shape = [5, 6, 7]
    idx = random_sites(40, shape, 1, seed=3)
    rb = build_rulebook(idx.numpy(), shape, [3] * 3, [1] * 3, [1] * 3, [1] * 3, True)
    f, w = torch.randn(len(idx), 2), torch.randn(3, 3, 3, 3, 2)
    torch.testing.assert_close(sparse_conv_apply(f, w, None, rb, algorithm="pairs"),
                               sparse_conv_apply(f, w, None, rb, algorithm="im2col"))
    with pytest.raises(ValueError, match="algorithm must be one of"):
        sparse_conv_apply(f, w, None, rb, algorithm="dense")


def test_pairs_needs_torchs_blas_and_falls_back_to_im2col(monkeypatch):
    """On this Linux x86 torch the direct MKL GEMM loads (so the suite runs the fast path); where
    a torch build exports none, "pairs" runs as "im2col" with one warning naming why."""
    assert F.BLAS_UNAVAILABLE is None
    shape = [5, 6, 7]
    idx = random_sites(40, shape, 1, seed=4)
    rb = build_rulebook(idx.numpy(), shape, [3] * 3, [1] * 3, [1] * 3, [1] * 3, True)
    f, w = torch.randn(len(idx), 3, dtype=torch.float64), torch.randn(4, 3, 3, 3, 3,
                                                                     dtype=torch.float64)
    want = sparse_conv_apply(f, w, None, rb, algorithm="im2col")
    monkeypatch.setattr(F, "BLAS_UNAVAILABLE", "no sgemm_ in this build")
    monkeypatch.setattr(F, "_warned_fallback", False)
    with pytest.warns(RuntimeWarning, match="no sgemm_ in this build"):
        got = sparse_conv_apply(f, w, None, rb, algorithm="pairs")
    assert torch.equal(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # warned once, not at every layer
        assert torch.equal(sparse_conv_apply(f, w, None, rb), want)
