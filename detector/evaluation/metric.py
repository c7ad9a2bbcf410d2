"""``WaymoMetric``: the mmengine evaluator glue around our Waymo 3D detection metric.

The validation / test loop hands :meth:`WaymoMetric.process` the model's ``Detections`` and the
batch (whose ``Det3DSample.eval_gt`` carries each frame's unaugmented ground truth of
the model's types). :meth:`compute_metrics` prepares the ground truth the official way
(``prepare_ground_truth``: drop boxes without points, UNKNOWN difficulty -> LEVEL_1/2 by point
count), maps class indices back to Waymo types through the model's ``class_names``, and runs
``compute_detection_metrics`` (docs/WAYMO.md, "Official 3D detection metric"; default config:
OBJECT_TYPE and RANGE breakdowns, LEVEL_1 and LEVEL_2).

Reported to mmengine as flat ``"<breakdown>/AP"`` and ``"<breakdown>/APH"`` keys; optionally
printed as the official table, written to a JSON file ``{breakdown: {"AP": .., "APH": ..}}`` and
to a submission file (``metrics_pb2.Objects``). Only breakdowns of the types the model
predicts are reported: the others would be all-zero rows of types nobody asked for.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from ..registry import METRICS
from ..structures import WAYMO_TYPES, WAYMO_TYPE_NAMES

__all__ = ["WaymoMetric", "evaluate_frames"]


def _types_of(class_names: Sequence[str]) -> np.ndarray:
    try:
        return np.array([WAYMO_TYPES[c] for c in class_names], dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"WaymoMetric: class name {e.args[0]!r} is not a Waymo type "
                         f"({list(WAYMO_TYPES)})") from None


def evaluate_frames(frames: Sequence[dict], breakdowns=("OBJECT_TYPE", "RANGE"),
                    types: Sequence[int] | None = None) -> dict:
    """Waymo metrics over per-frame dicts (frame_id, pred_boxes, pred_scores, pred_types, gt_*).

    Returns ``compute_detection_metrics``' result restricted to breakdowns of ``types``.
    """
    from .waymo import compute_detection_metrics, prepare_ground_truth

    def cat(key, shape, dtype):
        arrs = [np.asarray(f[key], dtype).reshape(shape) for f in frames]
        return np.concatenate(arrs) if arrs else np.zeros((0,) + shape[1:], dtype)

    def ids(key):
        return np.concatenate([np.full(len(f[key]), f["frame_id"], np.int64) for f in frames]) \
            if frames else np.zeros(0, np.int64)

    gt = prepare_ground_truth(cat("gt_boxes", (-1, 7), np.float32), cat("gt_types", (-1,), np.int64),
                              ids("gt_types"), cat("gt_difficulty", (-1,), np.int64),
                              cat("gt_num_points", (-1,), np.int64))
    result = compute_detection_metrics(
        cat("pred_boxes", (-1, 7), np.float32), cat("pred_types", (-1,), np.int64),
        cat("pred_scores", (-1,), np.float32), ids("pred_types"),
        gt["boxes"], gt["types"], gt["frame_ids"], gt["difficulty"], breakdowns=tuple(breakdowns))
    if types is not None:
        wanted = [f"TYPE_{WAYMO_TYPE_NAMES[int(t)]}_" for t in types]
        result = {k: v for k, v in result.items() if any(w in k for w in wanted)}
    return result


def describe_range(eval_range) -> str:
    """What ground truth a table covers, in words (for titles and metrics.json)."""
    if eval_range is None:
        return "all ground truth (no range limit)"
    r = [float(v) for v in eval_range]
    return (f"ground truth with BEV centre in x [{r[0]:g}, {r[3]:g}) m, y [{r[1]:g}, {r[4]:g}) m "
            f"(the model's range; labels outside it are not scored)")


def format_table(result: dict, eval_range=None, title: str | None = None) -> str:
    """The official table, titled with what it measured. Rows with no ground truth show "-"."""
    from .waymo import format_metrics_table

    head = f"Waymo 3D detection metrics on {describe_range(eval_range)}"
    return format_metrics_table(result, title=head if title is None else f"{title}\n{head}")


def _write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False))
    os.replace(tmp, path)


@METRICS.register_module()
class WaymoMetric(BaseMetric):
    """Waymo 3D detection AP / APH (LEVEL_1 / LEVEL_2, by type and by range).

    Args:
        class_names: the model's classes; None = ``dataset_meta["classes"]`` (set by the Runner).
        breakdowns: subset of ("OBJECT_TYPE", "RANGE").
        metrics_json: write ``{breakdown: {"AP": .., "APH": ..}, "eval_range": {..}}`` here
            (atomically) when given.
        submission_path: write the detections as ``metrics_pb2.Objects`` here when given.
        print_table: log the official table after evaluation.
        predictions_path: write the raw per-frame detections here (.npz / .json,
            ``detector.evaluation.detections_io``) when given.

    The table's title and metrics.json's ``"eval_range"`` entry say which ground truth was
    scored: the dataset's ``eval_range`` (its metainfo), or all of it.
    """

    default_prefix = "waymo"

    def __init__(self, class_names: Sequence[str] | None = None,
                 breakdowns: Sequence[str] = ("OBJECT_TYPE", "RANGE"),
                 metrics_json: str | None = None, submission_path: str | None = None,
                 print_table: bool = True, predictions_path: str | None = None,
                 collect_device: str = "cpu", prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.class_names = None if class_names is None else tuple(class_names)
        self.breakdowns = tuple(breakdowns)
        self.metrics_json = metrics_json
        self.submission_path = submission_path
        self.print_table = print_table
        self.predictions_path = predictions_path
        self.last_result: dict | None = None

    def _classes(self) -> tuple:
        if self.class_names is not None:
            return self.class_names
        meta = self.dataset_meta or {}
        if "classes" not in meta:
            raise ValueError("WaymoMetric needs class_names (or a dataset whose metainfo has 'classes')")
        return tuple(meta["classes"])

    def process(self, data_batch: dict, data_samples: Sequence) -> None:
        types = _types_of(self._classes())
        samples = data_batch["data_samples"]
        for det, sample in zip(data_samples, samples):
            labels = det.labels.detach().cpu().numpy().astype(np.int64)
            if labels.size and (labels.min() < 0 or labels.max() >= len(types)):
                raise ValueError(f"WaymoMetric: frame {sample.frame_id} has predicted labels "
                                 f"{np.unique(labels)} outside class_names {self._classes()}")
            gt = sample.eval_gt
            if gt is None:
                raise ValueError(f"WaymoMetric: frame {sample.frame_id} ({sample.context_name!r}, "
                                 f"{sample.timestamp_micros}) has no eval_gt; the dataset must "
                                 f"give each sample its EvalGroundTruth")
            self.results.append(dict(
                frame_id=int(sample.frame_id), context_name=sample.context_name,
                timestamp_micros=int(sample.timestamp_micros),
                pred_boxes=det.boxes.detach().cpu().float().numpy().reshape(-1, 7),
                pred_scores=det.scores.detach().cpu().float().numpy().reshape(-1),
                pred_types=types[labels], pred_labels=labels,
                gt_boxes=gt.boxes, gt_types=gt.types, gt_difficulty=gt.difficulty,
                gt_num_points=gt.num_points))

    def compute_metrics(self, results: list) -> dict:
        from .waymo import format_metrics_table

        types = _types_of(self._classes())
        result = evaluate_frames(results, self.breakdowns, types)
        self.last_result = result
        eval_range = (self.dataset_meta or {}).get("eval_range")
        if self.print_table:
            print_log("\n" + format_table(result, eval_range), logger="current")
        summary = {k: {"AP": float(v["AP"]), "APH": float(v["APH"])} for k, v in result.items()}
        if self.metrics_json:
            doc = dict(summary, eval_range=dict(
                point_cloud_range=None if eval_range is None else [float(v) for v in eval_range],
                description=describe_range(eval_range)))
            _write_json_atomic(Path(self.metrics_json), doc)
            print_log(f"metrics written to {self.metrics_json}", logger="current")
        if self.submission_path:
            self._write_submission(results)
        if self.predictions_path:
            from .detections_io import FrameDetections, write_detections
            write_detections(self.predictions_path, [
                FrameDetections(f"{r['context_name']}:{r['timestamp_micros']}", r["pred_boxes"],
                                r["pred_scores"], r["pred_labels"],
                                r["pred_types"], r["context_name"], r["timestamp_micros"])
                for r in results], self._classes())
            print_log(f"raw detections written to {self.predictions_path}", logger="current")
        out = {}
        for k, v in summary.items():
            out[f"{k}/AP"] = v["AP"]
            out[f"{k}/APH"] = v["APH"]
        return out

    def _write_submission(self, results: list) -> None:
        from .waymo import write_objects

        n = [len(r["pred_scores"]) for r in results]
        write_objects(self.submission_path,
                      np.concatenate([[r["context_name"]] * k for r, k in zip(results, n)] or [[]]),
                      np.concatenate([np.full(k, r["timestamp_micros"], np.int64)
                                      for r, k in zip(results, n)] or [np.zeros(0, np.int64)]),
                      np.concatenate([r["pred_boxes"] for r in results] or [np.zeros((0, 7))]),
                      np.concatenate([r["pred_types"] for r in results] or [np.zeros(0)]),
                      np.concatenate([r["pred_scores"] for r in results] or [np.zeros(0)]))
        print_log(f"submission written to {self.submission_path}", logger="current")
