"""Wall time of our Waymo detection metric vs the official op, same synthetic data, same run.

    .venv/bin/python tools/benchmarks/bench_metrics.py --frames 200 2000 20000 --repeats 3

Data: detector.testing.metric_data.random_dataset (about 30 ground truths and 60
predictions per frame, all four types), ground truth prepared the official way. The official op
(py_metrics_ops.detection_metrics) runs in .venv-waymo-official through tests/oracle.py; its
time is measured inside that process around the op call only (TensorFlow start-up excluded).
Ours is timed after one warm-up call (Numba cache load). Prints medians and the max |AP|/|APH|
difference over all breakdowns.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from detector.evaluation.waymo import compute_detection_metrics  # noqa: E402
from detector.testing.metric_data import prepared, random_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, nargs="+", default=[200, 2000, 20000])
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side per size (median)")
    ap.add_argument("--official-repeats", type=int, default=None,
                    help="runs of the official op per size (default: --repeats, 1 above 5000 frames)")
    ap.add_argument("--no-official", action="store_true")
    args = ap.parse_args()
    from oracle import oracle_available, run_oracle
    import numba
    print(f"numba threads: {numba.get_num_threads()}")
    warm = prepared(random_dataset(np.random.default_rng(1), 3))
    compute_detection_metrics(**warm)
    for n in args.frames:
        d = prepared(random_dataset(np.random.default_rng(n), n_frames=n, gt_per_frame=36,
                                    fp_per_frame=20, copies_per_gt=1.1))
        ours_t = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = compute_detection_metrics(**d)
            ours_t.append(time.perf_counter() - t0)
        line = (f"frames {n:6d}  predictions {len(d['pred_boxes']):8d}  ground truths "
                f"{len(d['gt_boxes']):7d}  ours {statistics.median(ours_t):7.3f} s "
                f"(runs {', '.join(f'{t:.3f}' for t in ours_t)})")
        if not args.no_official and oracle_available():
            reps = args.official_repeats or (1 if n > 5000 else args.repeats)
            inp = {"n_datasets": reps}
            for i in range(reps):
                inp.update({f"{i}/{k}": v for k, v in d.items()})
            out = run_oracle("oracle_scripts/metrics.py", inp, timeout=3600)
            off_t = [float(out[f"{i}/seconds"]) for i in range(reps)]
            names = [str(x) for x in out["0/names"]]
            dap = max(abs(res[k]["AP"] - float(a)) for k, a in zip(names, out["0/ap"]))
            daph = max(abs(res[k]["APH"] - float(a)) for k, a in zip(names, out["0/aph"]))
            med = statistics.median(off_t)
            line += (f"  official {med:7.3f} s (runs {', '.join(f'{t:.3f}' for t in off_t)})"
                     f"  speed-up {med / statistics.median(ours_t):6.1f}x"
                     f"  max|dAP| {dap:.1e} max|dAPH| {daph:.1e}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
