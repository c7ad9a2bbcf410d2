"""ops.voxelize on the CPU: identical to the plain-numpy reference and to spconv's PointToVoxel.

Clouds: uniform (partly outside the range), clustered (many points per voxel), points exactly on
voxel boundaries and range edges (and one float32 ulp either side), duplicates, NaN/inf rows,
empty, all outside, more voxels than max_voxels. "Identical" means the same coords in the same
order, bit-identical voxel contents and the same counts.
"""
from __future__ import annotations

import warnings

import numba
import numpy as np
import pytest
import torch

from ops.spconv_utils import spconv  # noqa: F401  (CPU shim before spconv.pytorch.utils)
from spconv.pytorch.utils import PointToVoxel

from ops.voxelize import (VoxelizeStats, VoxelizeWarning, make_grid, voxelize_batch_dynamic,
                          voxelize_batch_hard, voxelize_dynamic, voxelize_hard)
from ops.voxelize import cpu as vcpu
from ops.voxelize.reference import reference_voxelize

# A small grid with sizes that are not exact in float32, and Waymo's grid.
SMALL = dict(voxel_size=[0.3, 0.25, 0.4], point_cloud_range=[-2.1, -3.0, -1.2, 2.4, 3.0, 1.6])
WAYMO = dict(voxel_size=[0.1, 0.1, 0.15], point_cloud_range=[-75.2, -75.2, -2.0, 75.2, 75.2, 4.0])


