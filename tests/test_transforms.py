"""Augmentations move points and boxes together; GT sampling respects collisions and min points."""
from __future__ import annotations

import numpy as np
import pytest

from detector.datasets.transforms import (
    GlobalRotScaleTrans, ObjectRangeFilter, ObjectSample, PointShuffle, PointsRangeFilter,
    RandomFlip3D, bev_boxes_overlap, box_corners_bev)
from ops.boxes import points_in_boxes, wrap_angle


def _scene(seed=0, n_boxes=4, pts_per_box=50):
    """Boxes far apart, points sampled inside each box (plus some background)."""
    rng = np.random.default_rng(seed)
    boxes = np.zeros((n_boxes, 7), np.float32)
    boxes[:, 0] = np.arange(n_boxes) * 12.0 - 15
    boxes[:, 1] = rng.uniform(-5, 5, n_boxes)
    boxes[:, 2] = 1.0
    boxes[:, 3:6] = [4.5, 2.0, 1.6]
    boxes[:, 6] = rng.uniform(-np.pi, np.pi, n_boxes)
    pts = []
    for b in boxes:
        local = rng.uniform(-0.45, 0.45, (pts_per_box, 3)) * b[3:6]
        c, s = np.cos(b[6]), np.sin(b[6])
        xy = local[:, :2] @ np.array([[c, s], [-s, c]]) + b[:2]
        pts.append(np.c_[xy, local[:, 2] + b[2]])
    bg = np.c_[rng.uniform(-40, 40, (300, 2)), rng.uniform(-1, 0, 300)]
    xyz = np.concatenate(pts + [bg]).astype(np.float32)
    points = np.zeros((len(xyz), 8), np.float32)
    points[:, :3] = xyz
    points[:, 3] = rng.uniform(0, 2, len(xyz))
    labels = np.zeros(n_boxes, np.int64)
    return dict(points=points, gt_boxes=boxes, gt_labels=labels,
                gt_types=np.ones(n_boxes, np.int64), gt_difficulty=np.ones(n_boxes, np.int64),
                gt_num_points=np.full(n_boxes, pts_per_box, np.int64), rng=np.random.default_rng(seed))


def _membership(r):
    return points_in_boxes(r["points"], r["gt_boxes"])


def _point_box_frame(r):
    """Each inside point's coordinates in its box's frame (invariant under rigid motions)."""
    inside = _membership(r)
    out = []
    for m, b in enumerate(r["gt_boxes"]):
        p = r["points"][inside[:, m], :3].astype(np.float64) - b[:3]
        c, s = np.cos(b[6]), np.sin(b[6])
        out.append(np.c_[p[:, 0] * c + p[:, 1] * s, -p[:, 0] * s + p[:, 1] * c, p[:, 2]])
    return inside, out


def test_bev_overlap_against_sampling():
    rng = np.random.default_rng(2)
    a = np.c_[rng.uniform(-4, 4, (30, 2)), np.zeros(30), rng.uniform(0.5, 4, (30, 2)),
              np.ones(30), rng.uniform(-3, 3, 30)]
    b = np.c_[rng.uniform(-4, 4, (20, 2)), np.zeros(20), rng.uniform(0.5, 4, (20, 2)),
              np.ones(20), rng.uniform(-3, 3, 20)]
    ov = bev_boxes_overlap(a, b)
    # Monte-Carlo reference: dense samples inside each a-box, tested against each b-box.
    grid = np.stack(np.meshgrid(np.linspace(-0.5, 0.5, 60), np.linspace(-0.5, 0.5, 60)), -1).reshape(-1, 2)
    for i, bi in enumerate(a):
        c, s = np.cos(bi[6]), np.sin(bi[6])
        xy = (grid * bi[3:5]) @ np.array([[c, s], [-s, c]]) + bi[:2]
        pts = np.c_[xy, np.zeros(len(xy))]
        hit = points_in_boxes(pts, b).any(0)
        # sampled overlap implies SAT overlap; SAT disjoint implies no sampled overlap
        assert np.all(ov[i][hit])
    assert ov.any() and (~ov).any()
    np.testing.assert_array_equal(ov, bev_boxes_overlap(b, a).T)


