"""The Waymo metric against the official op (py_metrics_ops.detection_metrics) in the oracle
venv: random datasets full of corner cases, pinned corner-case behaviour, and the official test
files. "Matches" means every breakdown's AP and APH within 1e-6 (docs/WAYMO.md)."""
from __future__ import annotations

import numpy as np
import pytest

from detector.evaluation.waymo import compute_detection_metrics, prepare_ground_truth, read_objects
from detector.testing.metric_data import prepared, random_dataset

pytestmark = pytest.mark.oracle
TOL = 1e-6


def _empty():
    return dict(pred_boxes=np.zeros((0, 7), np.float32), pred_types=np.zeros(0, np.uint8),
                pred_scores=np.zeros(0, np.float32), pred_frame_ids=np.zeros(0, np.int64),
                pred_overlap_nlz=np.zeros(0, bool), gt_boxes=np.zeros((0, 7), np.float32),
                gt_types=np.zeros(0, np.uint8), gt_frame_ids=np.zeros(0, np.int64),
                gt_difficulty=np.zeros(0, np.uint8))


def _range_edge_case(rng):
    """Boxes whose centre distance is below 30 m (or 50 m) in float64 but not in float32 (or the
    reverse): pins that the band uses the float64 distance of the float32 centre."""
    pts = []
    while len(pts) < 30:
        c = rng.normal(0, 1, 3)
        c = (c / np.linalg.norm(c) * rng.choice([30.0, 50.0])).astype(np.float32)
        c = (c + rng.integers(-3, 4, 3) * np.spacing(np.float32(30))).astype(np.float32)
        d64 = np.sqrt((c.astype(np.float64) ** 2).sum())
        d32 = np.sqrt(np.float32((c * c).sum(dtype=np.float32)))
        edge = 30.0 if abs(d64 - 30) < 1 else 50.0
        if (d64 < edge) != (d32 < edge):
            pts.append(c)
    gb = np.concatenate([np.array(pts), np.tile([4, 2, 1.5, 0.3], (len(pts), 1))], 1).astype(np.float32)
    n = len(gb)
    return dict(pred_boxes=gb.copy(), pred_types=np.ones(n, np.uint8),
                pred_scores=np.linspace(0.1, 0.9, n).astype(np.float32),
                pred_frame_ids=np.arange(n, dtype=np.int64), pred_overlap_nlz=np.zeros(n, bool),
                gt_boxes=gb, gt_types=np.ones(n, np.uint8), gt_frame_ids=np.arange(n, dtype=np.int64),
                gt_difficulty=np.ones(n, np.uint8))


def _datasets(shared_waymo):
    rng = np.random.default_rng(2024)
    cases = {}
    for i in range(10):
        cases[f"random{i}"] = prepared(random_dataset(rng, n_frames=int(rng.integers(1, 25)),
                                                      gt_per_frame=float(rng.uniform(5, 30))))
    d = prepared(random_dataset(rng, 6))
    cases["empty"] = _empty()
    cases["predictions_only"] = {**d, **{k: v[:0] for k, v in d.items() if k.startswith("gt_")}}
    cases["ground_truth_only"] = {**d, **{k: v[:0] for k, v in d.items() if k.startswith("pred_")}}
    # Difficulty 0 passed straight to the op (no preparation): counts at both levels.
    raw = random_dataset(rng, 8)
    cases["unprepared_difficulty"] = {k: v for k, v in raw.items() if k != "gt_num_points"}
    # Negative, tiny and huge sizes: such boxes never match but still count as FP / FN.
    d = prepared(random_dataset(rng, 8))
    gb, pb = d["gt_boxes"].copy(), d["pred_boxes"].copy()
    i = rng.random(len(gb)) < 0.2
    gb[i, 3 + rng.integers(0, 3, i.sum())] *= -1
    j = rng.random(len(pb)) < 0.2
    pb[j, 3 + rng.integers(0, 3, j.sum())] = rng.choice([0.005, 0.01, -1.0, 2e6], j.sum())
    cases["degenerate_sizes"] = {**d, "gt_boxes": gb, "pred_boxes": pb}
    cases["range_edges"] = _range_edge_case(rng)
    pred = read_objects(shared_waymo / "fake_predictions.bin")
    gt = read_objects(shared_waymo / "fake_ground_truths.bin")
    g = prepare_ground_truth(gt.boxes, gt.types, gt.frame_ids, gt.difficulty, gt.num_points)
    cases["official_test_files"] = dict(
        pred_boxes=pred.boxes, pred_types=pred.types, pred_scores=pred.scores,
        pred_frame_ids=pred.frame_ids, pred_overlap_nlz=pred.overlap_nlz, gt_boxes=g["boxes"],
        gt_types=g["types"], gt_frame_ids=g["frame_ids"], gt_difficulty=g["difficulty"])
    return cases


@pytest.fixture(scope="module")
def official(shared_waymo):
    from oracle import run_oracle
    cases = _datasets(shared_waymo)
    inp = {"n_datasets": len(cases)}
    for i, d in enumerate(cases.values()):
        inp.update({f"{i}/{k}": v for k, v in d.items()})
    out = run_oracle("oracle_scripts/metrics.py", inp)
    return {name: (cases[name], {k.split("/", 1)[1]: v for k, v in out.items() if k.startswith(f"{i}/")})
            for i, name in enumerate(cases)}


CASES = [f"random{i}" for i in range(10)] + [
    "empty", "predictions_only", "ground_truth_only", "unprepared_difficulty", "degenerate_sizes",
    "range_edges", "official_test_files"]


@pytest.mark.parametrize("case", CASES)
def test_matches_official_op(official, case):
    data, off = official[case]
    ours = compute_detection_metrics(**data)
    names = [str(n) for n in off["names"]]
    assert list(ours) == names
    ap = np.array([ours[n]["AP"] for n in names])
    aph = np.array([ours[n]["APH"] for n in names])
    np.testing.assert_allclose(ap, off["ap"], rtol=0, atol=TOL, err_msg=f"{case}: AP")
    np.testing.assert_allclose(aph, off["aph"], rtol=0, atol=TOL, err_msg=f"{case}: APH")
    # The per-cutoff curves agree too (the op's pr rows are (precision, recall, ...)).
    prec = np.array([ours[n]["precision"] for n in names])
    rec = np.array([ours[n]["recall"] for n in names])
    np.testing.assert_allclose(prec, off["pr"][:, :, 0], rtol=0, atol=TOL)
    np.testing.assert_allclose(rec, off["pr"][:, :, 1], rtol=0, atol=TOL)
    if case.startswith("random") or case == "official_test_files":
        assert (off["ap"] > 0).sum() >= 8, "the case must exercise the metric"
