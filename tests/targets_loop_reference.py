"""The per-box loop encoder that ``detector.models.targets.encode_targets`` replaced, kept as the
reference its vectorised form is tested against (tests/test_targets.py): one Gaussian pasted per
box from Python ints (``.tolist()``), the kept boxes picked with ``nonzero``."""
from __future__ import annotations

from typing import Sequence

import torch

from detector.models.targets import BEVGrid, axis_angle, gaussian_radius, reg_branches
from ops.boxes import points_in_boxes


def draw_gaussian_loop(heatmap: torch.Tensor, cx: int, cy: int, radius: int) -> None:
    """Max-paste a Gaussian of ``radius`` cells (sigma = diameter / 6) centred on cell (cx, cy)."""
    h, w = heatmap.shape
    sigma = (2 * radius + 1) / 6.0
    r = torch.arange(-radius, radius + 1, dtype=heatmap.dtype, device=heatmap.device)
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma * sigma))
    x0, x1 = max(cx - radius, 0), min(cx + radius + 1, w)
    y0, y1 = max(cy - radius, 0), min(cy + radius + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    patch = g[y0 - cy + radius:y1 - cy + radius, x0 - cx + radius:x1 - cx + radius]
    torch.maximum(heatmap[y0:y1, x0:x1], patch, out=heatmap[y0:y1, x0:x1])


def encode_targets_loop(gt_boxes, gt_labels, group_classes: Sequence[int], grid: BEVGrid,
                        gaussian_overlap=0.1, min_radius=2, max_objs=500, range_filter="center_bev",
                        points=None, min_points_in_box=0, heading_encoding="sincos") -> dict:
    device = gt_boxes.device
    h, w = grid.shape
    cell_x, cell_y = grid.cell
    pcr = grid.point_cloud_range
    heatmap = torch.zeros((len(group_classes), h, w), dtype=torch.float32, device=device)
    indices = torch.zeros(max_objs, dtype=torch.long, device=device)
    mask = torch.zeros(max_objs, dtype=torch.bool, device=device)
    reg = {k: torch.zeros((max_objs, c), dtype=torch.float32, device=device)
           for k, c in reg_branches(heading_encoding).items()}
    slot_boxes = torch.zeros((max_objs, 7), dtype=torch.float32, device=device)
    out = dict(heatmap=heatmap, indices=indices, mask=mask, reg=reg, boxes=slot_boxes)

    boxes = gt_boxes.float()
    labels = gt_labels.long()
    channel = torch.full_like(labels, -1)
    for ch, cls in enumerate(group_classes):
        channel[labels == cls] = ch
    keep = channel >= 0
    fx = (boxes[:, 0] - pcr[0]) / cell_x
    fy = (boxes[:, 1] - pcr[1]) / cell_y
    keep &= (fx >= 0) & (fx < w) & (fy >= 0) & (fy < h)
    keep &= (boxes[:, 3] > 0) & (boxes[:, 4] > 0) & (boxes[:, 5] > 0)
    if range_filter == "center_3d":
        keep &= (boxes[:, 2] >= pcr[2]) & (boxes[:, 2] < pcr[5])
    if min_points_in_box > 0 and points is not None:
        keep &= points_in_boxes(points.float(), boxes).sum(0) >= min_points_in_box
    idx = torch.nonzero(keep).flatten()[:max_objs]
    if idx.numel() == 0:
        return out
    boxes, channel, fx, fy = boxes[idx], channel[idx], fx[idx], fy[idx]
    ix = fx.floor().long().clamp(0, w - 1)
    iy = fy.floor().long().clamp(0, h - 1)
    radius = gaussian_radius(boxes[:, 3] / cell_x, boxes[:, 4] / cell_y, gaussian_overlap)
    radius = radius.floor().long().clamp(min=min_radius)
    for ch_i, x_i, y_i, r_i in zip(channel.tolist(), ix.tolist(), iy.tolist(), radius.tolist()):
        draw_gaussian_loop(heatmap[ch_i], x_i, y_i, r_i)
    n = idx.numel()
    indices[:n] = iy * w + ix
    mask[:n] = True
    reg["offset"][:n] = torch.stack([fx - ix, fy - iy], 1)
    reg["z"][:n] = boxes[:, 2:3]
    reg["size"][:n] = boxes[:, 3:6].log()
    if heading_encoding == "sincos":
        reg["heading"][:n] = torch.stack([boxes[:, 6].sin(), boxes[:, 6].cos()], 1)
    else:
        sin2, cos2 = (2 * boxes[:, 6]).sin(), (2 * boxes[:, 6]).cos()
        reg["heading"][:n] = torch.stack([sin2, cos2], 1)
        reg["direction"][:n, 0] = (torch.cos(boxes[:, 6] - axis_angle(sin2, cos2)) > 0).float()
    slot_boxes[:n] = boxes
    return out
