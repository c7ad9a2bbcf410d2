"""Rotated-box IoU (ops/iou3d.py): analytic cases, Numba kernel vs the slow reference, torch
in/out, the CUDA kernel under the simulator, and the official Waymo IoU (oracle venv)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ops.iou3d import (boxes_iou3d, boxes_iou3d_aligned, boxes_iou3d_reference, boxes_iou_bev, boxes_iou_bev_reference,
                       iou3d_pair)

REPO = Path(__file__).resolve().parents[1]


def box(cx=0.0, cy=0.0, cz=0.0, l=4.0, w=2.0, h=1.5, yaw=0.0):
    return np.array([[cx, cy, cz, l, w, h, yaw]], np.float32)


def random_boxes(rng, n, spread=3.0):
    return np.concatenate([rng.uniform(-spread, spread, (n, 3)), rng.uniform(0.3, 4.0, (n, 3)),
                           rng.uniform(-np.pi, np.pi, (n, 1))], 1).astype(np.float32)


@pytest.mark.parametrize("fn", [boxes_iou_bev, boxes_iou3d, boxes_iou_bev_reference, boxes_iou3d_reference])
def test_analytic_cases(fn):
    a = box()
    assert fn(a, a)[0, 0] == pytest.approx(1.0, abs=1e-12)
    # Heading pi and -pi are the same box.
    assert fn(box(yaw=math.pi), box(yaw=-math.pi))[0, 0] == pytest.approx(1.0, abs=1e-6)
    # Rotated by 90 degrees: a 2 x 2 square in common out of 8 + 8 - 4.
    assert fn(a, box(yaw=math.pi / 2))[0, 0] == pytest.approx(4 / 12, abs=1e-7)
    # Shifted by half a length: 2 x 2 in common.
    assert fn(a, box(cx=2.0))[0, 0] == pytest.approx(4 / 12, abs=1e-12)
    # Disjoint, and touching along an edge (closed intervals, zero area).
    assert fn(a, box(cx=10.0))[0, 0] == 0.0
    assert fn(a, box(cx=4.0))[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert fn(a, box(cy=2.0))[0, 0] == pytest.approx(0.0, abs=1e-12)
    # Contained: small inside big.
    small = box(l=2.0, w=1.0, h=1.5)
    assert fn(small, a)[0, 0] == pytest.approx(2 / 8, abs=1e-12)
    # Unit squares, one rotated 45 degrees: an octagon of area 2 (sqrt 2 - 1).
    sq, sq45 = box(l=1, w=1), box(l=1, w=1, yaw=math.pi / 4)
    inter = 2 * (math.sqrt(2) - 1)
    assert fn(sq, sq45)[0, 0] == pytest.approx(inter / (2 - inter), abs=1e-7)


def test_z_overlap_and_degenerate_sizes():
    a = box(h=2.0)
    # Same footprint, half the height in common: 1 / (2 + 2 - 1); BEV unaffected.
    assert boxes_iou3d(a, box(cz=1.0, h=2.0))[0, 0] == pytest.approx(1 / 3, abs=1e-12)
    assert boxes_iou_bev(a, box(cz=1.0, h=2.0))[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert boxes_iou3d(a, box(cz=2.0, h=2.0))[0, 0] == 0.0     # touching in z
    # Official rule: any size <= 0.01 or >= 1e6 (of either box) gives 0, even for identical boxes.
    for l, w, h in [(0.01, 2, 2), (4, 0.0, 2), (4, 2, -1.0), (1e6, 2, 2), (4, 2, 0.005)]:
        b = box(l=l, w=w, h=h)
        assert boxes_iou3d(b, b)[0, 0] == 0.0
        assert boxes_iou3d_reference(b, b)[0, 0] == 0.0
    assert boxes_iou3d(box(l=0.011), box(l=0.011))[0, 0] == pytest.approx(1.0)
    # Height only matters in 3D.
    assert boxes_iou_bev(box(h=0.0), box(h=0.0))[0, 0] == pytest.approx(1.0)
    # Non-finite boxes never overlap.
    assert boxes_iou3d(box(cx=np.nan), a)[0, 0] == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_matches_reference_random(dtype):
    rng = np.random.default_rng(0)
    a = random_boxes(rng, 70).astype(dtype)
    b = np.concatenate([a[:30] + rng.normal(0, 0.3, (30, 7)), random_boxes(rng, 30)]).astype(dtype)
    for fast, ref in ((boxes_iou3d, boxes_iou3d_reference), (boxes_iou_bev, boxes_iou_bev_reference)):
        got, want = fast(a, b), ref(a, b)
        assert got.dtype == np.float64 and got.shape == (70, 60)
        assert (want > 0).sum() > 200
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # float32 boxes are widened before any arithmetic: same result as float64 boxes.
    np.testing.assert_array_equal(boxes_iou3d(a.astype(np.float32), b.astype(np.float32)),
                                  boxes_iou3d(a.astype(np.float32).astype(np.float64),
                                              b.astype(np.float32).astype(np.float64)))
    assert iou3d_pair(a, 3, b, 4) == boxes_iou3d(a, b)[3, 4]
    np.testing.assert_array_equal(boxes_iou3d_aligned(a[:60], b), np.diag(boxes_iou3d(a[:60], b)))


def test_torch_in_torch_out_and_errors():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 5), random_boxes(rng, 4)
    out = boxes_iou3d(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (5, 4)
    np.testing.assert_array_equal(out.numpy(), boxes_iou3d(a, b))
    assert boxes_iou_bev(np.zeros((0, 7)), b).shape == (0, 4)
    with pytest.raises(ValueError, match=r"a: expected shape \(N, 7\)"):
        boxes_iou3d(np.zeros((3, 6)), b)
    with pytest.raises(TypeError):
        boxes_iou3d(torch.from_numpy(a), b)
    al = boxes_iou3d_aligned(torch.from_numpy(a[:4]), torch.from_numpy(b))
    assert isinstance(al, torch.Tensor) and al.dtype == torch.float64
    np.testing.assert_array_equal(al.numpy(), np.diag(boxes_iou3d(a[:4], b)))
    with pytest.raises(ValueError, match="expected the same number of rows"):
        boxes_iou3d_aligned(a, b)


def test_torch_aligned_iou_matches_the_kernel():
    """The fixed-shape torch version (the IoU target on accelerators) against the Numba kernel:
    random pairs (many overlapping), identical boxes, boxes turned by 90 and 180 degrees,
    touching and nested boxes, degenerate and non-finite ones; float64 and float32."""
    torch = pytest.importorskip("torch")
    from ops.iou3d import boxes_iou3d_aligned_torch

    rng = np.random.default_rng(3)
    n = 3000
    a = random_boxes(rng, n).astype(np.float64)
    b = a + np.concatenate([rng.normal(0, 0.8, (n, 3)), rng.normal(0, 0.4, (n, 3)),
                            rng.normal(0, 0.7, (n, 1))], 1)
    b[:, 3:6] = np.abs(b[:, 3:6]) + 0.02
    b[:100] = a[:100]                                            # identical
    b[100:200] = a[100:200]
    b[100:200, 6] += np.pi / 2                                   # a quarter turn
    b[200:300] = a[200:300]
    b[200:300, 6] += np.pi                                       # reversed: IoU 1
    b[300:400] = a[300:400]
    b[300:400, 0] += a[300:400, 3] * np.cos(a[300:400, 6])       # end to end: touching
    b[300:400, 1] += a[300:400, 3] * np.sin(a[300:400, 6])
    b[400:500] = a[400:500]
    b[400:500, 3:6] *= 0.5                                       # nested
    b[500, 3] = 0.005                                            # degenerate
    b[501, 0] = np.nan                                           # non-finite
    want = boxes_iou3d_aligned(a, b)
    assert (want > 0).mean() > 0.5
    got = boxes_iou3d_aligned_torch(torch.from_numpy(a), torch.from_numpy(b))
    assert got.dtype == torch.float64 and got.shape == (n,)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.numpy()[:100], 1.0, atol=1e-12)
    np.testing.assert_allclose(got.numpy()[200:300], 1.0, atol=1e-12)
    np.testing.assert_allclose(got.numpy()[400:500], 0.125, atol=1e-12)
    assert got[500] == 0 and got[501] == 0
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    got32 = boxes_iou3d_aligned_torch(torch.from_numpy(a32), torch.from_numpy(b32))
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), boxes_iou3d_aligned(a32, b32), rtol=0, atol=1e-5)
    # Other devices take the torch path through the public function (shapes only on meta).
    meta = boxes_iou3d_aligned(torch.empty(4, 7, dtype=torch.float64, device="meta"),
                               torch.empty(4, 7, dtype=torch.float64, device="meta"))
    assert meta.device.type == "meta" and meta.shape == (4,)
    with pytest.raises(ValueError, match="expected two"):
        boxes_iou3d_aligned_torch(torch.zeros(3, 7), torch.zeros(2, 7))


_CUDASIM_SCRIPT = r"""
import numpy as np
from ops.iou3d import _iou_matrix_cuda, boxes_iou3d, boxes_iou_bev, nms_bev, _nms_from_mask
rng = np.random.default_rng(0)
a = np.concatenate([rng.uniform(-3, 3, (6, 3)), rng.uniform(0.5, 4, (6, 3)), rng.uniform(-3, 3, (6, 1))], 1).astype(np.float32)
b = np.concatenate([a[:3] + rng.normal(0, 0.3, (3, 7)).astype(np.float32), a[3:5]])
for use_z, cpu in ((True, boxes_iou3d), (False, boxes_iou_bev)):
    g = _iou_matrix_cuda(a, b, use_z).copy_to_host()
    c = cpu(a, b)
    assert (c > 0).sum() >= 5, c
    assert np.abs(g - c).max() < 1e-12, (g, c)
