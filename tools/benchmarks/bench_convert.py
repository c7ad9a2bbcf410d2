#!/usr/bin/env python
"""Benchmark: conversion throughput (frames/s) with 1 and 2 worker processes
(docs/benchmarks/data.md).

Input: ``--segments`` segment files, each holding the same ``--frames`` full synthetic frames
(the project's generator; copying frames keeps the set-up short, the conversion work per frame
is unchanged). Each run converts into a fresh output root with ``convert()`` (what
``tools/convert_waymo.py`` calls); wall time includes starting the worker processes. Medians of
``--repeat`` runs, workers=1 and workers=2 alternating in the same run.

    python tools/benchmarks/bench_convert.py [--segments 4] [--frames 3] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_decode import synthetic_frames  # noqa: E402
from detector.datasets.waymo import write_tfrecord  # noqa: E402
from detector.datasets.waymo.conversion import convert  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", default=str(REPO / "work_dirs" / "bench_cache" / "decode"))
    args = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          "(other engineers share it)")
    frames = synthetic_frames(args.frames, Path(args.cache))
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in"
        for s in range(args.segments):
            write_tfrecord(inp / f"segment-{s:03d}.tfrecord", frames)
        total = args.segments * len(frames)
        print(f"input: {args.segments} segments x {len(frames)} frames = {total} frames")
        rates = {1: [], 2: []}
        for rep in range(args.repeat):
            for w in (1, 2):
                out = Path(tmp) / f"out_{w}_{rep}"
                summ = convert([inp], out, "train", workers=w, progress=False, log=None)
                assert summ.ok and summ.frames == total, summ.table()
                rates[w].append(summ.frames_per_s)
                shutil.rmtree(out)
        for w in (1, 2):
            print(f"workers={w}: median {statistics.median(rates[w]):.2f} frames/s "
                  f"(runs: {', '.join(f'{x:.2f}' for x in rates[w])})")
        print(f"speed-up 2 vs 1 workers: {statistics.median(rates[2]) / statistics.median(rates[1]):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