def test_box_corners_heading():
    c = box_corners_bev(np.array([[1, 2, 0, 4, 2, 1, np.pi / 2]]))[0]
    np.testing.assert_allclose(c[0], [1 - 1, 2 + 2], atol=1e-9)  # front-left corner


@pytest.mark.parametrize("flip_x,flip_y", [(True, False), (False, True), (True, True)])
def test_flip_moves_points_and_boxes_together(flip_x, flip_y):
    r = _scene(3)
    before, local_before = _point_box_frame(r)
    orig = r["gt_boxes"].copy()
    r = RandomFlip3D(flip_x_axis=flip_x, flip_y_axis=flip_y, prob=1.0)(r)
    after, local_after = _point_box_frame(r)
    np.testing.assert_array_equal(before, after)
    if flip_x:
        np.testing.assert_allclose(r["gt_boxes"][:, 1], -orig[:, 1] if not flip_y else -orig[:, 1])
    for lb, la in zip(local_before, local_after):
        # a mirror flips the local lateral coordinate, keeps the others
        np.testing.assert_allclose(np.abs(la), np.abs(lb), atol=1e-4)
    assert np.all(r["gt_boxes"][:, 6] >= -np.pi) and np.all(r["gt_boxes"][:, 6] < np.pi)


def test_rot_scale_trans_moves_points_and_boxes_together():
    r = _scene(4)
    before, local_before = _point_box_frame(r)
    t = GlobalRotScaleTrans(rot_range=(0.7, 0.7), scale_range=(1.1, 1.1), translation_std=(1, 1, 1))
    orig_pts, orig_boxes = r["points"].copy(), r["gt_boxes"].copy()
    r = t(r)
    after, local_after = _point_box_frame(r)
    np.testing.assert_array_equal(before, after)
    for lb, la in zip(local_before, local_after):
        np.testing.assert_allclose(la, lb * 1.1, atol=1e-4)
    np.testing.assert_allclose(r["gt_boxes"][:, 3:6], orig_boxes[:, 3:6] * 1.1, rtol=1e-6)
    np.testing.assert_allclose(wrap_angle(r["gt_boxes"][:, 6] - orig_boxes[:, 6] - 0.7), 0, atol=1e-5)
    # pairwise distances scale by exactly the factor (rotation + translation are rigid)
    d0 = np.linalg.norm(orig_pts[:50, :3] - orig_pts[50:100, :3], axis=1)
    d1 = np.linalg.norm(r["points"][:50, :3] - r["points"][50:100, :3], axis=1)
    np.testing.assert_allclose(d1, d0 * 1.1, rtol=1e-4)
    np.testing.assert_array_equal(r["points"][:, 3:], orig_pts[:, 3:])


def test_range_filters():
    r = _scene(5)
    rng_ = [-20, -20, -2, 20, 20, 4]
    r = PointsRangeFilter(rng_)(r)
    assert np.all(np.abs(r["points"][:, :2]) <= 20)
    n = len(r["gt_boxes"])
    r = ObjectRangeFilter(rng_)(r)
    inside = (np.abs(r["gt_boxes"][:, :2]) < 20).all(1)
    assert inside.all() and len(r["gt_boxes"]) < n
    assert len(r["gt_labels"]) == len(r["gt_boxes"]) == len(r["gt_types"])


def test_point_shuffle_is_a_permutation():
    r = _scene(6)
    orig = r["points"].copy()
    r = PointShuffle()(r)
    assert not np.array_equal(orig, r["points"])
    np.testing.assert_array_equal(np.sort(orig, 0), np.sort(r["points"], 0))


