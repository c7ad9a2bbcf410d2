"""Tests of detector/visualization: box geometry, off-screen Open3D renders, BEV plots, the CLI."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.visualization.colors import PREDICTION_COLOR, TYPE_COLORS, point_colors
from detector.visualization.geometry import (BOX_EDGES, box_corners, box_edge_segments,
                                             heading_marker_segments, look_at_camera,
                                             make_camera)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------
# Geometry: one box_corners for every drawing, checked against the box convention.

def _corners_reference(box) -> np.ndarray:
    """Slow, obviously correct: rotate the half-size offsets of each corner by the heading."""
    cx, cy, cz, l, w, h, yaw = (float(v) for v in box)
    rot = np.array([[math.cos(yaw), -math.sin(yaw), 0.0],
                    [math.sin(yaw), math.cos(yaw), 0.0],
                    [0.0, 0.0, 1.0]])
    out = []
    for sz in (-1, 1):                                   # bottom face first, then top
        for sx, sy in ((1, 1), (1, -1), (-1, -1), (-1, 1)):  # FL, FR, RR, RL
            out.append(rot @ np.array([sx * l / 2, sy * w / 2, sz * h / 2]) + [cx, cy, cz])
    return np.array(out)


def _random_boxes(rng, m: int) -> np.ndarray:
    return np.column_stack([rng.uniform(-50, 50, (m, 3)), rng.uniform(0.3, 8.0, (m, 3)),
                            rng.uniform(-math.pi, math.pi, m)]).astype(np.float32)


def test_box_corners_match_reference_on_random_boxes():
    rng = np.random.default_rng(0)
    boxes = _random_boxes(rng, 200)
    corners = box_corners(boxes)
    assert corners.shape == (200, 8, 3)
    ref = np.stack([_corners_reference(b) for b in boxes])
    np.testing.assert_allclose(corners, ref, atol=1e-9)


def test_box_corners_convention_by_hand():
    # Heading +90 deg: the box's front points along +y, so its "left" is -x.
    box = np.array([[10.0, 20.0, 1.0, 4.0, 2.0, 1.5, math.pi / 2]])
    c = box_corners(box)[0]
    np.testing.assert_allclose(c[0], [10 - 1.0, 20 + 2.0, 1 - 0.75], atol=1e-12)  # front-left
    np.testing.assert_allclose(c[1], [10 + 1.0, 20 + 2.0, 1 - 0.75], atol=1e-12)  # front-right
    np.testing.assert_allclose(c[2], [10 + 1.0, 20 - 2.0, 1 - 0.75], atol=1e-12)  # rear-right
    np.testing.assert_allclose(c[6], [10 + 1.0, 20 - 2.0, 1 + 0.75], atol=1e-12)  # rear-right, top


def test_box_edges_are_the_twelve_cube_edges():
    rng = np.random.default_rng(1)
    boxes = _random_boxes(rng, 50)
    corners = box_corners(boxes)
    segs = box_edge_segments(boxes)
    assert segs.shape == (50, 12, 2, 3)
    np.testing.assert_array_equal(segs, corners[:, BOX_EDGES])
    # The 12 pairs are exactly the pairs of corners that differ in one axis of the box frame.
    signs = np.array([[1, 1, -1], [1, -1, -1], [-1, -1, -1], [-1, 1, -1],
                      [1, 1, 1], [1, -1, 1], [-1, -1, 1], [-1, 1, 1]])
    cube_edges = {(i, j) for i in range(8) for j in range(i + 1, 8)
                  if (signs[i] != signs[j]).sum() == 1}
    assert {tuple(sorted(e)) for e in BOX_EDGES.tolist()} == cube_edges
    # Edge lengths: 4 of length l, 4 of width w, 4 of height h.
    lengths = np.linalg.norm(segs[:, :, 1] - segs[:, :, 0], axis=-1)
    for k, dim in ((0, 4), (1, 3), (8, 5)):   # edge 0-1 spans the width, 1-2 the length, 0-4 h
        np.testing.assert_allclose(lengths[:, k], boxes[:, dim], rtol=1e-5)
    np.testing.assert_allclose(np.sort(lengths, axis=1),
                               np.sort(np.repeat(boxes[:, 3:6], 4, axis=1), axis=1), rtol=1e-5)


def test_heading_marker_points_along_heading():
    rng = np.random.default_rng(2)
    boxes = _random_boxes(rng, 50).astype(np.float64)
    marker = heading_marker_segments(boxes)
    assert marker.shape == (50, 3, 2, 3)
    np.testing.assert_allclose(marker[:, 0, 0], boxes[:, :3], atol=1e-9)
    step = marker[:, 0, 1] - marker[:, 0, 0]
    expected = np.column_stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6]), np.zeros(50)])
    np.testing.assert_allclose(step, expected * boxes[:, 3:4] / 2, atol=1e-9)
    # The front-face diagonals cross at the tip of the heading line.
    for k in (1, 2):
        np.testing.assert_allclose(marker[:, k].mean(axis=1), marker[:, 0, 1], atol=1e-9)


def test_box_input_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"\(M, 7\)"):
        box_corners(np.zeros((3, 6)))
    bad = np.zeros((3, 7))
    bad[2, 4] = np.nan
    with pytest.raises(ValueError, match="row 2"):
        box_corners(bad)
    assert box_corners(np.zeros((0, 7))).shape == (0, 8, 3)


def test_camera_projection():
    cam = look_at_camera(eye=(-10, 0, 10), target=(20, 0, 0), up=(0, 0, 1), vertical_fov_deg=60,
                         width=400, height=300)
    np.testing.assert_allclose(cam.eye, [-10, 0, 10], atol=1e-9)
    uv, depth = cam.project(np.array([[20.0, 0.0, 0.0], [20.0, 5.0, 0.0], [-30.0, 0.0, 10.0]]))
    np.testing.assert_allclose(uv[0], [200, 150], atol=1e-9)         # target -> image centre
    assert uv[1, 0] < 200                                            # +y (left) -> image left
    assert depth[2] < 0 and not cam.visible(np.array([[-30.0, 0.0, 10.0]]))[0]
    bev = make_camera("bev", 300, 300)
    uv, _ = bev.project(np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]]))
    np.testing.assert_allclose(uv[0], [150, 150], atol=1e-9)
    assert uv[1, 0] > 150 and abs(uv[1, 1] - 150) < 1e-9               # forward = right
    assert uv[2, 1] < 150 and abs(uv[2, 0] - 150) < 1e-9               # left = up
    # The default extent (+-78 m forward, +-42 m sideways) fits in a 16:9 image.
    wide = make_camera("bev", 1280, 720)
    assert wide.visible(np.array([[77.0, 41.0, 0.0], [-77.0, -41.0, 0.0]])).all()
    with pytest.raises(ValueError, match="unknown view"):
        make_camera("side", 10, 10)


def test_point_colors_modes_and_errors():
    pts = np.array([[0, 0, -10, 0.0, 0, 1, 1, 0], [0, 0, 10, 5.0, 0, 2, 3, 0]], np.float32)
    for mode in ("intensity", "height", "lidar", "return"):
        rgb = point_colors(pts, mode)
        assert rgb.shape == (2, 3) and (rgb >= 0).all() and (rgb <= 1).all()
        assert not np.allclose(rgb[0], rgb[1]), mode
    with pytest.raises(ValueError, match="column 6"):
        point_colors(pts[:, :4], "lidar")
    with pytest.raises(ValueError, match="unknown point colour mode"):
        point_colors(pts, "speed")


# ------------------------------------------------------------------------------------------
# Off-screen rendering (Open3D, CPU through Mesa's Vulkan driver; no display).

W, H = 480, 360
GT = np.array([[14.0, 4.0, 0.8, 4.6, 2.0, 1.6, 0.4],
               [26.0, -6.0, 0.8, 4.6, 2.0, 1.6, math.pi - 0.2],
               [9.0, -5.0, 0.9, 0.9, 0.9, 1.8, 2.0]], np.float32)
GT_TYPES = np.array([1, 1, 2], np.int8)
PRED = np.array([[32.0, 7.0, 0.8, 4.5, 2.0, 1.6, -0.3],      # score 0.9: drawn
                 [20.0, 0.0, 0.8, 4.5, 2.0, 1.6, 0.0]], np.float32)   # score 0.1: hidden
PRED_SCORES = np.array([0.9, 0.1], np.float32)
SCORE_THR = 0.3


def _ground_points(n: int = 20000, seed: int = 0) -> np.ndarray:
    """A flat ground 0.5 m below the boxes with random intensities (N, 8)."""
    rng = np.random.default_rng(seed)
    pts = np.zeros((n, 8), np.float32)
    pts[:, 0] = rng.uniform(-10, 60, n)
    pts[:, 1] = rng.uniform(-25, 25, n)
    pts[:, 2] = -0.5
    pts[:, 3] = rng.uniform(0, 1, n) ** 3
    pts[:, 5] = 1
    pts[:, 6] = 1
    return pts


def _rgb255(color) -> np.ndarray:
    return np.round(np.asarray(color) * 255)


def _color_mask(image: np.ndarray, color, tol: float = 6.0) -> np.ndarray:
    return (np.abs(image.astype(np.float64) - _rgb255(color)) <= tol).all(axis=-1)


def _near(mask: np.ndarray, uv: np.ndarray, radius: int = 2) -> bool:
    u, v = int(uv[0]), int(uv[1])
    return bool(mask[max(v - radius, 0):v + radius + 1, max(u - radius, 0):u + radius + 1].any())


def _projected_segments(cam, boxes) -> np.ndarray:
    from detector.visualization.render import box_lines
    segs = box_lines(boxes, (1, 1, 1)).segments
    uv, _ = cam.project(segs)
    return uv                                                   # (K, 2, 2)


def _distance_to_segments(pix: np.ndarray, segs: np.ndarray) -> np.ndarray:
    """Distance of each pixel centre (P, 2) to the nearest 2D segment (K, 2, 2)."""
    a, b = segs[None, :, 0], segs[None, :, 1]
    p = pix[:, None, :]
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(a + t[..., None] * ab - p, axis=-1).min(axis=1)


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """Chase and BEV renders of one synthetic frame, written as PNGs."""
    from PIL import Image

    from detector.visualization import render_frame_png
    out = tmp_path_factory.mktemp("renders")
    pts = _ground_points()
    result = {}
    for view in ("chase", "bev"):
        path = out / f"{view}.png"
        cam = render_frame_png(pts, GT, GT_TYPES, PRED, PRED_SCORES, out_path=path, view=view,
                               width=W, height=H, score_thr=SCORE_THR, annotate=False,
                               draw_ego=False)
        result[view] = (np.asarray(Image.open(path).convert("RGB")), cam, path)
    return result


@pytest.mark.parametrize("view", ["chase", "bev"])
def test_render_png_size_and_content(renders, view):
    image, cam, path = renders[view]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.shape == (H, W, 3) and (cam.width, cam.height) == (W, H)
    from detector.visualization.colors import BACKGROUND_COLOR
    from detector.visualization.render import render_frame
    blank, _ = render_frame(np.zeros((0, 8), np.float32), np.zeros((0, 7)), view=view, width=W,
                            height=H, annotate=False, draw_ego=False)
    background = blank[0, 0]
    assert (blank == background).all(), "an empty scene must be pure background"
    assert BACKGROUND_COLOR is not None
    differs = (image != background).any(axis=-1)
    assert differs.mean() > 0.05, f"only {differs.mean():.3%} of the pixels are not background"


@pytest.mark.parametrize("view", ["chase", "bev"])
def test_render_box_corners_have_box_colours(renders, view):
    image, cam, _ = renders[view]
    checked = 0
    for box, t in zip(GT, GT_TYPES):
        mask = _color_mask(image, TYPE_COLORS[int(t)])
        uv, depth = cam.project(box_corners(box[None])[0])
        assert (depth > 0).all() and cam.visible(box_corners(box[None])[0], margin=3).all()
        for k, p in enumerate(uv):
            assert _near(mask, p), f"{view}: GT box {box.tolist()} corner {k} at {p} not drawn"
            checked += 1
    pred_mask = _color_mask(image, PREDICTION_COLOR)
    for k, p in enumerate(cam.project(box_corners(PRED[:1])[0])[0]):
        assert _near(pred_mask, p), f"{view}: prediction corner {k} at {p} not drawn"
    assert checked == 24
    # The prediction under the score threshold is not drawn: its corners stay free of the colour
    # wherever no other drawn line passes nearby.
    drawn = np.concatenate([_projected_segments(cam, GT), _projected_segments(cam, PRED[:1])])
    hidden_uv = cam.project(box_corners(PRED[1:])[0])[0]
    free = _distance_to_segments(hidden_uv, drawn) > 6
    assert free.sum() >= 4
    for p in hidden_uv[free]:
        assert not _near(pred_mask, p), f"{view}: low-score prediction drawn at {p}"


def test_render_box_colour_only_along_projected_edges(renders):
    """Every pixel in a box's colour lies on a projected edge of a box of that colour."""
    image, cam, _ = renders["chase"]
    for color, boxes in ((TYPE_COLORS[1], GT[GT_TYPES == 1]), (TYPE_COLORS[2], GT[GT_TYPES == 2]),
                         (PREDICTION_COLOR, PRED[:1])):
        ys, xs = np.nonzero(_color_mask(image, color))
        assert len(xs) > 20
        d = _distance_to_segments(np.column_stack([xs + 0.5, ys + 0.5]),
                                  _projected_segments(cam, boxes))
        assert d.max() <= 2.5, f"colour {color}: a pixel {d.max():.1f} px away from every edge"


