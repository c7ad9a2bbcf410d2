"""Target encoding (Gaussian heatmaps, centre-cell regression) and decoding back to boxes."""
import math

import numpy as np
import pytest
import torch

from detector.models.targets import (BEVGrid, add_neighbour_slots, decode_boxes, decode_heatmap, draw_gaussian,
                                     encode_targets, gaussian_radius, reg_branches)
from ops.boxes import wrap_angle

GRID = BEVGrid((-40.0, -32.0, -2.0, 40.0, 32.0, 4.0), (0.2, 0.2, 0.25), 4.0)  # 0.8 m cells, 80 x 100


def _radius_reference(h, w, o):
    """CornerNet's three quadratic cases, evaluated one box at a time in plain floats."""
    cases = []
    for a, b, c in ((1.0, h + w, w * h * (1 - o) / (1 + o)),
                    (4.0, 2 * (h + w), (1 - o) * w * h),
                    (4 * o, -2 * o * (h + w), (o - 1) * w * h)):
        cases.append((b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / 2)
    return min(cases)


def test_gaussian_radius_matches_scalar_reference():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(200, generator=g, dtype=torch.float64) * 20 + 0.5
    w = torch.rand(200, generator=g, dtype=torch.float64) * 10 + 0.5
    for o in (0.1, 0.5, 0.7):
        got = gaussian_radius(h, w, o)
        ref = torch.tensor([_radius_reference(a, b, o) for a, b in zip(h.tolist(), w.tolist())],
                           dtype=torch.float64)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    # A 10 x 10 box at overlap 0.1: the third case (4.32 cells) is the smallest.
    assert gaussian_radius(torch.tensor(10.0), torch.tensor(10.0), 0.1).item() == pytest.approx(4.3246, abs=1e-3)
    # Bigger boxes get bigger radii; stricter overlap smaller ones.
    r = gaussian_radius(torch.tensor([2.0, 4.0, 8.0]), torch.tensor([1.0, 2.0, 4.0]), 0.1)
    assert torch.all(r[1:] > r[:-1])
    assert gaussian_radius(torch.tensor(8.0), torch.tensor(4.0), 0.7) < r[2]


def test_draw_gaussian_peak_symmetry_clipping_and_max_merge():
    hm = torch.zeros(20, 30)
    draw_gaussian(hm, 10, 8, 3)
    assert hm[8, 10] == 1.0 and hm.max() == 1.0
    assert torch.equal(hm[8, 7:14], hm[8, 7:14].flip(0)) and torch.equal(hm[5:12, 10], hm[5:12, 10].flip(0))
    sigma = 7 / 6
    assert hm[8, 12].item() == pytest.approx(math.exp(-4 / (2 * sigma ** 2)), rel=1e-6)
    assert hm[8, 14] == 0 and hm[12, 10] == 0  # outside the (2r+1)^2 window
    # Clipped at the border without error; the part inside equals the unclipped values.
    edge = torch.zeros(20, 30)
    draw_gaussian(edge, 0, 0, 3)
    assert edge[0, 0] == 1.0 and edge[0, 2].item() == pytest.approx(hm[8, 12].item())
    # Overlapping Gaussians merge by max, not sum.
    draw_gaussian(hm, 12, 8, 3)
    assert hm.max() == 1.0 and hm[8, 11].item() == pytest.approx(math.exp(-1 / (2 * sigma ** 2)), rel=1e-6)


def _random_boxes(n, seed, headings=None):
    """n boxes with centres in distinct cells at least 3 cells apart (so peaks stay separate)."""
    rng = np.random.default_rng(seed)
    h, w = GRID.shape
    cells = set()
    out = []
    while len(out) < n:
        iy, ix = int(rng.integers(0, h)), int(rng.integers(0, w))
        if any(abs(iy - a) < 3 and abs(ix - b) < 3 for a, b in cells):
            continue
        cells.add((iy, ix))
        x = GRID.point_cloud_range[0] + (ix + rng.uniform(0.01, 0.99)) * GRID.cell[0]
        y = GRID.point_cloud_range[1] + (iy + rng.uniform(0.01, 0.99)) * GRID.cell[1]
        out.append([x, y, rng.uniform(-1.5, 3.0), rng.uniform(3, 6), rng.uniform(1.5, 2.5),
                    rng.uniform(1.3, 2.2), rng.uniform(-math.pi, math.pi)])
    boxes = torch.tensor(out, dtype=torch.float32)
    if headings is not None:
        boxes[:len(headings), 6] = torch.tensor(headings, dtype=torch.float32)
    return boxes


def _perfect_maps(t, num_classes):
    """Prediction maps a perfect network would output: heatmap logits from the target Gaussians,
    regression values written at the centre cells."""
    h, w = GRID.shape
    hm = t.heatmap.clamp(1e-6, 1 - 1e-6)
    logits = torch.log(hm / (1 - hm))[None]
    reg = {}
    for name, val in t.reg.items():
        m = torch.zeros(1, val.shape[1], h * w)
        m[0, :, t.indices[t.mask]] = val[t.mask].T
        reg[name] = m.reshape(1, val.shape[1], h, w)
    if "direction" in reg:  # 0/1 target -> a confident logit
        reg["direction"] = reg["direction"] * 20 - 10
    return logits, reg


def _heading_diff(a, b):
    return torch.abs(wrap_angle(a - b))


@pytest.mark.parametrize("encoding", ["sincos", "axis_dir"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encode_then_decode_recovers_boxes(seed, encoding):
    # Wrap-around and, for the axis encoding, the axis boundaries +-pi/2 (where the direction bit
    # flips) and their float32 neighbours.
    special = [math.pi - 1e-4, -math.pi + 1e-5, -math.pi, 3.1415925, -3.1415925, math.pi / 2,
               -math.pi / 2, 1.5707962, 1.5707965, -1.5707962, -1.5707965, 0.0]
    boxes = _random_boxes(40, seed, headings=special)
    labels = torch.tensor([0, 1] * 20)
    t = encode_targets(boxes, labels, [0, 1], GRID, gaussian_overlap=0.1, min_radius=2, max_objs=64,
                       heading_encoding=encoding)
    assert t.heatmap.shape == (2, *GRID.shape) and int(t.mask.sum()) == 40
    assert {k: v.shape[1] for k, v in t.reg.items()} == reg_branches(encoding)
    logits, reg = _perfect_maps(t, 2)
    (dec_boxes, scores, channel), = decode_heatmap(logits, reg, GRID, top_k=100, score_threshold=0.5,
                                                   heading_encoding=encoding)
    assert dec_boxes.shape == (40, 7) and dec_boxes.dtype == torch.float32
    assert torch.all(scores > 0.99)
    # Match each ground-truth box to the decoded box nearest its centre.
    d = torch.cdist(boxes[:, :2], dec_boxes[:, :2])
    j = d.argmin(1)
    assert len(set(j.tolist())) == 40
    got = dec_boxes[j]
    assert torch.equal(channel[j], labels)
    torch.testing.assert_close(got[:, :6], boxes[:, :6], atol=2e-5, rtol=1e-5)
    assert torch.all(_heading_diff(got[:, 6], boxes[:, 6]) < 1e-5)
    assert torch.all(got[:, 6] >= -math.pi) and torch.all(got[:, 6] < math.pi)


def test_axis_dir_targets_are_reversal_blind_except_the_direction_bit():
    """A box and its reversal (heading + pi) share the axis targets exactly; only the direction
    target differs. With sin/cos targets the two readings pull opposite ways."""
    boxes = _random_boxes(30, 7)
    flipped = boxes.clone()
    flipped[:, 6] = wrap_angle(boxes[:, 6] + math.pi)
    labels = torch.zeros(30, dtype=torch.long)
    a = encode_targets(boxes, labels, [0], GRID, heading_encoding="axis_dir")
    b = encode_targets(flipped, labels, [0], GRID, heading_encoding="axis_dir")
    m = a.mask
    torch.testing.assert_close(a.reg["heading"][m], b.reg["heading"][m], atol=2e-6, rtol=0)
    assert torch.all(a.reg["direction"][m] + b.reg["direction"][m] == 1)
    s = encode_targets(boxes, labels, [0], GRID)
    torch.testing.assert_close(s.reg["heading"][m], torch.stack([boxes[:, 6].sin(), boxes[:, 6].cos()], 1))
    # Direction 1 exactly for headings within 90 degrees of 0 (away from the boundaries).
    inner = (boxes[:, 6].abs() - math.pi / 2).abs() > 1e-3
    assert torch.equal(a.reg["direction"][m][inner, 0], (boxes[inner, 6].cos() > 0).float())


def test_axis_dir_decoding_follows_the_direction_logit():
    grid = GRID
    reg = {"offset": torch.zeros(3, 2), "z": torch.zeros(3, 1), "size": torch.zeros(3, 3),
           "heading": torch.tensor([[math.sin(0.6), math.cos(0.6)]] * 3),  # axis 0.3 rad
           "direction": torch.tensor([[2.0], [-2.0], [0.0]])}
    dec = decode_boxes(reg, torch.tensor([0, 1, 2]), grid, "axis_dir")
    torch.testing.assert_close(dec[:, 6], torch.tensor([0.3, 0.3 - math.pi, 0.3 - math.pi]))
    with pytest.raises(ValueError, match="heading_encoding"):
        decode_boxes(reg, torch.tensor([0, 1, 2]), grid, "quaternion")
    with pytest.raises(ValueError, match="heading_encoding"):
        reg_branches("euler")


@pytest.mark.parametrize("encoding", ["sincos", "axis_dir"])
def test_neighbour_slots_decode_to_the_same_box_from_every_cell(encoding):
    """Every neighbour slot's targets, decoded at its own cell, give back the object's box; slots
    off the map are masked; the original slots come first and are the 'centre' ones."""
    h, w = GRID.shape
    boxes = _random_boxes(12, 11)
    # one box in the corner cell, so that some neighbours fall off the map
    boxes[0, 0] = GRID.point_cloud_range[0] + 0.3
    boxes[0, 1] = GRID.point_cloud_range[1] + 0.3
    t = encode_targets(boxes, torch.zeros(12, dtype=torch.long), [0], GRID, max_objs=16,
                       heading_encoding=encoding)
    n = add_neighbour_slots(t, GRID, 1)
    assert n.indices.shape == (16 * 9,) and torch.equal(n.centre[:16], t.mask)
    assert not n.centre[16:].any() and torch.equal(n.indices[:16], t.indices)
    assert int(n.mask.sum()) == 12 * 9 - 5          # the corner box loses 5 of its 9 cells
    reg = {k: v[n.mask] for k, v in n.reg.items()}
    if "direction" in reg:
        reg["direction"] = reg["direction"] * 20 - 10
    dec = decode_boxes(reg, n.indices[n.mask], GRID, encoding)
    torch.testing.assert_close(dec[:, :6], n.boxes[n.mask][:, :6], atol=3e-5, rtol=1e-5)
    assert torch.all(_heading_diff(dec[:, 6], n.boxes[n.mask][:, 6]) < 1e-5)
    cells = set(n.indices[n.mask].tolist())
    assert len(cells) == 12 * 9 - 5                 # boxes are >= 3 cells apart: no shared cell
    ix, iy = n.indices[n.mask] % w, n.indices[n.mask] // w
    assert ix.min() >= 0 and ix.max() < w and iy.min() >= 0 and iy.max() < h
    assert add_neighbour_slots(t, GRID, 0) is t


def test_decode_is_within_a_cell_without_offsets():
    """With the offset branch zeroed the centre is off by less than one output cell: the heatmap
    alone localises to the cell, the offsets carry the rest."""
    boxes = _random_boxes(10, 5)
    t = encode_targets(boxes, torch.zeros(10, dtype=torch.long), [0], GRID)
    logits, reg = _perfect_maps(t, 1)
    reg["offset"].zero_()
    (dec, _, _), = decode_heatmap(logits, reg, GRID, score_threshold=0.5)
    d = torch.cdist(boxes[:, :2], dec[:, :2]).min(1).values
    assert torch.all(d < math.hypot(*GRID.cell)) and torch.any(d > 0.05)


def test_iou_rectification_reorders_scores_and_thresholds_the_heatmap_score():
    """Three isolated peaks with heatmap scores 0.9 / 0.6 / 0.04 and predicted IoUs 0.3 / 0.95 /
    0.9: rectified scores are score^(1-a) * iou^a (the better box overtakes the stronger peak),
    and the 0.04 peak stays out although its rectified score is far above the threshold."""
    h, w = GRID.shape
    probs = torch.tensor([0.9, 0.6, 0.04])
    ious = torch.tensor([0.3, 0.95, 0.9])
    cells = [(10, 10), (30, 40), (60, 70)]                  # (y, x), far apart
    logits = torch.full((1, 1, h, w), -30.0)
    iou_map = torch.full((1, 1, h, w), -1.0)
    for (y, x), p, q in zip(cells, probs, ious):
        logits[0, 0, y, x] = torch.log(p / (1 - p))
        iou_map[0, 0, y, x] = 2 * q - 1                      # the branch predicts 2 * IoU - 1
    reg = {"offset": torch.zeros(1, 2, h, w), "z": torch.zeros(1, 1, h, w),
           "size": torch.zeros(1, 3, h, w), "heading": torch.zeros(1, 2, h, w)}
    reg["heading"][:, 1] = 1.0
    a = 0.68
    (boxes, scores, _), = decode_heatmap(logits, reg, GRID, score_threshold=0.05, iou_map=iou_map,
                                         iou_rectifier=a)
    expected = probs[:2] ** (1 - a) * ious[:2] ** a
    assert boxes.shape == (2, 7)
    torch.testing.assert_close(scores.sort(descending=True).values,
                               expected.sort(descending=True).values)
    assert expected[1] > expected[0]                        # the 0.6 / IoU 0.95 box now leads
    assert probs[2] ** (1 - a) * ious[2] ** a > 0.05        # would have passed a rectified threshold
    (_, plain, _), = decode_heatmap(logits, reg, GRID, score_threshold=0.05, iou_map=iou_map,
                                    iou_rectifier=0.0)
    torch.testing.assert_close(plain.sort(descending=True).values, probs[:2])


def test_range_filter_and_class_selection():
    boxes = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],      # kept
                          [45.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],     # x outside the range
                          [0.0, -32.5, 0.0, 4.0, 2.0, 1.5, 0.0],    # y outside
                          [10.0, 10.0, 5.0, 4.0, 2.0, 1.5, 0.0],    # z above the range
                          [5.0, 5.0, 0.0, 4.0, 2.0, 1.5, 0.0]])     # other class
    labels = torch.tensor([0, 0, 0, 0, 1])
    t = encode_targets(boxes, labels, [0], GRID, range_filter="center_bev")
    assert int(t.mask.sum()) == 2  # z is not checked in BEV mode
    t3 = encode_targets(boxes, labels, [0], GRID, range_filter="center_3d")
    assert int(t3.mask.sum()) == 1 and torch.equal(t3.boxes[0], boxes[0])
    with pytest.raises(ValueError, match="range_filter"):
        encode_targets(boxes, labels, [0], GRID, range_filter="nope")
    with pytest.raises(ValueError, match=r"\(M, 7\)"):
        encode_targets(boxes[:, :6], labels, [0], GRID)


