"""Losses of the centre head.

- ``gaussian_focal_loss``: CenterNet's variant of the focal loss (Zhou et al., "Objects as
  Points", eq. 1) for Gaussian-splatted heatmaps: at peak cells (target == 1)
  ``-(1 - p)^alpha log p``; elsewhere ``-(1 - t)^beta p^alpha log(1 - p)``, the ``(1 - t)^beta``
  factor softening the penalty near a peak. Returned as a sum; the head divides by the number
  of objects.
- ``masked_l1_loss``: L1 between predictions and targets at the objects' centre cells, summed over
  objects and channels (channel weights optional); divided by the number of objects by the head.
- ``masked_bce_loss``: binary cross-entropy of logits against 0/1 targets at the centre cells,
  summed likewise (the direction classifier of ``heading_encoding="axis_dir"``).
"""
from __future__ import annotations

import torch


def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
                        beta: float = 4.0, eps: float = 1e-4) -> torch.Tensor:
    """Sum of CenterNet's focal loss over all cells; ``logits`` and ``target`` share a shape.

    The probability is clamped to [eps, 1 - eps] (as CenterNet/CenterPoint do) so the loss stays
    finite for saturated logits.
    """
    if logits.shape != target.shape:
        raise ValueError(f"gaussian_focal_loss: logits {tuple(logits.shape)} vs target "
                         f"{tuple(target.shape)}")
    p = logits.float().sigmoid().clamp(eps, 1 - eps)
    t = target.float()
    pos = t.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p).pow(alpha) * pos
    neg_loss = -torch.log(1 - p) * p.pow(alpha) * (1 - t).pow(beta) * (1 - pos)
    return pos_loss.sum() + neg_loss.sum()


def masked_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                   channel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over masked rows of ``|pred - target|`` (optionally weighted per channel).

    pred, target: (..., K, C); mask: (..., K) bool, or float per-row weights.
    """
    diff = (pred.float() - target.float()).abs()
    if channel_weights is not None:
        diff = diff * channel_weights.to(diff)
    return (diff * mask.unsqueeze(-1).to(diff)).sum()


def masked_bce_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over masked rows of the binary cross-entropy of ``logits`` against ``target`` in [0, 1].

    logits, target: (..., K, C); mask: (..., K) bool, or float per-row weights.
    """
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.float(), target.float(), reduction="none")
    return (bce * mask.unsqueeze(-1).to(bce)).sum()
