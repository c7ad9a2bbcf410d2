"""The synthetic scenes' realism (issue 15): vehicles with a front and a back that the lidar can
tell apart, headings off the street axes, Waymo-like sizes and label rules for every class."""
from __future__ import annotations

import math

import numpy as np
import pytest

from detector.conventions import angle_to_axes
from detector.datasets.synthetic import SceneConfig
from detector.datasets.synthetic import calibration as cal
from detector.datasets.synthetic import labels as lb
from detector.datasets.synthetic.generator import plan_segment, render_segment_frames, segment_seed
from detector.datasets.synthetic.lidar import GlobalFrame, render_frame
from detector.datasets.synthetic.scene import (CYCLIST, GLASS, PEDESTRIAN, PLATE, TIRE, VEHICLE,
                                               VEHICLE_KINDS, EgoTrajectory, Ground, Scene,
                                               SceneObject, _make_object, _overlaps)
from ops.boxes import points_in_boxes


def _round1_car() -> SceneObject:
    """The car template of round 1 (before issue 15), rebuilt here so that the asymmetry test
    can show it fails on it: wheels, one body slab, a glass band and a roof shifted 0.3 m back,
    plates at both ends."""
    L, W, H = 4.5, 1.9, 1.6
    ins = 0.04
    l, w, h = L - 2 * ins, W - 2 * ins, H - ins
    parts = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            y0, y1 = sorted((sy * (w / 2 - 0.26), sy * w / 2))
            parts.append((sx * (l / 2 - 0.78) - 0.32, sx * (l / 2 - 0.78) + 0.32, y0, y1, 0.0,
                          0.64) + TIRE)
    paint = (0.3, 0.03)
    parts.append((-l / 2 + 0.015, l / 2 - 0.015, -w / 2 + 0.03, w / 2 - 0.03, 0.28, 0.58 * h)
                 + paint)
    parts.append((-0.33 * l, 0.2 * l, -0.44 * w, 0.44 * w, 0.58 * h, 0.9 * h) + GLASS)
    parts.append((-0.31 * l, 0.17 * l, -0.43 * w, 0.43 * w, 0.9 * h, h) + paint)
    for sx in (-1, 1):
        parts.append((sx * l / 2 - 0.015, sx * l / 2 + 0.015, -0.26, 0.26, 0.42, 0.54) + PLATE)
    a = np.asarray(parts, np.float64)
    return SceneObject("car", VEHICLE, L, W, H, a[:, :6].copy(), a[:, 6:].copy(), 0.0, 0.0, 0.0)


def _vehicle_points(ob: SceneObject, yaw: float, y: float = 9.0):
    """Cast points (all lidars, both returns) on the object standing broadside at (0, y) with
    heading ``yaw`` beside a stopped ego on flat ground, in the object's own frame (x forward,
    z up from its bottom), plus their intensities."""
    ob.x, ob.y, ob.yaw = 0.0, y, yaw
    ground = Ground(np.zeros(15), np.array([11.0, 0.0, 0.0, 3.5]))
    scene = Scene(SceneConfig(), ground, EgoTrajectory(0.0, 0.0, 0.0, 0.0, 0.5, 0.0),
                  np.zeros((0, 8)), np.zeros((0, 2)), [ob])
    rf = render_frame(scene, 0.0, GlobalFrame(0.0, (0.0, 0.0, 0.0)), np.random.default_rng(0),
                      physics=True)
    pts = np.concatenate([li.points for li in rf.lidars.values()])
    # Intensities in the points' order: each lidar's return 1 then return 2, row-major pixels.
    inten = np.concatenate([img[img[..., 0] > 0][:, 1] for li in rf.lidars.values()
                            for img in (li.range_image1, li.range_image2)])
    box = lb.make_labels(scene, 0.0, rf.pose_local, pts, rf.lidars[cal.TOP].points).boxes
    inside = points_in_boxes(np.ascontiguousarray(pts[:, :3], np.float32),
                             box.astype(np.float32))[:, 0]
    p, inten = pts[inside], inten[inside]
    c, s = math.cos(box[0, 6]), math.sin(box[0, 6])
    d = p[:, :3] - box[0, :3]
    local = np.column_stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1],
                             d[:, 2] + box[0, 5] / 2])
    return local, inten