def test_min_points_in_box_drops_empty_boxes():
    boxes = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3], [10.0, 10.0, 0.0, 4.0, 2.0, 1.5, 0.0]])
    pts = torch.tensor([[0.1, 0.1, 0.1, 0, 0], [0.5, -0.2, 0.0, 0, 0], [20.0, 0, 0, 0, 0]])
    t = encode_targets(boxes, torch.zeros(2, dtype=torch.long), [0], GRID, points=pts,
                       min_points_in_box=1)
    assert int(t.mask.sum()) == 1 and torch.equal(t.boxes[0], boxes[0])
    t2 = encode_targets(boxes, torch.zeros(2, dtype=torch.long), [0], GRID, points=pts,
                        min_points_in_box=3)
    assert int(t2.mask.sum()) == 0 and t2.heatmap.sum() == 0


def _messy_boxes(m, g):
    """m random boxes: centres partly off the map and out of the z range, some sizes <= 0,
    large boxes whose Gaussians cross the border, any heading."""
    boxes = torch.empty(m, 7)
    boxes[:, 0] = torch.rand(m, generator=g) * 96 - 48
    boxes[:, 1] = torch.rand(m, generator=g) * 76 - 38
    boxes[:, 2] = torch.rand(m, generator=g) * 8 - 3
    boxes[:, 3:6] = torch.rand(m, 3, generator=g) * 14 - 0.5
    boxes[:, 6] = torch.rand(m, generator=g) * 2 * math.pi - math.pi
    return boxes


