"""Speed of ops.iou3d: BEV NMS on detector-like boxes and the IoU matrix kernel.

    .venv/bin/python tools/benchmarks/bench_iou3d.py --boxes 1000 --repeats 7

NMS: ``nms_bev`` (greedy, IoU computed lazily with a centre-distance early exit) against the
straightforward alternative of computing the full N x N BEV IoU matrix with the same kernel and
running the greedy pass over it in numpy. IoU matrix: the parallel Numba kernel against the
pure-Python reference on a 60 x 60 subset (per-pair time). Medians of --repeats runs, after a
warm-up call.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.iou3d import boxes_iou3d, boxes_iou3d_reference, boxes_iou_bev, nms_bev  # noqa: E402


def detector_like(rng, n):
    """n boxes around n/8 objects in a 150 m x 150 m scene, like a head's top-scoring output."""
    k = max(n // 8, 1)
    centres = np.column_stack([rng.uniform(-75, 75, (k, 2)), rng.normal(0, 1, k)])
    base = np.column_stack([centres, rng.uniform(1, 5, (k, 3)), rng.uniform(-np.pi, np.pi, k)])
    boxes = base[rng.integers(0, k, n)] + rng.normal(0, 0.4, (n, 7)) * [1, 1, 0.2, 0.2, 0.1, 0.1, 0.2]
    return boxes.astype(np.float32), rng.random(n).astype(np.float32)


def full_matrix_nms(boxes, scores, thr):
    order = np.argsort(-scores, kind="stable")
    iou = boxes_iou_bev(boxes[order], boxes[order])
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(order[i])
            suppressed |= iou[i] > thr
    return np.array(keep, np.int64)


def timeit(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--boxes", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for n in args.boxes:
        boxes, scores = detector_like(rng, n)
        assert np.array_equal(nms_bev(boxes, scores, 0.1), full_matrix_nms(boxes, scores, 0.1))
        t_ours = timeit(lambda: nms_bev(boxes, scores, 0.1), args.repeats)
        t_full = timeit(lambda: full_matrix_nms(boxes, scores, 0.1), args.repeats)
        print(f"nms_bev   N={n:5d}: ours {t_ours * 1e3:8.2f} ms  full-matrix {t_full * 1e3:8.2f} ms  "
              f"ratio {t_full / t_ours:5.1f}x  (kept {len(nms_bev(boxes, scores, 0.1))})", flush=True)
        t_mat = timeit(lambda: boxes_iou3d(boxes, boxes), args.repeats)
        print(f"iou3d     {n} x {n}: {t_mat * 1e3:8.2f} ms ({t_mat / n / n * 1e9:6.1f} ns/pair)", flush=True)
    a, b = detector_like(rng, 60)[0], detector_like(rng, 60)[0]
    t_ref = timeit(lambda: boxes_iou3d_reference(a, b), 3)
    t_fast = timeit(lambda: boxes_iou3d(a, b), args.repeats)
    print(f"iou3d 60 x 60: kernel {t_fast * 1e6:8.1f} us  reference {t_ref * 1e3:8.1f} ms  "
          f"ratio {t_ref / t_fast:7.0f}x")


if __name__ == "__main__":
    main()