def test_render_heading_marker_on_the_front_face(renders):
    """The heading marker (front-face X) is drawn at the front face centre and not the rear's."""
    image, cam, _ = renders["chase"]
    mask = _color_mask(image, TYPE_COLORS[1])
    drawn = _projected_segments(cam, GT)
    for box in GT[GT_TYPES == 1]:
        c = box_corners(box[None])[0]
        front, rear = c[[0, 1, 4, 5]].mean(axis=0), c[[2, 3, 6, 7]].mean(axis=0)
        uv = cam.project(np.stack([front, rear]))[0]
        assert _near(mask, uv[0], 1), f"box {box.tolist()}: no heading marker at the front"
        # Precondition of the scene: nothing else is drawn near the rear face centre.
        assert _distance_to_segments(uv[1:], drawn)[0] > 4
        assert not _near(mask, uv[1], 1), f"box {box.tolist()}: marker drawn at the rear"


def test_render_annotations_write_scores_and_legend():
    from detector.visualization.render import render_frame
    pts = _ground_points(2000)
    plain, cam = render_frame(pts, GT, GT_TYPES, PRED, PRED_SCORES, width=W, height=H,
                              score_thr=SCORE_THR, annotate=False)
    text, _ = render_frame(pts, GT, GT_TYPES, PRED, PRED_SCORES, width=W, height=H,
                           score_thr=SCORE_THR, annotate=True, title="frame")
    changed = (plain != text).any(axis=-1)
    uv = cam.project(box_corners(PRED[:1])[0])[0]
    u0, v_top = int(uv[:, 0].mean()), int(uv[:, 1].min())
    assert changed[max(v_top - 25, 0):v_top, u0 - 25:u0 + 25].any(), "no score above the box"
    hidden = cam.project(box_corners(PRED[1:])[0])[0]
    u1, v1 = int(hidden[:, 0].mean()), int(hidden[:, 1].min())
    assert not changed[v1 - 12:v1 - 4, u1 - 8:u1 + 8].any(), "score of a hidden prediction"
    assert changed[:60, :120].any(), "no legend"