@pytest.mark.parametrize("seed", range(6))
def test_encode_targets_equals_the_per_box_loop_reference(seed):
    """The vectorised encoder gives bit-identical targets to the loop it replaced
    (tests/targets_loop_reference.py), over class selection, range filters, the max_objs cap,
    min_points_in_box, both heading encodings and Gaussians clipped at the border."""
    from targets_loop_reference import encode_targets_loop

    g = torch.Generator().manual_seed(seed)
    m = int(torch.randint(0, 120, (1,), generator=g))
    boxes = _messy_boxes(m, g)
    labels = torch.randint(0, 3, (m,), generator=g)
    pts = torch.rand(3000, 5, generator=g) * torch.tensor([80.0, 64.0, 6.0, 1, 1]) \
        - torch.tensor([40.0, 32.0, 2.0, 0, 0])
    used = 0
    for encoding in ("sincos", "axis_dir"):
        for classes, max_objs, rf, min_pts in (([0], 500, "center_bev", 0), ([2, 0], 7, "center_3d", 0),
                                                ([1, 0, 2], 64, "center_bev", 2)):
            args = (boxes, labels, classes, GRID, 0.1, 2, max_objs, rf, pts, min_pts, encoding)
            got, ref = encode_targets(*args), encode_targets_loop(*args)
            assert torch.equal(got.heatmap, ref["heatmap"])
            assert torch.equal(got.indices, ref["indices"]) and torch.equal(got.mask, ref["mask"])
            assert torch.equal(got.boxes, ref["boxes"]) and torch.equal(got.centre, got.mask)
            assert set(got.reg) == set(ref["reg"])
            for name in ref["reg"]:
                assert torch.equal(got.reg[name], ref["reg"][name]), name
            used += int(ref["mask"].sum())
    assert m == 0 or used > 0


