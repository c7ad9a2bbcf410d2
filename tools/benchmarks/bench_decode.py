#!/usr/bin/env python
"""Benchmark: Waymo frame decoding and TFRecord reading (docs/benchmarks/data.md).

1. Decode throughput of full five-lidar, two-return synthetic frames (the project's generator,
   ``detector.datasets.synthetic``): ours (``decode_frame``: inflate + parse + points + labels)
   vs the official TF ``frame_utils`` path in the oracle venv (.venv-waymo-official), same
   frames, same run. Official time is reported two ways: the TF conversion alone
   (``convert_range_image_to_cartesian`` + gather, both returns; a lower bound of its cost) and
   conversion + range-image parsing (inflate + ``MatrixFloat`` parse with the fast protobuf
   backend; the official ``parse_range_image_and_camera_projection`` needs the pure-python
   backend and is ~100x slower still, see ``--official-parse``).
2. TFRecord read throughput (MB/s) of ``read_tfrecord`` (both CRCs checked) vs reading the same
   records without any CRC (and vs a plain chunked read of the file), warm page cache, same run.

Medians of repeated runs. Usage::

    python tools/benchmarks/bench_decode.py [--frames 3] [--repeat 5] [--official-parse]
"""
from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from detector.datasets.waymo import decode_frame, read_tfrecord, write_tfrecord  # noqa: E402


def synthetic_frames(n: int, cache: Path) -> list[bytes]:
    cache.mkdir(parents=True, exist_ok=True)
    files = sorted(cache.glob("*.tfrecord"))
    if files:
        recs = list(read_tfrecord(files[0]))
        if len(recs) >= n:
            return recs[:n]
    from detector.datasets.synthetic import generate_segment
    for f in files:
        f.unlink()
    print(f"generating {n} synthetic frames into {cache} ...", flush=True)
    path = generate_segment(cache, seed=0, num_frames=n)
    return list(read_tfrecord(path))[:n]


def bench_ours(frames: list[bytes], repeat: int) -> list[float]:
    decode_frame(frames[0])  # JIT / geometry cache warm-up, like the oracle's TF warm-up below
    per_frame = []
    for _ in range(repeat):
        t = time.perf_counter()
        for f in frames:
            decode_frame(f)
        per_frame.append((time.perf_counter() - t) / len(frames))
    return per_frame


def bench_official(frames: list[bytes], repeat: int, official_parse: bool):
    from oracle import oracle_available, run_oracle
    if not oracle_available():
        return None
    blob = np.frombuffer(b"".join(frames), np.uint8)
    offs = np.cumsum([0] + [len(f) for f in frames])
    env = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"} if official_parse else None
    out = run_oracle("oracle_scripts/frame_points.py",
                     {"blob": blob, "offsets": offs, "repeat": np.int64(repeat + 1),
                      "official_parse": np.bool_(official_parse)}, timeout=3600, env=env)
    conv = out["convert_seconds"][:, 1:]          # drop the first (TF tracing) repetition
    return out["parse_seconds"], conv, out


def bench_crc(path: Path, repeat: int):
    """MB/s of: a plain chunked file read; a record reader without CRCs (same reads, same
    allocation of one bytes object per record as ours); read_tfrecord (both CRCs)."""
    size = path.stat().st_size

    def plain_read():
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 24):
                pass

    def raw_records():
        with open(path, "rb", buffering=0) as f:
            while True:
                head = f.read(12)
                if len(head) < 12:
                    return
                (length,) = struct.unpack_from("<Q", head)
                payload = f.read(length)
                f.read(4)
                yield payload

    def consume(it):
        for r in it:
            len(r)

    runs = {"plain": [], "raw": [], "crc": []}
    plain_read(), consume(raw_records()), consume(read_tfrecord(path))  # warm the page cache
    for _ in range(repeat):
        for key, fn in (("plain", plain_read), ("raw", lambda: consume(raw_records())),
                        ("crc", lambda: consume(read_tfrecord(path)))):
            t = time.perf_counter()
            fn()
            runs[key].append(time.perf_counter() - t)
    mb = size / 1e6
    return mb, {k: mb / statistics.median(v) for k, v in runs.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--official-parse", action="store_true",
                    help="time the official parse_range_image_and_camera_projection too (slow)")
    ap.add_argument("--cache", default=str(REPO / "work_dirs" / "bench_cache" / "decode"))
    ap.add_argument("--crc-mb", type=int, default=300, help="size of the CRC test file")
    args = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          "(other engineers share it)")

    frames = synthetic_frames(args.frames, Path(args.cache))
    npts = [decode_frame(f).points.shape[0] for f in frames]
    print(f"frames: {len(frames)} synthetic, {np.mean([len(f) for f in frames]) / 1e6:.1f} MB "
          f"serialized, {int(np.mean(npts))} points (5 lidars, 2 returns) on average")
    ours = bench_ours(frames, args.repeat)
    ours_med = statistics.median(ours)
    print(f"ours     decode_frame: median {ours_med * 1e3:.0f} ms/frame = "
          f"{1 / ours_med:.2f} frames/s  (runs: {', '.join(f'{x * 1e3:.0f}' for x in ours)} ms)")
    off = bench_official(frames, args.repeat, args.official_parse)
    after = bench_ours(frames, args.repeat)  # again after the oracle: load may have changed
    ours_med = statistics.median(ours + after)
    print(f"ours     decode_frame after the official run: runs "
          f"{', '.join(f'{x * 1e3:.0f}' for x in after)} ms; median of all {2 * args.repeat} "
          f"runs {ours_med * 1e3:.0f} ms/frame = {1 / ours_med:.2f} frames/s")
    if off is None:
        print("official: oracle venv missing (make oracle-env); no comparison")
    else:
        parse_s, conv, out = off
        for k, f in enumerate(frames):
            d = decode_frame(f)
            err = np.abs(out[f"points_{k}"].astype(np.float64) - d.points[:, :3]).max(axis=1)
            top = d.points[:, 6] == 1
            print(f"  frame {k}: same count {len(err) == len(d.points)}; max |ours - official| "
                  f"TOP {err[top].max():.2e} m, other lidars {err[~top].max():.2e} m")
        conv_med = float(np.median(conv))
        both = float(np.median(parse_s)) + conv_med
        what = "official parse_range_image_and_camera_projection" if args.official_parse else \
            "inflate + MatrixFloat parse (upb)"
        print(f"official TF conversion only: median {conv_med * 1e3:.0f} ms/frame = "
              f"{1 / conv_med:.2f} frames/s -> ours is {conv_med / ours_med:.1f}x faster")
        print(f"official {what} + conversion: median {both * 1e3:.0f} ms/frame = "
              f"{1 / both:.2f} frames/s -> ours is {both / ours_med:.1f}x faster")

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "crc.tfrecord"
        reps = max(1, args.crc_mb * 1_000_000 // sum(len(f) for f in frames))
        write_tfrecord(p, (f for _ in range(reps) for f in frames))
        mb, r = bench_crc(p, args.repeat)
        print(f"TFRecord read, {mb:.0f} MB file, warm cache, median MB/s: plain 16 MB-chunk "
              f"file read {r['plain']:.0f}; record reader without CRCs {r['raw']:.0f}; "
              f"read_tfrecord (both CRCs) {r['crc']:.0f} = {r['crc'] / r['raw']:.2f}x of the "
              f"CRC-less record reader, {r['crc'] / r['plain']:.2f}x of the plain read")
    return 0


if __name__ == "__main__":
    sys.exit(main())