def _end_profile_distance(ob: SceneObject, end: float = 0.15) -> float:
    """How differently the front and the rear end are built, as the lidar sees them: the
    1-Wasserstein distance (metres) between the heights of the cast points over the front
    ``end`` fraction of the length and over the rear one, seen from both sides (headings 0 and
    pi: the same viewpoint mirrored, so a symmetric vehicle gives ~0)."""
    front, rear = [], []
    for yaw in (0.0, math.pi):
        loc, _ = _vehicle_points(ob, yaw)
        e = ob.length * (0.5 - end)
        front.append(loc[loc[:, 0] > e, 2])
        rear.append(loc[loc[:, 0] < -e, 2])
    f, r = np.concatenate(front), np.concatenate(rear)
    assert len(f) > 300 and len(r) > 300
    q = np.linspace(0.02, 0.98, 49)
    return float(np.mean(np.abs(np.quantile(f, q) - np.quantile(r, q))))


def test_round1_car_has_the_same_two_ends():
    """The measure below on the round-1 car: its ends (the outer 15 %: plate, bumper, wheel,
    body slab at the belt line) are mirror images, so it fails the asymmetry test."""
    assert _end_profile_distance(_round1_car()) < 0.02


@pytest.mark.parametrize("kind", VEHICLE_KINDS)
@pytest.mark.parametrize("seed", [4, 7])
def test_vehicle_front_and_rear_profiles_differ(kind, seed):
    """Every vehicle kind's front end (hood, nose, cab; windscreen glass on the bus) is built
    differently from its rear end (trunk lid, hatch, cargo box, the bus's engine bay) by clearly
    more than the range noise (1.5 cm) - measured on 0.9-7k cast points per end."""
    ob = _make_object(kind, np.random.default_rng(seed), 0.0, 0.0, 0.0)
    assert _end_profile_distance(ob) > 0.05


@pytest.mark.parametrize("kind", VEHICLE_KINDS)
def test_tail_lamps_only_at_the_rear(kind):
    """Retro-reflective returns (intensity of plates and tail lamps) on the rear face outnumber
    those on the front face, which has only its plate."""
    ob = _make_object(kind, np.random.default_rng(5), 0.0, 0.0, 0.0)
    counts = {"front": 0, "rear": 0}
    for yaw, y in ((0.3, 9.0), (math.pi - 0.3, 9.0)):  # looking at the rear, then at the front
        loc, inten = _vehicle_points(ob, yaw, y)
        bright = inten > 0.5
        counts["front"] += int((bright & (loc[:, 0] > ob.length / 2 - 0.3)).sum())
        counts["rear"] += int((bright & (loc[:, 0] < -ob.length / 2 + 0.3)).sum())
    assert counts["rear"] > 1.5 * counts["front"] + 3, counts


def _scene_labels(n_segments=6, frames=2):
    out = []
    for i in range(n_segments):
        plan = plan_segment(segment_seed(11, i), frames, SceneConfig(half_length=80.0))
        for _data, rendered, labels in render_segment_frames(plan, with_debug=True):
            out.append((plan, rendered, labels))
    return out


@pytest.fixture(scope="module")
def scene_frames():
    return _scene_labels()


def test_angle_to_axes():
    assert angle_to_axes(0.0) == 0.0
    for k in range(-4, 5):   # every multiple of 90 degrees is on an axis; +-0.2 rad is 0.2 off
        for d in (0.2, -0.2):
            assert angle_to_axes(k * math.pi / 2 + d) == pytest.approx(0.2, abs=1e-12)
    assert angle_to_axes(math.pi / 4) == pytest.approx(math.pi / 4)
    np.testing.assert_allclose(angle_to_axes(np.array([0.05, math.pi - 0.3, 1.2])),
                               [0.05, 0.3, math.pi / 2 - 1.2], atol=1e-12)


def test_vehicle_headings_are_not_only_the_street_axes(scene_frames):
    # Angles in the scene's world frame (the ego's heading drifts by a fraction of a degree).
    off = []
    for plan, _r, labels in scene_frames:
        for k in labels.object_index[labels.types == VEHICLE]:
            ob = plan.scene.objects[k]
            h = ob.heading(0.0)
            off.append(angle_to_axes(h))
    off = np.degrees(np.asarray(off))
    assert len(off) > 100
    assert (off > 1.0).mean() > 0.4          # parked cars a few degrees off the kerb
    assert (off > 10.0).mean() > 0.05        # angled bays and turns
    assert ((off > 20.0) & (off < 40.0)).any()


