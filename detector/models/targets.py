"""CenterPoint-style training targets and their inverse, box decoding from heatmap peaks.

Spec: CenterPoint (Yin, Zhou, Kraehenbuehl, CVPR 2021) on top of CenterNet (Zhou et al.,
"Objects as Points", 2019): each object is a Gaussian peak on a per-class BEV heatmap at the
output cell holding its centre, with the Gaussian's radius from the CornerNet rule (the largest
corner shift that keeps IoU >= ``min_overlap`` with the box, in output cells, at least
``min_radius``). At the centre cell the regression targets are

    offset  (2) sub-cell position of the centre: (cx - x_min) / cell_x - ix, likewise y, in [0, 1)
    z       (1) cz in metres
    size    (3) log(length), log(width), log(height)
    heading (2) sin(heading), cos(heading)                       (``heading_encoding="sincos"``)
         or (2) sin(2 heading), cos(2 heading) - the box's axis, blind to front/back - plus
  direction (1) 1 when the heading is the axis angle itself, 0 when it is the axis + pi
                (a logit at inference)                            (``heading_encoding="axis_dir"``)

``"sincos"`` is CenterPoint's encoding. ``"axis_dir"`` is SECOND's idea (a direction classifier
beside a regression that cannot tell a box from its reversal) in CenterPoint's terms: where the
front of an object is hard to tell from its back, sin/cos targets of the two readings pull the
regression towards each other and the decoded angle goes anywhere, while the doubled angle is the
same for both, so the axis - all IoU sees - stays accurate and only the direction bit is
uncertain. The axis angle is ``atan2(sin 2h, cos 2h) / 2`` in (-pi/2, pi/2]; the direction
target is computed from that same expression, so encode -> decode is exact at +-pi/2 too.

Decoding inverts this exactly, so encode -> decode returns the boxes up to float rounding (the
heatmap only picks the cell; the offsets carry the sub-cell position). Boxes are in the shared
convention ``(cx, cy, cz, l, w, h, heading)`` with heading in [-pi, pi).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from detector.models.types import FrameTargets
from ops.boxes import points_in_boxes, wrap_angle

REG_BRANCHES = {"offset": 2, "z": 1, "size": 3, "heading": 2}
HEADING_ENCODINGS = ("sincos", "axis_dir")


def reg_branches(heading_encoding: str = "sincos") -> dict[str, int]:
    """Regression branch name -> channels for a heading encoding."""
    if heading_encoding == "sincos":
        return dict(REG_BRANCHES)
    if heading_encoding == "axis_dir":
        return {**REG_BRANCHES, "direction": 1}
    raise ValueError(f"heading_encoding must be one of {HEADING_ENCODINGS}, got {heading_encoding!r}")


def axis_angle(sin2: torch.Tensor, cos2: torch.Tensor) -> torch.Tensor:
    """The axis angle in (-pi/2, pi/2] from sin(2h), cos(2h)."""
    return torch.atan2(sin2, cos2) / 2


@dataclass(frozen=True)
class BEVGrid:
    """The head's output grid: ``point_cloud_range``, voxel size and output stride in voxels."""
    point_cloud_range: tuple[float, ...]
    voxel_size: tuple[float, ...]
    out_size_factor: float

    @property
    def cell(self) -> tuple[float, float]:
        return (self.voxel_size[0] * self.out_size_factor, self.voxel_size[1] * self.out_size_factor)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) = (cells along y, cells along x)."""
        cx, cy = self.cell
        pcr = self.point_cloud_range
        return (int(round((pcr[4] - pcr[1]) / cy)), int(round((pcr[3] - pcr[0]) / cx)))


def gaussian_radius(length: torch.Tensor, width: torch.Tensor, min_overlap: float) -> torch.Tensor:
    """CornerNet's Gaussian radius for boxes of ``length`` x ``width`` (in cells).

    The minimum over the three cases of how the corners of a detection can move (both inward,
    both outward, one each) while the IoU with the true box stays >= ``min_overlap``; each case
    is a quadratic in the radius.
    """
    h, w, o = length, width, min_overlap
    b1 = h + w
    c1 = w * h * (1 - o) / (1 + o)
    r1 = (b1 + torch.sqrt((b1 ** 2 - 4 * c1).clamp(min=0))) / 2
    b2 = 2 * (h + w)
    c2 = (1 - o) * w * h
    r2 = (b2 + torch.sqrt((b2 ** 2 - 16 * c2).clamp(min=0))) / 2
    a3 = 4 * o
    b3 = -2 * o * (h + w)
    c3 = (o - 1) * w * h
    r3 = (b3 + torch.sqrt((b3 ** 2 - 4 * a3 * c3).clamp(min=0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


# Cells of one chunk of the vectorised Gaussian drawing (boxes x H x W): bounds its memory
# (16 MB of float32) whatever the number of boxes.
_DRAW_CHUNK_CELLS = 1 << 22


def draw_gaussians(heatmap: torch.Tensor, channel: torch.Tensor, cx: torch.Tensor,
                   cy: torch.Tensor, radius: torch.Tensor, valid: torch.Tensor | None = None,
                   window: int | str = "auto") -> torch.Tensor:
    """Max-paste one Gaussian per box onto ``heatmap`` (C, H, W), in place, as tensor code.

    Box m puts a Gaussian of ``radius[m]`` cells (sigma = diameter / 6) centred on cell
    (``cx[m]``, ``cy[m]``) on channel ``channel[m]``: each cell within the (2r+1)^2 square takes
    ``max(cell, exp(-(dx^2 + dy^2) / (2 sigma^2)))``, the part of the square off the map is
    clipped. Boxes with ``valid[m]`` False draw nothing. All arguments are (M,) integer tensors
    (``valid`` bool) on the heatmap's device; the order of the boxes does not matter.

    window: how much of the map each box is evaluated on (the result is the same):
    ``"map"`` - the whole map, as dense (boxes, H, W) ops in chunks: nothing is read back to the
    host, the choice for accelerators; an int R >= every valid radius - a (2R+1)^2 patch per
    box, max-scattered into the map; ``"auto"`` (default) - on the CPU a patch of the largest
    radius (reading it costs nothing there, and the patch is ~100x less work than the map),
    elsewhere the whole map.
    """
    c, h, w = heatmap.shape
    m = channel.shape[0]
    if m == 0:
        return heatmap
    device = heatmap.device
    valid = torch.ones(m, dtype=torch.bool, device=device) if valid is None else valid
    if window == "auto":
        window = int(torch.where(valid, radius, 0).max()) if device.type == "cpu" else "map"
    zero = torch.zeros((), dtype=heatmap.dtype, device=device)
    if window == "map":
        xs = torch.arange(w, device=device)
        ys = torch.arange(h, device=device)
        chunk = max(1, _DRAW_CHUNK_CELLS // (h * w))
        for s in range(0, m, chunk):
            e = min(s + chunk, m)
            r = radius[s:e].long()
            dx = xs[None, :] - cx[s:e, None].long()                # (m, W)
            dy = ys[None, :] - cy[s:e, None].long()                # (m, H)
            g = torch.exp(-_square_sum(dy, dx, heatmap.dtype) / _two_sigma2(r, heatmap.dtype))
            inside = ((dy.abs() <= r[:, None])[:, :, None] & (dx.abs() <= r[:, None])[:, None, :]
                      & valid[s:e, None, None])
            for ch in range(c):
                mine = inside & (channel[s:e] == ch)[:, None, None]
                torch.maximum(heatmap[ch], torch.where(mine, g, zero).amax(0), out=heatmap[ch])
        return heatmap
    if not isinstance(window, int) or window < 0:
        raise ValueError(f"draw_gaussians: window must be 'auto', 'map' or an int >= 0, got {window!r}")
    o = torch.arange(-window, window + 1, device=device)
    p = o.shape[0]
    flat = torch.cat([heatmap.reshape(-1), zero[None]])  # the last element collects the misses
    chunk = max(1, _DRAW_CHUNK_CELLS // (p * p))
    for s in range(0, m, chunk):
        e = min(s + chunk, m)
        r = radius[s:e].long()
        oo = o[None, :].expand(e - s, p)
        g = torch.exp(-_square_sum(oo, oo, heatmap.dtype) / _two_sigma2(r, heatmap.dtype))
        xs = cx[s:e, None].long() + o                              # (m, P)
        ys = cy[s:e, None].long() + o
        ok_x = (o.abs() <= r[:, None]) & (xs >= 0) & (xs < w)
        ok_y = (o.abs() <= r[:, None]) & (ys >= 0) & (ys < h)
        ok = ok_y[:, :, None] & ok_x[:, None, :] & valid[s:e, None, None]
        idx = (channel[s:e, None, None].long() * h + ys[:, :, None]) * w + xs[:, None, :]
        idx = torch.where(ok, idx, c * h * w)
        flat.scatter_reduce_(0, idx.reshape(-1), g.reshape(-1), reduce="amax", include_self=True)
    heatmap.copy_(flat[:-1].view(c, h, w))
    return heatmap


def _square_sum(dy: torch.Tensor, dx: torch.Tensor, dtype) -> torch.Tensor:
    """(m, A), (m, B) integer offsets -> (m, A, B) dy^2 + dx^2 in ``dtype``."""
    return (dy.to(dtype) ** 2)[:, :, None] + (dx.to(dtype) ** 2)[:, None, :]


def _two_sigma2(r: torch.Tensor, dtype) -> torch.Tensor:
    """(m,) radii -> (m, 1, 1) 2 sigma^2 with sigma = (2r + 1) / 6, computed in float64 and
    rounded once to ``dtype`` (as a Python float divisor would be)."""
    sigma = (2 * r + 1).double() / 6.0
    return (2 * sigma * sigma).to(dtype)[:, None, None]


def draw_gaussian(heatmap: torch.Tensor, cx: int, cy: int, radius: int) -> None:
    """Max-paste a Gaussian of ``radius`` cells (sigma = diameter / 6) centred on cell (cx, cy)
    onto a (H, W) map (one box of :func:`draw_gaussians`)."""
    dev = heatmap.device
    one = lambda v: torch.tensor([int(v)], dtype=torch.long, device=dev)  # noqa: E731
    draw_gaussians(heatmap[None], one(0), one(cx), one(cy), one(radius))




def encode_targets(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, group_classes: Sequence[int],
                   grid: BEVGrid, gaussian_overlap: float = 0.1, min_radius: int = 2,
                   max_objs: int = 500, range_filter: str = "center_bev",
                   points: torch.Tensor | None = None, min_points_in_box: int = 0,
                   heading_encoding: str = "sincos") -> FrameTargets:
    """Encode one frame's boxes of the classes ``group_classes`` (flat class indices, in the
    group's channel order).

    range_filter: ``"center_bev"`` drops boxes whose centre lies outside the x/y range (its cell
    would be off the map); ``"center_3d"`` also drops centres outside the z range.
    min_points_in_box: with ``points`` given, boxes holding fewer points are dropped (0 = keep all).
    heading_encoding: ``"sincos"`` or ``"axis_dir"`` (see the module docstring).
    Boxes whose centres share a cell overwrite each other's regression slot (the later box wins),
    as in CenterPoint; their Gaussians both stay on the heatmap.
    """
    if gt_boxes.ndim != 2 or gt_boxes.shape[1] != 7:
        raise ValueError(f"gt_boxes must be (M, 7), got {tuple(gt_boxes.shape)}")
    if range_filter not in ("center_bev", "center_3d"):
        raise ValueError(f"range_filter must be 'center_bev' or 'center_3d', got {range_filter!r}")
    device = gt_boxes.device
    h, w = grid.shape
    cell_x, cell_y = grid.cell
    pcr = grid.point_cloud_range
    k = int(max_objs)

    boxes = gt_boxes.float()
    labels = gt_labels.long()
    channel = torch.full_like(labels, -1)
    for ch, cls in enumerate(group_classes):
        channel = torch.where(labels == cls, ch, channel)
    keep = channel >= 0
    fx = (boxes[:, 0] - pcr[0]) / cell_x
    fy = (boxes[:, 1] - pcr[1]) / cell_y
    keep &= (fx >= 0) & (fx < w) & (fy >= 0) & (fy < h)
    keep &= (boxes[:, 3] > 0) & (boxes[:, 4] > 0) & (boxes[:, 5] > 0)
    if range_filter == "center_3d":
        keep &= (boxes[:, 2] >= pcr[2]) & (boxes[:, 2] < pcr[5])
    if min_points_in_box > 0 and points is not None:
        keep &= points_in_boxes(points.float(), boxes).sum(0) >= min_points_in_box
    # The first max_objs kept boxes fill slots 0, 1, ... in order; the others go to a spare
    # slot K that is cut off (fixed shapes: no nonzero(), nothing read back to the host).
    rank = torch.cumsum(keep.long(), 0) - 1
    used = keep & (rank < k)
    slot = torch.where(used, rank, k)
    ix = torch.nan_to_num(fx.floor(), 0.0, 0.0, 0.0).long().clamp(0, w - 1)
    iy = torch.nan_to_num(fy.floor(), 0.0, 0.0, 0.0).long().clamp(0, h - 1)
    radius = gaussian_radius(boxes[:, 3] / cell_x, boxes[:, 4] / cell_y, gaussian_overlap)
    radius = torch.nan_to_num(radius.floor(), 0.0, 0.0, 0.0).long()
    radius = radius.clamp(min=min_radius)
    heatmap = torch.zeros((len(group_classes), h, w), dtype=torch.float32, device=device)
    draw_gaussians(heatmap, channel.clamp(min=0), ix, iy, radius, used)

    def place(values: torch.Tensor, dtype) -> torch.Tensor:
        """Rows of the M boxes -> (K, ...) slots (unused slots zero)."""
        out = torch.zeros((k + 1, *values.shape[1:]), dtype=dtype, device=device)
        out.index_copy_(0, slot, torch.where(used.view(-1, *[1] * (values.ndim - 1)),
                                             values.to(dtype), torch.zeros((), dtype=dtype,
                                                                           device=device)))
        return out[:k]

    indices = place(iy * w + ix, torch.long)
    mask = place(used, torch.bool)
    reg = {"offset": place(torch.stack([fx - ix, fy - iy], 1), torch.float32),
           "z": place(boxes[:, 2:3], torch.float32),
           "size": place(boxes[:, 3:6].log(), torch.float32)}
    if heading_encoding == "sincos":
        reg["heading"] = place(torch.stack([boxes[:, 6].sin(), boxes[:, 6].cos()], 1),
                               torch.float32)
    else:
        sin2, cos2 = (2 * boxes[:, 6]).sin(), (2 * boxes[:, 6]).cos()
        reg["heading"] = place(torch.stack([sin2, cos2], 1), torch.float32)
        # 1 when the heading is within +-90 degrees of the axis angle decoding will produce.
        reg["direction"] = place((torch.cos(boxes[:, 6] - axis_angle(sin2, cos2)) > 0)
                                 .float()[:, None], torch.float32)
    reg = {name: reg[name] for name in reg_branches(heading_encoding)}
    slot_boxes = place(boxes, torch.float32)
    return FrameTargets(heatmap, indices, mask, reg, slot_boxes, mask)


def add_neighbour_slots(t: FrameTargets, grid: BEVGrid, radius: int) -> FrameTargets:
    """Append regression slots for the cells within ``radius`` (Chebyshev) of each object's
    centre cell.

    A decoded peak one cell away from the true centre cell reads the regression there, which
    centre-only supervision never trained; here those cells get the same targets, with the
    offset measured from their own corner (so it lies in [-radius, 1 + radius)) and decoding
    needs no change. Returns K * (2 radius + 1)^2 slots, the original K first; slots whose cell
    falls off the map are masked out. The returned ``centre`` mask marks the original slots.
    """
    if radius <= 0:
        return t
    h, w = grid.shape
    k = t.indices.shape[0]
    ix, iy = t.indices % w, torch.div(t.indices, w, rounding_mode="floor")
    shifts = [(dx, dy) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
              if (dx, dy) != (0, 0)]
    idx, mask, reg, boxes = [t.indices], [t.mask], {n: [v] for n, v in t.reg.items()}, [t.boxes]
    for dx, dy in shifts:
        nx, ny = ix + dx, iy + dy
        inside = (nx >= 0) & (nx < w) & (ny >= 0) & (ny < h)
        idx.append(torch.where(inside, ny * w + nx, torch.zeros_like(t.indices)))
        mask.append(t.mask & inside)
        for n, v in t.reg.items():
            if n == "offset":
                v = torch.stack([v[:, 0] - dx, v[:, 1] - dy], 1)  # scalars: no host-to-device copy
            reg[n].append(v)
        boxes.append(t.boxes)
    centre = torch.zeros(k * (len(shifts) + 1), dtype=torch.bool, device=t.mask.device)
    centre[:k] = t.centre
    return FrameTargets(t.heatmap, torch.cat(idx), torch.cat(mask),
                        {n: torch.cat(v) for n, v in reg.items()}, torch.cat(boxes), centre)


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() and t.dtype in (torch.float16, torch.bfloat16) else t


def gather_cells(feature: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map, (B, K) flat cell indices -> (B, K, C)."""
    b, c = feature.shape[:2]
    flat = feature.reshape(b, c, -1)
    return flat.gather(2, indices[:, None, :].expand(b, c, indices.shape[1])).transpose(1, 2)


