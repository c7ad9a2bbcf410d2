"""Head losses: CenterNet's Gaussian focal loss, masked L1, and the head's per-task losses."""
import math

import pytest
import torch

from detector.models.losses import gaussian_focal_loss, masked_bce_loss, masked_l1_loss


def _focal_reference(logits, target, alpha=2.0, beta=4.0, eps=1e-4):
    total = 0.0
    for x, t in zip(logits.flatten().tolist(), target.flatten().tolist()):
        p = min(max(1 / (1 + math.exp(-x)), eps), 1 - eps)
        if t == 1:
            total += -math.log(p) * (1 - p) ** alpha
        else:
            total += -math.log(1 - p) * p ** alpha * (1 - t) ** beta
    return total


def test_gaussian_focal_loss_matches_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64) * 3
    target = torch.rand(2, 3, 7, 9, generator=g, dtype=torch.float64) ** 3
    target[0, 1, 3, 4] = target[1, 2, 0, 0] = target[1, 0, 6, 8] = 1.0
    got = gaussian_focal_loss(logits, target)
    assert got.item() == pytest.approx(_focal_reference(logits, target), rel=1e-5)
    assert gaussian_focal_loss(logits, target, 1.0, 2.0).item() == pytest.approx(
        _focal_reference(logits, target, 1.0, 2.0), rel=1e-5)


def test_gaussian_focal_loss_behaviour():
    target = torch.zeros(1, 1, 5, 5)
    target[0, 0, 2, 2] = 1.0
    good = torch.full_like(target, -12.0)
    good[0, 0, 2, 2] = 12.0
    bad = -good
    assert gaussian_focal_loss(good, target) < 1e-4
    assert gaussian_focal_loss(bad, target) > 5
    # Gradient pushes the peak logit up and the background down.
    x = torch.zeros_like(target, requires_grad=True)
    gaussian_focal_loss(x, target).backward()
    assert x.grad[0, 0, 2, 2] < 0 and x.grad[0, 0, 0, 0] > 0
    # Near a peak (target 0.9) the background penalty is much smaller than far away (target 0).
    soft = torch.tensor([[[[0.9, 0.0]]]])
    per_cell = [gaussian_focal_loss(torch.tensor([[[[1.0]]]]), soft[..., i:i + 1]).item() for i in range(2)]
    assert per_cell[0] < 1e-3 * per_cell[1]
    with pytest.raises(ValueError, match="logits"):
        gaussian_focal_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 1, 3, 3))


def test_masked_l1_loss():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    tgt = torch.tensor([[[0.0, 0.0], [3.0, 6.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_l1_loss(pred, tgt, mask).item() == pytest.approx(1 + 2 + 0 + 2)
    w = torch.tensor([2.0, 0.5])
    assert masked_l1_loss(pred, tgt, mask, w).item() == pytest.approx(2 + 1 + 0 + 1)


def test_masked_bce_loss_matches_the_formula():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 7, 1, generator=g) * 4
    target = (torch.rand(2, 7, 1, generator=g) > 0.5).float()
    mask = torch.rand(2, 7, generator=g) > 0.3
    ref = 0.0
    for i in range(2):
        for k in range(7):
            if mask[i, k]:
                x, t = float(logits[i, k, 0]), float(target[i, k, 0])
                p = 1 / (1 + math.exp(-x))
                ref += -(t * math.log(p) + (1 - t) * math.log(1 - p))
    assert math.isclose(float(masked_bce_loss(logits, target, mask)), ref, rel_tol=1e-5)
    # Saturated logits stay finite; a confident right answer costs ~0, a confident wrong one ~|x|.
    big = torch.tensor([[[80.0], [-80.0]]])
    assert float(masked_bce_loss(big, torch.tensor([[[1.0], [0.0]]]), torch.ones(1, 2, dtype=torch.bool))) < 1e-6
    assert math.isclose(float(masked_bce_loss(big, torch.tensor([[[0.0], [1.0]]]),
                                              torch.ones(1, 2, dtype=torch.bool))), 160.0, rel_tol=1e-4)
