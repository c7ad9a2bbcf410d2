"""ops.voxelize's Numba CUDA kernels: same results as the reference (and so as the CPU path and
spconv, see test_voxelize.py).

Without a GPU they run in Numba's CUDA simulator, which must be enabled before Numba is imported:
the normal pytest process runs this file again in a subprocess with ``NUMBA_ENABLE_CUDASIM=1``,
where the per-case tests below are defined. Inputs are small because the simulator runs every
CUDA thread as a Python thread.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

UNDER_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


if not UNDER_SIM:
    def test_cuda_kernels_under_the_simulator():
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "-W", "ignore::DeprecationWarning", __file__],
                             cwd=Path(__file__).resolve().parents[1], env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
        assert " passed" in res.stdout and "skipped" not in res.stdout, res.stdout[-2000:]

    def _gpu_available() -> bool:
        try:
            import torch
            return torch.cuda.is_available()
        except ImportError:  # pragma: no cover
            return False

    @pytest.mark.gpu
    @pytest.mark.skipif(not _gpu_available(), reason="needs a CUDA GPU")
    def test_cuda_torch_tensors_on_a_gpu_match_cpu():  # pragma: no cover - no GPU in CI
        import torch

        from test_voxelize import SMALL, WAYMO, make_cloud

        from ops.voxelize import voxelize_dynamic, voxelize_hard
        for grid in (SMALL, WAYMO):
            pts = make_cloud("boundary", 50000, grid, seed=1)
            pts = np.concatenate([pts, make_cloud("clustered", 50000, grid, seed=2)])
            cpu = voxelize_hard(torch.from_numpy(pts), **grid, max_voxels=20000)
            gpu = voxelize_hard(torch.from_numpy(pts).cuda(), **grid, max_voxels=20000)
            for a, b in zip(cpu, gpu):
                assert b.is_cuda and torch.equal(a, b.cpu())
            cpu = voxelize_dynamic(torch.from_numpy(pts), **grid)
            gpu = voxelize_dynamic(torch.from_numpy(pts).cuda(), **grid)
            for a, b in zip(cpu, gpu):
                assert torch.equal(a, b.cpu())

else:
    from numba import cuda

    from test_voxelize import SMALL, make_cloud

    from ops.voxelize import VoxelizeWarning, make_grid, voxelize_dynamic, voxelize_hard
    from ops.voxelize.reference import reference_voxelize

    TINY = dict(voxel_size=[0.7, 0.6, 0.5], point_cloud_range=[-2.1, -1.8, -1.0, 2.1, 1.8, 1.0])

    def test_running_in_the_simulator():
        from numba.core import config
        assert config.ENABLE_CUDASIM

    @pytest.mark.parametrize("kind", ["uniform", "clustered", "boundary", "duplicates",
                                      "nonfinite"])
    def test_hard_and_dynamic_match_reference(kind):
        pts = make_cloud(kind, 120, TINY, seed=len(kind))
        grid = make_grid(**TINY)
        dev = cuda.to_device(pts)
        v, c, n, stats = voxelize_hard(dev, **TINY, max_points_per_voxel=3, max_voxels=25,
                                       return_stats=True)
        rv, rc, rn, rids, rdrop = reference_voxelize(pts, grid, 3, 25)
        np.testing.assert_array_equal(c.copy_to_host(), rc)
        np.testing.assert_array_equal(n.copy_to_host(), rn)
        np.testing.assert_array_equal(v.copy_to_host(), rv)
        assert stats.num_dropped_voxels == rdrop
        assert stats.num_nonfinite == int((~np.isfinite(pts[:, :3]).all(1)).sum())
        kept = int(rn.sum())
        assert (kept + stats.num_points_over_max_points + stats.num_points_in_dropped_voxels
                + stats.num_nonfinite + stats.num_out_of_range) == len(pts)

        ids, coords, dstats = voxelize_dynamic(dev, **TINY, return_stats=True)
        _, rc, _, rids, _ = reference_voxelize(pts, grid, 1, 10 ** 9)
        np.testing.assert_array_equal(ids.copy_to_host(), rids)
        np.testing.assert_array_equal(coords.copy_to_host(), rc)
        assert dstats.num_voxels == len(rc)

    def test_same_as_cpu_path_with_float64_boundary_points():
        pts = make_cloud("boundary", 100, SMALL, seed=4).astype(np.float64)
        gpu = voxelize_hard(cuda.to_device(pts), **SMALL, max_points_per_voxel=2, max_voxels=40)
        cpu = voxelize_hard(pts, **SMALL, max_points_per_voxel=2, max_voxels=40)
        for g, c in zip(gpu, cpu):
            got = g.copy_to_host()
            assert got.dtype == c.dtype
            np.testing.assert_array_equal(got, c)

    def test_empty_and_all_outside():
        pts = make_cloud("outside", 40, TINY)
        for p in (pts[:0], pts):
            v, c, n = voxelize_hard(cuda.to_device(p), **TINY, max_points_per_voxel=3)
            assert v.shape == (0, 3, 5) and c.shape == (0, 3) and n.shape == (0,)
            ids, coords = voxelize_dynamic(cuda.to_device(p), **TINY)
            assert coords.shape == (0, 3) and (ids.copy_to_host() == -1).all()

    def test_dropped_voxels_warn():
        pts = make_cloud("uniform", 80, TINY, seed=9)
        with pytest.warns(VoxelizeWarning, match="beyond max_voxels"):
            voxelize_hard(cuda.to_device(pts), **TINY, max_points_per_voxel=2, max_voxels=3)
