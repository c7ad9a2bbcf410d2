#!/usr/bin/env python
"""Write synthetic Waymo segments (real ``Frame`` TFRecords from a ray-cast lidar).

    python tools/make_synthetic.py --out DIR [--segments N] [--frames F] [--seed S] [--workers W]
                                   [--split NAME]

Each segment is ``DIR/segment-<19 digits>_<4>_<3>_<4>_<3>_with_camera_labels.tfrecord``; the same
arguments always give byte-identical files (see ``detector/datasets/synthetic``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.datasets.synthetic import generate_dataset  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    ap.add_argument("--segments", type=int, default=1, help="number of segments (default 1)")
    ap.add_argument("--frames", type=int, default=20, help="frames per segment, 10 Hz (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    ap.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    ap.add_argument("--split", default="train", help="split name mixed into the seeds (default train)")
    a = ap.parse_args(argv)
    for name in ("segments", "frames", "workers"):
        if getattr(a, name) < (0 if name == "segments" else 1):
            ap.error(f"--{name} must be >= {0 if name == 'segments' else 1}, got {getattr(a, name)}")
    if a.seed < 0:
        ap.error(f"--seed must be >= 0, got {a.seed}")
    t0 = time.perf_counter()

    def report(path: Path, seconds: float) -> None:
        size = path.stat().st_size / 1e6
        print(f"{path}  ({a.frames} frames, {size:.1f} MB, {seconds:.1f} s)", flush=True)

    paths = generate_dataset(a.out, a.segments, a.frames, a.seed, a.split, workers=a.workers,
                             progress=report)
    print(f"wrote {len(paths)} segment(s) to {a.out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