def decode_boxes(reg: dict, indices: torch.Tensor, grid: BEVGrid,
                 heading_encoding: str = "sincos") -> torch.Tensor:
    """Regression values at cells -> boxes (..., 7). ``reg`` holds (..., channels) tensors
    gathered at ``indices`` (flat y * W + x); with ``"axis_dir"``, ``reg["direction"]`` holds
    the direction logit (> 0: the axis angle is the heading). Half-precision values (AMP) are
    decoded in float32: a bfloat16 position has a resolution of 0.25 m at 50 m."""
    reg = {name: _at_least_float32(v) for name, v in reg.items()}
    _, w = grid.shape
    cell_x, cell_y = grid.cell
    pcr = grid.point_cloud_range
    ix = (indices % w).to(reg["offset"].dtype)
    iy = torch.div(indices, w, rounding_mode="floor").to(reg["offset"].dtype)
    x = (ix + reg["offset"][..., 0]) * cell_x + pcr[0]
    y = (iy + reg["offset"][..., 1]) * cell_y + pcr[1]
    z = reg["z"][..., 0]
    size = reg["size"].clamp(max=8.0).exp()  # clamp: an untrained net must not overflow exp
    if heading_encoding == "sincos":
        heading = torch.atan2(reg["heading"][..., 0], reg["heading"][..., 1])
    elif heading_encoding == "axis_dir":
        heading = axis_angle(reg["heading"][..., 0], reg["heading"][..., 1])
        heading = torch.where(reg["direction"][..., 0] > 0, heading, heading + math.pi)
    else:
        raise ValueError(f"heading_encoding must be one of {HEADING_ENCODINGS}, got {heading_encoding!r}")
    heading = wrap_angle(heading)
    return torch.cat([x[..., None], y[..., None], z[..., None], size, heading[..., None]], -1)