def make_cloud(kind: str, n: int, grid: dict, seed: int = 0, features: int = 2) -> np.ndarray:
    """An (n, 3 + features) float32 cloud of one of the test kinds."""
    rng = np.random.default_rng(seed)
    pcr = np.asarray(grid["point_cloud_range"], np.float64)
    vs = np.asarray(grid["voxel_size"], np.float64)
    lo, hi = pcr[:3], pcr[3:]
    pad = (hi - lo) * 0.1
    if kind == "uniform":
        xyz = rng.uniform(lo - pad, hi + pad, (n, 3))
    elif kind == "clustered":
        centres = rng.uniform(lo, hi, (max(1, n // 40), 3))
        xyz = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.6, (n, 3)) * vs
    elif kind == "boundary":
        # multiples of the voxel size from the range minimum, computed in float32 like the
        # kernels, plus the range edges themselves and their float32 neighbours
        cells = np.floor((hi - lo) / vs).astype(int)
        k = rng.integers(-1, cells + 2, (n, 3))
        xyz = lo.astype(np.float32) + k.astype(np.float32) * vs.astype(np.float32)
        xyz = xyz.astype(np.float64)
        edges = np.stack([lo, hi]).astype(np.float32)
        m = n // 4
        pick = rng.integers(0, 2, (m, 3))
        e = edges[pick, np.arange(3)]
        step = rng.integers(-1, 2, (m, 3))
        e = np.where(step < 0, np.nextafter(e, np.float32(-np.inf)),
                     np.where(step > 0, np.nextafter(e, np.float32(np.inf)), e))
        xyz[:m] = e
    elif kind == "duplicates":
        base = rng.uniform(lo, hi, (max(1, n // 8), 3))
        xyz = base[rng.integers(0, len(base), n)]
    elif kind == "nonfinite":
        xyz = rng.uniform(lo - pad, hi + pad, (n, 3))
        bad = rng.choice(n, size=max(1, n // 10), replace=False)
        xyz[bad, rng.integers(0, 3, len(bad))] = rng.choice([np.nan, np.inf, -np.inf], len(bad))
    elif kind == "outside":
        xyz = rng.uniform(hi + 0.01, hi + 5.0, (n, 3))
    else:
        raise ValueError(kind)
    feats = rng.normal(size=(n, features))
    return np.concatenate([xyz, feats], axis=1).astype(np.float32)


def spconv_hard(points, grid: dict, max_points: int, max_voxels: int):
    gen = PointToVoxel(grid["voxel_size"], grid["point_cloud_range"], points.shape[1],
                       max(max_voxels, 1), max_points)
    v, c, n, ids = gen.generate_voxel_with_id(torch.from_numpy(points))
    return v.numpy(), c.numpy(), n.numpy(), ids.numpy()


def assert_same_hard(ours, ref):
    v, c, n = ours[:3]
    rv, rc, rn = ref[:3]
    assert c.dtype == np.int32 and n.dtype == np.int32
    np.testing.assert_array_equal(c, rc)
    np.testing.assert_array_equal(n, rn)
    assert v.shape == rv.shape
    np.testing.assert_array_equal(v, rv)   # bit-identical, NaN features included


KINDS = ["uniform", "clustered", "boundary", "duplicates", "nonfinite"]


@pytest.mark.parametrize("grid", [SMALL, WAYMO], ids=["small", "waymo"])
@pytest.mark.parametrize("kind", KINDS)
def test_hard_matches_reference_and_spconv(kind, grid):
    pts = make_cloud(kind, 3000, grid, seed=len(kind))
    ref = reference_voxelize(pts, make_grid(**grid), 5, 10 ** 9)
    ours = voxelize_hard(pts, **grid, max_points_per_voxel=5, max_voxels=10 ** 6,
                         return_stats=True)
    assert_same_hard(ours, ref)
    assert_same_hard(ours, spconv_hard(pts, grid, 5, len(pts)))


@pytest.mark.parametrize("grid", [SMALL, WAYMO], ids=["small", "waymo"])
@pytest.mark.parametrize("kind", KINDS)
def test_dynamic_matches_reference_and_spconv(kind, grid):
    pts = make_cloud(kind, 3000, grid, seed=7 + len(kind))
    ids, coords, stats = voxelize_dynamic(pts, **grid, return_stats=True)
    _, rc, _, rids, _ = reference_voxelize(pts, make_grid(**grid), 1, 10 ** 9)
    assert ids.dtype == np.int64 and coords.dtype == np.int32
    np.testing.assert_array_equal(ids, rids)
    np.testing.assert_array_equal(coords, rc)
    _, sc, _, sids = spconv_hard(pts, grid, 1, len(pts))
    np.testing.assert_array_equal(ids, sids)
    np.testing.assert_array_equal(coords, sc)
    assert stats.num_voxels == len(coords)
    assert stats.num_nonfinite + stats.num_out_of_range == int((ids < 0).sum())


def test_boundary_points_exercise_both_sides_of_the_edges():
    # Guard against a boundary test that silently tests nothing: the float32 quotient puts some
    # points on range_max inside (cell n - 1) and some just below range_min outside.
    pts = make_cloud("boundary", 4000, WAYMO, seed=3)
    ids, coords = voxelize_dynamic(pts, **WAYMO)
    grid = make_grid(**WAYMO)
    on_max = pts[:, 0] == np.float32(75.2)
    assert on_max.any() and (ids[on_max] >= 0).any()
    assert (coords[ids[on_max & (ids >= 0)], 2] == grid.shape_xyz[0] - 1).all()
    below_min = pts[:, 0] == np.nextafter(np.float32(-75.2), np.float32(-np.inf))
    assert below_min.any() and (ids[below_min] == -1).all()


@pytest.mark.parametrize("kind", ["clustered", "uniform"])
def test_caps_on_voxels_and_points_are_reported(kind):
    pts = make_cloud(kind, 4000, SMALL, seed=11)
    max_voxels, max_points = 150, 3
    ref = reference_voxelize(pts, make_grid(**SMALL), max_points, max_voxels)
    v, c, n, stats = voxelize_hard(pts, **SMALL, max_points_per_voxel=max_points,
                                   max_voxels=max_voxels, return_stats=True)
    assert_same_hard((v, c, n), ref)
    assert_same_hard((v, c, n), spconv_hard(pts, SMALL, max_points, max_voxels))
    assert len(c) == max_voxels and ref[4] > 0
    assert stats.num_dropped_voxels == ref[4]
    # every point is accounted for exactly once
    kept = int(n.sum())
    assert (kept + stats.num_points_over_max_points + stats.num_points_in_dropped_voxels
            + stats.num_nonfinite + stats.num_out_of_range) == len(pts)
    assert stats.num_points_in_dropped_voxels == int(((ref[3] == -1)).sum()) - \
        stats.num_nonfinite - stats.num_out_of_range
    with pytest.warns(VoxelizeWarning, match=f"dropped {ref[4]} voxels beyond max_voxels"):
        voxelize_hard(pts, **SMALL, max_points_per_voxel=max_points, max_voxels=max_voxels)


def test_nonfinite_points_are_counted_and_warned():
    pts = make_cloud("nonfinite", 500, SMALL, seed=2)
    bad = int((~np.isfinite(pts[:, :3]).all(axis=1)).sum())
    assert bad > 0
    *_, stats = voxelize_hard(pts, **SMALL, return_stats=True)
    assert stats.num_nonfinite == bad
    with pytest.warns(VoxelizeWarning, match=f"dropped {bad} points with NaN/inf"):
        voxelize_dynamic(pts, **SMALL)


def test_clean_input_does_not_warn():
    pts = make_cloud("clustered", 500, SMALL, seed=4)
    pts = pts[np.all((pts[:, :3] > np.array(SMALL["point_cloud_range"][:3]) + 0.01)
                     & (pts[:, :3] < np.array(SMALL["point_cloud_range"][3:]) - 0.01), axis=1)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        voxelize_hard(pts, **SMALL)
        voxelize_dynamic(pts, **SMALL)


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_point(n):
    pts = make_cloud("uniform", 50, SMALL)[:n]
    pts[:, :3] = 0.05
    v, c, num, stats = voxelize_hard(pts, **SMALL, max_points_per_voxel=4, return_stats=True)
    assert v.shape == (n, 4, 5) and c.shape == (n, 3) and num.shape == (n,)
    assert_same_hard((v, c, num), spconv_hard(pts, SMALL, 4, 10))
    ids, coords = voxelize_dynamic(pts, **SMALL)
    assert ids.shape == (n,) and coords.shape == (n, 3)
    assert stats.num_points == n and stats.num_voxels == n


def test_all_points_outside():
    pts = make_cloud("outside", 300, SMALL)
    v, c, n, stats = voxelize_hard(pts, **SMALL, return_stats=True)
    assert v.shape == (0, 5, 5) and c.shape == (0, 3) and n.shape == (0,)
    ids, coords = voxelize_dynamic(pts, **SMALL)
    assert (ids == -1).all() and coords.shape == (0, 3)
    assert stats.num_out_of_range == 300


def test_float64_points_match_spconv():
    pts = make_cloud("boundary", 2000, SMALL, seed=5).astype(np.float64)
    pts[:, :3] += np.random.default_rng(0).choice([0.0, 1e-12, -1e-12], size=(2000, 3))
    v, c, n = voxelize_hard(pts, **SMALL, max_points_per_voxel=4, max_voxels=10 ** 5)
    assert v.dtype == np.float64
    sv, sc, sn, _ = spconv_hard(pts, SMALL, 4, 10 ** 5)   # spconv keeps float32 voxels
    np.testing.assert_array_equal(c, sc)
    np.testing.assert_array_equal(n, sn)
    np.testing.assert_array_equal(v.astype(np.float32), sv)
    assert_same_hard((v, c, n), reference_voxelize(pts, make_grid(**SMALL), 4, 10 ** 5))


def test_large_cloud_uses_several_partitions_and_does_not_depend_on_thread_count():
    grid = WAYMO
    g = make_grid(**grid)
    pts = np.concatenate([make_cloud("clustered", 30000, grid, seed=8),
                          make_cloud("uniform", 30000, grid, seed=9),
                          make_cloud("boundary", 6000, grid, seed=10)])
    ref = reference_voxelize(pts, g, 5, 20000)
    ref_dyn = reference_voxelize(pts, g, 1, 10 ** 9)
    max_threads = min(4, numba.config.NUMBA_NUM_THREADS)
    for threads in range(1, max_threads + 1):
        # explicit thread counts: the public API may stay on one thread on a loaded machine
        if threads > 1:
            assert vcpu._plan(len(pts), threads)[0] >= 1     # really partitioned
        (v, c, n), info = vcpu.voxelize_cpu(pts, g.lo, g.size, g.shape_xyz, 5, 20000, True,
                                            threads=threads)
        assert_same_hard((v, c, n), ref)
        assert info["num_dropped_voxels"] == ref[4] > 0
        (ids, coords), _ = vcpu.voxelize_cpu(pts, g.lo, g.size, g.shape_xyz, 1, 0, False,
                                             threads=threads)
        np.testing.assert_array_equal(ids, ref_dyn[3])
        np.testing.assert_array_equal(coords, ref_dyn[1])
    assert_same_hard(voxelize_hard(pts, **grid, max_points_per_voxel=5, max_voxels=20000,
                                   return_stats=True),
                     spconv_hard(pts, grid, 5, 20000))


def test_thread_choice():
    assert vcpu._threads_for(1000) == 1                      # too small to pay
    assert vcpu._plan(10 ** 6, 1) == (0, 1)
    pbits, nblocks = vcpu._plan(10 ** 6, 2)
    assert pbits == 1 and nblocks == 8


def test_torch_in_torch_out_and_noncontiguous_input():
    pts = make_cloud("clustered", 800, SMALL, seed=12, features=3)
    t = torch.from_numpy(np.ascontiguousarray(pts.T)).T          # non-contiguous view
    v, c, n = voxelize_hard(t, **SMALL)
    assert isinstance(v, torch.Tensor) and v.dtype == torch.float32 and c.dtype == torch.int32
    rv, rc, rn = voxelize_hard(pts, **SMALL)
    assert torch.equal(v, torch.from_numpy(rv)) and torch.equal(c, torch.from_numpy(rc))
    ids, coords = voxelize_dynamic(t, **SMALL)
    assert ids.dtype == torch.int64 and coords.dtype == torch.int32


def test_compiled_once_per_dtype():
    # different sizes, caps and grids must reuse the compiled kernels (no per-call recompiling)
    kernels = (vcpu._cell_keys, vcpu._assign, vcpu._number_voxels, vcpu._gather_hard,
               vcpu._scatter_dynamic)
    seen = None
    for n, grid, cap in ((100, SMALL, 10), (40000, WAYMO, 5000), (7, SMALL, 3), (0, WAYMO, 1)):
        pts = make_cloud("uniform", n, grid)
        voxelize_hard(pts, **grid, max_voxels=cap, return_stats=True)
        voxelize_dynamic(pts, **grid, return_stats=True)
        now = [list(k.signatures) for k in kernels]
        assert seen is None or now == seen
        seen = now
    for kernel in kernels:
        assert kernel._cache is not None and type(kernel._cache).__name__ == "FunctionCache"


def test_batch_helpers():
    frames = [make_cloud("clustered", 700, SMALL, seed=s) for s in range(3)]
    frames[1] = make_cloud("nonfinite", 400, SMALL, seed=5)
    tensors = [torch.from_numpy(f) for f in frames]
    v, c, n, stats = voxelize_batch_hard(tensors, **SMALL, max_points_per_voxel=4,
                                         max_voxels=100, return_stats=True)
    assert c.shape[1] == 4 and c.dtype == torch.int32 and n.dtype == torch.int32
    total = VoxelizeStats()
    offset = 0
    for b, f in enumerate(frames):
        fv, fc, fn, fs = voxelize_hard(f, **SMALL, max_points_per_voxel=4, max_voxels=100,
                                       return_stats=True)
        sl = slice(offset, offset + len(fc))
        assert (c[sl, 0] == b).all()
        assert torch.equal(c[sl, 1:], torch.from_numpy(fc))
        assert torch.equal(v[sl], torch.from_numpy(fv)) and torch.equal(n[sl], torch.from_numpy(fn))
        total += fs
        offset += len(fc)
    assert offset == len(c) and stats == total and stats.num_dropped_voxels > 0

    ids, dc, dstats = voxelize_batch_dynamic(tensors, **SMALL, return_stats=True)
    assert ids.shape == (sum(len(f) for f in frames),) and dc.shape[1] == 4
    start = 0
    for b, f in enumerate(frames):
        fids, fc = voxelize_dynamic(f, **SMALL, return_stats=True)[:2]
        mine = ids[start:start + len(f)]
        inside = fids >= 0
        assert (mine[torch.from_numpy(~inside)] == -1).all()
        got = dc[mine[torch.from_numpy(inside)]]
        assert (got[:, 0] == b).all()
        assert torch.equal(got[:, 1:], torch.from_numpy(fc[fids[inside]]))
        start += len(f)
    assert dstats.num_nonfinite == int((~np.isfinite(frames[1][:, :3]).all(1)).sum())
    with pytest.warns(VoxelizeWarning):
        voxelize_batch_hard(tensors, **SMALL, max_points_per_voxel=4, max_voxels=100)


@pytest.mark.parametrize("call, match", [
    (lambda: voxelize_hard(np.zeros((5, 2), np.float32), **SMALL), r"shape \(N, C >= 3\)"),
    (lambda: voxelize_hard(np.zeros(5, np.float32), **SMALL), r"shape \(N, C >= 3\)"),
    (lambda: voxelize_hard(np.zeros((5, 4), np.int32), **SMALL), "float32 or float64"),
    (lambda: voxelize_hard(np.zeros((5, 4), np.float32), [0.1, 0.1], SMALL["point_cloud_range"]),
     "voxel_size must have 3 values"),
    (lambda: voxelize_hard(np.zeros((5, 4), np.float32), [0.1, 0.0, 0.1],
                           SMALL["point_cloud_range"]), "positive"),
    (lambda: voxelize_hard(np.zeros((5, 4), np.float32), [0.1] * 3, [0, 0, 0, 1, -1, 1]),
     "less than one voxel"),
    (lambda: voxelize_hard(np.zeros((5, 4), np.float32), **SMALL, max_points_per_voxel=0),
     "max_points_per_voxel"),
    (lambda: voxelize_hard([[0.0, 0.0, 0.0]], **SMALL), "numpy array, a torch tensor"),
    (lambda: voxelize_batch_hard([], **SMALL), "non-empty list"),
    (lambda: voxelize_batch_dynamic([torch.zeros(3, 4), torch.zeros(3, 5)], **SMALL),
     r"points_list\[1\] has 5 columns"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
