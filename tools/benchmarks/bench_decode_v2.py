#!/usr/bin/env python
"""Benchmark: Waymo v2 (Parquet) decode against v1 (TFRecord) decode, and the peak memory of
converting one long segment from either (docs/benchmarks/v2.md).

1. Decode: the same full five-lidar, two-return synthetic frames (the project's generator) as a
   v1 TFRecord and as a v2 split (the project's v2 writer, one row group per frame, as the
   official pyarrow writer leaves them), decoded into ``DecodedFrame``s: ``read_tfrecord`` +
   ``decode_frame`` against ``iter_v2_frames`` (file reading included on both sides, warm page
   cache). Medians of ``--repeat`` runs; the points are checked equal.
2. Peak memory: a ``--segment-frames``-frame segment (the decode frames repeated with their own
   timestamps; the per-frame work is unchanged) is converted with ``convert()`` (what
   ``tools/convert_waymo.py`` calls) in a fresh process, once from v1 and once from v2; the
   child reports its peak RSS (``VmHWM``; Linux). Also the converter's wall time and the two outputs' byte identity.

    python tools/benchmarks/bench_decode_v2.py [--frames 3] [--repeat 3] [--segment-frames 200]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_decode import synthetic_frames  # noqa: E402
from detector.datasets.waymo import decode_frame, read_tfrecord, write_tfrecord  # noqa: E402
from detector.datasets.waymo.frame import parse_frame  # noqa: E402
from detector.datasets.waymo.parquet import iter_v2_frames  # noqa: E402
from detector.testing.waymo_v2 import write_v2_segment  # noqa: E402

_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from detector.datasets.waymo.conversion import convert
t = time.perf_counter()
s = convert([sys.argv[2]], sys.argv[3], "train", progress=False, log=None)
# VmHWM, not ru_maxrss: the latter survives exec and would report the parent's size
hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
print(json.dumps({"ok": s.ok, "frames": s.frames, "seconds": time.perf_counter() - t,
                  "maxrss_mib": hwm / 1024}))
"""


def _du(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2 ** 20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--segment-frames", type=int, default=200,
                    help="frames of the segment converted for the memory figure (0: skip)")
    ap.add_argument("--cache", default=str(REPO / "work_dirs" / "bench_decode_cache"))
    args = ap.parse_args(argv)

    frames = synthetic_frames(args.frames, Path(args.cache))
    ctx = parse_frame(frames[0]).context.name
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        v1 = tmp / "v1" / f"{ctx}.tfrecord"
        v1.parent.mkdir()
        write_tfrecord(v1, frames)
        v2 = tmp / "v2"
        write_v2_segment(v2, frames)
        # warm-up (JIT, geometry cache, page cache), then the equality check
        ref = [decode_frame(r) for r in read_tfrecord(v1)]
        got = list(iter_v2_frames(v2, ctx))
        assert len(ref) == len(got)
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a.points, b.points)
            np.testing.assert_array_equal(a.boxes, b.boxes)
        t1, t2 = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            for r in read_tfrecord(v1):
                decode_frame(r)
            t1.append(time.perf_counter() - t)
            t = time.perf_counter()
            for _f in iter_v2_frames(v2, ctx):
                pass
            t2.append(time.perf_counter() - t)
        n = len(frames)
        pts = sum(len(d.points) for d in ref) / n
        print(f"{n} synthetic frames ({pts:.0f} points/frame), v1 {v1.stat().st_size / 2**20:.1f}"
              f" MiB, v2 {_du(v2):.1f} MiB; median of {args.repeat}:")
        print(f"  v1 read_tfrecord + decode_frame: {n / statistics.median(t1):6.2f} frames/s")
        print(f"  v2 iter_v2_frames (pyarrow)    : {n / statistics.median(t2):6.2f} frames/s")

        if args.segment_frames:
            nseg = args.segment_frames
            long_frames = []
            for i in range(nseg):
                f = parse_frame(frames[i % n])
                f.timestamp_micros = 1_600_000_000_000_000 + 100_000 * i
                long_frames.append(f.SerializeToString())
            lv1 = tmp / "long_v1" / f"{ctx}.tfrecord"
            lv1.parent.mkdir()
            write_tfrecord(lv1, long_frames)
            lv2 = tmp / "long_v2"
            write_v2_segment(lv2, iter(long_frames))
            del long_frames
            print(f"{nseg}-frame segment: v1 {lv1.stat().st_size / 2**20:.0f} MiB, v2 "
                  f"{_du(lv2):.0f} MiB")
            outs = {}
            for name, src in (("v1", lv1.parent), ("v2", lv2)):
                out = tmp / f"out_{name}"
                p = subprocess.run([sys.executable, "-c", _CHILD, str(REPO), str(src), str(out)],
                                   capture_output=True, text=True, check=True)
                r = json.loads(p.stdout.strip().splitlines()[-1])
                outs[name] = out
                print(f"  convert from {name}: {r['frames']} frames in {r['seconds']:.1f} s "
                      f"({r['frames'] / r['seconds']:.2f} frames/s), peak RSS "
                      f"{r['maxrss_mib']:.0f} MiB, ok={r['ok']}")
            same = all((outs["v1"] / "train/segments" / p.relative_to(
                outs["v2"] / "train/segments")).read_bytes() == p.read_bytes()
                for p in (outs["v2"] / "train/segments").rglob("*") if p.is_file())
            print(f"  converted segment files byte-identical: {same}")
            shutil.rmtree(tmp / "out_v1", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