def decode_heatmap(heatmap_logits: torch.Tensor, reg_maps: dict, grid: BEVGrid, top_k: int = 500,
                   score_threshold: float = 0.1, pool_kernel: int = 3,
                   iou_map: torch.Tensor | None = None, iou_rectifier: float = 0.0,
                   heading_encoding: str = "sincos"):
    """Heatmap peaks -> per-frame (boxes (M, 7), scores (M,), channel (M,)).

    A cell is a peak when it equals the max of its ``pool_kernel`` neighbourhood; the ``top_k``
    highest peaks over all classes are kept, then those whose heatmap score is >=
    ``score_threshold``. With an IoU branch, the kept peaks' scores are then rectified as
    ``score^(1-a) * iou^a`` (a = ``iou_rectifier``; AFDetV2), the IoU prediction mapped from
    [-1, 1] to [0, 1]. The threshold applies before rectifying: ``score^(1-a)`` lifts weak peaks
    (0.05 -> 0.38 at a = 0.68), so a threshold on the rectified score would let hundreds of
    background peaks per frame through.
    """
    boxes, scores, channel, passed = decode_heatmap_dense(
        heatmap_logits, reg_maps, grid, top_k, score_threshold, pool_kernel, iou_map,
        iou_rectifier, heading_encoding)
    return [(boxes[i][passed[i]], scores[i][passed[i]], channel[i][passed[i]])
            for i in range(boxes.shape[0])]


