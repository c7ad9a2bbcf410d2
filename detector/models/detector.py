"""The top model: ``CenterPointDetector``, an mmengine ``BaseModel`` wiring the stages

    VoxelDataPreprocessor -> voxel encoder -> SparseEncoder (+ height compression)
        -> SECONDFPN -> CenterHead (GradDrop before its branches)

Shape plumbing is filled in here so configs cannot disagree with themselves: the 3D backbone
gets the preprocessor's grid size and the encoder's channels, the neck the backbone's BEV
channels, the head the neck's channels and the output grid (range, voxel size,
``out_size_factor = 8 * neck.out_stride``).
"""
from __future__ import annotations

import copy

import torch
from mmengine.model import BaseModel

from detector.models.targets import BEVGrid
from detector.models.types import HeadOutputs
from detector.registry import MODELS
from detector.structures import Det3DSample, Detections


@MODELS.register_module()
class CenterPointDetector(BaseModel):
    """Sparse-conv CenterPoint-style detector with GradDrop in the head.

    Args:
        data_preprocessor: config of a ``VoxelDataPreprocessor``.
        voxel_encoder: config of ``MeanVFE`` / ``DynamicMeanVFE``.
        backbone_3d: config of ``SparseEncoder`` (``grid_size``, ``in_channels`` filled in).
        neck: config of ``SECONDFPN`` (``in_channels`` filled in).
        head: config of ``CenterHead`` (``in_channels``, ``grid`` filled in).
        train_cfg / test_cfg: passed to the head (merged over the head's own ``train_cfg`` /
            ``test_cfg`` keys).
        norm_momentum: when given, the momentum of every BatchNorm layer's running statistics.
            The backbone and neck default to 0.01 (right for Waymo-length schedules of 10^4+
            iterations). A schedule of a few hundred iterations needs a larger value: with 0.01,
            after n iterations a share 0.99^n of the running statistics is still the initial
            (0, 1) and most of the rest stale early-training values, and evaluation uses the
            running statistics (docs/benchmarks/training.md has the runs).

    ``forward(inputs, data_samples, mode)``: ``inputs`` is the preprocessor's output (or the raw
    ``dict(points=[...])``, which is voxelized on the fly). mode ``"loss"`` -> dict of losses,
    ``"predict"`` -> list[Detections], ``"tensor"`` -> :class:`HeadOutputs`.

    Empty frames (no voxel: 0 points, all outside the range, or all with non-finite
    coordinates, which the preprocessor drops and counts) run through every backbone
    implementation: the BEV map is zero, ``"predict"`` gives zero detections for them, and
    ``"loss"`` trains them as frames without points (the loss from their targets alone: the
    background heatmap, and any box kept by the dataset's ``min_box_points`` filter).
    """

    def __init__(self, data_preprocessor: dict, voxel_encoder: dict, backbone_3d: dict, neck: dict,
                 head: dict, train_cfg: dict | None = None, test_cfg: dict | None = None,
                 init_cfg: dict | None = None, norm_momentum: float | None = None):
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        pre = self.data_preprocessor
        for attr in ("voxel_size", "point_cloud_range", "grid_size", "mode"):
            if not hasattr(pre, attr):
                raise TypeError(f"CenterPointDetector needs a VoxelDataPreprocessor-like "
                                f"data_preprocessor (missing {attr!r}), got {type(pre).__name__}")
        self.voxel_encoder = MODELS.build(voxel_encoder)
        needs_mode = "hard" if type(self.voxel_encoder).__name__ == "MeanVFE" else None
        if needs_mode and pre.mode != needs_mode:
            raise ValueError("MeanVFE needs data_preprocessor.mode='hard'; use DynamicMeanVFE "
                             "with mode='dynamic'")
        bb = copy.deepcopy(backbone_3d)
        bb.setdefault("grid_size", pre.grid_size)
        bb.setdefault("in_channels", self.voxel_encoder.out_channels)
        self.backbone_3d = MODELS.build(bb)
        nk = copy.deepcopy(neck)
        nk.setdefault("in_channels", self.backbone_3d.out_channels)
        self.neck = MODELS.build(nk)
        hd = copy.deepcopy(head)
        hd.setdefault("in_channels", self.neck.out_channels)
        out_size_factor = float(self.backbone_3d.stride * self.neck.out_stride)
        hd.setdefault("grid", BEVGrid(tuple(pre.point_cloud_range), tuple(pre.voxel_size),
                                      out_size_factor))
        if train_cfg:
            hd["train_cfg"] = {**hd.get("train_cfg", {}), **train_cfg}
        if test_cfg:
            hd["test_cfg"] = {**hd.get("test_cfg", {}), **test_cfg}
        self.head = MODELS.build(hd)
        self.class_names = self.head.class_names
        if norm_momentum is not None:
            if not 0.0 < norm_momentum <= 1.0:
                raise ValueError(f"CenterPointDetector: norm_momentum must be in (0, 1], got {norm_momentum}")
            for m in self.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.momentum = norm_momentum

    def extract_bev(self, inputs: dict) -> torch.Tensor:
        """Voxels -> the neck's BEV feature map (B, C, H, W)."""
        voxels = inputs["voxels"]
        feats = self.voxel_encoder(voxels)
        bev = self.backbone_3d(feats, voxels)
        return self.neck(bev)

    def forward(self, inputs: dict, data_samples: list[Det3DSample] | None = None,
                mode: str = "tensor"):
        if mode not in ("loss", "predict", "tensor"):
            raise ValueError(f"CenterPointDetector.forward: mode must be 'loss', 'predict' or "
                             f"'tensor', got {mode!r}")
        if "voxels" not in inputs:
            inputs = self.data_preprocessor(dict(inputs=inputs, data_samples=data_samples),
                                            self.training)["inputs"]
        outputs: HeadOutputs = self.head(self.extract_bev(inputs))
        if mode == "tensor":
            return outputs
        if mode == "loss":
            if data_samples is None:
                raise ValueError("CenterPointDetector.forward(mode='loss') needs data_samples")
            return self.head.loss(outputs, data_samples, inputs.get("points"))
        return self._no_detections_without_points(self.head.predict(outputs, data_samples),
                                                  inputs["voxels"])

    @staticmethod
    def _no_detections_without_points(dets: list[Detections], voxels) -> list[Detections]:
        """A frame without any voxel (0 points, all outside the range, or all non-finite: a
        sensor dropout) gets zero detections: its BEV map is all zeros, and the head's constant
        response to that is not evidence of objects."""
        counts = torch.bincount(voxels.coords[:, 0].long(), minlength=len(dets))
        out = []
        for i, d in enumerate(dets):
            if int(counts[i]) == 0 and len(d):
                d = Detections(d.boxes[:0], d.scores[:0], d.labels[:0], d.frame_id, d.context_name,
                               d.timestamp_micros)
            out.append(d)
        return out