def test_render_rejects_bad_inputs():
    from detector.visualization.render import render_frame
    with pytest.raises(ValueError, match="pred_scores has 1 entries but pred_boxes has 2"):
        render_frame(_ground_points(10), GT, GT_TYPES, PRED, PRED_SCORES[:1], width=64, height=48)
    with pytest.raises(ValueError, match="gt_types has 2 entries"):
        render_frame(_ground_points(10), GT, GT_TYPES[:2], width=64, height=48)
    with pytest.raises(ValueError, match=r"points: expected shape \(N, C >= 3\)"):
        render_frame(np.zeros((5, 2)), GT, GT_TYPES, width=64, height=48)


# ------------------------------------------------------------------------------------------
# matplotlib bird's-eye view

def test_plot_bev_draws_boxes_and_respects_threshold(tmp_path):
    from PIL import Image

    from detector.visualization import plot_bev
    pts = _ground_points(5000)
    # Without the legend, each colour can only come from the boxes drawn in it.
    out = plot_bev(pts, GT, PRED, PRED_SCORES, tmp_path / "bev.png", gt_types=GT_TYPES,
                   score_thr=SCORE_THR, figsize=(6, 5), dpi=80, title="t", legend=False)
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (400, 480, 3)
    assert _color_mask(img, TYPE_COLORS[1], 3).sum() > 30
    assert _color_mask(img, TYPE_COLORS[2], 3).sum() > 0
    assert _color_mask(img, PREDICTION_COLOR, 3).sum() > 0
    none = plot_bev(pts, GT, PRED, PRED_SCORES, tmp_path / "none.png", gt_types=GT_TYPES,
                    score_thr=0.95, figsize=(6, 5), dpi=80, legend=False)
    assert _color_mask(np.asarray(Image.open(none).convert("RGB")), PREDICTION_COLOR, 3).sum() == 0
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_visualization_only_draws():
    """No module of the drawing package imports the engine (model loading lives there)."""
    import ast
    for path in (REPO / "detector" / "visualization").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if isinstance(node, ast.ImportFrom) and node.level:
                names = [("." * node.level) + (node.module or "")]
            for n in names:
                assert not n.startswith(("detector.engine", "..engine")), f"{path.name}: {n}"


