"""Benchmark graddrop_combine (batch-separated, random draws included) against the plain sum.

Times, in one process and interleaved round by round, on float32 activations/gradients:
- ``plain``: the sum autograd computes when k heads read one activation without GradDrop
  (``g0 + g1``, then ``+=`` for the rest);
- ``sum1pass``: a one-pass Numba sum of the k gradients (the memory-bandwidth floor);
- ``graddrop``: ``graddrop_combine(grads, activation)`` with the default (Numba) backend;
- ``torchpath``: the same with ``backend="torch"`` (the GPU code path run on the CPU), optional.
Then measures peak extra resident memory of each method in a fresh subprocess (Linux VmHWM,
reset through /proc/self/clear_refs), in units of one activation-sized buffer.

Usage (defaults are the figures in docs/benchmarks/graddrop.md):
    .venv/bin/python tools/benchmarks/bench_graddrop.py
    .venv/bin/python tools/benchmarks/bench_graddrop.py --shapes 4x64x188x188 --tasks 2 --repeats 5
    .venv/bin/python tools/benchmarks/bench_graddrop.py --threads 1 --clock cpu --no-memory
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
import torch
from numba import njit, prange

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ops.graddrop import graddrop_combine  # noqa: E402


@njit(parallel=True, cache=True)
def _sum1pass(grads, k, out):
    # out and grads[i < k]: 1-D; one sweep over memory, chunks stay in cache for the += passes.
    n = out.size
    chunk = 16384
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(lo + chunk, n)
        ob = out[lo:hi]
        g0 = grads[0][lo:hi]
        g1 = grads[1][lo:hi]
        for j in range(hi - lo):
            ob[j] = g0[j] + g1[j]
        for i in range(2, k):
            gi = grads[i][lo:hi]
            for j in range(hi - lo):
                ob[j] += gi[j]


def plain_sum(grads):
    out = grads[0] + grads[1]
    for g in grads[2:]:
        out += g
    return out


def sum_one_pass(grads):
    out = torch.empty_like(grads[0])
    arrays = [g.reshape(-1).numpy() for g in grads]
    arrays += [np.zeros(1, np.float32)] * (16 - len(arrays))
    _sum1pass(tuple(arrays), len(grads), out.reshape(-1).numpy())
    return out


METHODS = {
    "plain": lambda grads, act: plain_sum(grads),
    "sum1pass": lambda grads, act: sum_one_pass(grads),
    "graddrop": lambda grads, act: graddrop_combine(grads, act),
    "torchpath": lambda grads, act: graddrop_combine(grads, act, backend="torch"),
}


def make_inputs(shape, k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    act = torch.randn(shape, generator=gen)
    grads = [torch.randn(shape, generator=gen) for _ in range(k)]
    return act, grads


def time_methods(shape, k, methods, repeats, clock=time.perf_counter):
    act, grads = make_inputs(shape, k)
    for m in methods:  # warm-up: Numba cache load, page faults of the first allocation
        METHODS[m](grads, act)
    times = {m: [] for m in methods}
    for _ in range(repeats):
        for m in methods:
            t0 = clock()
            out = METHODS[m](grads, act)
            times[m].append(clock() - t0)
            del out
    return times


def _status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_child(shape, k, method):
    """Peak RSS growth during one call, in bytes (run in a fresh process)."""
    act, grads = make_inputs(shape, k)
    METHODS[method](grads, act)  # warm-up, then drop its result
    base = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    out = METHODS[method](grads, act)
    peak = _status_kib("VmHWM")
    del out
    return (peak - base) * 1024


def measure_memory(shape, k, method):
    cmd = [sys.executable, __file__, "--memory-child", json.dumps([list(shape), k, method])]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1])


def parse_shape(text):
    return tuple(int(v) for v in text.lower().split("x"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["4x64x188x188", "4x512x188x188"])
    parser.add_argument("--tasks", nargs="+", type=int, default=[2, 6])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--methods", nargs="+", default=["plain", "sum1pass", "graddrop"],
                        choices=sorted(METHODS))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and Numba threads (default: as configured, all cores)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or process CPU time (steadier on a loaded machine "
                             "with --threads 1)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_child:
        shape, k, method = json.loads(args.memory_child)
        print(memory_child(tuple(shape), k, method))
        return

    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{numba.get_num_threads()} Numba threads, {os.cpu_count()} CPUs; float32; "
          f"{args.clock} clock; median of {args.repeats} interleaved rounds")
    header = (f"{'shape':>16} {'k':>2} {'method':>10} {'median ms':>10} {'x plain':>8} "
              f"{'x 1pass':>8}")
    if not args.no_memory:
        header += f" {'peak extra (buffers)':>21}"
    print(header)
    for text in args.shapes:
        shape = parse_shape(text)
        buffer_bytes = 4 * int(np.prod(shape))
        for k in args.tasks:
            times = time_methods(shape, k, args.methods, args.repeats, clock)
            med = {m: statistics.median(v) for m, v in times.items()}
            for m in args.methods:
                # Ratios are medians of per-round ratios: each round's methods ran back to back
                # under the same background load.
                rel = {ref: statistics.median(a / b for a, b in zip(times[m], times[ref]))
                       for ref in ("plain", "sum1pass") if ref in times}
                line = (f"{text:>16} {k:>2} {m:>10} {med[m] * 1e3:>10.1f} "
                        f"{rel.get('plain', float('nan')):>8.2f} "
                        f"{rel.get('sum1pass', float('nan')):>8.2f}")
                if not args.no_memory:
                    extra = measure_memory(shape, k, m) / buffer_bytes
                    line += f" {extra:>21.2f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
