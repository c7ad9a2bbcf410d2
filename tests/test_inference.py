"""detector.engine.inference (init_detector / inference_detector / strict loading) and
tools/test.py's checkpoint checks, --out and --show-dir, on the tiny config and tiny data."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_train_support import REPO, TINY_CONFIG, clear_scope, load_tool, tiny_data_root

from detector.engine.inference import (DEFAULT_ELONGATION, CheckpointMismatchError,
                                       MissingFeatureWarning, inference_detector, init_detector,
                                       load_weights, model_points)

SMALL_MODEL = REPO / "configs" / "_base_" / "models" / "centerpoint_graddrop_small.py"






@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_data_root(tmp_path_factory)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A randomly initialised tiny model and its checkpoint file."""
    torch.manual_seed(0)
    model = init_detector(TINY_CONFIG)
    ckpt = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, ckpt)
    return model, ckpt


@pytest.fixture(scope="module")
def frame_points(root):
    from detector.datasets.converted import load_index, load_points
    rec = load_index(root, "val")[0]
    return np.array(load_points(root, rec), np.float32)


def test_model_points_columns_default_and_non_finite():
    pts = np.array([[1, 2, 3, 0.5, 0.25, 1, 1, 0], [4, 5, 6, 2.0, 0.5, 1, 1, 0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # 8 columns: no warning
        np.testing.assert_allclose(model_points(pts), [[1, 2, 3, np.tanh(0.5), 0.25],
                                                       [4, 5, 6, np.tanh(2.0), 0.5]], rtol=1e-6)
    with pytest.warns(MissingFeatureWarning, match="frame.bin: no elongation column"):
        four = model_points(pts[:, :4], source="frame.bin")
    assert (four[:, 4] == DEFAULT_ELONGATION).all()
    np.testing.assert_array_equal(four[:, :4], model_points(pts)[:, :4])
    bad = pts.copy()
    bad[0, 1] = np.nan
    with pytest.warns(RuntimeWarning, match="dropped 1 of 2 points"):
        kept = model_points(bad)
    np.testing.assert_array_equal(kept, model_points(pts)[1:])
    with pytest.raises(ValueError, match=r"x.bin: expected an \(N, >= 4\) array"):
        model_points(pts[:, :3], source="x.bin")


def test_strict_loading_names_the_keys(tiny, tmp_path):
    model, ckpt = tiny
    torch.manual_seed(1)
    loaded = init_detector(TINY_CONFIG, ckpt)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), f"{name} not loaded from the checkpoint"
    # DDP-wrapped weights ("module." prefixes) load too
    ddp = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, ddp)
    init_detector(TINY_CONFIG, ddp)
    # a checkpoint of another config: shape mismatches named
    other = tmp_path / "other.pth"
    torch.save({"state_dict": init_detector(SMALL_MODEL).state_dict()}, other)
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches: .*weight \(\d+"):
        init_detector(TINY_CONFIG, other)
    # missing / unexpected keys named
    partial = dict(model.state_dict())
    gone = next(iter(partial))
    partial.pop(gone)
    partial["nonsense.weight"] = torch.zeros(1)
    torch.save({"state_dict": partial}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointMismatchError,
                       match=rf"1 missing keys: {gone}; 1 unexpected keys: nonsense.weight"):
        init_detector(TINY_CONFIG, tmp_path / "partial.pth")
    # non-strict (fine-tuning) loads what fits and reports what was skipped
    said = []
    report = load_weights(init_detector(TINY_CONFIG), tmp_path / "partial.pth", strict=False,
                          log=said.append)
    assert report["missing"] == [gone] and report["unexpected"] == ["nonsense.weight"]
    assert len(said) == 1 and "skipped" in said[0] and gone in said[0]
    # an empty state_dict fails in both modes
    torch.save({"state_dict": {}, "meta": {}}, tmp_path / "empty.pth")
    for strict in (True, False):
        with pytest.raises(CheckpointMismatchError, match="empty.pth.*state_dict is empty"):
            load_weights(init_detector(TINY_CONFIG), tmp_path / "empty.pth", strict=strict)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        init_detector(TINY_CONFIG, tmp_path / "nope.pth")


def test_inference_detector_points_formats_and_empty_frames(tiny, frame_points):
    model, _ = tiny
    det = inference_detector(model, frame_points)
    assert det.boxes.shape[1:] == (7,) and len(det) == len(det.scores) == len(det.labels)
    assert len(det) > 0, "the random tiny model made no detections on a real frame"
    # N x 5 (x, y, z, intensity, elongation) is the same input as the converted N x 8
    five = inference_detector(model, frame_points[:, :5])
    torch.testing.assert_close(five.boxes, det.boxes)
    # N x 4: elongation filled with the default (and warned about)
    four_in = frame_points[:, :5].copy()
    four_in[:, 4] = DEFAULT_ELONGATION
    with pytest.warns(MissingFeatureWarning):
        four = inference_detector(model, frame_points[:, :4])
    torch.testing.assert_close(four.scores, inference_detector(model, four_in).scores)
    # non-finite points are dropped, not fed to the voxelizer
    nan = np.concatenate([frame_points, np.full((5, 8), np.nan, np.float32)])
    with pytest.warns(RuntimeWarning, match="dropped 5"):
        torch.testing.assert_close(inference_detector(model, nan).boxes, det.boxes)
    # no points, or none inside the model's range: zero detections, no crash
    for pts in (np.zeros((0, 4), np.float32), np.array([[500.0, 0, 0, 1, 0]], np.float32)):
        empty = inference_detector(model, pts) if pts.shape[1] == 5 else None
        if empty is None:
            with pytest.warns(MissingFeatureWarning):
                empty = inference_detector(model, pts)
        assert len(empty) == 0 and empty.boxes.shape == (0, 7)


def test_test_cli_rejects_wrong_and_empty_checkpoints(root, tiny, tmp_path, capsys):
    other = tmp_path / "other.pth"
    torch.save({"state_dict": init_detector(SMALL_MODEL).state_dict()}, other)
    empty = tmp_path / "empty.pth"
    torch.save({"state_dict": {}, "meta": {}}, empty)
    for ckpt, says in ((other, "shape mismatches"), (empty, "state_dict is empty")):
        rc = load_tool("test").main([str(TINY_CONFIG), str(ckpt), "--work-dir", str(tmp_path / "w"),
                                 "--data-root", str(root)])
        clear_scope()
        err = capsys.readouterr().err
        assert rc == 2, f"{ckpt.name} evaluated to a number"
        assert says in err and ckpt.name in err
        assert not (tmp_path / "w" / "metrics.json").exists()


def test_test_cli_out_and_show_dir(root, tiny, tmp_path, capsys):
    from detector.datasets.converted import load_index
    from detector.evaluation.detections_io import read_detections
    _, ckpt = tiny
    out, show = tmp_path / "raw.npz", tmp_path / "show"
    rc = load_tool("test").main([str(TINY_CONFIG), str(ckpt), "--work-dir", str(tmp_path / "w"),
                             "--data-root", str(root), "--out", str(out), "--show-dir", str(show),
                             "--score-thr", "0"])
    clear_scope()
    assert rc == 0
    val = load_index(root, "val")
    frames, classes = read_detections(out)
    assert classes == ["VEHICLE"] and len(frames) == len(val)
    assert {f["timestamp_micros"] for f in frames} == {r.timestamp_micros for r in val}
    assert sum(len(f["scores"]) for f in frames) > 0
    assert all((f["types"] == 1).all() and (f["labels"] == 0).all() for f in frames)
    pictures = sorted(show.glob("*.png"))
    assert len(pictures) == 3 * len(val) and all(p.stat().st_size > 1000 for p in pictures)
    assert f"wrote {len(pictures)} pictures" in capsys.readouterr().out
