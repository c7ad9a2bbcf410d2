"""Waymo detection metric (detector/evaluation/waymo): AP integration on hand-computed PR
curves, the assignment, heading accuracy, ground-truth preparation, bad input, the Objects file
format and CLI, and the fast metric against a naive per-cutoff reference on random data."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from detector.evaluation.waymo import (average_precision, breakdown_names, compute_detection_metrics,
                                       format_metrics_table, frame_id_from, prepare_ground_truth,
                                       read_objects, write_objects)
from detector.evaluation.waymo.metrics import (DEFAULT_SCORE_CUTOFFS, _assign_max,
                                               _average_precision_py, _heading_accuracy)
from detector.testing.metric_data import prepared, random_dataset
from ops.iou3d import boxes_iou3d

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- AP integration (hand-computed)

def test_ap_hand_computed_curves():
    # The official integration runs in float32 (its 1.0 comes out as 1.0000001): 1e-6 slack.
    # A single point (R 1, P 1): the unit square.
    assert average_precision([1.0], [1.0]) == pytest.approx(1.0, abs=1e-6)
    # Recall 0.5 at precision 1: no extrapolation past the largest recall.
    assert average_precision([1.0, 1.0], [0.5, 0.0]) == pytest.approx(0.5, abs=1e-6)
    # Recall-0 points never raise the envelope: (1, 0.5) alone gives 0.5, not more.
    assert average_precision([0.5, 1.0], [1.0, 0.0]) == pytest.approx(0.5, abs=1e-6)
    # Envelope: recall .25 -> .6667 (from the point at .5), .5 -> .6667, .75 -> .6; the .5 -> .75
    # gap is sampled at .70 (envelope .6), so only .5 -> .55 is a trapezoid.
    p, r = [0.6, 2 / 3, 0.5], [0.75, 0.5, 0.25]
    want = 0.25 * 2 / 3 + 0.25 * 2 / 3 + 0.05 * (2 / 3 + 0.6) / 2 + 0.2 * 0.6
    assert average_precision(p, r) == pytest.approx(want, abs=1e-6)
    # Gap of exactly two deltas (0.1 -> 0.2): one sample at 0.15 (the +1e-6 slack keeps the
    # float32 0.2 - 0.15 from counting as a second gap).
    p, r = [1 / 3, 0.069], [0.1, 0.2]
    want = 0.1 * (1 / 3) + 0.05 * 0.069 + 0.05 * (1 / 3 + 0.069) / 2
    assert average_precision(p, r) == pytest.approx(want, abs=1e-6)
    # Steps of 1/20 are not sampled (gap == delta within the slack).
    p, r = [1.0, 2 / 9, 0.2, 0.2, 0.2], [0.05, 0.1, 0.15, 0.2, 0.25]
    want = 0.05 + 0.05 * (1 + 2 / 9) / 2 + 0.05 * (2 / 9 + 0.2) / 2 + 0.1 * 0.2
    assert average_precision(p, r) == pytest.approx(want, abs=1e-6)
    assert average_precision([], []) == 0.0
    assert average_precision([1.0, 1.0], [0.0, 0.0]) == 0.0


def test_ap_kernel_matches_python_reference():
    rng = np.random.default_rng(3)
    for _ in range(500):
        n = int(rng.integers(1, 40))
        # Recalls as small fractions: many exact ties and gaps near multiples of 0.05.
        r = np.minimum(np.round(rng.random(n) * rng.integers(1, 40)) / rng.integers(1, 40), 1.0)
        r[rng.random(n) < 0.2] = 0.0
        p = np.where(r == 0, 1.0, rng.random(n))
        assert average_precision(p, r) == _average_precision_py(p, r)


# ---------------------------------------------------------------- assignment and heading accuracy

def test_assignment_is_maximum_weight_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, m = rng.integers(1, 7, 2)
        w = rng.integers(0, 4, (n, m)).astype(np.float64) * 1e5   # many ties and zeros
        col = _assign_max(w)
        rows = np.flatnonzero(col >= 0)
        assert len(set(col[rows])) == len(rows) == min(n, m)
        r, c = linear_sum_assignment(w, maximize=True)
        assert w[rows, col[rows]].sum() == w[r, c].sum()
    # Two identical predictions for one ground truth: exactly one is matched (the first).
    np.testing.assert_array_equal(_assign_max(np.array([[5.0], [5.0]])), [0, -1])


def test_heading_accuracy():
    assert _heading_accuracy(0.1, 0.1) == 1.0
    assert _heading_accuracy(math.pi - 1e-9, -math.pi + 1e-9) == pytest.approx(1.0, abs=1e-8)
    assert _heading_accuracy(0.0, math.pi) == pytest.approx(0.0, abs=1e-12)
    assert _heading_accuracy(0.0, math.pi / 2) == pytest.approx(0.5)
    assert _heading_accuracy(3 * math.pi, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert _heading_accuracy(-0.25 * math.pi, 7 * math.pi / 4) == pytest.approx(1.0)


# ---------------------------------------------------------------- ground truth and bad input

def test_prepare_ground_truth_rules():
    boxes = np.zeros((5, 7), np.float32)
    g = prepare_ground_truth(boxes, [1, 2, 3, 4, 1], [7] * 5, [0, 0, 2, 1, 0], [0, 5, 100, 1, 6])
    np.testing.assert_array_equal(g["index"], [1, 2, 3, 4])
    np.testing.assert_array_equal(g["difficulty"], [2, 2, 1, 1])
    np.testing.assert_array_equal(g["types"], [2, 3, 4, 1])
    assert g["frame_ids"].dtype == np.int64 and g["boxes"].shape == (4, 7)


def one_frame(n_pred=3, n_gt=2):
    return dict(pred_boxes=np.tile([[10, 0, 0, 4, 2, 1.5, 0]], (n_pred, 1)).astype(np.float32),
                pred_types=np.ones(n_pred, np.uint8), pred_scores=np.full(n_pred, 0.5, np.float32),
                pred_frame_ids=np.zeros(n_pred, np.int64),
                gt_boxes=np.tile([[10, 0, 0, 4, 2, 1.5, 0]], (n_gt, 1)).astype(np.float32),
                gt_types=np.ones(n_gt, np.uint8), gt_frame_ids=np.zeros(n_gt, np.int64),
                gt_difficulty=np.ones(n_gt, np.uint8))


@pytest.mark.parametrize("field,value,message", [
    ("pred_types", np.ones(2, np.uint8), "pred_types: has 2 rows but the boxes have 3"),
    ("gt_frame_ids", np.zeros(3, np.int64), "gt_frame_ids: has 3 rows but the boxes have 2"),
    ("pred_boxes", np.zeros((3, 6), np.float32), r"pred_boxes: expected shape \(N, 7\)"),
    ("pred_types", np.array([1, 5, 1]), "pred_types: row 1 is 5, expected a label type 0..4"),
    ("gt_types", np.array([1, -1]), "gt_types: row 1 is -1"),
    ("gt_difficulty", np.array([1, 3]), "gt_difficulty: row 1 is 3"),
    ("pred_scores", np.array([0.5, np.nan, 0.5], np.float32), "pred_scores: non-finite value at row 1"),
    ("pred_frame_ids", np.array([0, 1.5, 2]), "pred_frame_ids: row 1 is 1.5, expected an integer"),
])
def test_bad_input_names_field_and_row(field, value, message):
    d = one_frame()
    d[field] = value
    with pytest.raises(ValueError, match=message):
        compute_detection_metrics(**d)


def test_bad_boxes_and_config():
    d = one_frame()
    d["gt_boxes"] = d["gt_boxes"].copy()
    d["gt_boxes"][1, 6] = np.inf
    with pytest.raises(ValueError, match="gt_boxes: non-finite value at row 1"):
        compute_detection_metrics(**d)
    with pytest.raises(ValueError, match="score_cutoffs"):
        compute_detection_metrics(**one_frame(), score_cutoffs=[0.5, 0.2])
    with pytest.raises(ValueError, match="iou_thresholds"):
        compute_detection_metrics(**one_frame(), iou_thresholds=[0.5, 0.5])
    with pytest.raises(ValueError, match="breakdowns: unknown breakdown 'VELOCITY'"):
        compute_detection_metrics(**one_frame(), breakdowns=("VELOCITY",))


def test_small_cases_by_hand():
    # Three identical predictions for two identical ground truths: 2 TP, 1 FP.
    r = compute_detection_metrics(**one_frame())
    v = r["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]
    assert v["num_gt"] == 2 and v["num_pred"] == 3
    assert v["precision"][0] == pytest.approx(2 / 3) and v["recall"][0] == 1.0
    assert v["AP"] == pytest.approx(2 / 3, abs=1e-6)
    assert r["RANGE_TYPE_VEHICLE_[0, 30)_LEVEL_1"]["AP"] == pytest.approx(2 / 3, abs=1e-6)
    assert r["RANGE_TYPE_VEHICLE_[30, 50)_LEVEL_1"]["num_gt"] == 0
    # The third prediction in a no-label zone is ignored instead: AP 1.
    r = compute_detection_metrics(**one_frame(), pred_overlap_nlz=[False, False, True])
    assert r["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]["AP"] == pytest.approx(1.0, abs=1e-6)
    # Predictions in a frame without ground truth are false positives.
    d = one_frame(2, 2)
    d["pred_frame_ids"] = np.array([0, 99])
    assert compute_detection_metrics(**d)["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]["precision"][0] == 0.5
    # Empty input: every breakdown present with AP 0.
    e = {k: v[:0] for k, v in one_frame().items()}
    r = compute_detection_metrics(**e)
    assert list(r) == breakdown_names() and all(m["AP"] == 0.0 for m in r.values())
    # UNKNOWN type is in no breakdown.
    d = one_frame()
    d["gt_types"] = np.zeros(2, np.uint8)
    assert all(m["num_gt"] == 0 for m in compute_detection_metrics(**d).values())


# ---------------------------------------------------------------- naive reference on random data

def reference_metrics(d, cutoffs=DEFAULT_SCORE_CUTOFFS, thresholds=(0.0, 0.7, 0.5, 0.5, 0.5)):
    """Obviously-correct and slow: for every breakdown shard, frame and cutoff, build the full
    weight matrix and solve it with scipy; count TP / FP / FN as in docs/WAYMO.md."""
    pb, gb = d["pred_boxes"], d["gt_boxes"]
    pn = d.get("pred_overlap_nlz", np.zeros(len(pb), bool))
    band = lambda b: np.searchsorted([30.0, 50.0], np.sqrt((b[:, :3].astype(np.float64) ** 2).sum(1)), "right")  # noqa: E731
    pband, gband = band(pb), band(gb)
    frames = np.union1d(d["pred_frame_ids"], d["gt_frame_ids"])
    thr = np.float32(thresholds).astype(np.float64)
    out = {}
    for name in breakdown_names():
        kind = "OBJECT_TYPE" if name.startswith("OBJECT_TYPE") else "RANGE"
        t = next(i for i, n in enumerate(("", "VEHICLE", "PEDESTRIAN", "SIGN", "CYCLIST")) if n and f"TYPE_{n}_" in name)
        level = int(name[-1])
        bi = next((i for i, s in enumerate(("[0, 30)", "[30, 50)", "[50, +inf)")) if s in name), None)
        psel = d["pred_types"] == t
        gsel = d["gt_types"] == t
        if kind == "RANGE":
            psel &= pband == bi
            gsel &= gband == bi
        tp = np.zeros(len(cutoffs)); fp = np.zeros(len(cutoffs)); fn = np.zeros(len(cutoffs)); ha = np.zeros(len(cutoffs))
        for f in frames:
            pi = np.flatnonzero(psel & (d["pred_frame_ids"] == f))
            gi = np.flatnonzero(gsel & (d["gt_frame_ids"] == f))
            iou = boxes_iou3d(pb[pi], gb[gi])
            w = np.where(iou >= thr[t], np.round(iou * 1e6), 0.0)
            for k, c in enumerate(cutoffs):
                act = d["pred_scores"][pi] >= c
                wa = w[act]
                matched_p, matched_g = [], []
                if wa.size:
                    r, cc = linear_sum_assignment(wa, maximize=True)
                    ok = wa[r, cc] > 0
                    matched_p, matched_g = pi[act][r[ok]], gi[cc[ok]]
                tp[k] += len(matched_p)
                for p_, g_ in zip(matched_p, matched_g):
                    ha[k] += _heading_accuracy(float(pb[p_, 6]), float(gb[g_, 6]))
                un_p = np.setdiff1d(pi[act], matched_p)
                fp[k] += (~pn[un_p]).sum()
                un_g = np.setdiff1d(gi, matched_g)
                fn[k] += (d["gt_difficulty"][un_g] <= level).sum()
        prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0)
        prec_ha = np.where(tp + fp > 0, ha / np.maximum(tp + fp, 1), 0)
        rec = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0)
        prec = np.where(rec == 0, 1.0, prec)
        prec_ha = np.where(rec == 0, 1.0, prec_ha)
        out[name] = (prec, prec_ha, rec)
    return out


def test_fast_metric_matches_naive_reference():
    rng = np.random.default_rng(11)
    for n_frames in (1, 4):
        d = prepared(random_dataset(rng, n_frames=n_frames, gt_per_frame=10, fp_per_frame=5))
        fast = compute_detection_metrics(**d)
        ref = reference_metrics(d)
        assert sum(m["num_gt"] for m in fast.values()) > 10
        for name, (p, ph, r) in ref.items():
            np.testing.assert_allclose(fast[name]["precision"], p, atol=1e-12, err_msg=name)
            np.testing.assert_allclose(fast[name]["precision_ha"], ph, atol=1e-9, err_msg=name)
            np.testing.assert_allclose(fast[name]["recall"], r, atol=1e-12, err_msg=name)
            assert fast[name]["AP"] == average_precision(p, r)


def test_frame_ids_are_opaque():
    rng = np.random.default_rng(12)
    d = prepared(random_dataset(rng, n_frames=5, gt_per_frame=10))
    a = compute_detection_metrics(**d)
    remap = {f: -(i * 1_000_003) ** 2 % (2 ** 62) - 2 ** 61 for i, f in enumerate(np.unique(np.r_[d["pred_frame_ids"], d["gt_frame_ids"]]))}
    d2 = dict(d, pred_frame_ids=np.array([remap[f] for f in d["pred_frame_ids"]], np.int64),
              gt_frame_ids=np.array([remap[f] for f in d["gt_frame_ids"]], np.int64))
    b = compute_detection_metrics(**d2)
    assert all(a[k]["AP"] == b[k]["AP"] and a[k]["APH"] == b[k]["APH"] for k in a)


# ---------------------------------------------------------------- files, table, CLI

def test_objects_roundtrip_and_errors(tmp_path, shared_waymo):
    boxes = np.array([[1, 2, 3, 4.5, 2, 1.5, 0.3], [10, -2, 0, 1, 1, 2, -3]], np.float32)
    path = tmp_path / "pred.bin"
    write_objects(path, ["ctx_a", "ctx_b"], [5, 6], boxes, [1, 2], [0.9, 0.25])
    o = read_objects(path)
    np.testing.assert_allclose(o.boxes, boxes)
    np.testing.assert_array_equal(o.types, [1, 2])
    np.testing.assert_allclose(o.scores, [0.9, 0.25])
    assert list(o.context_names) == ["ctx_a", "ctx_b"] and list(o.timestamps_micros) == [5, 6]
    assert o.frame_ids[0] == frame_id_from("ctx_a", 5) != frame_id_from("ctx_a", 6)
    assert frame_id_from("ctx_a", 5) == frame_id_from("ctx_a", 5)
    assert not list(tmp_path.glob("*.tmp"))
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff\xff\xff\xff garbage")
    with pytest.raises(ValueError, match="bad.bin: not a serialized metrics_pb2.Objects"):
        read_objects(bad)
    with pytest.raises(ValueError, match="types: has 1 rows but boxes have 2"):
        write_objects(path, "c", 1, boxes, [1], [0.5, 0.5])
    gt = read_objects(shared_waymo / "fake_ground_truths.bin")
    assert len(gt) == 1010 and gt.num_points.min() == 0 and set(gt.types.tolist()) == {1, 2, 3}


def test_cli_and_table(shared_waymo, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "waymo_eval.py"),
                           str(shared_waymo / "fake_predictions.bin"),
                           str(shared_waymo / "fake_ground_truths.bin"), "--json", str(tmp_path / "m.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1" in proc.stdout and "RANGE_TYPE_SIGN_[50, +inf)_LEVEL_2" in proc.stdout
    assert (tmp_path / "m.json").is_file()
    table = format_metrics_table(compute_detection_metrics(**one_frame()))
    line = next(x for x in table.splitlines() if x.startswith("OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"))
    assert line.split()[1:] == ["0.6667", "0.6667", "2"]
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "waymo_eval.py"), str(tmp_path / "nope.bin"),
                           str(shared_waymo / "fake_ground_truths.bin")], capture_output=True, text=True)
    assert proc.returncode == 2 and "nope.bin" in proc.stderr