def test_drawing_drops_non_finite_points_counted(tmp_path):
    """A sensor dropout (NaN / inf coordinates): every drawing path leaves those points out and
    says how many; the picture equals the one of the finite points alone."""
    from PIL import Image

    from detector.visualization import plot_bev, render_frame
    from detector.visualization.render import NonFinitePointsWarning
    pts = _ground_points(2000)
    bad = pts.copy()
    bad[::100, 0] = np.nan
    bad[1::100, 2] = np.inf
    n_bad = len(bad[::100]) + len(bad[1::100])
    good = bad[np.isfinite(bad).all(axis=1)]
    with pytest.warns(NonFinitePointsWarning, match=f"dropped {n_bad} of {len(bad)} points"):
        plot_bev(bad, GT, PRED, PRED_SCORES, tmp_path / "nan.png", gt_types=GT_TYPES,
                 figsize=(6, 5), dpi=80, legend=False)
    plot_bev(good, GT, PRED, PRED_SCORES, tmp_path / "good.png", gt_types=GT_TYPES,
             figsize=(6, 5), dpi=80, legend=False)
    a, b = (np.asarray(Image.open(tmp_path / n).convert("RGB")) for n in ("nan.png", "good.png"))
    np.testing.assert_array_equal(a, b)
    all_nan = np.full((50, 8), np.nan, np.float32)
    with pytest.warns(NonFinitePointsWarning, match="dropped 50 of 50"):
        plot_bev(all_nan, GT, None, None, tmp_path / "all_nan.png", figsize=(6, 5), dpi=80)
    with pytest.warns(NonFinitePointsWarning, match=f"dropped {n_bad} of"):
        img, _ = render_frame(bad, GT, GT_TYPES, width=64, height=48)
    np.testing.assert_array_equal(img, render_frame(good, GT, GT_TYPES, width=64, height=48)[0])


