"""Rotated BEV NMS (ops.iou3d.nms_bev) against its slow reference, plus its contract."""
from __future__ import annotations

import numpy as np
import pytest

from ops.iou3d import boxes_iou_bev, nms_bev, nms_bev_reference


def clustered_boxes(rng, n_clusters=25, per=5):
    centres = np.column_stack([rng.uniform(-40, 40, (n_clusters, 2)), rng.normal(0, 1, n_clusters)])
    base = np.column_stack([centres, rng.uniform(1, 5, (n_clusters, 3)), rng.uniform(-np.pi, np.pi, n_clusters)])
    boxes = np.repeat(base, per, 0) + rng.normal(0, 0.3, (n_clusters * per, 7)) * [1, 1, 0.2, 0.2, 0.1, 0.1, 0.3]
    return boxes.astype(np.float32), rng.random(n_clusters * per).astype(np.float32)


@pytest.mark.parametrize("thr", [0.0, 0.1, 0.5, 0.9])
def test_matches_reference(thr):
    rng = np.random.default_rng(int(thr * 10))
    boxes, scores = clustered_boxes(rng)
    got = nms_bev(boxes, scores, thr)
    want = nms_bev_reference(boxes, scores, thr)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    # Kept boxes overlap each other by at most thr, and come by descending score.
    iou = boxes_iou_bev(boxes[got], boxes[got])
    assert (iou[np.triu_indices(len(got), 1)] <= thr).all()
    assert (np.diff(scores[got]) <= 0).all()


def test_pre_post_max_size_and_ties():
    rng = np.random.default_rng(7)
    boxes, scores = clustered_boxes(rng)
    for pre, post in [(50, None), (None, 10), (30, 5), (0, None), (None, 0)]:
        np.testing.assert_array_equal(nms_bev(boxes, scores, 0.2, pre, post),
                                      nms_bev_reference(boxes, scores, 0.2, pre, post))
    # Equal scores: the lower index wins; identical boxes suppress each other.
    b = np.repeat(boxes[:1], 3, 0)
    np.testing.assert_array_equal(nms_bev(b, np.ones(3, np.float32), 0.5), [0])
    # IoU exactly at the threshold is kept (suppression needs IoU > threshold).
    two = np.array([[0, 0, 0, 4, 2, 1, 0], [2, 0, 0, 4, 2, 1, 0]], np.float32)  # IoU 1/3
    assert len(nms_bev(two, np.array([1.0, 0.5]), 1 / 3 + 1e-9)) == 2
    assert len(nms_bev(two, np.array([1.0, 0.5]), 1 / 3 - 1e-9)) == 1
    assert nms_bev(np.zeros((0, 7), np.float32), np.zeros(0, np.float32), 0.5).shape == (0,)


def test_torch_and_errors():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    boxes, scores = clustered_boxes(rng, 10, 4)
    keep = nms_bev(torch.from_numpy(boxes), torch.from_numpy(scores), 0.3)
    assert isinstance(keep, torch.Tensor) and keep.dtype == torch.int64
    np.testing.assert_array_equal(keep.numpy(), nms_bev(boxes, scores, 0.3))
    s = scores.copy()
    s[5] = np.nan
    with pytest.raises(ValueError, match="scores: non-finite value nan at row 5"):
        nms_bev(boxes, s, 0.3)
    with pytest.raises(ValueError, match="scores: expected shape"):
        nms_bev(boxes, scores[:-1], 0.3)
    with pytest.raises(ValueError, match="boxes: expected shape"):
        nms_bev(boxes[:, :5], scores, 0.3)
