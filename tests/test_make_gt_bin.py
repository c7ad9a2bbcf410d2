"""tools/make_gt_bin.py: the official ground-truth Objects file of a converted split. Ground truth
as predictions scores AP 1.0 in tools/waymo_eval.py, and noisy predictions score there exactly
what the in-process metric (the test loop's WaymoMetric path) gives them."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from test_train_support import REPO, tiny_data_root

RANGE = [-25.6, -25.6, -2.0, 25.6, 25.6, 4.0]


def _tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.fixture(scope="module")
def gt(tmp_path_factory):
    from detector.datasets.converted import load_index
    root = tiny_data_root(tmp_path_factory)
    out = tmp_path_factory.mktemp("gt") / "val_gt.bin"
    assert _tool("make_gt_bin")([str(root), "--split", "val", "--out", str(out),
                                 "--range", *map(str, RANGE)]) == 0
    return root, out, load_index(root, "val")


def _in_range(rec):
    b = np.asarray(rec.boxes).reshape(-1, 7)
    return (b[:, 0] >= RANGE[0]) & (b[:, 0] < RANGE[3]) & (b[:, 1] >= RANGE[1]) & (b[:, 1] < RANGE[4])


def test_gt_file_holds_every_label_with_difficulty_and_points(gt, capsys):
    from detector.evaluation.waymo import read_objects
    root, out, records = gt
    objs = read_objects(out)
    sel = [_in_range(r) for r in records]
    assert len(objs) == sum(int(s.sum()) for s in sel) > 0
    assert sum(int((~s).sum()) for s in sel) > 0, "the range kept every label: not tested"
    rec = records[0]
    mine = objs.timestamps_micros == rec.timestamp_micros
    np.testing.assert_allclose(objs.boxes[mine], np.asarray(rec.boxes)[sel[0]], atol=1e-5)
    np.testing.assert_array_equal(objs.types[mine], np.asarray(rec.types)[sel[0]])
    np.testing.assert_array_equal(objs.num_points[mine], np.asarray(rec.num_points_in_box)[sel[0]])
    np.testing.assert_array_equal(objs.difficulty[mine], np.asarray(rec.difficulty)[sel[0]])
    assert set(objs.context_names.tolist()) == {r.context_name for r in records}
    # without --range every label is written
    full = out.with_name("full.bin")
    assert _tool("make_gt_bin")([str(root), "--out", str(full)]) == 0
    assert len(read_objects(full)) == sum(r.num_boxes for r in records)
    assert "ground-truth objects of 1 frames" in capsys.readouterr().out
    assert _tool("make_gt_bin")([str(root), "--split", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_waymo_eval_scores_gt_as_prediction_one_and_matches_the_metric(gt, tmp_path):
    from detector.evaluation.metric import evaluate_frames
    from detector.evaluation.waymo import read_objects, write_objects
    root, out, records = gt
    g = read_objects(out)
    perfect = tmp_path / "perfect.bin"
    # Boxes without points are not scored (the metric drops them): predicting one would be a
    # false positive, so the perfect prediction is the scored ground truth.
    s = g.num_points > 0
    assert (~s).any() and s.any()
    write_objects(perfect, g.context_names[s].tolist(), g.timestamps_micros[s], g.boxes[s],
                  g.types[s], np.ones(int(s.sum())))
    js = tmp_path / "perfect.json"
    assert _tool("waymo_eval")([str(perfect), str(out), "--json", str(js)]) == 0
    scored = {k: v for k, v in json.loads(js.read_text()).items() if v["num_gt"] > 0}
    assert scored and all(v["AP"] == pytest.approx(1.0, abs=1e-6) == v["APH"]  # float32 sums
                          for v in scored.values())

    # noisy detections (shifted, dropped, false positives, random scores): both paths agree
    rng = np.random.default_rng(0)
    frames, boxes_all, scores_all, ctx, ts = [], [], [], [], []
    for rec in records:
        sel = _in_range(rec)
        b = np.asarray(rec.boxes, np.float32)[sel]
        b = b[rng.random(len(b)) > 0.2].copy()
        b[:, :2] += rng.normal(0, 0.4, (len(b), 2))
        fp = b[:3].copy()
        fp[:, :2] += 6.0
        b = np.concatenate([b, fp])
        s = rng.random(len(b)).astype(np.float32)
        frames.append(dict(frame_id=rec.frame_id, pred_boxes=b, pred_scores=s,
                           pred_types=np.ones(len(b), np.int64),
                           gt_boxes=np.asarray(rec.boxes)[sel], gt_types=np.asarray(rec.types)[sel],
                           gt_difficulty=np.asarray(rec.difficulty)[sel],
                           gt_num_points=np.asarray(rec.num_points_in_box)[sel]))
        boxes_all.append(b), scores_all.append(s)
        ctx += [rec.context_name] * len(b)
        ts += [rec.timestamp_micros] * len(b)
    noisy = tmp_path / "noisy.bin"
    write_objects(noisy, ctx, np.array(ts), np.concatenate(boxes_all), np.ones(len(ctx)),
                  np.concatenate(scores_all))
    assert _tool("waymo_eval")([str(noisy), str(out), "--json", str(js)]) == 0
    official = json.loads(js.read_text())
    ours = evaluate_frames(frames)
    assert 0.0 < official["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]["AP"] < 1.0
    for k, v in ours.items():
        assert official[k]["num_gt"] == v["num_gt"], k
        assert official[k]["AP"] == pytest.approx(v["AP"], abs=1e-6), k
        assert official[k]["APH"] == pytest.approx(v["APH"], abs=1e-6), k
