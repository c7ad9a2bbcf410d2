"""ops.sparse_conv (2 threads) against spconv 2.x (the project's one-thread CPU shim) on the CPU.

    python tools/benchmarks/bench_sparse_conv.py [--repeats 5] [--frames 2] [--scaling-repeats N]
        [--skip-backbones] [--skip-scaling]
        [--skip-memory] [--skip-step] [--profile]

Frames: the demo's synthetic generator (``detector.datasets.synthetic``, segment seed 0, the TOP
lidar's points; intensity and elongation columns zero: only the voxel sites matter here),
batch of ``--frames``, voxelized and encoded by each config's own preprocessor and VFE.

0. ``--profile`` (only this, then exit): where ours spends process CPU time in one demo backbone
   forward + backward, per part, at one thread (so that process CPU time is attributable), for
   each of ``ops.sparse_conv``'s algorithms ("pairs", the default, and "im2col"), beside
   spconv's total at one thread.
1. Backbone forward + backward (``SparseEncoder`` of the demo config and of the Waymo config),
   the implementations interleaved repeat by repeat, same parameters; median wall and
   process-CPU seconds and the spconv / ours ratio, all from this one run. Ours is the
   default "pairs" algorithm; on the demo backbone the previous "im2col" one is run too.
2. Time against the number of voxels: the Waymo backbone on 20k, 80k, 150k voxels (the voxels
   nearest the sensor of a batch of 3 demo frames (at least) voxelized by the Waymo config).
3. Peak memory: each implementation's backbone forward + backward in a fresh subprocess after a
   warm-up pass: the peak RSS (VmHWM, reset before the pass) and its rise over the RSS before.
4. The demo model's whole training step (forward, loss, backward, AdamW) with each
   implementation, interleaved.
The machine may be shared: the load average is printed with every block.
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

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import detector  # noqa: E402,F401  (first: sets OMP_WAIT_POLICY before torch/numba load)

CONFIGS = {"demo": REPO / "configs/demo/centerpoint_graddrop_demo.py",
           "waymo": REPO / "configs/waymo/centerpoint_graddrop_waymo_vehicle.py"}


def load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())


def demo_frames(n: int):
    """(points (N, 5) float32, vehicle boxes (M, 7)) of the first n frames of demo segment 0."""
    import numpy as np
    import torch

    from detector.datasets.synthetic.generator import plan_segment, render_segment_frames

    out = []
    for _, rendered, labels in render_segment_frames(plan_segment(0, n), with_debug=True):
        xyz = rendered.lidars[1].points.astype(np.float32)
        pts = np.concatenate([xyz, np.zeros((len(xyz), 2), np.float32)], 1)
        boxes = labels.boxes[labels.types == 1].astype(np.float32)
        out.append((torch.from_numpy(pts), torch.from_numpy(boxes)))
    return out


def build_model(name: str, impl: str):
    import torch
    from mmengine.config import Config

    from detector.registry import MODELS
    import detector.models  # noqa: F401

    cfg = Config.fromfile(str(CONFIGS[name])).model.to_dict()
    cfg["backbone_3d"]["conv_impl"] = impl
    torch.manual_seed(0)
    return MODELS.build(cfg)


def encoded(model, points):
    import torch
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=dict(points=points)), True)
        vox = data["inputs"]["voxels"]
        return model.voxel_encoder(vox), vox


def fwd_bwd(backbone, feats, vox):
    f = feats.detach().requires_grad_(True)
    t, c = time.perf_counter(), time.process_time()
    out = backbone(f, vox)
    out.square().mean().backward()
    return time.perf_counter() - t, time.process_time() - c


def interleaved(runs: dict, repeats: int) -> dict:
    """runs: label -> zero-argument callable returning (wall, cpu); one warm-up each."""
    for fn in runs.values():
        fn()
    res = {k: ([], []) for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            w, c = fn()
            res[k][0].append(w)
            res[k][1].append(c)
    return {k: (statistics.median(w), statistics.median(c)) for k, (w, c) in res.items()}


def report(title: str, med: dict) -> None:
    print(f"  {title:28s} ours {med['ops'][0]:7.3f} s wall {med['ops'][1]:7.3f} s cpu | spconv "
          f"{med['spconv'][0]:7.3f} s wall {med['spconv'][1]:7.3f} s cpu | spconv/ours "
          f"{med['spconv'][0] / med['ops'][0]:.2f}x wall, {med['spconv'][1] / med['ops'][1]:.2f}x cpu",
          flush=True)


def with_algorithm(algorithm: str, fn):
    """fn, run with ops.sparse_conv's algorithm set to ``algorithm``."""
    from ops.sparse_conv import functional

    def run():
        before = functional.ALGORITHM
        functional.ALGORITHM = algorithm
        try:
            return fn()
        finally:
            functional.ALGORITHM = before
    return run


