#!/usr/bin/env python
"""Run a trained detector on your own point clouds and write the detections.

    python tools/infer.py CONFIG CHECKPOINT INPUT [INPUT ...] [--out-dir DIR] [--save-png]
                          [--format kitti-bin|npy|pcd|ply|tfrecord|parquet] [--bin-columns 4|5]
                          [--out-submission FILE.bin] [--device cpu|cuda] [--score-thr 0.3]

INPUT: a KITTI-style .bin (float32 x, y, z, intensity[, elongation]; N x 4 or N x 5, detected
from the file size or named with --bin-columns), a .npy array (N x >= 4), a .pcd / .ply (Open3D;
an "intensity" field is used when present), a Waymo .tfrecord segment (every frame) or a Waymo
v2 lidar .parquet file. Without --format the format is detected from the file's content.
Missing feature columns get a stated default (elongation 0, intensity 0) and a one-line warning.

Writes OUT_DIR/detections.json and OUT_DIR/detections.npz (boxes cx, cy, cz, length, width,
height, heading in metres / radians; scores; labels and Waymo types), with --save-png a
bird's-eye-view picture per frame, with --out-submission the official metrics_pb2.Objects file.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
import detector  # noqa: E402,F401  (first: sets OMP_WAIT_POLICY before torch loads)
from detector.datasets.pointcloud_io import FORMATS  # noqa: E402  (numpy only: --help stays fast)


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(description=doc[0], epilog=doc[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="model config (python)")
    p.add_argument("checkpoint", help="trained weights of that config (strictly loaded)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="point cloud files")
    p.add_argument("--out-dir", default="work_dirs/infer",
                   help="where detections.json / .npz (and pictures) go (default: work_dirs/infer)")
    p.add_argument("--format", choices=FORMATS, help="input format (default: detect per file)")
    p.add_argument("--bin-columns", type=int, choices=(4, 5),
                   help="columns of a kitti-bin file (default: from the file size)")
    p.add_argument("--save-png", action="store_true",
                   help="also write OUT_DIR/<frame>_bev.png per frame")
    p.add_argument("--score-thr", type=float, default=0.3,
                   help="--save-png and the summary: detections scoring below this are not "
                        "drawn or counted (files keep all; default: 0.3)")
    p.add_argument("--out-submission", metavar="FILE.bin",
                   help="also write the detections as a metrics_pb2.Objects file (for "
                        "tools/waymo_eval.py; point clouds without a Waymo context get the "
                        "file name as context_name and timestamp 0)")
    p.add_argument("--lidars", type=int, nargs="+", metavar="ID",
                   help="Waymo inputs: lidars to decode, 1 = TOP .. 5 = REAR (default: all, as "
                        "tools/convert_waymo.py; the demo model was trained on TOP only: 1)")
    p.add_argument("--returns", type=int, nargs="+", choices=(1, 2), default=[1, 2],
                   help="Waymo inputs: returns to decode (default: 1 2; the demo model: 1)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return p


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    import warnings

    import numpy as np

    from detector.datasets.pointcloud_io import (PointCloudFormatError, detect_format,
                                                 read_point_frames)
    from detector.engine.inference import (CheckpointMismatchError, MissingFeatureWarning,
                                           inference_detector, init_detector)
    from detector.evaluation.detections_io import FrameDetections, write_detections
    from detector.structures import WAYMO_TYPES

    for path in args.inputs:
        if not Path(path).is_file():
            p.error(f"{path}: no such file")
        if args.format is None:  # fail before loading the model
            try:
                detect_format(path)
            except PointCloudFormatError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
    out_dir = Path(args.out_dir)
    try:
        model = init_detector(args.config, args.checkpoint, args.device)
    except (FileNotFoundError, ValueError, CheckpointMismatchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    classes = list(model.class_names)
    types = np.array([WAYMO_TYPES[c] for c in classes], np.int64)

    frames = []
    t0 = time.perf_counter()
    try:
        for path in args.inputs:
            for fr in read_point_frames(path, args.format, bin_columns=args.bin_columns,
                                        lidars=args.lidars, returns=args.returns):
                # the input's own warnings (a missing column, dropped points) are printed here,
                # one line each, whatever filters the caller's process has installed
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", MissingFeatureWarning)
                    warnings.simplefilter("always", RuntimeWarning)
                    det = inference_detector(model, fr.points, source=fr.name)
                for w in caught:
                    if issubclass(w.category, (MissingFeatureWarning, RuntimeWarning)):
                        print(f"warning: {w.message}", file=sys.stderr)
                    else:
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                boxes, scores = det.boxes.numpy(), det.scores.numpy()
                labels = det.labels.numpy().astype(np.int64)
                frames.append(FrameDetections(fr.name, boxes, scores, labels, types[labels],
                                              fr.context_name, fr.timestamp_micros))
                keep = scores >= args.score_thr
                print(f"{fr.name}: {len(fr.points)} points, {int(keep.sum())} detections >= "
                      f"{args.score_thr:g}" + (f" (best score {scores.max():.3f})" if len(scores)
                                               else ""))
                if args.save_png:
                    from detector.visualization.bev import plot_bev
                    png = out_dir / f"{_safe(fr.name)}_bev.png"
                    plot_bev(fr.points, np.zeros((0, 7), np.float32), boxes, scores, png,
                             score_thr=args.score_thr, title=fr.name)
                    print(f"  wrote {png}")
    except (FileNotFoundError, PointCloudFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    for suffix in ("json", "npz"):
        write_detections(out_dir / f"detections.{suffix}", frames, classes)
    n = sum(len(f["scores"]) for f in frames)
    print(f"{len(frames)} frame(s), {n} detections in {dt:.1f} s -> {out_dir / 'detections.json'}, "
          f"{out_dir / 'detections.npz'}")
    if args.out_submission:
        from detector.evaluation.waymo import write_objects
        sel = [np.full(len(f["scores"]), i) for i, f in enumerate(frames)]
        idx = np.concatenate(sel) if sel else np.zeros(0, int)
        Path(args.out_submission).parent.mkdir(parents=True, exist_ok=True)
        write_objects(args.out_submission, [frames[i]["context_name"] for i in idx],
                      np.array([frames[i]["timestamp_micros"] for i in idx], np.int64),
                      np.concatenate([f["boxes"] for f in frames] or [np.zeros((0, 7))]),
                      np.concatenate([f["types"] for f in frames] or [np.zeros(0, np.int64)]),
                      np.concatenate([f["scores"] for f in frames] or [np.zeros(0)]))
        print(f"submission ({n} objects) -> {args.out_submission}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
