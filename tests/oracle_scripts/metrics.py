"""Oracle: the official Waymo detection metric op (py_metrics_ops.detection_metrics) on batches.

Runs ONLY in .venv-waymo-official (via tests/oracle.py run_oracle). Input .npz keys:
  n_datasets (int); for dataset k, keys prefixed "k/": pred_boxes (N,7) f32, pred_types u8,
  pred_scores f32, pred_frame_ids i64, pred_overlap_nlz bool, gt_boxes (M,7) f32, gt_types u8,
  gt_frame_ids i64, gt_difficulty u8; optional iou_thresholds (5,) f32, score_cutoffs f32.
  Optional "iou/a", "iou/b" (K,7) f32 pairs: per-pair 3D IoU through py_metrics_ops.match.
Output: "k/ap", "k/aph" float32, "k/pr", "k/pr_ha" [breakdown, cutoff, (precision, recall)], "k/names" unicode, "k/seconds"; "iou/iou" (K,) float32
(0 where the official matcher returned no match, i.e. IoU below the 1e-12 threshold). The
pair boxes use centre z like everything else; the script converts for the match op.
"""
import sys
import time

import numpy as np
import tensorflow as tf
from waymo_open_dataset import label_pb2
from waymo_open_dataset.metrics.ops import py_metrics_ops
from waymo_open_dataset.metrics.python import config_util_py
from waymo_open_dataset.protos import breakdown_pb2, metrics_pb2


def make_config(iou_thresholds=None, score_cutoffs=None):
    cfg = metrics_pb2.Config()
    for gen in (breakdown_pb2.Breakdown.OBJECT_TYPE, breakdown_pb2.Breakdown.RANGE):
        cfg.breakdown_generator_ids.append(gen)
        cfg.difficulties.append(metrics_pb2.Difficulty(levels=[1, 2]))
    cfg.matcher_type = metrics_pb2.MatcherProto.TYPE_HUNGARIAN
    cfg.iou_thresholds.extend([0.0, 0.7, 0.5, 0.5, 0.5] if iou_thresholds is None
                              else [float(x) for x in iou_thresholds])
    cfg.box_type = label_pb2.Label.Box.TYPE_3D
    cfg.score_cutoffs.extend([i * 0.01 for i in range(100)] + [1.0] if score_cutoffs is None
                             else [float(x) for x in score_cutoffs])
    return cfg


def main(inp, out):
    z = dict(np.load(inp, allow_pickle=False))
    res = {}
    for k in range(int(z.get("n_datasets", 0))):
        g = lambda n: z[f"{k}/{n}"]  # noqa: E731
        cfg = make_config(z.get(f"{k}/iou_thresholds"), z.get(f"{k}/score_cutoffs"))
        t0 = time.perf_counter()
        ap, aph, _, pr, pr_ha, *_ = py_metrics_ops.detection_metrics(
            prediction_bbox=tf.constant(g("pred_boxes").reshape(-1, 7), tf.float32),
            prediction_type=tf.constant(g("pred_types"), tf.uint8),
            prediction_score=tf.constant(g("pred_scores"), tf.float32),
            prediction_frame_id=tf.constant(g("pred_frame_ids"), tf.int64),
            prediction_overlap_nlz=tf.constant(g("pred_overlap_nlz"), tf.bool),
            ground_truth_bbox=tf.constant(g("gt_boxes").reshape(-1, 7), tf.float32),
            ground_truth_type=tf.constant(g("gt_types"), tf.uint8),
            ground_truth_frame_id=tf.constant(g("gt_frame_ids"), tf.int64),
            ground_truth_difficulty=tf.constant(g("gt_difficulty"), tf.uint8),
            config=cfg.SerializeToString())
        res[f"{k}/ap"] = ap.numpy()
        res[f"{k}/aph"] = aph.numpy()
        res[f"{k}/pr"] = pr.numpy()        # [breakdown, cutoff, (precision, recall)]
        res[f"{k}/pr_ha"] = pr_ha.numpy()
        res[f"{k}/seconds"] = np.float64(time.perf_counter() - t0)
        res[f"{k}/names"] = np.array(config_util_py.get_breakdown_names_from_config(cfg))
    if "iou/a" in z:
        a, b = z["iou/a"].astype(np.float32), z["iou/b"].astype(np.float32)
        # The match op reads z as the box BOTTOM (its docstring: center_x, center_y, bottom_z);
        # the detection metric reads it as the centre. Shift so both describe the same box.
        a[:, 2] -= a[:, 5] / 2
        b[:, 2] -= b[:, 5] / 2
        cfg = metrics_pb2.Config(
            score_cutoffs=[0.0], box_type=label_pb2.Label.Box.TYPE_3D,
            difficulties=[metrics_pb2.Difficulty(levels=[])],
            breakdown_generator_ids=[breakdown_pb2.Breakdown.ONE_SHARD],
            matcher_type=metrics_pb2.MatcherProto.TYPE_HUNGARIAN,
            iou_thresholds=[0, 1e-12, 1e-12, 1e-12, 1e-12])
        pid, gid, ious, _ = py_metrics_ops.match(
            tf.constant(a[:, None, :]), tf.constant(b[:, None, :]), config=cfg.SerializeToString())
        # With one box per batch element the flattened prediction id is the pair index.
        iou = np.zeros(len(a), np.float32)
        iou[pid.numpy()] = ious.numpy()
        res["iou/iou"] = iou
    np.savez(out, **res)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