def bench_backbones(frames, repeats: int) -> None:
    print(f"== backbone forward + backward, batch {len(frames)} ({load()})", flush=True)
    for name in ("demo", "waymo"):
        models = {impl: build_model(name, impl) for impl in ("ops", "spconv")}
        models["ops"].load_state_dict(models["spconv"].state_dict())
        feats, vox = encoded(models["ops"], [p for p, _ in frames])
        runs = {impl: (lambda m=m: fwd_bwd(m.backbone_3d, feats, vox)) for impl, m in models.items()}
        if name == "demo":
            runs["im2col"] = with_algorithm("im2col", runs["ops"])
        runs["ops"] = with_algorithm("pairs", runs["ops"])
        med = interleaved(runs, repeats)
        report(f"{name} ({vox.num_voxels} voxels)", med)
        if "im2col" in med:
            report(f"{name}, ours im2col", dict(ops=med["im2col"], spconv=med["spconv"]))


def bench_profile(frames, repeats: int) -> None:
    """Per-part process CPU time of the demo backbone's forward + backward at one thread."""
    import collections

    import numba
    import torch

    import ops.sparse_conv.functional as F
    import ops.sparse_conv.modules as M
    import ops.sparse_conv.rulebook as R

    threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    acc = collections.defaultdict(float)

    def timed(name, fn):
        def run(*a, **k):
            c = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                acc[name] += time.process_time() - c
        return run

    # ("pairs" gathers and scatter-adds run inside one Numba call per block since round 3, so
    # they are no separate part any more; the transposes of regular convs come with the dense-
    # grid rulebooks, so "transposed tables" shows only where the searches build them.)
    saved = [(M, "build_rulebook"), (R, "pair_blocks"), (R, "_transpose"), (R, "_flip"),
             (F, "_gather")]
    originals = [(mod, n, getattr(mod, n)) for mod, n in saved]
    fns = [(F._PairConvFunction, "forward"), (F._PairConvFunction, "backward"),
           (F._SparseConvFunction, "forward"), (F._SparseConvFunction, "backward")]
    orig_fns = [(cls, n, cls.__dict__[n]) for cls, n in fns]
    names = {"build_rulebook": "rulebooks (neighbour tables, output sites)",
             "pair_blocks": "  pair lists (pairs)", "_transpose": "  transposed tables",
             "_flip": "  transposed tables", "_gather": "  im2col gathers"}
    try:
        for mod, n, fn in originals:
            setattr(mod, n, timed(names[n], fn))
        for cls, n, fn in orig_fns:
            label = "conv forward" if n == "forward" else "conv backward (features + weight)"
            setattr(cls, n, staticmethod(timed(label, fn.__func__)))
        models = {impl: build_model("demo", impl) for impl in ("ops", "spconv")}
        models["ops"].load_state_dict(models["spconv"].state_dict())
        feats, vox = encoded(models["ops"], [p for p, _ in frames])
        print(f"== profile: demo backbone forward + backward ({vox.num_voxels} voxels), one thread, "
              f"process CPU seconds per pass, mean of {repeats} after a warm-up ({load()})",
              flush=True)
        for algorithm in ("pairs", "im2col", "spconv"):
            impl = "spconv" if algorithm == "spconv" else "ops"
            run = lambda: fwd_bwd(models[impl].backbone_3d, feats, vox)  # noqa: E731
            if impl == "ops":
                run = with_algorithm(algorithm, run)
            run()
            acc.clear()
            total = sum(run()[1] for _ in range(repeats)) / repeats
            print(f"  {algorithm}: total {total:.3f} s", flush=True)
            if impl == "spconv":
                continue
            parts = {k: v / repeats for k, v in acc.items()}
            convs = parts.get("conv forward", 0) + parts.get("conv backward (features + weight)", 0)
            rest = total - convs - parts.get(names["build_rulebook"], 0)
            for k in ("conv forward", "conv backward (features + weight)", names["pair_blocks"],
                      names["_transpose"], names["_gather"], names["build_rulebook"]):
                if k in parts:
                    print(f"    {k:44s} {parts[k]:.3f} s", flush=True)
            print(f"    {'the rest (BatchNorm, ReLU, dense, autograd)':44s} {rest:.3f} s", flush=True)
    finally:
        for mod, n, fn in originals:
            setattr(mod, n, fn)
        for cls, n, fn in orig_fns:
            setattr(cls, n, fn)
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])