# The NMS path used for CUDA tensors: mask from the kernel, greedy on the host.
s = rng.random(6)
order = np.argsort(-s, kind="stable")
over = _iou_matrix_cuda(a[order], a[order], False).copy_to_host() > 0.05
assert list(order[_nms_from_mask(over, -1)]) == list(nms_bev(a, s, 0.05))
print("CUDASIM-OK")
"""


def test_cuda_kernel_under_simulator():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _CUDASIM_SCRIPT], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0 and "CUDASIM-OK" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.gpu
def test_cuda_tensors_match_cpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    rng = np.random.default_rng(2)
    a, b = random_boxes(rng, 300), random_boxes(rng, 200)
    got = boxes_iou3d(torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda())
    assert got.is_cuda
    np.testing.assert_allclose(got.cpu().numpy(), boxes_iou3d(a, b), atol=1e-12)


@pytest.mark.oracle
def test_matches_official_iou():
    from oracle import run_oracle
    rng = np.random.default_rng(3)
    a = random_boxes(rng, 2000)
    b = (a + rng.normal(0, 0.4, a.shape) * np.r_[1, 1, 1, 0.3, 0.3, 0.3, 0.5]).astype(np.float32)
    b[::10, 6] += np.float32(np.pi)            # flipped headings: same footprint
    off = run_oracle("oracle_scripts/metrics.py", {"iou/a": a, "iou/b": b})["iou/iou"]
    ours = np.array([iou3d_pair(a, i, b, i) for i in range(len(a))])
    assert (off > 0).sum() > 1500
    # The official op returns float32 IoUs (and the oracle feeds its match op a float32
    # bottom z = cz - h/2): agreement to float32 resolution.
    np.testing.assert_allclose(ours, off, rtol=0, atol=1e-6)
