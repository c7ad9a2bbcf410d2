"""What the synthetic generator's scenes hold, and what a frame costs: label rates per class,
box sizes, vehicle headings relative to the street axes, CPU seconds per frame.

    python tools/benchmarks/bench_synthetic_scenes.py [--segments 6] [--frames 3] [--seed 0]

Each segment is one default scene (``SceneConfig()``, 260 m of road); the statistics are over the
labelled boxes (centre within 75 m of the ego) of every rendered frame. The cost is process CPU
time (all threads) of ``plan_segment`` + rendering + labelling + ``Frame`` assembly, divided by the
number of frames; the first segment also pays Numba's cache load and is left out of the cost.
Only the generator's public API is used, so the script runs unchanged on older versions.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from detector.datasets.synthetic import SceneConfig  # noqa: E402
from detector.datasets.synthetic.generator import (plan_segment,  # noqa: E402
                                                   render_segment_frames, segment_seed)

NAMES = {1: "VEHICLE", 2: "PEDESTRIAN", 3: "SIGN", 4: "CYCLIST"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segments", type=int, default=6)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"{args.segments} default scenes x {args.frames} frames, seed {args.seed}")
    boxes, types, npts, cost = [], [], [], []
    frames_per_segment = []
    for i in range(args.segments):
        c0 = time.process_time()
        plan = plan_segment(segment_seed(args.seed, i), args.frames, SceneConfig())
        n = 0
        for _data, _rendered, labels in render_segment_frames(plan, with_debug=True):
            boxes.append(labels.boxes)
            types.append(labels.types)
            npts.append(labels.num_points)
            n += 1
        frames_per_segment.append(n)
        if i > 0:
            cost.append((time.process_time() - c0) / n)
    b, t, p = np.concatenate(boxes), np.concatenate(types), np.concatenate(npts)
    nf = sum(frames_per_segment)
    print(f"\nlabelled boxes per frame (centre within 75 m), {nf} frames")
    print("| class | per frame | with >= 1 point | LEVEL_2 (<= 5 points) share | "
          "median length x width x height (m) |")
    print("|---|---|---|---|---|")
    for k in (1, 2, 4, 3):
        m = t == k
        if not m.any():
            print(f"| {NAMES[k]} | 0 | 0 | - | - |")
            continue
        med = np.median(b[m, 3:6], axis=0)
        print(f"| {NAMES[k]} | {m.sum() / nf:.1f} | {(m & (p > 0)).sum() / nf:.1f} | "
              f"{(p[m] <= 5).mean():.2f} | {med[0]:.2f} x {med[1]:.2f} x {med[2]:.2f} |")
    v = t == 1
    # Headings in the frame's vehicle axes; the ego drives along the main road, so the street
    # axes are the multiples of 90 degrees up to the ego's small drift. (Written out rather than
    # detector.conventions.angle_to_axes, which older versions lack: see the docstring.)
    off = np.degrees(np.abs((b[v, 6] + math.pi / 4) % (math.pi / 2) - math.pi / 4))
    print("\nvehicle headings: angle to the nearest street axis (degrees)")
    edges = [0, 1, 3, 10, 30, 45.01]
    hist = np.histogram(off, bins=edges)[0] / max(1, len(off))
    print("| " + " | ".join(f"{a:g}-{min(c, 45):g}" for a, c in zip(edges[:-1], edges[1:])) + " |")
    print("|" + "---|" * (len(edges) - 1))
    print("| " + " | ".join(f"{h:.3f}" for h in hist) + " |")
    lengths = b[v, 3]
    print(f"\nvehicle lengths: p10 {np.percentile(lengths, 10):.2f}, median "
          f"{np.median(lengths):.2f}, p90 {np.percentile(lengths, 90):.2f}, max {lengths.max():.2f} m;"
          f" share longer than 6 m {(lengths > 6).mean():.3f}")
    if cost:
        print(f"\ngenerator CPU seconds per frame (segments 2..{args.segments}): median "
              f"{np.median(cost):.3f} s, mean {np.mean(cost):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