def bench_scaling(frames, repeats: int) -> None:
    import torch

    from detector.models.types import VoxelBatch
    print(f"== Waymo backbone vs number of voxels ({load()})", flush=True)
    models = {impl: build_model("waymo", impl) for impl in ("ops", "spconv")}
    models["ops"].load_state_dict(models["spconv"].state_dict())
    feats, vox = encoded(models["ops"], [p for p, _ in frames])
    # The n voxels nearest the sensor (in x, y): a smaller range of the same scenes. (A random
    # subset would isolate the voxels, and each strided conv would then multiply their count.)
    ij = vox.coords[:, 2:].double() - torch.tensor(models["ops"].backbone_3d.sparse_shape[1:],
                                                   dtype=torch.float64) / 2
    by_range = torch.argsort(ij.square().sum(1) + vox.coords[:, 0].double() * 1e-3)
    for n in (20_000, 80_000, 150_000):
        if n > vox.num_voxels:
            print(f"  {n} voxels: only {vox.num_voxels} available", flush=True)
            continue
        keep = torch.sort(by_range[:n]).values
        sub = VoxelBatch(coords=vox.coords[keep], batch_size=vox.batch_size)
        runs = {impl: (lambda m=m: fwd_bwd(m.backbone_3d, feats[keep], sub))
                for impl, m in models.items()}
        report(f"{n} voxels (batch {vox.batch_size})", interleaved(runs, repeats))


def memory_child(name: str, impl: str, nframes: int) -> None:
    frames = demo_frames(nframes)
    model = build_model(name, impl)
    feats, vox = encoded(model, [p for p, _ in frames])
    fwd_bwd(model.backbone_3d, feats, vox)      # warm-up (compilation, allocator)
    import gc
    gc.collect()
    # Reset the peak-RSS mark (VmHWM) so that it measures this pass alone (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mib("VmRSS")
    fwd_bwd(model.backbone_3d, feats, vox)
    print(json.dumps(dict(rss_before=before, peak=_status_mib("VmHWM"), voxels=vox.num_voxels)))


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def bench_memory(nframes: int) -> None:
    print(f"== peak memory of backbone forward + backward, fresh process each ({load()})", flush=True)
    for name in ("demo", "waymo"):
        for impl in ("ops", "spconv"):
            r = subprocess.run([sys.executable, __file__, "--memory-child", name, impl,
                                "--frames", str(nframes)], capture_output=True, text=True, check=True)
            d = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"  {name:6s} {impl:7s} {d['voxels']} voxels: peak RSS {d['peak']:.0f} MiB during "
                  f"the pass, {d['peak'] - d['rss_before']:.0f} MiB above the RSS before it",
                  flush=True)


def bench_step(frames, repeats: int) -> None:
    import torch

    from detector.structures import Det3DSample
    print(f"== demo model training step (forward, loss, backward, AdamW), batch {len(frames)} "
          f"({load()})", flush=True)
    samples = [Det3DSample(b, torch.zeros(len(b), dtype=torch.long), frame_id=i)
               for i, (_, b) in enumerate(frames)]
    pts = [p for p, _ in frames]
    runs = {}
    for impl in ("ops", "spconv"):
        model = build_model("demo", impl)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt):
            t, c = time.perf_counter(), time.process_time()
            losses = model(dict(points=pts), samples, "loss")
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
            return time.perf_counter() - t, time.process_time() - c
        runs[impl] = step
    report("training step", interleaved(runs, repeats))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--scaling-repeats", type=int, default=None, help="default: --repeats")
    p.add_argument("--skip-backbones", action="store_true")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-step", action="store_true")
    p.add_argument("--profile", action="store_true", help="only the per-part CPU profile")
    p.add_argument("--memory-child", nargs=2, metavar=("CONFIG", "IMPL"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        memory_child(*args.memory_child, args.frames)
        return 0
    import numba
    import torch
    print(f"torch {torch.__version__}: {torch.get_num_threads()} intra-op threads, numba "
          f"{numba.get_num_threads()} threads (ours); spconv runs its CPU kernels on 1 (the shim); "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}", flush=True)
    frames = demo_frames(args.frames)
    print(f"demo frames: {[len(p) for p, _ in frames]} points", flush=True)
    if args.profile:
        bench_profile(frames, args.repeats)
        return 0
    if not args.skip_backbones:
        bench_backbones(frames, args.repeats)
    if not args.skip_scaling:
        bench_scaling(frames if len(frames) >= 3 else demo_frames(3),
                      args.scaling_repeats or args.repeats)
    if not args.skip_memory:
        bench_memory(args.frames)
    if not args.skip_step:
        bench_step(frames, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
