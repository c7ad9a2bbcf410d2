#!/usr/bin/env python
"""Convert Waymo segments (v1 TFRecords or v2 Parquet; real or synthetic) to the converted format.

    python tools/convert_waymo.py INPUT [INPUT ...] --out ROOT --split train|val [--workers N]
        [--format v1|v2] [--shard i/n] [--sampled-interval k] [--returns 1 2]
        [--lidars TOP FRONT SIDE_LEFT SIDE_RIGHT REAR] [--verify] [--no-progress]

INPUT: .tfrecord files or folders of them (v1), or v2 split folders (``<dir>/lidar/*.parquet``,
``<dir>/vehicle_pose/...``, as the release lays them out); ``--format`` is detected from the
layout when not given. Both give the same converted bytes. Output layout:
``detector/datasets/converted.py``.
Resumable (completed segments are skipped) and atomic per segment; exit status 0 if everything
converted cleanly, 1 if any record was skipped as corrupt or a segment failed, 2 on bad usage.
Library use: ``from tools.convert_waymo import convert`` (same as
``detector.datasets.waymo.conversion.convert``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.datasets.waymo.conversion import ConversionSummary, convert  # noqa: E402,F401


def _shard(s: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in s.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like i/n, got {s!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {s}: need 0 <= i < n")
    return i, n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="+",
                    help=".tfrecord files or folders of them, or Waymo v2 split folders")
    ap.add_argument("--format", choices=["v1", "v2"], default=None,
                    help="input format (default: detected from the folder layout)")
    ap.add_argument("--out", required=True, help="output root")
    ap.add_argument("--split", required=True, help="split name, e.g. train or val")
    ap.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--shard", type=_shard, default=None,
                    help="i/n: convert only segments i, i+n, ... (0-based) of the sorted list")
    ap.add_argument("--sampled-interval", type=int, default=1,
                    help="keep frames whose record index is a multiple of k")
    ap.add_argument("--returns", type=int, nargs="+", default=[1, 2], choices=[1, 2],
                    help="lidar returns to keep (default: 1 2)")
    ap.add_argument("--lidars", nargs="+", default=None,
                    choices=["TOP", "FRONT", "SIDE_LEFT", "SIDE_RIGHT", "REAR"],
                    help="lidars to keep (default: all five)")
    ap.add_argument("--verify", action="store_true",
                    help="re-hash completed segments before trusting them")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        summary = convert(args.inputs, args.out, args.split, workers=args.workers,
                          shard=args.shard, sampled_interval=args.sampled_interval,
                          returns=args.returns, lidars=args.lidars,
                          progress=not args.no_progress, verify=args.verify,
                          format=args.format)
    except (FileNotFoundError, ValueError) as e:
        print(f"convert_waymo: error: {e}", file=sys.stderr)
        return 2
    print(summary.table())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
