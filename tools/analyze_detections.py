"""Where does a detector lose AP? Evaluate a submission file against a converted split at several
IoU thresholds and measure the box errors of the matched detections.

    python tools/analyze_detections.py work_dirs/demo/detections.bin work_dirs/demo/data/converted \
        --split val --type VEHICLE --range 38.4

Prints LEVEL_1 AP of the type at each IoU threshold (our Waymo metric, official rules otherwise),
then, for every ground-truth box with a detection (score >= --score-thr) whose centre lies within
--match-dist metres, the mean absolute errors of centre, z, size and heading (heading modulo pi,
as IoU does not see a reversed box), the fraction with 3D IoU above 0.7 and the share of
reversed boxes (heading off by more than 90 degrees), also split by the ground truth's angle to
the street axes. A large gap between
AP at IoU 0.5 and 0.7 with small centre/size errors points at heading; large centre errors at
the output grid.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import detector  # noqa: E402,F401  (first: sets OMP_WAIT_POLICY before torch/numba load)

import numpy as np  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("predictions", help="metrics_pb2.Objects file (.bin)")
    p.add_argument("data_root", help="converted data root (tools/convert_waymo.py)")
    p.add_argument("--split", default="val")
    p.add_argument("--type", default="VEHICLE", choices=["VEHICLE", "PEDESTRIAN", "SIGN", "CYCLIST"])
    p.add_argument("--range", type=float, default=None,
                   help="keep ground truth with |x| and |y| below this (the model's BEV range)")
    p.add_argument("--ious", type=float, nargs="+", default=[0.3, 0.5, 0.6, 0.7])
    p.add_argument("--score-thr", type=float, default=0.3)
    p.add_argument("--match-dist", type=float, default=2.0)
    args = p.parse_args(argv)
    from detector.conventions import angle_to_axes
    from detector.datasets.converted import load_index
    from detector.evaluation.waymo import (DEFAULT_IOU_THRESHOLDS, compute_detection_metrics,
                                           frame_id_from, prepare_ground_truth, read_objects)
    from detector.structures import WAYMO_TYPES
    from ops.iou3d import boxes_iou3d

    wtype = WAYMO_TYPES[args.type]

    pred = read_objects(args.predictions)
    cols = {k: [] for k in ("boxes", "types", "frame_ids", "difficulty", "num_points")}
    for rec in load_index(args.data_root, args.split):
        keep = rec.types == wtype
        if args.range is not None:
            keep &= (np.abs(rec.boxes[:, 0]) < args.range) & (np.abs(rec.boxes[:, 1]) < args.range)
        cols["boxes"].append(rec.boxes[keep])
        cols["types"].append(rec.types[keep])
        cols["frame_ids"].append(np.full(int(keep.sum()), frame_id_from(rec.context_name, rec.timestamp_micros),
                                         dtype=np.int64))
        cols["difficulty"].append(rec.difficulty[keep])
        cols["num_points"].append(rec.num_points_in_box[keep])
    gt = prepare_ground_truth(*(np.concatenate(cols[k]) for k in cols))
    name = f"OBJECT_TYPE_TYPE_{args.type}_LEVEL_1"
    print(f"{len(gt['boxes'])} ground-truth {args.type} boxes, {len(pred.boxes)} detections")
    for thr in args.ious:
        thresholds = list(DEFAULT_IOU_THRESHOLDS)
        thresholds[wtype] = thr
        res = compute_detection_metrics(pred.boxes, pred.types, pred.scores, pred.frame_ids,
                                        gt["boxes"], gt["types"], gt["frame_ids"], gt["difficulty"],
                                        iou_thresholds=thresholds)
        print(f"IoU {thr:.2f}: {args.type} LEVEL_1 AP {res[name]['AP']:.3f}  APH {res[name]['APH']:.3f}")

    errors = []
    confident = (pred.scores >= args.score_thr) & (pred.types == wtype)
    for fid in np.unique(gt["frame_ids"]):
        g = gt["boxes"][gt["frame_ids"] == fid]
        d_boxes = pred.boxes[confident & (pred.frame_ids == fid)]
        if len(d_boxes) == 0:
            continue
        dist = np.linalg.norm(g[:, None, :2] - d_boxes[None, :, :2], axis=2)
        nearest = dist.argmin(1)
        for i, j in enumerate(nearest):
            if dist[i, j] > args.match_dist:
                continue
            q = d_boxes[j]
            dh = (q[6] - g[i, 6] + np.pi / 2) % np.pi - np.pi / 2
            full = (q[6] - g[i, 6] + np.pi) % (2 * np.pi) - np.pi
            iou = boxes_iou3d(g[i:i + 1].astype(np.float32), q[None].astype(np.float32))[0, 0]
            axis_off = angle_to_axes(g[i, 6])
            errors.append([dist[i, j], q[2] - g[i, 2], q[3] - g[i, 3], q[4] - g[i, 4], q[5] - g[i, 5],
                           np.degrees(dh), iou, abs(full) > np.pi / 2, np.degrees(axis_off)])
    if not errors:
        print("no ground-truth box has a detection within --match-dist")
        return 0
    e = np.asarray(errors)
    print(f"{len(e)} of {len(gt['boxes'])} ground-truth boxes have a detection within {args.match_dist} m "
          f"(score >= {args.score_thr})")
    print("mean abs error: centre (BEV) %.2f m, z %.2f m, length %.2f m, width %.2f m, height %.2f m, "
          "heading %.1f deg" % tuple(np.abs(e[:, :6]).mean(0)))
    print("mean signed error: z %+.2f m, length %+.2f m, width %+.2f m, height %+.2f m"
          % tuple(e[:, 1:5].mean(0)))
    print(f"3D IoU of the matched pairs: median {np.median(e[:, 6]):.3f}, above 0.7: {(e[:, 6] > 0.7).mean():.1%}")
    print(f"reversed (heading off by more than 90 deg, front taken for the back): "
          f"{int(e[:, 7].sum())} of {len(e)} matched boxes ({e[:, 7].mean():.1%})")
    # By the ground truth's angle to the nearest multiple of 90 degrees in the frame's axes
    # (the ego's road): vehicles along the street axes vs angled ones.
    for name, m in (("within 5 deg of an axis", e[:, 8] <= 5), ("more than 5 deg off", e[:, 8] > 5)):
        if m.any():
            print(f"  {name}: {int(m.sum())} matched, centre {e[m, 0].mean():.2f} m, heading "
                  f"{np.abs(e[m, 5]).mean():.1f} deg, IoU median {np.median(e[m, 6]):.3f}, "
                  f"above 0.7 {(e[m, 6] > 0.7).mean():.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
