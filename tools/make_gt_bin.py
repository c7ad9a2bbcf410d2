#!/usr/bin/env python
"""Write the official ground-truth file (metrics_pb2.Objects) of a converted split.

    python tools/make_gt_bin.py CONVERTED_ROOT --split val [--out gt.bin]
                                [--range XMIN YMIN ZMIN XMAX YMAX ZMAX] [--types VEHICLE ...]

One Object per label with its box, type, detection_difficulty_level and
num_lidar_points_in_box, keyed by context_name and frame_timestamp_micros, exactly what the
official compute_detection_metrics_main (and tools/waymo_eval.py) reads as ground truth. Any two
submissions of the split can then be scored the official way: tools/waymo_eval.py pred.bin gt.bin.
--range keeps the labels whose BEV centre lies inside (a dataset's eval_range / a model's
point_cloud_range, as the test loop scores them); --types keeps the named types only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TYPE_NAMES = ("VEHICLE", "PEDESTRIAN", "SIGN", "CYCLIST")


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(description=doc[0], epilog=doc[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", metavar="CONVERTED_ROOT", help="output folder of tools/convert_waymo.py")
    p.add_argument("--split", default="val", help="split to write (default: val)")
    p.add_argument("--out", help="output file (default: CONVERTED_ROOT/<split>_gt.bin)")
    p.add_argument("--range", type=float, nargs=6, metavar=("XMIN", "YMIN", "ZMIN", "XMAX", "YMAX",
                                                           "ZMAX"),
                   help="keep labels whose BEV centre is in [XMIN, XMAX) x [YMIN, YMAX)")
    p.add_argument("--types", nargs="+", choices=TYPE_NAMES,
                   help="keep labels of these types only (default: all labelled types)")
    return p


def ground_truth_objects(records, eval_range=None, types=None):
    """A ``metrics_pb2.Objects`` of the labels of ``records`` (converted ``FrameRecord``-s)."""
    import numpy as np
    from waymo_open_dataset.protos import metrics_pb2

    objs = metrics_pb2.Objects()
    wanted = None if types is None else set(int(t) for t in types)
    for rec in records:
        boxes = np.asarray(rec.boxes, np.float64).reshape(-1, 7)
        keep = np.ones(len(boxes), bool)
        if eval_range is not None:
            r = eval_range
            keep &= (boxes[:, 0] >= r[0]) & (boxes[:, 0] < r[3]) & (boxes[:, 1] >= r[1]) \
                & (boxes[:, 1] < r[4])
        if wanted is not None:
            keep &= np.isin(np.asarray(rec.types, np.int64), list(wanted))
        for i in np.flatnonzero(keep):
            o = objs.objects.add()
            o.context_name = str(rec.context_name)
            o.frame_timestamp_micros = int(rec.timestamp_micros)
            lab = o.object
            b = lab.box
            (b.center_x, b.center_y, b.center_z, b.length, b.width, b.height,
             b.heading) = boxes[i].tolist()
            lab.type = int(rec.types[i])
            lab.detection_difficulty_level = int(rec.difficulty[i])
            lab.num_lidar_points_in_box = int(rec.num_points_in_box[i])
            if rec.ids:
                lab.id = str(rec.ids[i])
    return objs


def write_gt_bin(root, split: str, out, eval_range=None, types=None) -> tuple[int, int]:
    """Write the ground truth of ``root``/``split`` to ``out`` (atomically); returns
    (number of objects, number of frames)."""
    from detector.datasets.converted import load_index
    from detector.structures import WAYMO_TYPES

    records = load_index(root, split)
    if not records:
        raise ValueError(f"{Path(root) / split}: no converted frames")
    codes = None if types is None else [WAYMO_TYPES[t] for t in types]
    objs = ground_truth_objects(records, eval_range, codes)
    from detector.fileio import atomic_write_bytes

    out = Path(out)
    atomic_write_bytes(out, objs.SerializeToString())
    return len(objs.objects), len(records)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or str(Path(args.root) / f"{args.split}_gt.bin")
    try:
        n, frames = write_gt_bin(args.root, args.split, out, args.range, args.types)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    where = "" if args.range is None else (f", BEV centre in x [{args.range[0]:g}, "
                                           f"{args.range[3]:g}) y [{args.range[1]:g}, "
                                           f"{args.range[4]:g})")
    print(f"wrote {out}: {n} ground-truth objects of {frames} frames "
          f"({args.root}/{args.split}{where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