def decode_heatmap_dense(heatmap_logits: torch.Tensor, reg_maps: dict, grid: BEVGrid,
                         top_k: int = 500, score_threshold: float = 0.1, pool_kernel: int = 3,
                         iou_map: torch.Tensor | None = None, iou_rectifier: float = 0.0,
                         heading_encoding: str = "sincos"):
    """:func:`decode_heatmap` before the per-frame selection, in fixed shapes (no host sync):
    boxes (B, K, 7), scores (B, K), channel (B, K) and ``passed`` (B, K) bool, the peaks whose
    heatmap score reaches ``score_threshold``; K = min(top_k, C * H * W). Computed in float32
    whatever the input dtype."""
    heatmap_logits = _at_least_float32(heatmap_logits)
    b, c, h, w = heatmap_logits.shape
    scores = heatmap_logits.sigmoid()
    pad = (pool_kernel - 1) // 2
    hmax = F.max_pool2d(scores, pool_kernel, stride=1, padding=pad)
    scores = scores * (hmax == scores)
    k = min(top_k, c * h * w)
    top_scores, top_idx = scores.reshape(b, -1).topk(k, dim=1)
    channel = torch.div(top_idx, h * w, rounding_mode="floor")
    cells = top_idx % (h * w)
    reg = {name: gather_cells(m, cells) for name, m in reg_maps.items()}
    boxes = decode_boxes(reg, cells, grid, heading_encoding)
    passed = top_scores >= score_threshold
    if iou_map is not None and iou_rectifier > 0:
        iou = ((_at_least_float32(gather_cells(iou_map, cells))[..., 0] + 1) / 2).clamp(0, 1)
        top_scores = top_scores.pow(1 - iou_rectifier) * iou.pow(iou_rectifier)
    return boxes, top_scores, channel, passed
