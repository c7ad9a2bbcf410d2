#!/usr/bin/env python
"""Benchmark off-screen rendering of one synthetic LiDAR frame (docs/benchmarks/visualization.md).

    python tools/benchmarks/bench_visualization.py [--repeats 5] [--width 1280 --height 720]

Measures, interleaved so machine load hits both sides alike, medians of ``--repeats`` runs:
1. nearest-point-per-pixel culling: Numba kernel vs the NumPy reference (sort by depth);
2. ``render_frame`` with culling vs without (all points sent to Open3D), chase and top views;
3. keeping the off-screen renderer between frames vs creating a new one for every frame;
4. anti-aliasing off vs on.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _median_pair(fa, fb, repeats: int) -> tuple[float, float]:
    ta, tb = [], []
    for _ in range(repeats):
        for f, acc in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    import os
    os.environ.pop("DISPLAY", None)
    from detector.datasets.synthetic import generate_segment
    from detector.visualization.culling import (nearest_point_per_pixel,
                                                nearest_point_per_pixel_reference)
    from detector.visualization.geometry import make_camera
    from detector.visualization.render import release_renderers, render_frame
    from detector.visualization.sources import open_frames

    with tempfile.TemporaryDirectory() as tmp:
        path = generate_segment(tmp, seed=args.seed, num_frames=1, split="val")
        frame = open_frames(path).load(0)
    pts, w, h = frame.points, args.width, args.height
    print(f"synthetic frame: {len(pts)} points, {len(frame.gt_boxes)} boxes; image {w}x{h}; "
          f"median of {args.repeats}")

    rows = []
    for view in ("chase", "bev"):
        cam = make_camera(view, w, h)
        nearest_point_per_pixel(pts, cam)        # compile / load the cached kernel
        kept = len(nearest_point_per_pixel(pts, cam))
        fast, ref = _median_pair(lambda: nearest_point_per_pixel(pts, cam),
                                 lambda: nearest_point_per_pixel_reference(pts, cam),
                                 args.repeats)
        rows.append((f"cull {view} ({len(pts)} -> {kept} points)", "numba", fast,
                     "numpy reference", ref))

    def render(view, cull):
        return lambda: render_frame(pts, frame.gt_boxes, frame.gt_types, view=view, width=w,
                                    height=h, cull=cull)
    render("chase", True)()                          # start the engine once
    for view in ("chase", "bev"):
        a, b = _median_pair(render(view, True), render(view, False), args.repeats)
        rows.append((f"render_frame {view}", "culled", a, "all points", b))

    def fresh():
        release_renderers()
        render("chase", True)()
    a, b = _median_pair(render("chase", True), fresh, args.repeats)
    rows.append(("render_frame chase", "renderer kept", a, "new renderer", b))

    def no_aa():
        render_frame(pts, frame.gt_boxes, frame.gt_types, view="chase", width=w, height=h,
                     antialias=False)
    a, b = _median_pair(no_aa, render("chase", True), args.repeats)
    rows.append(("render_frame chase (culled)", "antialias off", a, "antialias on", b))

    print(f"{'what':44s} {'A':>15s} {'s':>8s} {'B':>16s} {'s':>8s} {'B/A':>6s}")
    for what, na, ta, nb, tb in rows:
        print(f"{what:44s} {na:>15s} {ta:8.3f} {nb:>16s} {tb:8.3f} {tb / ta:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
