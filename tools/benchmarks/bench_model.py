"""Benchmark of the detector on this CPU: one training step (forward + backward) and one
inference pass per frame, broken down by stage, for the model configs in configs/_base_/models.

Stages: voxelize (data preprocessor), vfe (mean voxel encoder), backbone_3d (spconv encoder +
height compression), bev (SECOND-FPN), head (shared conv + branches), loss (targets + losses),
graddrop (GradDrop's backward: graddrop_combine of the task gradients), decode (peaks + top-K),
nms. The training step is run stage by stage with the activations cut (detached) between
stages, so that each stage's backward is timed on its own; times are medians over repeats.
GradDrop's share is measured twice: its combine time on the real activation shape against the
step time, and the step time with ``graddrop.mode="graddrop"`` against ``"off"``.

Peak memory is the process's peak RSS (each (config, phase) runs in a fresh subprocess).

    .venv/bin/python tools/benchmarks/bench_model.py                 # both configs
    .venv/bin/python tools/benchmarks/bench_model.py --config small --repeats 7
    .venv/bin/python tools/benchmarks/bench_model.py --env OMP_WAIT_POLICY=PASSIVE
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

CONFIGS = {
    "waymo": REPO / "configs/_base_/models/centerpoint_graddrop_waymo.py",
    "small": REPO / "configs/_base_/models/centerpoint_graddrop_small.py",
}


def _build(config: str, graddrop_mode: str | None = None):
    from mmengine.config import Config

    import detector.models  # noqa: F401  (registers the modules)
    from detector.registry import MODELS

    cfg = Config.fromfile(str(CONFIGS[config]))
    if graddrop_mode is not None:
        cfg.model.head.graddrop.mode = graddrop_mode
    return MODELS.build(cfg.model)


def _frames(batch: int, seed: int = 0):
    from detector.testing.model_frame import make_batch

    return make_batch(batch, num_boxes=30, seed=seed, box_range=50.0)


class Clock:
    """Wall time and this process's CPU time (all threads) at once: on a machine shared with
    other jobs the wall time inflates, the CPU time much less."""

    def __sub__(self, other: "Clock"):
        return (self.wall - other.wall, self.cpu - other.cpu)

    def __init__(self):
        self.wall = time.perf_counter()
        self.cpu = time.process_time()


class Timer:
    def __init__(self):
        self.times: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def add(self, name: str, t):
        wall, cpu = t if isinstance(t, tuple) else (t, float("nan"))
        self.times.setdefault(name, []).append(wall)
        self.cpu.setdefault(name, []).append(cpu)

    def medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.times.items()}

    def cpu_medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.cpu.items()}


def _train_step_staged(model, pts, samples, timer: Timer):
    """One training step, stage by stage, with separate forward and backward timings."""
    import torch

    model.train()
    clock = Clock
    t0 = clock()
    data = model.data_preprocessor(dict(inputs=dict(points=pts), data_samples=samples), True)
    vox = data["inputs"]["voxels"]
    t1 = clock()
    feats = model.voxel_encoder(vox)
    t2 = clock()
    bev = model.backbone_3d(feats, vox)
    t3 = clock()
    bev_d = bev.detach().requires_grad_(True)
    neck = model.neck(bev_d)
    t4 = clock()
    neck_d = neck.detach().requires_grad_(True)
    outs = model.head(neck_d)
    t5 = clock()
    losses = model.head.loss(outs, samples, data["inputs"]["points"])
    total = sum(losses.values())
    t6 = clock()
    model.zero_grad(set_to_none=True)
    total.backward()  # head backward, GradDrop's combine included
    t7 = clock()
    neck.backward(neck_d.grad)
    t8 = clock()
    bev.backward(bev_d.grad)
    t9 = clock()
    for name, dt in (("voxelize", t1 - t0), ("vfe", t2 - t1), ("backbone_3d.fwd", t3 - t2),
                     ("bev.fwd", t4 - t3), ("head.fwd", t5 - t4), ("loss", t6 - t5),
                     ("head.bwd", t7 - t6), ("bev.bwd", t8 - t7), ("backbone_3d.bwd", t9 - t8),
                     ("step", t9 - t0)):
        timer.add(name, dt)
    return outs.shared


def _train_step_plain(model, pts, samples, timer: Timer, name: str):
    model.train()
    t0 = Clock()
    data = model.data_preprocessor(dict(inputs=dict(points=pts), data_samples=samples), True)
    losses = model(data["inputs"], data["data_samples"], "loss")
    model.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    timer.add(name, Clock() - t0)


def _infer_staged(model, pts, samples, timer: Timer):
    import torch

    from detector.models.targets import decode_heatmap
    from ops.iou3d import nms_bev

    model.eval()
    cfg = model.head.test_cfg
    clock = Clock
    with torch.no_grad():
        t0 = clock()
        data = model.data_preprocessor(dict(inputs=dict(points=pts), data_samples=samples), False)
        vox = data["inputs"]["voxels"]
        t1 = clock()
        feats = model.voxel_encoder(vox)
        t2 = clock()
        bev = model.backbone_3d(feats, vox)
        t3 = clock()
        neck = model.neck(bev)
        t4 = clock()
        outs = model.head(neck)
        t5 = clock()
        pred = outs.groups[0]
        head = model.head
        dec = decode_heatmap(pred["heatmap"], {b: pred[b] for b in head.reg_branches}, head.grid,
                             cfg["top_k"], cfg["score_threshold"], cfg["pool_kernel"],
                             heading_encoding=head.heading_encoding)
        t6 = clock()
        n_before = n_after = 0
        for boxes, scores, _ in dec:
            keep = nms_bev(boxes, scores, cfg["nms_iou_threshold"], cfg["nms_pre_max_size"],
                           cfg["nms_post_max_size"])
            n_before += len(boxes)
            n_after += len(keep)
        t7 = clock()
    for name, dt in (("voxelize", t1 - t0), ("vfe", t2 - t1), ("backbone_3d", t3 - t2),
                     ("bev", t4 - t3), ("head", t5 - t4), ("decode", t6 - t5), ("nms", t7 - t6),
                     ("total", t7 - t0)):
        timer.add(name, dt)
    return n_before, n_after, vox.num_voxels


def run_phase(config: str, phase: str, repeats: int, batch: int) -> dict:
    import torch

    from ops.graddrop import graddrop_combine

    pts, samples = _frames(batch)
    model = _build(config)
    timer = Timer()
    info: dict = dict(config=config, phase=phase, batch=batch, threads=torch.get_num_threads(),
                      points_per_frame=[int(p.shape[0]) for p in pts])
    if phase == "train":
        for i in range(repeats + 1):  # the first run warms up (numba, spconv kernels)
            t = timer if i else Timer()
            shared = _train_step_staged(model, pts, samples, t)
        # GradDrop's backward on the real activation shape, with gradients of realistic shape.
        k = len(model.head.task_names)
        grads = [torch.randn_like(shared) for _ in range(k)]
        a = shared.detach()
        for i in range(repeats + 1):
            t0 = Clock()
            graddrop_combine(grads, a, leaks=model.head.graddrop.leaks, batch_separated=True)
            if i:
                timer.add("graddrop", Clock() - t0)
            t0 = Clock()
            torch.stack(grads).sum(0)
            if i:
                timer.add("plain_sum", Clock() - t0)
        off = _build(config, "off")
        off.load_state_dict(model.state_dict())
        for i in range(repeats + 1):
            _train_step_plain(model, pts, samples, timer if i else Timer(), "step_graddrop")
            _train_step_plain(off, pts, samples, timer if i else Timer(), "step_off")
        info["shared_shape"] = list(shared.shape)
    else:
        model.eval()
        for i in range(repeats + 1):
            n_before, n_after, nvox = _infer_staged(model, pts, samples, timer if i else Timer())
        info.update(boxes_before_nms=n_before, boxes_after_nms=n_after)
    info["num_voxels"] = int(model.data_preprocessor(
        dict(inputs=dict(points=pts), data_samples=samples), phase == "train")["inputs"]["voxels"].num_voxels)
    info["median_s"] = timer.medians()
    info["median_cpu_s"] = timer.cpu_medians()
    info["load_avg_1min"] = os.getloadavg()[0]
    info["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return info


def _print(info: dict) -> None:
    m = info["median_s"]
    c = info["median_cpu_s"]
    print(f"\n== {info['config']} / {info['phase']}  (batch {info['batch']}, "
          f"{info['points_per_frame']} points, {info['num_voxels']} voxels, "
          f"{info['threads']} torch threads, peak RSS {info['peak_rss_mib']:.0f} MiB, "
          f"load average {info['load_avg_1min']:.1f})")
    total = m.get("step", m.get("total"))
    ctotal = c.get("step", c.get("total"))
    print(f"  {'stage':18s} {'wall':>9s}     {'share':>5s}   {'cpu':>9s}     {'share':>5s}")
    for k, v in m.items():
        print(f"  {k:18s} {v * 1000:9.1f} ms  {100 * v / total:5.1f} %  {c[k] * 1000:9.1f} ms  "
              f"{100 * c[k] / ctotal:5.1f} %")
    if info["phase"] == "train":
        print(f"  per frame: {total / info['batch']:.3f} s / training step")
        print(f"  GradDrop combine / step: {100 * m['graddrop'] / m['step']:.2f} % wall, "
              f"{100 * c['graddrop'] / c['step']:.2f} % cpu   "
              f"(combine {m['graddrop'] * 1000:.1f} ms vs plain sum {m['plain_sum'] * 1000:.1f} ms "
              f"on shape {info['shared_shape']})")
        print(f"  step with GradDrop / step with mode=off: {m['step_graddrop'] / m['step_off']:.3f} "
              f"wall, {c['step_graddrop'] / c['step_off']:.3f} cpu")
    else:
        print(f"  per frame: {total / info['batch']:.3f} s / inference; boxes before/after NMS "
              f"{info['boxes_before_nms']}/{info['boxes_after_nms']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=["small", "waymo", "both"], default="both")
    ap.add_argument("--phase", choices=["train", "infer", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment of the measured processes, e.g. OMP_WAIT_POLICY=PASSIVE or "
                         "NUMBA_THREADING_LAYER=workqueue (see docs/benchmarks/model.md)")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    configs = ["small", "waymo"] if args.config == "both" else [args.config]
    phases = ["train", "infer"] if args.phase == "both" else [args.phase]
    if args.json:  # one (config, phase) in this process, result as JSON on the last line
        info = run_phase(configs[0], phases[0], args.repeats, args.batch)
        print(json.dumps(info))
        return 0
    env = dict(os.environ)
    for kv in args.env:
        key, sep, value = kv.partition("=")
        if not sep:
            ap.error(f"--env expects KEY=VALUE, got {kv!r}")
        env[key] = value
    shown = {k: env.get(k, "(unset)") for k in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER",
                                                 "OMP_NUM_THREADS")}
    print("environment: " + ", ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
    for c in configs:
        for p in phases:
            out = subprocess.run([sys.executable, __file__, "--json", "--config", c, "--phase", p,
                                  "--repeats", str(args.repeats), "--batch", str(args.batch)],
                                 capture_output=True, text=True, env=env)
            if out.returncode:
                sys.stderr.write(out.stderr)
                return out.returncode
            _print(json.loads(out.stdout.strip().splitlines()[-1]))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