def test_draw_gaussians_of_many_boxes_equals_pasting_them_one_by_one():
    """Random centres (on the border too), radii from 0 to beyond the map, 3 channels, some
    boxes invalid; over the whole map (the accelerator path) and per-box patches (the CPU path),
    in one chunk and in chunks smaller than the batch of boxes."""
    from targets_loop_reference import draw_gaussian_loop

    import detector.models.targets as T

    g = torch.Generator().manual_seed(11)
    m, c, h, w = 40, 3, 17, 23
    ch = torch.randint(0, c, (m,), generator=g)
    cx, cy = torch.randint(0, w, (m,), generator=g), torch.randint(0, h, (m,), generator=g)
    r = torch.randint(0, 30, (m,), generator=g)
    valid = torch.rand(m, generator=g) > 0.2
    ref = torch.zeros(c, h, w)
    for i in range(m):
        if valid[i]:
            draw_gaussian_loop(ref[ch[i]], int(cx[i]), int(cy[i]), int(r[i]))
    for window in ("auto", "map", 29, 40):
        assert torch.equal(T.draw_gaussians(torch.zeros(c, h, w), ch, cx, cy, r, valid, window), ref)
    old = T._DRAW_CHUNK_CELLS
    try:
        for window, cells in (("map", 7 * h * w), (29, 7 * 59 * 59)):  # 6 chunks of 7 boxes
            T._DRAW_CHUNK_CELLS = cells
            got = T.draw_gaussians(torch.zeros(c, h, w), ch, cx, cy, r, valid, window)
            assert torch.equal(got, ref), window
    finally:
        T._DRAW_CHUNK_CELLS = old


