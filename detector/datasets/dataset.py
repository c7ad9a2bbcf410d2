"""The training / evaluation dataset over converted Waymo data (``tools/convert_waymo.py`` output).

One item is one frame: its points (from the per-frame array), its labels (from the index), run
through the transform pipeline, and formatted into what the model consumes
(``detector/structures.py``): ``dict(points=Tensor (N, 5) [x, y, z, tanh(intensity), elongation],
data_sample=Det3DSample)``. ``collate_det3d`` batches items into
``dict(inputs=dict(points=[...]), data_samples=[...])``.

Ground truth for evaluation travels in ``Det3DSample.eval_gt`` (``EvalGroundTruth``) untouched by
augmentation and unfiltered by point count (the metric prepares it the official way), limited to
the Waymo types the model predicts.

Augmentation randomness comes from ``numpy.random.default_rng((seed, epoch, index))``:
reproducible, the same for any number of loader workers, and different every epoch
(``DatasetEpochHook`` calls :meth:`set_epoch`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..registry import DATASETS
from ..conventions import WAYMO_TYPES, model_points
from ..structures import Det3DSample, EvalGroundTruth
from . import collate as _collate  # noqa: F401  (registers collate_det3d with mmengine)
from .transforms import Compose

__all__ = ["WaymoDetDataset", "converted_sources", "check_training_data"]


@DATASETS.register_module()
class WaymoDetDataset(torch.utils.data.Dataset):
    """Converted Waymo frames for 3D detection.

    Args:
        data_root: folder written by ``tools/convert_waymo.py``.
        split: "train" / "val" / ... (a sub-index of ``data_root``).
        class_names: the model's classes (Waymo type names), label i = class_names[i].
        pipeline: transform configs / instances applied in order (``transforms.py``).
        test_mode: no GT filtering by points, no augmentation expected in the pipeline.
        load_interval: use every k-th frame of the index (Waymo custom: 5 -> 20% of frames).
        max_frames: keep at most this many frames (after the interval), None = all.
        lidar_ids: keep points of these lidars only (1 = TOP ... 5 = REAR); None = all.
        drop_nlz: drop points inside no-label zones.
        min_box_points: training boxes need at least this many lidar points.
        seed: base seed of the augmentation randomness.
        eval_range: (xmin, ymin, zmin, xmax, ymax, zmax) or None: evaluation ground truth is
            limited to boxes whose BEV centre lies inside (for models that see a smaller area
            than the labels cover, e.g. the demo); None keeps every label.
        check_files: check the header and size of every point file when the dataset opens
            (reads ~100 bytes per frame), so a corrupt file is named before training starts.
    """

    def __init__(self, data_root: str, split: str = "train", class_names: Sequence[str] = ("VEHICLE",),
                 pipeline: Sequence = (), test_mode: bool = False, load_interval: int = 1,
                 max_frames: int | None = None, lidar_ids: Sequence[int] | None = None,
                 drop_nlz: bool = False, min_box_points: int = 1, seed: int = 0,
                 eval_range: Sequence[float] | None = None, check_files: bool = True):
        from .converted import check_split_files, load_index

        self.data_root = Path(data_root)
        if not self.data_root.is_dir():
            raise FileNotFoundError(
                f"dataset data_root={str(data_root)!r} does not exist; expected the output folder "
                f"of tools/convert_waymo.py (for the demo: run `make demo` once)")
        unknown = [c for c in class_names if c not in WAYMO_TYPES or c == "UNKNOWN"]
        if unknown:
            raise ValueError(f"dataset class_names {list(class_names)}: {unknown} are not Waymo types; "
                             f"expected names from {[k for k in WAYMO_TYPES if k != 'UNKNOWN']}")
        self.split = split
        self.class_names = tuple(class_names)
        self.type_to_label = {WAYMO_TYPES[c]: i for i, c in enumerate(self.class_names)}
        self.records = list(load_index(self.data_root, split))[::max(1, int(load_interval))]
        if max_frames is not None:
            self.records = self.records[:int(max_frames)]
        if not self.records:
            raise ValueError(f"dataset {str(data_root)!r} split {split!r} has no frames "
                             f"(load_interval={load_interval}, max_frames={max_frames})")
        if check_files:
            check_split_files(self.data_root, split, self.records)
        self.pipeline = Compose(pipeline)
        self.test_mode = test_mode
        self.lidar_ids = None if lidar_ids is None else np.asarray(lidar_ids, dtype=np.float32)
        self.drop_nlz = drop_nlz
        self.min_box_points = int(min_box_points)
        self.seed = int(seed)
        self.eval_range = None if eval_range is None else np.asarray(eval_range, np.float32)
        self.epoch = 0

    @property
    def metainfo(self) -> dict:
        return dict(classes=self.class_names, split=self.split,
                    eval_range=None if self.eval_range is None
                    else [round(float(v), 6) for v in self.eval_range])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def load_frame(self, index: int) -> dict:
        """The raw frame as the transforms see it (before the pipeline)."""
        from .converted import load_points

        rec = self.records[index]
        pts = np.array(load_points(self.data_root, rec, mmap=True), dtype=np.float32)
        if self.lidar_ids is not None:
            pts = pts[np.isin(pts[:, 6], self.lidar_ids)]
        if self.drop_nlz:
            pts = pts[pts[:, 7] <= 0]
        types = np.asarray(rec.types, dtype=np.int64)
        boxes = np.asarray(rec.boxes, dtype=np.float32).reshape(-1, 7)
        difficulty = np.asarray(rec.difficulty, dtype=np.int64)
        npts = np.asarray(rec.num_points_in_box, dtype=np.int64)
        ours = np.isin(types, list(self.type_to_label))
        eval_sel = ours
        if self.eval_range is not None:
            r = self.eval_range
            eval_sel = ours & (boxes[:, 0] >= r[0]) & (boxes[:, 0] < r[3]) & (boxes[:, 1] >= r[1]) \
                & (boxes[:, 1] < r[4])
        eval_gt = EvalGroundTruth(boxes=boxes[eval_sel].copy(), types=types[eval_sel].copy(),
                                  difficulty=difficulty[eval_sel].copy(),
                                  num_points=npts[eval_sel].copy())
        keep = ours if self.test_mode else ours & (npts >= self.min_box_points)
        labels = np.array([self.type_to_label[t] for t in types[keep]], dtype=np.int64)
        return dict(points=pts, gt_boxes=boxes[keep].copy(), gt_labels=labels,
                    gt_types=types[keep], gt_difficulty=difficulty[keep], gt_num_points=npts[keep],
                    eval_gt=eval_gt, record=rec, sample_idx=index)

    def __getitem__(self, index: int) -> dict:
        results = self.load_frame(index)
        results["rng"] = np.random.default_rng([self.seed, self.epoch, index])
        results = self.pipeline(results)
        return self.format(results)

    @staticmethod
    def model_points(points: np.ndarray) -> torch.Tensor:
        """(N, 8) converted columns -> (N, 5) ``MODEL_POINT_FEATURES`` (``conventions``)."""
        return torch.from_numpy(model_points(points))

    def format(self, results: dict) -> dict:
        rec = results["record"]
        sample = Det3DSample(
            gt_boxes=torch.from_numpy(np.ascontiguousarray(results["gt_boxes"], dtype=np.float32)),
            gt_labels=torch.from_numpy(np.asarray(results["gt_labels"], dtype=np.int64)),
            frame_id=int(rec.frame_id), context_name=str(rec.context_name),
            timestamp_micros=int(rec.timestamp_micros), eval_gt=results["eval_gt"],
            meta=dict(sample_idx=int(results["sample_idx"]),
                      segment=str(getattr(rec, "segment", "")),
                      frame_index=int(getattr(rec, "frame_index", 0))))
        return dict(points=self.model_points(results["points"]), data_sample=sample)

    def __repr__(self) -> str:
        return (f"WaymoDetDataset({os.fspath(self.data_root)!r}, split={self.split!r}, "
                f"frames={len(self)}, classes={self.class_names}, pipeline={self.pipeline})")


def converted_sources(cfg) -> list[tuple[str, str, str]]:
    """(what, data_root, split) of the converted data a config reads: the train / val / test
    datasets and any GT database (``ObjectSample``'s ``db=dict(data_root, split)``)."""
    out: list[tuple[str, str, str]] = []

    def walk(node, what):
        if isinstance(node, dict):
            if isinstance(node.get("data_root"), (str, os.PathLike)):
                label = "GT database" if what.endswith(".db") else f"{what.split('.')[0]} split"
                item = (label, str(node["data_root"]), str(node.get("split", "train")))
                if item not in out:
                    out.append(item)
            for k, v in node.items():
                walk(v, f"{what}.{k}")
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v, what)

    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        node = cfg.get(key) if hasattr(cfg, "get") else None
        if node:
            walk(node.to_dict() if hasattr(node, "to_dict") else node,
                 key.replace("_dataloader", ""))
    return out


def check_training_data(cfg, verify: bool = False, log=print) -> dict:
    """Start-up checks of the converted data a config trains and validates on: every split (and
    the GT database) must have been converted with the same options (``ConvertedDataError``
    naming both otherwise); ``verify=True`` also re-hashes every file against the manifest
    checksums (``ConvertedDataError`` naming the first bad file). Returns the common options."""
    from .converted import check_conversion_options, verify_split

    sources = [s for s in converted_sources(cfg) if Path(s[1]).is_dir()]
    opts = check_conversion_options(sources)
    if verify:
        done = set()
        for what, root, split in sources:
            if (root, split) in done:
                continue
            done.add((root, split))
            n = verify_split(root, split)
            if log:
                log(f"verified {n} files of the {what} {Path(root) / split}")
    return opts
