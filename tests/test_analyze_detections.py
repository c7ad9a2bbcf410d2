"""tools/analyze_detections.py on real converted synthetic data: perfect, rotated, shifted and
reversed predictions give the AP and box errors they must."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from test_train_support import tiny_data_root

from detector.datasets.converted import load_index
from detector.evaluation.waymo import write_objects

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("analyze_detections",
                                                  REPO / "tools" / "analyze_detections.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_data_root(tmp_path_factory)


def _gt(root):
    recs = load_index(root, "val")
    out = []
    for r in recs:
        # Boxes without points are not scored (the metric drops them), so a prediction of one
        # would be a false positive: predict only the scored ones.
        keep = (r.types == 1) & (r.num_points_in_box > 0)
        for b in r.boxes[keep]:
            out.append((r.context_name, r.timestamp_micros, b.astype(np.float64)))
    assert len(out) >= 3, "the tiny val frame must hold a few vehicles"
    return out


def _write(path, gt, edit):
    boxes = np.stack([edit(b.copy()) for _, _, b in gt])
    write_objects(path, [c for c, _, _ in gt], [t for _, t, _ in gt], boxes,
                  np.ones(len(gt), np.int64), np.full(len(gt), 0.9))


def _run(capsys, *argv):
    assert _tool().main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


def _ap(out, iou):
    return float(re.search(rf"IoU {iou:.2f}: VEHICLE LEVEL_1 AP ([0-9.]+)", out).group(1))


def _errors(out):
    m = re.search(r"centre \(BEV\) ([0-9.]+) m, z ([0-9.]+) m, length ([0-9.]+) m, width ([0-9.]+) m, "
                  r"height ([0-9.]+) m, heading ([0-9.]+) deg", out)
    return [float(x) for x in m.groups()]


def test_perfect_predictions(root, tmp_path, capsys):
    gt = _gt(root)
    _write(tmp_path / "p.bin", gt, lambda b: b)
    out = _run(capsys, tmp_path / "p.bin", root, "--split", "val")
    assert f"{len(gt)} ground-truth VEHICLE boxes, {len(gt)} detections" in out
    for iou in (0.3, 0.5, 0.6, 0.7):
        assert _ap(out, iou) == 1.0
    assert _errors(out) == [0.0] * 6
    assert "above 0.7: 100.0%" in out


def test_rotation_shift_and_reversal_are_measured(root, tmp_path, capsys):
    gt = _gt(root)

    def rotate(b):
        b[6] = (b[6] + np.radians(10.0) + np.pi) % (2 * np.pi) - np.pi
        return b
    _write(tmp_path / "r.bin", gt, rotate)
    out = _run(capsys, tmp_path / "r.bin", root, "--split", "val", "--ious", "0.3", "0.95")
    err = _errors(out)
    assert err[0] == 0.0 and err[5] == pytest.approx(10.0, abs=1e-3)
    assert _ap(out, 0.3) == 1.0 and _ap(out, 0.95) < 1.0   # a 10-degree turn costs IoU

    def shift(b):
        b[0] += 0.5
        b[3] += 0.2
        return b
    _write(tmp_path / "s.bin", gt, shift)
    err = _errors(_run(capsys, tmp_path / "s.bin", root, "--split", "val"))
    assert err[0] == pytest.approx(0.5, abs=1e-4) and err[2] == pytest.approx(0.2, abs=1e-4)
    assert err[5] == pytest.approx(0.0, abs=1e-3)

    def reverse(b):  # IoU cannot see a reversed box: no heading error modulo pi, AP unchanged
        b[6] = b[6] + np.pi if b[6] < 0 else b[6] - np.pi
        return b
    _write(tmp_path / "v.bin", gt, reverse)
    out = _run(capsys, tmp_path / "v.bin", root, "--split", "val")
    assert _ap(out, 0.7) == 1.0 and _errors(out)[5] == pytest.approx(0.0, abs=1e-3)
    # ... but the reversed share does, and APH halves it
    assert f"{len(gt)} of {len(gt)} matched boxes (100.0%)" in out
    assert re.search(r"IoU 0.70: VEHICLE LEVEL_1 AP 1.000  APH 0.000", out)
    perfect = _run(capsys, tmp_path / "s.bin", root, "--split", "val")
    assert f"reversed (heading off by more than 90 deg, front taken for the back): 0 of {len(gt)}" \
        in perfect


def test_far_detections_are_not_matched(root, tmp_path, capsys):
    gt = _gt(root)

    def far(b):
        b[0] += 50.0
        return b
    _write(tmp_path / "f.bin", gt, far)
    out = _run(capsys, tmp_path / "f.bin", root, "--split", "val")
    assert _ap(out, 0.3) == 0.0
    assert "no ground-truth box has a detection within" in out
