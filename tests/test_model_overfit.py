"""Overfit test: the detector learns one hand-made frame and then finds its boxes (3D IoU > 0.5).

A bounded number of CPU steps on a small grid; proves the targets, losses, GradDrop layer,
backward through spconv and the decoding all fit together.
"""
from __future__ import annotations

import copy

import torch

import detector.models  # noqa: F401
from detector.testing.model_frame import make_frame
from detector.registry import MODELS
from detector.structures import Det3DSample
from ops.iou3d import boxes_iou3d
from test_model import tiny_cfg

STEPS = 120


def test_overfit_one_frame_then_detect_its_boxes():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg["test_cfg"] = dict(score_threshold=0.3, top_k=50, nms_iou_threshold=0.1)
    model = MODELS.build(copy.deepcopy(cfg))
    for m in model.modules():  # BN running stats must catch up within the few steps
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.3
    boxes = torch.tensor([[4.0, 3.0, 0.8, 4.6, 1.9, 1.6, 0.4],
                          [-5.0, -2.5, 0.75, 4.2, 1.8, 1.5, 3.1],    # heading near +pi
                          [1.5, -7.0, 0.9, 5.0, 2.1, 1.8, -2.9]])   # and near -pi
    pts, _ = make_frame(beams=16, azimuths=400, max_range=14.0, points_per_box=300, seed=3,
                        boxes=boxes.numpy())
    sample = Det3DSample(boxes, torch.zeros(3, dtype=torch.long), frame_id=7)
    data = model.data_preprocessor(dict(inputs=dict(points=[pts]), data_samples=[sample]), True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    first = last = None
    for step in range(STEPS):
        losses = model(data["inputs"], [sample], "loss")
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        first = float(total) if first is None else first
        last = float(total)
    assert last < 0.2 * first, (first, last)
    model.eval()
    det = model(data["inputs"], [sample], "predict")[0]
    assert det.frame_id == 7 and len(det) >= 3
    iou = boxes_iou3d(boxes, det.boxes)
    best = iou.max(dim=1).values
    assert torch.all(best > 0.5), (best, det.boxes, det.scores)
    # The three best-scoring detections are the three boxes.
    top3 = det.scores.argsort(descending=True)[:3]
    assert sorted(iou[:, top3].argmax(0).tolist()) == [0, 1, 2]