def test_moving_objects_face_their_motion():
    cfg = SceneConfig(half_length=80.0, cross_street_prob=1.0, turning_vehicles=(3, 3))
    turning = 0
    for i in range(4):
        scene = plan_segment(segment_seed(3, i), 10, cfg).scene
        for ob in scene.objects:
            turning += ob.yaw_rate != 0.0
            for t in (0.0, 0.45, 0.9):
                v = ob.velocity(t)
                if np.hypot(v[0], v[1]) < 1e-6:
                    continue
                # Heading and velocity agree, and the velocity is the position's derivative.
                h = ob.heading(t)
                np.testing.assert_allclose(v[:2] / np.hypot(v[0], v[1]), [math.cos(h), math.sin(h)],
                                           atol=1e-9)
                e = 1e-4
                p1, p0 = np.array(ob.position(t + e)), np.array(ob.position(t - e))
                np.testing.assert_allclose((p1 - p0) / (2 * e), v[:2], atol=1e-5)
                a1, a0 = ob.velocity(t + e), ob.velocity(t - e)
                np.testing.assert_allclose((a1 - a0) / (2 * e), ob.acceleration(t), atol=1e-5)
    assert turning >= 8


def test_objects_do_not_overlap(scene_frames):
    """Placement keeps every pair of labelled boxes apart (oriented footprints)."""
    for _plan, _r, labels in scene_frames:
        b = labels.boxes
        rects = np.column_stack([b[:, 0], b[:, 1], b[:, 3] / 2, b[:, 4] / 2, np.cos(b[:, 6]),
                                 np.sin(b[:, 6])])
        for i in range(len(rects)):
            others = np.delete(rects, i, axis=0)
            assert not _overlaps(others, rects[i]).any()


def test_overlap_test_matches_a_point_sampling_check():
    rng = np.random.default_rng(0)
    a = np.column_stack([rng.uniform(-3, 3, (400, 2)), rng.uniform(0.2, 2.0, (400, 2)),
                         rng.uniform(-math.pi, math.pi, 400)])
    rects = np.column_stack([a[:, :4], np.cos(a[:, 4]), np.sin(a[:, 4])])
    r = np.array([0.0, 0.0, 1.5, 0.6, math.cos(0.4), math.sin(0.4)])
    got = _overlaps(rects, r)
    # Dense sampling of both rectangles: overlap iff some sample of one lies in the other.
    u = np.stack(np.meshgrid(np.linspace(-1, 1, 41), np.linspace(-1, 1, 41)), -1).reshape(-1, 2)

    def samples(q):
        x, y = u[:, 0] * q[2], u[:, 1] * q[3]
        return np.column_stack([q[0] + q[4] * x - q[5] * y, q[1] + q[5] * x + q[4] * y])

    def inside(q, p):
        d = p - q[:2]
        return (np.abs(q[4] * d[:, 0] + q[5] * d[:, 1]) <= q[2]) & \
            (np.abs(-q[5] * d[:, 0] + q[4] * d[:, 1]) <= q[3])

    want = np.array([inside(q, samples(r)).any() or inside(r, samples(q)).any() for q in rects])
    # Sampling can miss a sliver of overlap: only those cases may disagree, and they are few.
    assert (got >= want).all()
    assert (got != want).mean() < 0.02
    assert want.any() and (~want).any()


def test_class_sizes_levels_and_rates(scene_frames):
    """Waymo-like box sizes per class, LEVEL_2 exactly for boxes with <= 5 points, counts equal
    to the cast points in each box, and the rates per frame (docs/synthetic.md)."""
    boxes, types, n_frames = [], [], 0
    for _plan, rendered, labels in scene_frames:
        pts = np.concatenate([li.points for li in rendered.lidars.values()])
        ref = lb.count_points_in_boxes_reference(np.ascontiguousarray(pts, np.float32),
                                                 labels.boxes.astype(np.float32))
        np.testing.assert_array_equal(labels.num_points, ref)
        np.testing.assert_array_equal(labels.difficulty == lb.LEVEL_2, labels.num_points <= 5)
        boxes.append(labels.boxes)
        types.append(labels.types)
        n_frames += 1
    b, t = np.concatenate(boxes), np.concatenate(types)
    med = {k: np.median(b[t == k, 3:6], axis=0) for k in (VEHICLE, PEDESTRIAN, CYCLIST)}
    assert (np.abs(med[VEHICLE] - [4.6, 2.0, 1.7]) <= [0.25, 0.12, 0.15]).all(), med[VEHICLE]
    np.testing.assert_allclose(med[PEDESTRIAN], [0.9, 0.9, 1.75], atol=0.1)
    np.testing.assert_allclose(med[CYCLIST], [1.8, 0.85, 1.75], atol=0.1)
    assert (b[t == VEHICLE, 3] > 7.0).any()           # the long tail: trucks and buses
    per_frame = {k: (t == k).sum() / n_frames for k in (VEHICLE, PEDESTRIAN, CYCLIST)}
    assert 12 <= per_frame[VEHICLE] <= 45, per_frame
    assert 4 <= per_frame[PEDESTRIAN] <= 25, per_frame
    assert 0.3 <= per_frame[CYCLIST] <= 4, per_frame
