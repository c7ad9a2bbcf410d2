"""ops/boxes.py: points-in-boxes (dense numpy / torch and the Numba grid kernel) against a
point-by-point reference on random boxes, the closed-face convention, and angle wrapping."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ops.boxes import points_in_boxes, points_in_boxes_indices, wrap_angle


def _inside_reference(p, box) -> bool:
    """One point, one box, in plain Python floats: rotate into the box frame, compare."""
    dx, dy, dz = p[0] - box[0], p[1] - box[1], p[2] - box[2]
    c, s = math.cos(box[6]), math.sin(box[6])
    lx, ly = dx * c + dy * s, -dx * s + dy * c
    return abs(lx) <= box[3] / 2 and abs(ly) <= box[4] / 2 and abs(dz) <= box[5] / 2


def _random_boxes(rng, m, spread=5.0):
    return np.c_[rng.uniform(-spread, spread, (m, 3)), rng.uniform(0.5, 5, (m, 3)),
                 rng.uniform(-np.pi, np.pi, m)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_matches_point_by_point_reference(seed):
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, 7)
    pts = rng.uniform(-6, 6, (400, 3))
    ref = np.array([[_inside_reference(p, b) for b in boxes.tolist()] for p in pts.tolist()])
    assert ref.sum() > 20
    got = points_in_boxes(pts, boxes)
    assert got.dtype == bool and got.shape == (400, 7)
    np.testing.assert_array_equal(got, ref)
    # extra point columns are ignored; float32 points are compared in float64
    np.testing.assert_array_equal(points_in_boxes(np.c_[pts, rng.normal(size=(400, 5))], boxes), ref)
    t = points_in_boxes(torch.from_numpy(pts), torch.from_numpy(boxes))
    assert t.dtype == torch.bool
    np.testing.assert_array_equal(t.numpy(), ref)


def test_torch_runs_in_the_tensor_dtype():
    """float32 tensors are compared in float32 (the targets' dtype), like the numpy path on the
    float64 values of the same float32 numbers away from the faces."""
    rng = np.random.default_rng(5)
    boxes = _random_boxes(rng, 5).astype(np.float32)
    pts = rng.uniform(-8, 8, (2000, 3)).astype(np.float32)
    got = points_in_boxes(torch.from_numpy(pts), torch.from_numpy(boxes))
    want = points_in_boxes(pts, boxes)
    assert (got.numpy() != want).mean() < 1e-3
    assert points_in_boxes(torch.zeros(0, 3), torch.from_numpy(boxes)).shape == (0, 5)
    assert points_in_boxes(torch.from_numpy(pts), torch.zeros(0, 7)).shape == (2000, 0)


def _all_three(pts, box):
    """The mask from numpy, torch (float64) and the kernel, for one box."""
    got = points_in_boxes(pts, box)[:, 0]
    offs, idx = points_in_boxes_indices(pts, box)
    in_kernel = np.zeros(len(pts), bool)
    in_kernel[idx] = True
    in_torch = points_in_boxes(torch.from_numpy(pts), torch.from_numpy(box))[:, 0].numpy()
    return got, in_kernel, in_torch


def test_points_exactly_on_a_face_are_inside():
    box = np.array([[1.0, -2.0, 0.5, 4.0, 2.0, 1.5, 0.0]])
    pts = np.array([[3.0, -2.0, 0.5], [-1.0, -2.0, 0.5], [1.0, -1.0, 0.5], [1.0, -3.0, 0.5],
                    [1.0, -2.0, 1.25], [1.0, -2.0, -0.25], [3.0, -1.0, 1.25]])   # last: a corner
    out = pts + np.array([1e-9, 0, 0]) * [[1], [-1], [0], [0], [0], [0], [1]] \
        + np.array([0, 1e-9, 0]) * [[0], [0], [1], [-1], [0], [0], [0]] \
        + np.array([0, 0, 1e-9]) * [[0], [0], [0], [0], [1], [-1], [0]]
    for mask in _all_three(np.concatenate([pts, out]), box):
        assert mask.tolist() == [True] * 7 + [False] * 7


@pytest.mark.parametrize("heading", [0.3, math.pi / 2, -math.pi, -2.5])
def test_rotated_faces_a_hair_inside_and_outside(heading):
    box = np.array([[1.0, -2.0, 0.5, 4.0, 2.0, 1.5, heading]])
    c, s = math.cos(heading), math.sin(heading)
    faces = np.array([[2.0, 0, 0], [-2.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0], [0, 0, 0.75],
                      [0, 0, -0.75], [2.0, 1.0, 0.75]])

    def world(local):
        return np.c_[local[:, 0] * c - local[:, 1] * s + 1.0,
                     local[:, 0] * s + local[:, 1] * c - 2.0, local[:, 2] + 0.5]

    pts = np.concatenate([world(faces * (1 - 1e-9)), world(faces * (1 + 1e-9))])
    ref = [_inside_reference(p, box[0]) for p in pts.tolist()]
    assert ref == [True] * 7 + [False] * 7
    for mask in _all_three(pts, box):
        assert mask.tolist() == ref


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_indices_kernel_matches_the_mask(dtype):
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-10, 10, (20000, 3)).astype(dtype)
    boxes = _random_boxes(rng, 40, spread=8).astype(np.float32)
    mask = points_in_boxes(xyz, boxes)
    assert mask.sum() > 1000
    for cell in (2.0, 0.5, 7.0):               # the grid changes the speed, never the sets
        offs, idx = points_in_boxes_indices(xyz, boxes, cell=cell)
        assert offs.dtype == np.int64 and offs[0] == 0 and offs[-1] == len(idx)
        for b in range(len(boxes)):
            np.testing.assert_array_equal(idx[offs[b]:offs[b + 1]], np.flatnonzero(mask[:, b]))
    # far-away points force a coarser grid
    xyz[:3] *= 1e5
    offs, idx = points_in_boxes_indices(xyz, boxes, cell=0.5)
    mask = points_in_boxes(xyz, boxes)
    for b in range(len(boxes)):
        np.testing.assert_array_equal(idx[offs[b]:offs[b + 1]], np.flatnonzero(mask[:, b]))
    assert points_in_boxes_indices(xyz, boxes[:0])[0].tolist() == [0]
    assert points_in_boxes_indices(xyz[:0], boxes)[0].tolist() == [0] * 41
    # integer points are accepted (cast to float64)
    offs, idx = points_in_boxes_indices(np.array([[0, 0, 0]]), np.array([[0, 0, 0, 1, 1, 1, 0]]))
    assert idx.tolist() == [0]


def test_wrap_angle_numpy_and_torch():
    a = np.concatenate([np.linspace(-20, 20, 1001), [-np.pi, np.pi, 3 * np.pi, 0.0]])
    w = wrap_angle(a)
    assert w.dtype == np.float64 and np.all(w >= -np.pi) and np.all(w < np.pi)
    np.testing.assert_allclose(np.cos(w), np.cos(a), atol=1e-9)
    np.testing.assert_allclose(np.sin(w), np.sin(a), atol=1e-9)
    assert w[-4] == -np.pi and w[-3] == -np.pi and w[-1] == 0.0
    w32 = wrap_angle(a.astype(np.float32))
    assert w32.dtype == np.float32
    np.testing.assert_allclose(w32, w, atol=1e-5)
    t = wrap_angle(torch.from_numpy(a))
    assert t.dtype == torch.float64
    assert torch.all(t >= -math.pi) and torch.all(t < math.pi)
    np.testing.assert_allclose(t.numpy(), w, atol=1e-12)
    assert float(wrap_angle(np.float64(7.0))) == pytest.approx(7.0 - 2 * math.pi)
