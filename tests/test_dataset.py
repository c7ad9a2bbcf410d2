"""WaymoDetDataset over converted synthetic data: formatting, determinism, filters, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train_support import tiny_data_root

from detector.datasets.collate import collate_det3d
from detector.datasets.converted import load_index, load_points
from detector.datasets.dataset import WaymoDetDataset
from detector.structures import Det3DSample

AUG = [dict(type="RandomFlip3D", flip_x_axis=True, flip_y_axis=True),
       dict(type="GlobalRotScaleTrans"), dict(type="PointShuffle")]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_data_root(tmp_path_factory)


def test_items_follow_the_model_contract(root):
    ds = WaymoDetDataset(root, "train", class_names=["VEHICLE"], min_box_points=1)
    assert len(ds) == 2 and ds.metainfo["classes"] == ("VEHICLE",)
    item = ds[0]
    pts, s = item["points"], item["data_sample"]
    rec = load_index(root, "train")[0]
    raw = np.asarray(load_points(rec))
    assert pts.dtype == torch.float32 and pts.shape == (len(raw), 5)
    np.testing.assert_array_equal(pts[:, :3].numpy(), raw[:, :3])
    np.testing.assert_allclose(pts[:, 3].numpy(), np.tanh(raw[:, 3]), rtol=1e-6)
    np.testing.assert_array_equal(pts[:, 4].numpy(), raw[:, 4])
    assert isinstance(s, Det3DSample)
    veh = (rec.types == 1) & (rec.num_points_in_box >= 1)
    assert s.gt_boxes.shape == (veh.sum(), 7) and s.gt_boxes.dtype == torch.float32
    np.testing.assert_array_equal(s.gt_boxes.numpy(), rec.boxes[veh])
    assert s.gt_labels.dtype == torch.int64 and torch.all(s.gt_labels == 0)
    assert (s.frame_id, s.context_name, s.timestamp_micros) == (
        rec.frame_id, rec.context_name, rec.timestamp_micros)
    # eval GT keeps every vehicle, including boxes without points
    assert len(s.eval_gt.boxes) == (rec.types == 1).sum() >= veh.sum()
    batch = collate_det3d([ds[0], ds[1]])
    assert set(batch) == {"inputs", "data_samples"} and len(batch["inputs"]["points"]) == 2
    assert batch["data_samples"][1].frame_id == load_index(root, "train")[1].frame_id


def test_augmentation_is_reproducible_and_changes_with_epoch(root):
    ds = WaymoDetDataset(root, "train", pipeline=AUG, seed=3)
    a, b = ds[0], ds[0]
    assert torch.equal(a["points"], b["points"])
    assert torch.equal(a["data_sample"].gt_boxes, b["data_sample"].gt_boxes)
    ds.set_epoch(1)
    c = ds[0]
    assert not torch.equal(a["points"], c["points"])
    other = WaymoDetDataset(root, "train", pipeline=AUG, seed=4)[0]
    assert not torch.equal(a["points"], other["points"])
    # augmentation never touches the evaluation ground truth
    np.testing.assert_array_equal(a["data_sample"].eval_gt.boxes,
                                  c["data_sample"].eval_gt.boxes)


def test_filters(root):
    recs = load_index(root, "train")
    assert len(WaymoDetDataset(root, "train", load_interval=2)) == len(recs[::2]) == 1
    assert len(WaymoDetDataset(root, "train", max_frames=1)) == 1
    ds = WaymoDetDataset(root, "val", test_mode=True, eval_range=[-10, -10, -5, 10, 10, 5])
    gt = ds[0]["data_sample"].eval_gt.boxes
    assert np.all(np.abs(gt[:, :2]) < 10)
    assert len(gt) < (load_index(root, "val")[0].types == 1).sum()
    hi = WaymoDetDataset(root, "train", min_box_points=100)[0]["data_sample"]
    lo = WaymoDetDataset(root, "train", min_box_points=1)[0]["data_sample"]
    assert 0 < len(hi.gt_boxes) < len(lo.gt_boxes)


def test_bad_input_errors(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        WaymoDetDataset(tmp_path / "nope", "train")
    with pytest.raises(ValueError, match="TRUCK"):
        WaymoDetDataset(root, "train", class_names=["TRUCK"])