def test_targets_and_dense_decoding_run_on_the_meta_device():
    """On ``meta`` every value read back to the host raises: encoding (with neighbour slots
    and the points filter) and the fixed-shape decoding need none."""
    from detector.models.targets import decode_heatmap_dense

    boxes = torch.empty(9, 7, device="meta")
    labels = torch.empty(9, dtype=torch.long, device="meta")
    pts = torch.empty(100, 5, device="meta")
    for encoding in ("sincos", "axis_dir"):
        t = encode_targets(boxes, labels, [0, 1], GRID, max_objs=16, points=pts,
                           min_points_in_box=1, heading_encoding=encoding)
        t = add_neighbour_slots(t, GRID, 1)
        for v in (t.heatmap, t.indices, t.mask, t.boxes, t.centre, *t.reg.values()):
            assert v.device.type == "meta"
        assert t.heatmap.shape == (2, 80, 100) and t.indices.shape == (16 * 9,)
        maps = {k: torch.empty(2, n, 80, 100, device="meta") for k, n in reg_branches(encoding).items()}
        out = decode_heatmap_dense(torch.empty(2, 2, 80, 100, device="meta", dtype=torch.bfloat16),
                                   maps, GRID, top_k=50, heading_encoding=encoding,
                                   iou_map=torch.empty(2, 1, 80, 100, device="meta"), iou_rectifier=0.5)
        assert [tuple(o.shape) for o in out] == [(2, 50, 7), (2, 50), (2, 50), (2, 50)]
        assert all(o.device.type == "meta" for o in out) and out[0].dtype == torch.float32


def test_half_precision_maps_decode_like_float32():
    """bfloat16 / float16 head outputs (AMP) decode in float32: the same peaks and the boxes of
    the rounded maps, not boxes rounded to half precision."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 1, 80, 100, generator=g) * 3
    maps = {k: torch.randn(1, n, 80, 100, generator=g) for k, n in reg_branches("sincos").items()}
    for dtype in (torch.bfloat16, torch.float16):
        lo = logits.to(dtype)
        mp = {k: v.to(dtype) for k, v in maps.items()}
        (b_half, s_half, c_half), = decode_heatmap(lo, mp, GRID, top_k=100, score_threshold=0.2)
        (b_ref, s_ref, c_ref), = decode_heatmap(lo.float(), {k: v.float() for k, v in mp.items()},
                                                 GRID, top_k=100, score_threshold=0.2)
        assert b_half.dtype == torch.float32 and len(b_half) > 10
        assert torch.equal(b_half, b_ref) and torch.equal(s_half, s_ref) and torch.equal(c_half, c_ref)
