"""Training-step cost of each multitask gradient method against the plain sum (demo config).

    .venv/bin/python tools/benchmarks/bench_multitask.py [--methods ...] [--rounds 5]
        [--batch 2] [--config configs/demo/centerpoint_graddrop_demo.py] [--no-memory]

One model per method, all with the same initial weights, on the same synthetic frames (the
demo's input sizes). Steps are interleaved: every round runs one full training step (voxelize,
forward, loss, backward with the method's combine at the shared activation, AdamW step) of
every method, in a fresh random order, so drifting machine load hits every method alike. The
first round is warm-up. Reported: median step time (wall and this process's CPU time), its
ratio to ``sum`` (speed = t_sum / t_method, the paper's Table 1 convention: 1.0 = as fast),
and the median time of the combine itself (the layer's backward, timed inside it). The
gradient diagnostics stay off (as in every benchmark). Peak memory: with ``--memory``
(default) each method also runs 3 steps alone in a subprocess, whose peak RSS is reported
(CUDA: ``torch.cuda.max_memory_allocated``).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DEFAULT_METHODS = ["sum", "graddrop", "random_sign", "pcgrad", "mgda", "cagrad", "imtl_g",
                   "upgrad", "aligned_mtl", "nash_mtl", "gradnorm", "uncertainty"]


def _build(config: str, method: str, seed: int = 0):
    import torch
    from mmengine.config import Config

    import detector.models  # noqa: F401
    from detector.registry import MODELS

    cfg = Config.fromfile(config)
    cfg.model.head.gradient = dict(method=method, grouping="cls_box")
    torch.manual_seed(seed)
    return MODELS.build(cfg.model)


def _frames(batch: int, seed: int = 0):
    from detector.testing.model_frame import make_batch

    return make_batch(batch, num_boxes=30, seed=seed, box_range=35.0)


def _instrument(model):
    """Wrap the gradient layer's backward to time the combine; returns the list of times."""
    layer = model.head.gradient_layer
    times: list[float] = []
    inner = layer._backward

    def timed(grads, x):
        t = time.perf_counter()
        out = inner(grads, x)
        times.append(time.perf_counter() - t)
        return out

    layer._backward = timed
    return times


def _step(model, opt, pts, samples):
    model.train()
    data = model.data_preprocessor(dict(inputs=dict(points=pts), data_samples=samples), True)
    losses = model(data["inputs"], data["data_samples"], "loss")
    total = sum(losses.values())
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()


def memory_of(config: str, method: str, batch: int) -> float:
    """Peak memory (MiB) of 3 training steps of ``method`` alone (run in this process)."""
    import resource

    import torch

    model = _build(config, method)
    cuda = torch.cuda.is_available()
    if cuda:
        model = model.cuda()
        torch.cuda.reset_peak_memory_stats()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pts, samples = _frames(batch)
    for _ in range(3):
        _step(model, opt, pts, samples)
    if cuda:
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def combine_only(methods, shape: str, rounds: int) -> int:
    """Median time of each method's combine (the layer's backward work) for 2 conflicting task
    gradients of the given activation shape, interleaved, after one warm-up round."""
    import torch

    from ops.multitask import build_combiner

    dims = tuple(int(v) for v in shape.lower().split("x"))
    g = torch.Generator().manual_seed(0)
    act = torch.randn(dims, generator=g)
    grads = [torch.randn(dims, generator=g) * 1e-3 for _ in range(2)]
    combiners = {m: build_combiner(m, 2) for m in methods}
    gens = {m: torch.Generator().manual_seed(1) for m in methods}
    times = {m: [] for m in methods}
    rng = random.Random(0)
    for r in range(rounds + 1):
        order = list(methods)
        rng.shuffle(order)
        for m in order:
            t = time.perf_counter()
            combiners[m](grads, losses=[1.0, 2.0], activation=act, generator=gens[m])
            if r:
                times[m].append(time.perf_counter() - t)
    print(f"combine of 2 task gradients {dims} ({act.numel()} elements), {rounds} interleaved "
          f"rounds, torch threads {torch.get_num_threads()}")
    for m in methods:
        print(f"{m:<12} {statistics.median(times[m]) * 1000:9.1f} ms")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Training-step time and peak memory of each "
                                            "multitask gradient method vs the plain sum")
    p.add_argument("--config", default=str(REPO / "configs/demo/centerpoint_graddrop_demo.py"))
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--combine-only", metavar="BxCxHxW", nargs="?", const="2x64x96x96",
                   help="time only each method's combine on random gradients of this activation "
                        "shape (default: the demo's, 2x64x96x96), interleaved, 2 tasks")
    p.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_of:
        print(json.dumps(dict(peak_mib=memory_of(args.config, args.memory_of, args.batch))))
        return 0
    if args.combine_only:
        return combine_only(args.methods, args.combine_only, args.rounds)

    import torch

    import detector  # noqa: F401

    methods = list(dict.fromkeys(["sum", *args.methods]))
    pts, samples = _frames(args.batch)
    models, opts, combine = {}, {}, {}
    for m in methods:
        models[m] = _build(args.config, m)
        opts[m] = torch.optim.AdamW(models[m].parameters(), lr=1e-4)
        combine[m] = _instrument(models[m])
    wall = {m: [] for m in methods}
    cpu = {m: [] for m in methods}
    rng = random.Random(0)
    for r in range(args.rounds + 1):
        order = methods[:]
        rng.shuffle(order)
        for m in order:
            n_before = len(combine[m])
            t0, c0 = time.perf_counter(), time.process_time()
            _step(models[m], opts[m], pts, samples)
            t1, c1 = time.perf_counter(), time.process_time()
            if r == 0:
                del combine[m][n_before:]
                continue
            wall[m].append(t1 - t0)
            cpu[m].append(c1 - c0)
    med = {m: statistics.median(v) for m, v in wall.items()}
    med_cpu = {m: statistics.median(v) for m, v in cpu.items()}
    mem = {}
    if args.memory:
        for m in methods:
            out = subprocess.run([sys.executable, __file__, "--config", args.config,
                                  "--batch", str(args.batch), "--memory-of", m],
                                 capture_output=True, text=True, check=True)
            mem[m] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    print(f"config {Path(args.config).name}, batch {args.batch}, {args.rounds} interleaved "
          f"rounds, torch threads {torch.get_num_threads()}")
    print(f"{'method':<12} {'step s':>8} {'speed':>7} {'cpu s':>8} {'speed cpu':>9} "
          f"{'combine ms':>10} {'peak MiB':>9}")
    rows = {}
    for m in methods:
        comb = statistics.median(combine[m]) * 1000 if combine[m] else 0.0
        rows[m] = dict(step_s=med[m], speed=med["sum"] / med[m], cpu_s=med_cpu[m],
                       speed_cpu=med_cpu["sum"] / med_cpu[m], combine_ms=comb,
                       peak_mib=mem.get(m))
        print(f"{m:<12} {med[m]:8.3f} {rows[m]['speed']:6.3f}x {med_cpu[m]:8.3f} "
              f"{rows[m]['speed_cpu']:8.3f}x {comb:10.1f} "
              + (f"{mem[m]:9.0f}" if m in mem else f"{'-':>9}"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
