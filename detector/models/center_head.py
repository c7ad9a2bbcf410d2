"""The detection head: shared BEV conv -> GradDrop (one copy per task) -> per-group branches.

Layout (CenterPoint's multi-group head, with GradDrop placed as docs/GRADDROP.md requires):

    BEV map -> shared 3x3 conv + BN + ReLU  (the last shared activation A)
            -> GradDrop(A) -> one copy of A per GradDrop task
            -> for each class group g, each branch b: [3x3 conv + BN + ReLU] x n -> 3x3 conv
               branches: heatmap (classes of g), offset (2), z (1), size (3, log), heading (2:
               sin/cos of the heading, or of twice it with ``heading_encoding="axis_dir"``),
               direction (1, only with "axis_dir"), optional iou (1)

The gradient method at the shared activation: ``gradient=dict(method=..., grouping=...,
**options)`` (see ``ops.multitask`` and docs/multitask.md: ``sum``, ``graddrop``, ``random_sign``,
``pcgrad``, ``mgda``, ``cagrad``, ``imtl_g``, ``upgrad``, ``aligned_mtl``, ``nash_mtl``,
``gradnorm``, ``uncertainty``); ``grouping`` is the task layout of ``detector.models.tasks``
(``cls_box`` default, ``per_branch``, ``per_group``, ``per_group_cls_box``); ``seed`` (default 0)
seeds the layer's own ``torch.Generator``; ``stats_interval`` (default 0: off) computes the
gradient diagnostics every N steps (logged by ``GradientStatsHook``). When ``gradient`` is given,
``graddrop`` is ignored.

The older key ``graddrop=dict(mode=..., grouping=..., ...)`` still works and trains
bit-identically: ``mode`` ``"graddrop"``, ``"random_sign"`` or ``"off"`` (= method ``sum``: every
branch reads A itself); its other keys are GradDrop's options (``leaks`` - one per task, a single
float, or a dict task name -> leak -, ``keep_prob``, ``scale``, ``renormalize``,
``use_input_sign``, ``eps``, ``backend``, ``batch_separated`` default True, ``seed``).

Losses (each its own entry, so mmengine logs each; summed for the backward):
``loss_heatmap`` (Gaussian focal loss) and ``loss_reg_<branch>`` (L1 at the centre cells), plus
``loss_dir`` (binary cross-entropy of the direction logit) with ``heading_encoding="axis_dir"``
and ``loss_iou`` with the IoU branch; every one divided by the number of objects of its group in the
batch (at least 1) and multiplied by its weight in ``loss_weights``. With several class groups
each key gets the suffix ``_<group name>`` (the group's class names joined by ``_``, lower case).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from detector.models.losses import gaussian_focal_loss, masked_bce_loss, masked_l1_loss
from detector.models.targets import (BEVGrid, add_neighbour_slots, decode_boxes, decode_heatmap,
                                     encode_targets, gather_cells, reg_branches)
from detector.models.tasks import GROUPINGS, task_layout
from detector.models.types import GroupTargets, HeadOutputs
from detector.registry import MODELS
from detector.structures import Det3DSample, Detections

GRADDROP_MODES = ("graddrop", "random_sign", "off")
_MODE_METHOD = {"graddrop": "graddrop", "random_sign": "random_sign", "off": "sum"}

DEFAULT_TRAIN_CFG = dict(gaussian_overlap=0.1, min_radius=2, max_objs=500,
                         range_filter="center_bev", min_points_in_box=0, reg_radius=0,
                         reg_neighbour_weight=0.5)
DEFAULT_TEST_CFG = dict(top_k=500, score_threshold=0.1, pool_kernel=3, nms_iou_threshold=0.7,
                        nms_pre_max_size=4096, nms_post_max_size=500, max_per_frame=500,
                        iou_rectifier=0.0, nms=True)
DEFAULT_LOSS_WEIGHTS = dict(heatmap=1.0, offset=0.25, z=0.25, size=0.25, heading=0.25,
                            direction=0.2, iou=1.0)


def _cbr(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class _Branch(nn.Sequential):
    def __init__(self, cin: int, mid: int, cout: int, num_convs: int, final_bias: float | None):
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += _cbr(cin if i == 0 else mid, mid)
        last = nn.Conv2d(mid if num_convs else cin, cout, 3, padding=1, bias=True)
        if final_bias is not None:
            nn.init.constant_(last.bias, final_bias)
        else:
            nn.init.zeros_(last.bias)
        super().__init__(*layers, last)


@MODELS.register_module()
class CenterHead(nn.Module):
    """Multi-group centre head with GradDrop before the task branches.

    Args:
        in_channels: BEV channels in (filled in by the detector from the neck).
        class_groups: list of class-name lists, one head per group (default ``[["VEHICLE"]]``);
            the model's flat ``class_names`` is their concatenation.
        grid: a :class:`BEVGrid` or dict(point_cloud_range, voxel_size, out_size_factor) (filled
            in by the detector).
        share_channels: channels of the shared conv (default 64).
        head_channels: channels inside each branch (default 64).
        num_branch_convs: 3x3 conv+BN+ReLU layers per branch before its output conv (default 1).
        with_iou: add the IoU-prediction branch (default False).
        heading_encoding: ``"sincos"`` (CenterPoint, default) or ``"axis_dir"`` (sin/cos of twice
            the heading + a front/back direction logit; see ``detector.models.targets``).
        heatmap_init_bias: initial heatmap logit bias (default -2.19, i.e. p = 0.1).
        gradient: dict(method=..., grouping=..., **options), see the module docstring.
        graddrop: the older dict(mode=..., grouping=..., leaks=..., ...) (used when ``gradient``
            is None).
        loss_weights: per-branch weights (keys heatmap, offset, z, size, heading, direction, iou).
        focal_alpha, focal_beta: Gaussian focal loss exponents (default 2, 4).
        train_cfg: target options (gaussian_overlap=0.1, min_radius=2, max_objs=500,
            range_filter="center_bev"|"center_3d", min_points_in_box=0, reg_radius=0,
            reg_neighbour_weight=0.5): with ``reg_radius`` r > 0 the regression is also
            supervised at the cells within r of each centre cell (see
            ``targets.add_neighbour_slots``), each such cell's loss weighted
            ``reg_neighbour_weight``; losses are still divided by the number of objects.
        test_cfg: decoding options (top_k=500, score_threshold=0.1, pool_kernel=3, nms=True,
            nms_iou_threshold=0.7, nms_pre_max_size=4096, nms_post_max_size=500,
            max_per_frame=500, iou_rectifier=0.0).
    """

    def __init__(self, in_channels: int | None = None,
                 class_groups: Sequence[Sequence[str]] = (("VEHICLE",),),
                 grid: BEVGrid | dict | None = None, share_channels: int = 64,
                 head_channels: int = 64, num_branch_convs: int = 1, with_iou: bool = False,
                 heading_encoding: str = "sincos",
                 heatmap_init_bias: float = -2.19, graddrop: dict | None = None,
                 loss_weights: dict | None = None, focal_alpha: float = 2.0, focal_beta: float = 4.0,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 gradient: dict | None = None):
        super().__init__()
        if in_channels is None or grid is None:
            raise ValueError("CenterHead needs in_channels and grid; CenterPointDetector fills them in")
        if not class_groups or any(len(g) == 0 for g in class_groups):
            raise ValueError(f"CenterHead.class_groups must be non-empty lists, got {class_groups!r}")
        self.class_groups = [list(g) for g in class_groups]
        self.class_names = [c for g in self.class_groups for c in g]
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"CenterHead.class_groups repeat a class: {self.class_groups}")
        self.grid = grid if isinstance(grid, BEVGrid) else BEVGrid(
            tuple(grid["point_cloud_range"]), tuple(grid["voxel_size"]), float(grid["out_size_factor"]))
        self.with_iou = with_iou
        self.heading_encoding = heading_encoding
        self.reg_branches = reg_branches(heading_encoding)  # validates the name
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"CenterHead.loss_weights has unknown keys {sorted(unknown)}; "
                             f"known: {sorted(DEFAULT_LOSS_WEIGHTS)}")
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.focal_alpha, self.focal_beta = focal_alpha, focal_beta
        self.train_cfg = {**DEFAULT_TRAIN_CFG, **(train_cfg or {})}
        self.test_cfg = {**DEFAULT_TEST_CFG, **(test_cfg or {})}

        self.shared_conv = nn.Sequential(*_cbr(in_channels, share_channels))
        self.branch_names = ["heatmap", *self.reg_branches] + (["iou"] if with_iou else [])
        self.heads = nn.ModuleList()
        for group in self.class_groups:
            branches = nn.ModuleDict()
            for name in self.branch_names:
                cout = len(group) if name == "heatmap" else self.reg_branches.get(name, 1)
                bias = heatmap_init_bias if name == "heatmap" else None
                branches[name] = _Branch(share_channels, head_channels, cout, num_branch_convs, bias)
            self.heads.append(branches)
        self.group_names = ["_".join(g).lower() for g in self.class_groups]
        self._build_gradient(None if gradient is None else dict(gradient), dict(graddrop or {}))

    # ----------------------------------------------------------------- task layout + method
    def _build_gradient(self, gradient: dict | None, graddrop: dict) -> None:
        from ops.multitask import METHODS, GradientLayer

        if gradient is None:  # the older key: mode -> method, the rest are GradDrop's options
            where = "CenterHead.graddrop"
            cfg = graddrop
            mode = cfg.pop("mode", "graddrop")
            if mode not in GRADDROP_MODES:
                raise ValueError(f"{where}.mode must be one of {GRADDROP_MODES}, got {mode!r}")
            method = _MODE_METHOD[mode]
            if method == "sum":
                # The other options stay accepted (and unused) so that one key flips the mode.
                keep = {"grouping", "seed", "stats_interval", "stats_sample"}
                cfg = {k: v for k, v in cfg.items() if k in keep}
            else:
                cfg.setdefault("batch_separated", True)
        else:
            where = "CenterHead.gradient"
            cfg = gradient
            method = cfg.pop("method", "sum")
            mode = {"graddrop": "graddrop", "random_sign": "random_sign", "sum": "off"}.get(method)
        if method not in METHODS:
            raise ValueError(f"{where}.method {method!r} is unknown; valid methods: "
                             f"{sorted(METHODS)}")
        grouping = cfg.pop("grouping", "cls_box")
        if grouping not in GROUPINGS:
            raise ValueError(f"{where}.grouping must be one of {GROUPINGS}, got {grouping!r}")
        self.graddrop_mode, self.graddrop_grouping = mode, grouping
        self.gradient_method = method
        names, task_of = task_layout(grouping, self.group_names, self.branch_names)
        self.task_names = names
        self.task_of = task_of
        leaks = cfg.pop("leaks", None)
        if leaks is not None:
            if isinstance(leaks, (int, float)):
                leaks = (float(leaks),) * len(names)
            elif isinstance(leaks, dict):
                unknown = set(leaks) - set(names)
                if unknown:
                    raise ValueError(f"{where}.leaks names unknown tasks {sorted(unknown)}; "
                                     f"tasks are {names}")
                leaks = tuple(float(leaks.get(n, 0.0)) for n in names)
            elif len(leaks) != len(names):
                raise ValueError(f"{where}.leaks has {len(leaks)} values for {len(names)} "
                                 f"tasks {names} (grouping {grouping!r})")
            cfg["leaks"] = tuple(leaks)
        elif method in ("graddrop", "random_sign"):
            cfg["leaks"] = (0.0,) * len(names)
        # The layer draws from its own generator, so runs are reproducible and the engine's
        # seeding hooks (which reseed every torch.Generator a module owns) control it.
        try:
            self.gradient_layer = GradientLayer(method, len(names), names, **cfg)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e} (grouping {grouping!r}, tasks {names})") from e

    @property
    def graddrop(self):
        """The GradDrop layer (the gradient layer with method graddrop/random_sign), else None."""
        layer = self.gradient_layer
        return layer if layer.method in ("graddrop", "random_sign") else None

    def loss_keys_of_task(self) -> list[list[str]]:
        """For each GradDrop task (in ``task_names`` order), the loss keys it produces."""
        out: list[list[str]] = [[] for _ in self.task_names]
        for (g, b), t in self.task_of.items():
            out[t].append(self._loss_key(g, b))
        return out

    def _loss_key(self, g: int, branch: str) -> str:
        base = {"heatmap": "loss_heatmap", "iou": "loss_iou", "direction": "loss_dir"}.get(
            branch, f"loss_reg_{branch}")
        return base if len(self.class_groups) == 1 else f"{base}_{self.group_names[g]}"

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> HeadOutputs:
        h, w = self.grid.shape
        if x.shape[-2:] != (h, w):
            raise ValueError(f"CenterHead: BEV map is {tuple(x.shape[-2:])} but the grid "
                             f"{self.grid} implies {(h, w)}")
        shared = self.shared_conv(x)
        copies = self.gradient_layer(shared)
        groups = []
        for g, branches in enumerate(self.heads):
            groups.append({b: branches[b](copies[self.task_of[(g, b)]]) for b in self.branch_names})
        return HeadOutputs(groups=groups, shared=shared)

    # ----------------------------------------------------------------- training
    def targets(self, data_samples: Sequence[Det3DSample],
                points: Sequence[torch.Tensor] | None = None) -> list[GroupTargets]:
        """One :class:`GroupTargets` per class group (the frames' targets stacked), built on the
        ground truth's device without reading anything back to the host."""
        cfg = self.train_cfg
        out = []
        offset = 0
        for group in self.class_groups:
            classes = list(range(offset, offset + len(group)))
            offset += len(group)
            frames = []
            for i, s in enumerate(data_samples):
                ft = encode_targets(
                    s.gt_boxes, s.gt_labels, classes, self.grid, cfg["gaussian_overlap"],
                    cfg["min_radius"], cfg["max_objs"], cfg["range_filter"],
                    points[i] if points is not None else None, cfg["min_points_in_box"],
                    self.heading_encoding)
                frames.append(add_neighbour_slots(ft, self.grid, int(cfg["reg_radius"])))
            out.append(GroupTargets.stack(frames))
        return out

    @staticmethod
    def _check_devices(outputs: HeadOutputs, data_samples: Sequence[Det3DSample],
                       points: Sequence[torch.Tensor] | None) -> None:
        """Fail, naming the frame, where the ground truth is not on the predictions' device
        (the data preprocessor moves it; a silent mix would fail later, far from the cause)."""
        device = outputs.groups[0]["heatmap"].device
        for i, s in enumerate(data_samples):
            for name in ("gt_boxes", "gt_labels"):
                t = getattr(s, name)
                if t.device != device:
                    raise ValueError(f"CenterHead.loss: data_samples[{i}] (frame {s.frame_id}) "
                                     f"{name} is on {t.device}, the predictions on {device}; "
                                     f"move the samples with the batch (Det3DSample.to)")
            if points is not None and points[i].device != device:
                raise ValueError(f"CenterHead.loss: points[{i}] is on {points[i].device}, the "
                                 f"predictions on {device}")

    def loss(self, outputs: HeadOutputs, data_samples: Sequence[Det3DSample],
             points: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        if self.train_cfg["min_points_in_box"] > 0 and points is None:
            raise ValueError("CenterHead.train_cfg.min_points_in_box > 0 needs the points")
        self._check_devices(outputs, data_samples, points)
        targets = self.targets(data_samples, points)
        losses: dict[str, torch.Tensor] = {}
        for g, (pred, tgt) in enumerate(zip(outputs.groups, targets)):
            mask, centre = tgt.mask, tgt.centre
            num = centre.sum().clamp(min=1).float()
            # Per-slot loss weight: 1 at centre cells, reg_neighbour_weight at their neighbours.
            slot_w = torch.where(centre, 1.0, float(self.train_cfg["reg_neighbour_weight"])) * mask
            losses[self._loss_key(g, "heatmap")] = self.loss_weights["heatmap"] * gaussian_focal_loss(
                pred["heatmap"], tgt.heatmap, self.focal_alpha, self.focal_beta) / num
            gathered = {b: gather_cells(pred[b], tgt.indices) for b in self.branch_names
                        if b != "heatmap"}
            for b in self.reg_branches:
                fn = masked_bce_loss if b == "direction" else masked_l1_loss
                losses[self._loss_key(g, b)] = self.loss_weights[b] * fn(
                    gathered[b], tgt.reg[b], slot_w) / num
            if self.with_iou:
                # Target 2 * IoU - 1 at every regression slot (centre and, with reg_radius, its
                # neighbours): a peak at a neighbour cell decodes that cell's box, so its IoU must
                # be known too. Weighted per slot like the other regression branches.
                with torch.no_grad():
                    pred_boxes = decode_boxes({b: gathered[b] for b in self.reg_branches},
                                              tgt.indices, self.grid, self.heading_encoding)
                    iou_t = self._iou_target(pred_boxes, tgt.boxes, mask)
                losses[self._loss_key(g, "iou")] = self.loss_weights["iou"] * masked_l1_loss(
                    gathered["iou"], iou_t, slot_w) / num
        self._task_losses_to_layer(losses)
        return losses

    def _task_losses_to_layer(self, losses: dict[str, torch.Tensor]) -> None:
        """Loss-based methods (gradnorm, uncertainty) get each task's loss; uncertainty adds its
        log-variance term as ``loss_uncertainty``."""
        layer = self.gradient_layer
        if not (layer.combiner.needs_losses or layer.method == "uncertainty"):
            return
        per_task = [sum(losses[k] for k in keys) for keys in self.loss_keys_of_task()]
        if layer.combiner.needs_losses:
            layer.set_losses(per_task)
        extra = layer.extra_loss(per_task)
        if extra is not None:
            losses[f"loss_{layer.method}"] = extra

    @staticmethod
    def _iou_target(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, mask: torch.Tensor
                    ) -> torch.Tensor:
        """``2 * IoU3D - 1`` of each regression slot's decoded box with its ground truth, 0 at
        the empty slots; (B, K, 1) float32.

        On the CPU the masked slots go to ops.iou3d's Numba kernel. On an accelerator every
        slot is computed by ``boxes_iou3d_aligned``'s torch path and the empty ones are zeroed by
        ``where``: fixed shapes, so the step reads nothing back to the host."""
        from ops.iou3d import boxes_iou3d_aligned

        if pred_boxes.device.type == "cpu":
            iou_t = torch.zeros(mask.shape + (1,), dtype=torch.float32)
            a, b = pred_boxes[mask].float().contiguous(), gt_boxes[mask].float().contiguous()
            if a.shape[0]:
                iou_t[mask] = 2 * boxes_iou3d_aligned(a, b).float()[:, None] - 1
            return iou_t
        flat = mask.reshape(-1)
        # float64 where the device has it (boxes_iou3d_aligned's dispatch): a few thousand
        # slots, and float32 loses up to ~1e-3 of IoU on nearly parallel edges.
        iou = boxes_iou3d_aligned(pred_boxes.reshape(-1, 7), gt_boxes.reshape(-1, 7)).float()
        return torch.where(flat, 2 * iou - 1, torch.zeros_like(iou)).reshape(mask.shape + (1,))

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def predict(self, outputs: HeadOutputs, data_samples: Sequence[Det3DSample] | None = None
                ) -> list[Detections]:
        cfg = self.test_cfg
        batch = outputs.groups[0]["heatmap"].shape[0]
        per_frame: list[list[tuple]] = [[] for _ in range(batch)]
        offset = 0
        for g, pred in enumerate(outputs.groups):
            decoded = decode_heatmap(pred["heatmap"], {b: pred[b] for b in self.reg_branches},
                                     self.grid, cfg["top_k"], cfg["score_threshold"],
                                     cfg["pool_kernel"], pred.get("iou"), cfg["iou_rectifier"],
                                     self.heading_encoding)
            for i, (boxes, scores, channel) in enumerate(decoded):
                if cfg["nms"] and boxes.shape[0] > 0:
                    from ops.iou3d import nms_bev

                    keep = torch.as_tensor(nms_bev(boxes, scores, cfg["nms_iou_threshold"],
                                                   cfg["nms_pre_max_size"], cfg["nms_post_max_size"]),
                                           dtype=torch.long, device=boxes.device)
                    boxes, scores, channel = boxes[keep], scores[keep], channel[keep]
                per_frame[i].append((boxes, scores, channel + offset))
            offset += len(self.class_groups[g])
        results = []
        for i, parts in enumerate(per_frame):
            boxes = torch.cat([p[0] for p in parts]).float()
            scores = torch.cat([p[1] for p in parts]).float()
            labels = torch.cat([p[2] for p in parts]).long()
            if scores.numel() > cfg["max_per_frame"]:
                top = scores.topk(cfg["max_per_frame"]).indices
                boxes, scores, labels = boxes[top], scores[top], labels[top]
            s = data_samples[i] if data_samples is not None else None
            results.append(Detections(boxes, scores, labels,
                                      frame_id=s.frame_id if s is not None else 0,
                                      context_name=s.context_name if s is not None else "",
                                      timestamp_micros=s.timestamp_micros if s is not None else 0))
        return results