# ------------------------------------------------------------------------------------------
# No display

def test_interactive_without_display_fails_clearly(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith(("win", "darwin")):
        pytest.skip("Windows and macOS always have a display")
    from detector.visualization import DisplayUnavailableError, FrameView, show_interactive
    with pytest.raises(DisplayUnavailableError, match="--save"):
        show_interactive(lambda i: FrameView(np.zeros((0, 8)), np.zeros((0, 7))), 1)
    sys.path.insert(0, str(REPO / "tools"))
    import visualize
    with pytest.raises(SystemExit) as exc:
        visualize.main(["--data", "/nonexistent", "--interactive"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--interactive needs a display" in err and "--save" in err


# ------------------------------------------------------------------------------------------
# Submission files and the command line on a real Waymo frame

def test_read_submission_matches_the_proto(shared_waymo):
    from waymo_open_dataset.protos import metrics_pb2

    from detector.visualization.predictions import read_submission
    path = shared_waymo / "fake_predictions.bin"
    sub = read_submission(path)
    objs = metrics_pb2.Objects()
    objs.ParseFromString(path.read_bytes())
    assert len(sub) == len(objs.objects) > 0
    for i in (0, len(sub) // 2, len(sub) - 1):
        o = objs.objects[i]
        b = o.object.box
        np.testing.assert_allclose(sub.boxes[i], [b.center_x, b.center_y, b.center_z, b.length,
                                                  b.width, b.height, b.heading], rtol=1e-6)
        assert sub.scores[i] == np.float32(o.score) and sub.types[i] == o.object.type
    assert sub.context_names[0] == objs.objects[0].context_name
    assert sub.timestamps_micros[-1] == objs.objects[-1].frame_timestamp_micros
    o = objs.objects[0]
    frame = sub.for_frame(o.context_name, o.frame_timestamp_micros)
    expected = sum(1 for x in objs.objects if (x.context_name, x.frame_timestamp_micros)
                   == (o.context_name, o.frame_timestamp_micros))
    assert len(frame) == expected and (frame.context_names == o.context_name).all()


def test_cli_on_real_frame_with_submission(tmp_path, real_frame_path, monkeypatch):
    """tools/visualize.py on the real Waymo frame: labels drawn, detections from a .bin overlaid."""
    from PIL import Image
    from waymo_open_dataset.protos import metrics_pb2

    from detector.datasets.waymo import decode_frame, read_tfrecord
    frame = decode_frame(next(iter(read_tfrecord(real_frame_path))), with_points=False)
    vehicles = frame.boxes[frame.types == 1]
    # Two detections: a copy of the first vehicle (score 0.8) and one under the threshold.
    sub = metrics_pb2.Objects()
    for box, score in ((vehicles[0], 0.8), (vehicles[1], 0.05)):
        o = sub.objects.add()
        o.context_name, o.frame_timestamp_micros, o.score = (frame.context_name,
                                                             frame.timestamp_micros, score)
        o.object.type = 1
        (o.object.box.center_x, o.object.box.center_y, o.object.box.center_z,
         o.object.box.length, o.object.box.width, o.object.box.height,
         o.object.box.heading) = (float(v) for v in box)
    bin_path = tmp_path / "pred.bin"
    bin_path.write_bytes(sub.SerializeToString())

    sys.path.insert(0, str(REPO / "tools"))
    import visualize
    monkeypatch.delenv("DISPLAY", raising=False)
    out, bev = tmp_path / "out.png", tmp_path / "bev.png"
    assert visualize.main(["--data", str(real_frame_path), "--frame", ":0", "--predictions",
                           str(bin_path), "--score-thr", "0.3", "--save", str(out),
                           "--width", "640", "--height", "360", "--bev-plot", str(bev)]) == 0
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (360, 640, 3)
    cam = make_camera("chase", 640, 360)
    corners = box_corners(vehicles[:1])[0]
    if cam.visible(corners, margin=3).all():
        mask = _color_mask(img, PREDICTION_COLOR)
        assert sum(_near(mask, p) for p in cam.project(corners)[0]) >= 6
    assert _color_mask(img, TYPE_COLORS[1]).sum() > 200          # the real vehicle labels
    assert Image.open(bev).size[0] > 100


# ------------------------------------------------------------------------------------------
# Culling: only the nearest point of each pixel goes to the renderer.

@pytest.mark.parametrize("view,margin", [("chase", 2), ("bev", 0), ("chase", 0)])
def test_nearest_point_per_pixel_matches_reference(view, margin):
    from detector.visualization.culling import (nearest_point_per_pixel,
                                                nearest_point_per_pixel_reference)
    rng = np.random.default_rng(3)
    n = 60000
    pts = np.zeros((n, 8), np.float32)
    pts[:, :3] = rng.uniform([-40, -40, -3], [80, 40, 25], (n, 3))   # some behind/above the camera
    pts[:100, :3] = pts[100:200, :3]                                 # exact duplicates: ties
    pts[200, 0] = np.nan
    cam = make_camera(view, 320, 200)
    fast = nearest_point_per_pixel(pts, cam, margin)
    ref = nearest_point_per_pixel_reference(pts, cam, margin)
    np.testing.assert_array_equal(fast, ref)
    assert 0 < len(fast) < n and 200 not in fast
    # Rows 100..199 tie exactly with rows 0..99 (same position): the lower index wins.
    assert not np.isin(np.arange(100, 200), fast).any()
    assert np.isin(np.arange(100), fast).any()
    # Every kept point is in front of the camera and inside image + margin; every pixel that
    # had a point keeps exactly one, the nearest.
    uv, depth = cam.project(pts[fast, :3].astype(np.float64))
    assert (depth > 0).all()
    assert ((uv >= -margin) & (uv < np.array([320, 200]) + margin)).all()
    assert nearest_point_per_pixel(pts[:0], cam).shape == (0,)


@pytest.mark.parametrize("antialias", [True, False])
def test_culling_keeps_the_picture_exact_for_one_pixel_points(antialias):
    """Points at pixel centres, 3 per pixel at different depths: with and without culling the
    renderer shows, in every pixel, the colour of the nearest point."""
    from detector.visualization.render import render_frame
    w, h = 160, 120
    cam = make_camera("chase", w, h)
    rng = np.random.default_rng(4)
    pix = rng.choice(w * h, 3000, replace=False)
    u, v = pix % w + 0.5, pix // w + 0.5
    kinv = np.linalg.inv(cam.intrinsic)
    rot, t = cam.extrinsic[:3, :3], cam.extrinsic[:3, 3]
    rays = (kinv @ np.stack([u, v, np.ones_like(u)])).T                  # camera frame, z = 1
    pts, nearest_intensity = [], []
    for k, depth in enumerate((30.0, 15.0, 45.0)):
        world = ((rays * depth) - t) @ rot                                # camera -> world
        p = np.zeros((len(pix), 8))
        p[:, :3] = world
        p[:, 3] = rng.uniform(0, 3, len(pix))
        pts.append(p)
        if depth == 15.0:
            nearest_intensity = p[:, 3]
    pts = np.concatenate(pts).astype(np.float32)
    images = {cull: render_frame(pts, np.zeros((0, 7)), camera=cam, width=w, height=h,
                                 point_size=1, annotate=False, draw_ego=False, cull=cull,
                                 antialias=antialias)[0]
              for cull in (True, False)}
    np.testing.assert_array_equal(images[True], images[False])
    expected = np.round(point_colors(np.column_stack([np.zeros((len(pix), 3)),
                                                      nearest_intensity]), "intensity") * 255)
    got = images[True][pix // w, pix % w].astype(np.float64)
    assert np.abs(got - expected).max() <= 1.0


def test_renderers_of_two_sizes_exit_cleanly(tmp_path):
    """Open3D aborts at exit if two off-screen renderers were alive; one is kept at a time."""
    import subprocess
    code = ("import numpy as np\n"
            "from detector.visualization.render import render_frame\n"
            "p = np.zeros((10, 8), np.float32); p[:, 0] = np.arange(10)\n"
            "a, _ = render_frame(p, np.zeros((0, 7)), width=64, height=48)\n"
            "b, _ = render_frame(p, np.zeros((0, 7)), width=80, height=40)\n"
            "c, _ = render_frame(p, np.zeros((0, 7)), width=64, height=48)\n"
            "assert a.shape == (48, 64, 3) and b.shape == (40, 80, 3) and (a == c).all()\n"
            "print('ok')\n")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# ------------------------------------------------------------------------------------------
# A real synthetic segment (ray-cast, in the Waymo Frame format): decoded, converted, drawn.

@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    """Two frames of a small synthetic segment, as a .tfrecord and as a converted root."""
    from detector.datasets.synthetic import SceneConfig, generate_segment
    from detector.datasets.waymo.conversion import convert
    base = tmp_path_factory.mktemp("synthetic")
    cfg = SceneConfig(half_length=60.0)
    tfrecord = generate_segment(base / "raw", seed=11, num_frames=2, config=cfg, split="val")
    convert([tfrecord], base / "converted", "val", progress=False, log=None)
    return tfrecord, base / "converted"


def test_frame_sources_agree_and_find_frames(synthetic_root):
    from detector.visualization.sources import (ConvertedFrames, TFRecordFrames, open_frames,
                                                parse_frame_spec)
    tfrecord, root = synthetic_root
    conv, raw = open_frames(root, "val"), open_frames(tfrecord)
    assert isinstance(conv, ConvertedFrames) and isinstance(raw, TFRecordFrames)
    assert len(conv) == len(raw) == 2
    seg = tfrecord.name.removesuffix(".tfrecord")
    i = conv.find(*parse_frame_spec(f"{seg}:1"))
    a, b = conv.load(i), raw.load(raw.find(*parse_frame_spec(":1")))
    assert a.name == b.name == f"{seg}:1"
    assert a.context_name == b.context_name and a.timestamp_micros == b.timestamp_micros
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.gt_boxes, b.gt_boxes)
    assert conv.find(*parse_frame_spec(f"{a.context_name}:1")) == i     # by context name
    assert conv.find(*parse_frame_spec(f"{seg[:12]}:1")) == i           # by unique prefix
    with pytest.raises(ValueError, match="matches no segment"):
        conv.find("nope", 0)
    with pytest.raises(ValueError, match="has no frame 7"):
        conv.find(seg, 7)
    with pytest.raises(IndexError, match="out of range"):
        raw.load(5)
    with pytest.raises(ValueError, match="INDEX"):
        parse_frame_spec(f"{seg}:x")


def test_render_synthetic_frame(synthetic_root, tmp_path):
    """The decoded synthetic frame: vehicle wireframes where the labels project."""
    from PIL import Image

    from detector.visualization import render_frame_png
    from detector.visualization.sources import open_frames
    frames = open_frames(synthetic_root[0])
    fr = frames.load(0)
    assert len(fr.points) > 10000 and (fr.gt_types == 1).sum() >= 3
    out = tmp_path / "syn.png"
    cam = render_frame_png(fr.points, fr.gt_boxes, fr.gt_types, out_path=out, width=W, height=H,
                           annotate=False, draw_ego=False)
    img = np.asarray(Image.open(out).convert("RGB"))
    mask = _color_mask(img, TYPE_COLORS[1])
    # Every visible vehicle on the main road (|y| < 11 m: lanes and parking; the chase camera
    # sits above the road's centre line, so buildings, poles and trees, all beyond the kerb,
    # cannot lie between it and such a vehicle) within 50 m shows its colour at its top corner
    # nearest the camera, unless another labelled object (a taller truck, van or bus) stands on
    # the line of sight.
    checked = 0
    for k, box in enumerate(fr.gt_boxes):
        if fr.gt_types[k] != 1:
            continue
        corners = box_corners(box[None])[0]
        if np.hypot(*box[:2]) > 50 or abs(box[1]) > 11 or not cam.visible(corners, margin=3).all():
            continue
        uv, depth = cam.project(corners[4:])
        corner = corners[4:][np.argmin(depth)]
        others = np.delete(fr.gt_boxes, k, axis=0)
        if _segment_hits_boxes(cam.eye, corner, others):
            continue
        assert _near(mask, uv[np.argmin(depth)]), f"vehicle {box.tolist()} not drawn"
        checked += 1
    assert checked >= 2


def _segment_hits_boxes(a, b, boxes) -> bool:
    """Whether the segment a -> b passes through any of the (M, 7) boxes (slab test in each
    box's frame)."""
    for bx in boxes:
        c, s = np.cos(bx[6]), np.sin(bx[6])
        R = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
        p, d = R @ (np.asarray(a) - bx[:3]), R @ (np.asarray(b) - np.asarray(a))
        lo, hi = 0.0, 1.0
        for i in range(3):
            h = bx[3 + i] / 2
            if abs(d[i]) < 1e-12:
                if abs(p[i]) > h:
                    break
                continue
            t0, t1 = sorted(((-h - p[i]) / d[i], (h - p[i]) / d[i]))
            lo, hi = max(lo, t0), min(hi, t1)
            if lo > hi:
                break
        else:
            return True
    return False
    # Vehicle colour appears only along projected vehicle edges (points never take it).
    ys, xs = np.nonzero(mask)
    d = _distance_to_segments(np.column_stack([xs + 0.5, ys + 0.5]),
                              _projected_segments(cam, fr.gt_boxes[fr.gt_types == 1]))
    assert d.max() <= 2.5


# ------------------------------------------------------------------------------------------
# Running a (randomly initialised) detector on a frame: --config --checkpoint

SMALL_MODEL = REPO / "configs" / "_base_" / "models" / "centerpoint_graddrop_small.py"


@pytest.mark.skipif(not SMALL_MODEL.is_file(), reason="needs the model config (issue: models)")
def test_detector_on_synthetic_frame_via_cli(synthetic_root, tmp_path, monkeypatch, capsys):
    import torch

    from detector.engine.inference import init_detector
    torch.manual_seed(0)
    model = init_detector(SMALL_MODEL)
    ckpt = tmp_path / "random.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, ckpt)

    sys.path.insert(0, str(REPO / "tools"))
    import visualize
    monkeypatch.delenv("DISPLAY", raising=False)
    plot = tmp_path / "plot.png"
    segment = synthetic_root[0].name.removesuffix(".tfrecord")
    capsys.readouterr()
    assert visualize.main(["--data", str(synthetic_root[1]), "--frame", f"{segment}:0",
                           "--config", str(SMALL_MODEL), "--checkpoint", str(ckpt),
                           "--score-thr", "0", "--bev-plot", str(plot)]) == 0
    import re
    found = re.search(r"(\d+) detections >= 0", capsys.readouterr().out)
    assert found and int(found.group(1)) > 0, "the random model made no detections"
    from PIL import Image
    img = np.asarray(Image.open(plot).convert("RGB"))
    assert _color_mask(img, PREDICTION_COLOR, 3).any(), "detections not drawn"


def test_cli_on_a_kitti_bin_point_cloud(synthetic_root, tmp_path, monkeypatch, capsys):
    """A KITTI-style .bin (x, y, z, intensity) is drawn as a frame without labels, not read as a
    TFRecord ("length CRC mismatch")."""
    from PIL import Image

    from detector.visualization.sources import PointFileFrames, open_frames
    pts = open_frames(synthetic_root[0]).load(0).points[:, :4].astype(np.float32)
    pts[:len(pts) - len(pts) % 5 - 1].tofile(tmp_path / "frame_kitti.bin")   # only 16 divides
    assert isinstance(open_frames(tmp_path / "frame_kitti.bin"), PointFileFrames)
    sys.path.insert(0, str(REPO / "tools"))
    import visualize
    monkeypatch.delenv("DISPLAY", raising=False)
    capsys.readouterr()
    assert visualize.main(["--data", str(tmp_path / "frame_kitti.bin"), "--bev-plot",
                           str(tmp_path / "k.png")]) == 0
    out = capsys.readouterr().out
    assert f"frame frame_kitti:0: {len(pts) - len(pts) % 5 - 1} points, 0 ground-truth boxes" in out
    assert Image.open(tmp_path / "k.png").size[0] > 100
    with pytest.raises(SystemExit):
        visualize.main(["--data", str(tmp_path / "frame_kitti.bin"), "--frame", "3",
                        "--bev-plot", str(tmp_path / "k.png")])
    assert "single point cloud" in capsys.readouterr().err


def test_demo_pictures_from_a_submission(synthetic_root, tmp_path):
    """make demo's pictures: chase + top renders and a BEV plot per frame, detections overlaid."""
    from PIL import Image
    from waymo_open_dataset.protos import metrics_pb2

    from detector.visualization.pictures import write_demo_pictures
    from detector.visualization.sources import open_frames
    frame = open_frames(synthetic_root[1], "val").load(0)
    sub = metrics_pb2.Objects()
    for box in frame.gt_boxes[frame.gt_types == 1][:3]:
        o = sub.objects.add()
        o.context_name, o.frame_timestamp_micros, o.score = (frame.context_name,
                                                             frame.timestamp_micros, 0.7)
        o.object.type = 1
        (o.object.box.center_x, o.object.box.center_y, o.object.box.center_z,
         o.object.box.length, o.object.box.width, o.object.box.height,
         o.object.box.heading) = (float(v) for v in box)
    (tmp_path / "pred.bin").write_bytes(sub.SerializeToString())
    paths = write_demo_pictures(synthetic_root[1], tmp_path / "vis", num_frames=1,
                                predictions=tmp_path / "pred.bin", width=320, height=180)
    stem = f"{frame.segment}_0000"
    assert [p.name for p in paths] == [f"{stem}_chase.png", f"{stem}_top.png", f"{stem}_bev.png"]
    for p in paths:
        img = np.asarray(Image.open(p).convert("RGB"))
        assert _color_mask(img, PREDICTION_COLOR, 3).any(), f"{p.name}: no detections drawn"
    assert Image.open(paths[0]).size == (320, 180)
