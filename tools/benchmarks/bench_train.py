"""Training throughput, inference latency, and GradDrop-vs-plain AP on the demo data (CPU).

    python tools/benchmarks/bench_train.py [--data-root work_dirs/demo/data/converted]
        [--iters 5] [--configs demo waymo] [--ap-seeds 0 1 2] [--ap-epochs N] [--skip-ap]
        [--variants demo demo_nograddrop]

Part 1 (speed): for each config, ``--iters`` timed training steps (batch 2: forward, backward,
AdamW step, after 1 warm-up step) and inference on single frames; medians are printed, with the
GradDrop / no-GradDrop ratio of the training step measured in the same run.
Part 2 (accuracy): trains the demo config with and without GradDrop for each seed
(``randomness.seed``) and prints vehicle LEVEL_1 / LEVEL_2 AP and APH per run, then mean and
spread. ``--variants`` picks which of the two to train, so that two processes can share the work
(each run is independent; the mean and spread are printed per variant). Needs the demo's
converted data (run ``make demo`` first).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import detector  # noqa: E402,F401  (first: sets OMP_WAIT_POLICY before torch/numba load; without
#                    it the two OpenMP runtimes spin against each other and a step takes ~4x longer)

CONFIGS = {
    "demo": REPO / "configs/demo/centerpoint_graddrop_demo.py",
    "demo_nograddrop": REPO / "configs/demo/centerpoint_nograddrop_demo.py",
    "waymo": REPO / "configs/waymo/centerpoint_graddrop_waymo_vehicle.py",
    "waymo_nograddrop": REPO / "configs/waymo/centerpoint_nograddrop_waymo_vehicle.py",
}


def _build(cfg_path: Path, data_root: Path):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import detector.datasets.dataset  # noqa: F401
    from detector.engine.runner import set_data_root
    from detector.registry import DATASETS, MODELS

    cfg = Config.fromfile(str(cfg_path))
    set_data_root(cfg, data_root)
    if DefaultScope.get_current_instance() is None:
        DefaultScope.get_instance("bench", scope_name="detector")
    train_ds = DATASETS.build(cfg.train_dataloader.dataset.to_dict())
    test_ds = DATASETS.build(cfg.test_dataloader.dataset.to_dict())
    model = MODELS.build(cfg.model.to_dict())
    return model, train_ds, test_ds


def bench_speed(name: str, data_root: Path, iters: int) -> dict:
    import torch

    from detector.datasets.collate import collate_det3d

    model, train_ds, test_ds = _build(CONFIGS[name], data_root)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    steps = []
    for i in range(iters + 1):
        batch = collate_det3d([train_ds[(2 * i) % len(train_ds)], train_ds[(2 * i + 1) % len(train_ds)]])
        t = time.perf_counter()
        data = model.data_preprocessor(batch, True)
        losses = model(**data, mode="loss")
        loss = sum(v for k, v in losses.items() if k.startswith("loss"))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i > 0:  # the first step pays one-time costs (Numba compilation, allocator)
            steps.append(time.perf_counter() - t)
    model.eval()
    infer = []
    with torch.no_grad():
        for i in range(iters + 1):
            batch = collate_det3d([test_ds[i % len(test_ds)]])
            t = time.perf_counter()
            model.test_step(batch)
            if i > 0:
                infer.append(time.perf_counter() - t)
    step = statistics.median(steps)
    out = dict(config=name, train_step_s=step, train_frames_per_s=2 / step,
               infer_latency_s=statistics.median(infer), steps=steps, infer=infer)
    print(f"{name:18s} train step (batch 2) median {step:.2f} s -> {2 / step:.2f} frames/s; "
          f"inference median {out['infer_latency_s']:.2f} s/frame "
          f"(runs: {[round(s, 2) for s in steps]}, {[round(s, 2) for s in infer]})", flush=True)
    return out


def train_and_eval(cfg_path: Path, data_root: Path, seed: int, work: Path, epochs: int | None):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from detector.engine.runner import build_runner, set_data_root

    cfg = Config.fromfile(str(cfg_path))
    set_data_root(cfg, data_root)
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h["type"] != "ProgressBarHook"]
    if epochs is not None:
        cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = 10 ** 6
    cfg.test_evaluator.update(print_table=False, metrics_json=str(work / "metrics.json"))
    cfg.work_dir = str(work)
    runner = build_runner(cfg)
    runner.train()
    DefaultScope._instance_dict.clear()
    cfg.load_from = str(work / f"epoch_{cfg.train_cfg.max_epochs}.pth")
    runner = build_runner(cfg, load_from=cfg.load_from)
    runner.test()
    DefaultScope._instance_dict.clear()
    return json.loads((work / "metrics.json").read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(REPO / "work_dirs/demo/data/converted"))
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--configs", nargs="+", default=["demo", "demo_nograddrop", "waymo"])
    p.add_argument("--ap-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ap-epochs", type=int, default=None, help="override the demo's epochs")
    p.add_argument("--variants", nargs="+", default=["demo", "demo_nograddrop"],
                   choices=["demo", "demo_nograddrop"])
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-ap", action="store_true")
    p.add_argument("--work-dir", default=str(REPO / "work_dirs/bench_train"))
    args = p.parse_args(argv)
    root = Path(args.data_root)
    if not (root / "train").is_dir():
        print(f"error: {root} has no converted train split; run `make demo` first", file=sys.stderr)
        return 2
    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads", flush=True)
    if not args.skip_speed:
        res = {n: bench_speed(n, root, args.iters) for n in args.configs}
        if "demo" in res and "demo_nograddrop" in res:
            r = res["demo"]["train_step_s"] / res["demo_nograddrop"]["train_step_s"]
            print(f"GradDrop / no-GradDrop training step time (demo config): {r:.3f}", flush=True)
    if not args.skip_ap:
        table = {}
        for variant in args.variants:
            for seed in args.ap_seeds:
                t = time.time()
                m = train_and_eval(CONFIGS[variant], root, seed,
                                   Path(args.work_dir) / f"{variant}_seed{seed}", args.ap_epochs)
                v1 = m["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1"]
                v2 = m["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_2"]
                row = (v1["AP"], v2["AP"], v1["APH"], v2["APH"])
                table.setdefault(variant, []).append(row)
                print(f"{variant:18s} seed {seed}: vehicle L1 AP {row[0]:.4f}  L2 AP {row[1]:.4f}  "
                      f"L1 APH {row[2]:.4f}  L2 APH {row[3]:.4f} ({time.time() - t:.0f} s)",
                      flush=True)
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        for variant, rows in table.items():
            cols = list(zip(*rows))
            parts = []
            for name, v in zip(("L1 AP", "L2 AP", "L1 APH", "L2 APH"), cols):
                parts.append(f"{name} mean {statistics.mean(v):.4f} (sd {sd(v):.4f}, min {min(v):.4f}, "
                             f"max {max(v):.4f})")
            print(f"{variant:18s} " + "; ".join(parts) + f" over seeds {args.ap_seeds}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
