"""Evaluate a Waymo 3D detection submission against ground truth, like the official
``compute_detection_metrics_main``: ``python tools/waymo_eval.py pred.bin gt.bin``.

Both files are ``metrics_pb2.Objects``. Ground truth is prepared the official way (boxes with
no lidar points dropped, unlabelled difficulty -> LEVEL_2 if <= 5 points else LEVEL_1); the
metric is detector.evaluation.waymo.compute_detection_metrics (default official config).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions", type=Path, help="metrics_pb2.Objects file with predictions")
    ap.add_argument("ground_truth", type=Path, help="metrics_pb2.Objects file with ground truth")
    ap.add_argument("--json", type=Path, help="also write {breakdown: {AP, APH, num_gt}} here")
    ap.add_argument("--allow-empty", action="store_true",
                    help="score a prediction file with no objects (an empty file is an error otherwise)")
    ap.add_argument("--strict", action="store_true",
                    help="fail on what the official metric accepts but is almost surely a mistake "
                         "(sizes <= 0.01 m, scores outside [0, 1], duplicated boxes) instead of warning")
    args = ap.parse_args(argv)
    from detector.evaluation.waymo import evaluate_objects, format_metrics_table, read_objects
    from detector.evaluation.waymo.objects_io import prediction_warnings

    try:
        pred = read_objects(args.predictions)
        gt = read_objects(args.ground_truth)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(gt) == 0:
        print(f"error: {args.ground_truth}: no ground-truth objects (an empty Objects file)",
              file=sys.stderr)
        return 2
    if len(pred) == 0 and not args.allow_empty:
        print(f"error: {args.predictions}: no predictions (an empty Objects file); pass "
              f"--allow-empty to score it (AP 0)", file=sys.stderr)
        return 2
    warnings = prediction_warnings(pred, args.predictions)
    for w in warnings:
        print(f"{'error' if args.strict else 'warning'}: {w}", file=sys.stderr)
    if warnings and args.strict:
        return 2
    t0 = time.perf_counter()
    result = evaluate_objects(pred, gt)
    dt = time.perf_counter() - t0
    print(format_metrics_table(
        result, title=f"{len(pred)} predictions, {len(gt)} ground truths "
                      f"({len(set(gt.frame_ids.tolist()) | set(pred.frame_ids.tolist()))} frames); "
                      f"evaluated in {dt:.2f} s"))
    if args.json:
        summary = {k: {"AP": v["AP"], "APH": v["APH"], "num_gt": v["num_gt"]} for k, v in result.items()}
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
