#!/usr/bin/env python
"""Benchmark of the synthetic Waymo generator (detector/datasets/synthetic).

Every number is a median over ``--repeat`` runs, next to the alternative measured in the same
run:

1. ray casting, one full TOP sweep (64 x 2650 rays) of a default scene: the Numba kernel with
   its 2D grid vs the same kernel with the grid collapsed to one cell (every ray tests every box:
   brute force), with 1 vs all Numba threads; and rays/s of the pure-Python reference on a
   subset;
2. ``MatrixFloat`` serialization of a TOP range image: hand-written encoder vs protobuf;
3. zlib level 1 vs 6 on one frame's eleven images (time and size);
4. whole segments: ``generate_segment`` of ``--frames`` frames, wall and CPU seconds;
5. CPU seconds per frame by stage (ray casting, labels, Frame assembly + zlib), and points per
   frame.

    python tools/benchmarks/bench_synthetic.py [--repeat 3] [--frames 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numba  # noqa: E402
import numpy as np  # noqa: E402
from waymo_open_dataset import dataset_pb2  # noqa: E402

from detector.datasets.synthetic import SceneConfig, generate_segment  # noqa: E402
from detector.datasets.synthetic import calibration as cal  # noqa: E402
from detector.datasets.synthetic import raycast as rc  # noqa: E402
from detector.datasets.synthetic.frame_proto import build_frame, encode_matrix_float  # noqa: E402
from detector.datasets.synthetic.generator import plan_segment  # noqa: E402
from detector.datasets.synthetic.labels import make_labels  # noqa: E402
from detector.datasets.synthetic.lidar import _top_columns, render_frame  # noqa: E402


def timed(fn, repeat):
    walls, cpus = [], []
    for _ in range(repeat):
        c, t = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def top_rays(plan):
    """The TOP lidar's rays of frame 0 (local world frame), unblocked pixels only."""
    sc = plan.scene
    _, col_R, col_t = _top_columns(sc, 0.0, plan.global_frame, sc.config.sweep_time)
    E = cal.LIDARS[cal.TOP].extrinsic_matrix
    ok = ~cal.ego_blocked(cal.TOP)
    rows, cols = np.nonzero(ok)
    vd = cal.vehicle_directions(cal.TOP)[rows, cols]
    R = col_R[cols]
    orig = np.einsum("nij,j->ni", R, E[:3, 3]) + col_t[cols]
    dirs = np.einsum("nij,nj->ni", R, vd)
    return np.ascontiguousarray(orig), np.ascontiguousarray(dirs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--segments", type=int, default=2)
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, numba {numba.__version__}, "
          f"{numba.config.NUMBA_NUM_THREADS} threads, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    # -- 1. ray casting -----------------------------------------------------------------------
    plan = plan_segment(0, 1)
    sc = plan.scene
    prims, mats, _ = sc.primitives(0.0)
    orig, dirs = top_rays(plan)
    gp, road = sc.ground.params, sc.ground.road
    params = rc.sensor_params()
    grid = rc.build_grid(prims, sc.config.grid_cell)
    one_cell = rc.build_grid(prims, 1e5)
    key = np.uint64(1)

    def cast(g):
        return rc.cast_rays(orig, dirs, 75.0, key, prims, mats, *g, gp, road, params)

    cast(grid), cast(one_cell)  # compile / load from cache
    assert np.array_equal(cast(grid), cast(one_cell))  # same answers, only the speed differs
    n = len(orig)
    print(f"\n[1] ray casting: one TOP sweep, {n} rays, {len(prims)} boxes "
          f"(grid {grid[1]} x {grid[2]} cells of {sc.config.grid_cell} m)")
    threads = numba.get_num_threads()
    res = {}
    for th in sorted({1, threads}):
        numba.set_num_threads(th)
        res[("grid", th)] = timed(lambda: cast(grid), a.repeat)
        res[("brute", th)] = timed(lambda: cast(one_cell), max(1, a.repeat // 2 + 1))
    numba.set_num_threads(threads)
    for (kind, th), (w, c) in res.items():
        print(f"  numba {kind:5s} {th} thread(s): {w * 1e3:8.1f} ms wall, {c * 1e3:8.1f} ms CPU, "
              f"{n / w / 1e6:6.2f} Mrays/s")
    print(f"  grid vs brute force ({threads} threads): "
          f"{res[('brute', threads)][0] / res[('grid', threads)][0]:.1f}x faster")
    if threads > 1:
        print(f"  {threads} threads vs 1 (grid): "
              f"{res[('grid', 1)][0] / res[('grid', threads)][0]:.2f}x faster")
    sub = slice(0, n, max(1, n // 150))
    w_ref, _ = timed(lambda: rc.cast_rays_reference(orig[sub], dirs[sub], 75.0, prims, gp,
                                                    0.0025, 0.3), 1)
    n_sub = len(orig[sub])
    print(f"  python reference: {n_sub / w_ref:8.0f} rays/s -> the kernel is "
          f"{(n / res[('grid', threads)][0]) / (n_sub / w_ref):.0f}x faster")

    # -- 2. MatrixFloat encoding -----------------------------------------------------------------
    rf = render_frame(sc, 0.0, plan.global_frame, plan.frame_rng(0))
    img = rf.lidars[cal.TOP].range_image1

    def proto_encode():
        m = dataset_pb2.MatrixFloat()
        m.data.extend(img.reshape(-1))
        m.shape.dims.extend(img.shape)
        return m.SerializeToString()

    assert proto_encode() == encode_matrix_float(img)
    w_own, _ = timed(lambda: encode_matrix_float(img), a.repeat)
    w_pb, _ = timed(proto_encode, a.repeat)
    print(f"\n[2] MatrixFloat of a {img.shape} range image: own encoder {w_own * 1e3:.1f} ms, "
          f"protobuf {w_pb * 1e3:.1f} ms -> {w_pb / w_own:.0f}x faster (identical bytes)")

    # -- 3. zlib level -------------------------------------------------------------------------
    blobs = []
    for li in rf.lidars.values():
        blobs += [encode_matrix_float(li.range_image1), encode_matrix_float(li.range_image2)]
        if li.pixel_pose is not None:
            blobs.append(encode_matrix_float(li.pixel_pose))
    raw = sum(len(b) for b in blobs)
    print(f"\n[3] zlib on one frame's {len(blobs)} images ({raw / 1e6:.1f} MB raw), one thread:")
    for level in (1, 6):
        w, _ = timed(lambda: [zlib.compress(b, level) for b in blobs], a.repeat)
        size = sum(len(zlib.compress(b, level)) for b in blobs)
        print(f"  level {level}: {w * 1e3:7.1f} ms, {size / 1e6:.2f} MB")

    # -- 4. whole segments ------------------------------------------------------------------------
    print(f"\n[4] generate_segment, default scene, {a.frames} frames, {a.segments} seeds:")
    with tempfile.TemporaryDirectory() as tmp:
        walls, cpus = [], []
        for seed in range(a.segments):
            c, t = time.process_time(), time.perf_counter()
            p = generate_segment(tmp, seed, a.frames, SceneConfig())
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            print(f"  seed {seed}: {walls[-1]:.1f} s wall, {cpus[-1]:.1f} s CPU, "
                  f"{p.stat().st_size / 1e6:.0f} MB")
        print(f"  median {statistics.median(walls):.1f} s wall "
              f"({statistics.median(walls) / a.frames:.2f} s/frame), "
              f"{statistics.median(cpus):.1f} s CPU")
    # -- 5. where a frame's CPU time goes -----------------------------------------------------
    plan5 = plan_segment(0, 6)
    stages = {"ray casting (render_frame)": [], "labels (make_labels)": [],
              "Frame assembly + zlib (build_frame)": []}
    for k in range(plan5.num_frames):
        t = k * plan5.config.frame_dt
        c = time.process_time()
        r = render_frame(plan5.scene, t, plan5.global_frame, plan5.frame_rng(k))
        c1 = time.process_time()
        pts_all = np.concatenate([li.points for li in r.lidars.values()])
        labs = make_labels(plan5.scene, t, r.pose_local, pts_all, r.lidars[cal.TOP].points)
        c2 = time.process_time()
        build_frame(r, labs, plan5.context_name, 0, plan5.config.zlib_level)
        c3 = time.process_time()
        if k:  # frame 0 loads the Numba cache
            for name, v in zip(stages, (c1 - c, c2 - c1, c3 - c2)):
                stages[name].append(v)
    print(f"\n[5] CPU seconds per frame by stage (median of {plan5.num_frames - 1} frames):")
    for name, v in stages.items():
        print(f"  {name:38s} {statistics.median(v):.3f} s")
    pts = {name: int((li.range_image1[..., 0] > 0).sum()) for name, li in rf.lidars.items()}
    pts2 = {name: int((li.range_image2[..., 0] > 0).sum()) for name, li in rf.lidars.items()}
    print(f"  frame 0 of seed 0, return-1 points per lidar {pts}, return-2 {pts2}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