class _FakeDB:
    """GTDatabase stand-in: same attributes and points(i) as converted.GTDatabase."""

    def __init__(self, boxes, types, num_points, seed=0):
        rng = np.random.default_rng(seed)
        self.boxes = np.asarray(boxes, np.float32)
        self.types = np.asarray(types, np.int8)
        self.num_points = np.asarray(num_points, np.int32)
        self.difficulty = np.ones(len(self.boxes), np.int8)
        self._pts = []
        for b, n in zip(self.boxes, self.num_points):
            p = np.zeros((n, 8), np.float32)
            p[:, :3] = rng.uniform(-0.4, 0.4, (n, 3)) * b[3:6]  # relative to centre, axis-aligned
            c, s = np.cos(b[6]), np.sin(b[6])
            p[:, :2] = p[:, :2] @ np.array([[c, s], [-s, c]], np.float32)
            p[:, 3] = 7.0
            self._pts.append(p)

    def __len__(self):
        return len(self.boxes)

    def points(self, i):
        return self._pts[i]


def test_object_sample_respects_collisions_and_min_points():
    rng = np.random.default_rng(7)
    n = 200
    boxes = np.c_[rng.uniform(-30, 30, (n, 2)), np.ones(n), np.tile([4.5, 2.0, 1.6], (n, 1)),
                  rng.uniform(-np.pi, np.pi, n)]
    num_points = rng.integers(0, 40, n)
    types = np.where(rng.random(n) < 0.8, 1, 2)
    db = _FakeDB(boxes, types, num_points)
    t = ObjectSample(db, class_names=["VEHICLE"], sample_counts=dict(VEHICLE=12),
                     min_points=dict(VEHICLE=10))
    for seed in range(5):
        r = _scene(seed)
        r["rng"] = np.random.default_rng(100 + seed)
        n0 = len(r["gt_boxes"])
        pts0 = r["points"].copy()
        r = t(r)
        added = r["gt_boxes"][n0:]
        assert 0 < len(added) <= 12 - n0
        # every sampled box comes from the DB, is a vehicle with >= 10 points
        idx = [int(np.flatnonzero((np.abs(db.boxes - a).sum(1) < 1e-5))[0]) for a in added]
        assert all(db.types[i] == 1 and db.num_points[i] >= 10 for i in idx)
        # no two boxes of the final scene overlap in BEV (the original ones are disjoint)
        ov = bev_boxes_overlap(r["gt_boxes"], r["gt_boxes"])
        np.fill_diagonal(ov, False)
        assert not ov.any()
        # sampled points (intensity 7) are inside their boxes; scene points inside them removed
        sampled = r["points"][:, 3] == 7.0
        assert sampled.sum() == sum(db.num_points[i] for i in idx)
        inside_new = points_in_boxes(r["points"], added).any(1)
        assert np.all(inside_new[sampled])
        assert not np.any(inside_new & ~sampled)
        assert (~sampled).sum() == (~points_in_boxes(pts0, added).any(1)).sum()
        assert len(r["gt_labels"]) == len(r["gt_boxes"]) == len(r["gt_types"]) == len(r["gt_num_points"])
        assert np.all(r["gt_types"][n0:] == 1)


def test_object_sample_collision_with_scene_rejected():
    # Database holds only boxes that overlap the scene's first box: nothing can be added.
    r = _scene(8)
    b0 = r["gt_boxes"][0]
    boxes = np.tile(b0, (20, 1)) + np.c_[np.random.default_rng(0).uniform(-1, 1, (20, 2)),
                                         np.zeros((20, 5))]
    db = _FakeDB(boxes, np.ones(20), np.full(20, 30))
    t = ObjectSample(db, class_names=["VEHICLE"], sample_counts=dict(VEHICLE=10))
    n0 = len(r["gt_boxes"])
    r = t(r)
    assert len(r["gt_boxes"]) == n0


def test_object_sample_rejects_unknown_class():
    db = _FakeDB(np.zeros((1, 7)) + [0, 0, 0, 4, 2, 1.5, 0], [1], [10])
    with pytest.raises(ValueError, match="PEDESTRIAN"):
        ObjectSample(db, class_names=["VEHICLE"], sample_counts=dict(PEDESTRIAN=3))
