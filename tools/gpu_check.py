"""One command that proves the GPU path: ``make gpu-check`` (or ``python tools/gpu_check.py``).

Checks, each a function taking a device (docs/gpu_check.md):

1. ``voxelize``  hard and dynamic voxelization on the device equal the CPU kernels bit for bit
   (a Waymo-sized cloud on the Waymo grid, plus points on the cell boundaries);
2. ``graddrop``  GradDrop's torch backend on the device equals the Numba backend on the CPU bit
   for bit, from the same ``torch.Generator`` seed (masks and values);
3. ``iou_nms``   rotated BEV / 3D IoU matrices and NMS on the device equal the CPU kernels;
4. ``train_fp32`` / ``train_amp``  30 training steps of the demo config on the device, fp32 and
   AMP (``AmpOptimWrapper``: fp16 autocast + dynamic loss scale): losses finite and falling, a
   checkpoint saved at step 15, a resumed run restores every state exactly (weights, optimizer,
   schedulers, iteration, RNG) and trains on to step 30; whether the resumed run ends bit-identical
   to the uninterrupted one is reported (required on the CPU; on CUDA only where the kernels are
   deterministic, which spconv's and cuDNN's backward passes are not guaranteed to be);
5. ``throughput``  the Waymo config (the recipe model) on synthetic full-range frames: training
   frames/s at batch 4 (forward + backward + AdamW step) and inference ms/frame (batch 1,
   decoding and NMS included), to set beside the published CenterPoint figures.

Exit status: 0 every check passed, 1 one failed, 2 no CUDA device (nothing run). The JSON report
goes to ``--out`` (default ``work_dirs/gpu_check/report.json``, written atomically) and stdout.
``--device cpu`` runs the same checks on the CPU (slow at full size; the test suite calls the
check functions with tiny inputs instead). About 2-4 minutes on one GPU, most of it the
synthetic data (generated once into the work dir) and the two training runs.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import detector  # noqa: E402,F401  (first: sets OMP_WAIT_POLICY before torch loads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEMO_CONFIG = REPO / "configs/demo/centerpoint_graddrop_demo.py"
WAYMO_CONFIG = REPO / "configs/waymo/centerpoint_graddrop_waymo_vehicle.py"
WAYMO_GRID = dict(voxel_size=[0.1, 0.1, 0.15], point_cloud_range=[-75.2, -75.2, -2.0, 75.2, 75.2, 4.0])


# ------------------------------------------------------------------------------------- helpers
def _tensor_diff(name: str, a: torch.Tensor, b: torch.Tensor) -> str | None:
    """None when ``a`` and ``b`` are equal (shape, dtype, every element); else what differs."""
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.shape != b.shape:
        return f"{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    if a.dtype != b.dtype:
        return f"{name}: dtype {a.dtype} vs {b.dtype}"
    if torch.equal(a, b):
        return None
    bad = (a != b) & ~(torch.isnan(a) & torch.isnan(b)) if a.is_floating_point() else a != b
    if not bad.any():
        return None
    i = int(torch.nonzero(bad.reshape(-1))[0])
    return (f"{name}: {int(bad.sum())} of {a.numel()} elements differ, first at flat index {i}: "
            f"{a.reshape(-1)[i].item()} vs {b.reshape(-1)[i].item()}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def losses_fall(losses, window: int = 5) -> bool:
    """Every loss finite and the mean of the last ``window`` below the mean of the first."""
    x = np.asarray(losses, dtype=np.float64)
    if x.size < 2 * window or not np.isfinite(x).all():
        return False
    return float(x[-window:].mean()) < float(x[:window].mean())


def _run_check(name: str, fn, *args, **kwargs) -> dict:
    t0 = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
    except Exception as e:  # a check that raises is a failed check, reported with its traceback
        out = dict(ok=False, error=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc(limit=20)[-4000:])
    out = {"name": name, **out, "seconds": round(time.perf_counter() - t0, 2)}
    return out


# ---------------------------------------------------------------------------- 1. voxelization
def check_voxelize(device: str = "cuda", num_points: int = 180_000, max_voxels: int = 150_000,
                   seed: int = 0, grid: dict | None = None) -> dict:
    """Hard and dynamic voxelization of one cloud on ``device`` vs the CPU kernels (numpy)."""
    from ops.voxelize import voxelize_dynamic, voxelize_hard
    grid = grid or WAYMO_GRID
    rng = np.random.default_rng(seed)
    lo = np.asarray(grid["point_cloud_range"][:3], np.float32)
    hi = np.asarray(grid["point_cloud_range"][3:], np.float32)
    vs = np.asarray(grid["voxel_size"], np.float32)
    n_edge = num_points // 10
    pts = np.zeros((num_points, 5), np.float32)
    # a dense lidar-like blob near the sensor, uniform points, and points on cell boundaries
    n_near = num_points // 2
    pts[:n_near, :3] = rng.normal(0, 8, (n_near, 3)) * [1, 1, 0.1]
    pts[n_near:num_points - n_edge, :3] = rng.uniform(lo - 1, hi + 1, (num_points - n_near - n_edge, 3))
    cells = rng.integers(0, np.round((hi - lo) / vs).astype(np.int64), (n_edge, 3))
    pts[num_points - n_edge:, :3] = lo + cells.astype(np.float32) * vs
    pts[:, 3:] = rng.uniform(0, 1, (num_points, 2))
    dev = torch.device(device)
    kw = dict(voxel_size=grid["voxel_size"], point_cloud_range=grid["point_cloud_range"])
    problems = []
    ref = voxelize_hard(pts, **kw, max_points_per_voxel=5, max_voxels=max_voxels, return_stats=True)
    got = voxelize_hard(torch.from_numpy(pts).to(dev), **kw, max_points_per_voxel=5,
                        max_voxels=max_voxels, return_stats=True)
    for name, a, b in zip(("voxels", "coords", "num_points"), ref[:3], got[:3]):
        if b.device.type != dev.type:
            problems.append(f"hard {name} came back on {b.device}, not {dev}")
        d = _tensor_diff(f"hard {name}", torch.from_numpy(np.asarray(a)), b)
        if d:
            problems.append(d)
    if ref[3] != got[3]:
        problems.append(f"hard stats {ref[3]} vs {got[3]}")
    ref_d = voxelize_dynamic(pts, **kw)
    got_d = voxelize_dynamic(torch.from_numpy(pts).to(dev), **kw)
    for name, a, b in zip(("point_voxel_ids", "coords"), ref_d, got_d):
        d = _tensor_diff(f"dynamic {name}", torch.from_numpy(np.asarray(a)), b)
        if d:
            problems.append(d)
    return dict(ok=not problems, problems=problems, num_points=num_points,
                num_voxels=int(len(ref[1])), device=str(dev))


# ---------------------------------------------------------------------------------- 2. GradDrop
def check_graddrop(device: str = "cuda", shape=(4, 64, 188, 188), num_tasks: int = 2,
                   seed: int = 0) -> dict:
    """``graddrop_combine`` with the torch backend on ``device`` vs Numba on the CPU."""
    from ops.graddrop import graddrop_combine
    dev = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    act = torch.randn(shape, generator=g)
    act[act.abs() < 0.1] = 0  # exact zeros: the sign-0 path
    grads = [torch.randn(shape, generator=g) for _ in range(num_tasks)]
    problems = []
    cases = [dict(batch_separated=True), dict(batch_separated=False),
             dict(batch_separated=True, leaks=[0.5] + [0.0] * (num_tasks - 1)),
             dict(batch_separated=True, random_sign=True)]
    for i, opts in enumerate(cases):
        cpu = graddrop_combine(grads, act, generator=torch.Generator().manual_seed(seed + i),
                               backend="numba", **opts)
        out = graddrop_combine([x.to(dev) for x in grads], act.to(dev),
                               generator=torch.Generator().manual_seed(seed + i), backend="torch",
                               **opts)
        if out.device.type != dev.type:
            problems.append(f"case {opts}: result on {out.device}")
        d = _tensor_diff(f"case {opts}", cpu, out)
        if d:
            problems.append(d)
    return dict(ok=not problems, problems=problems, shape=list(shape), num_tasks=num_tasks,
                device=str(dev))


# ------------------------------------------------------------------------------- 3. IoU and NMS
def _random_boxes(rng, n: int, spread: float = 20.0) -> np.ndarray:
    b = np.zeros((n, 7), np.float64)
    b[:, :2] = rng.uniform(-spread, spread, (n, 2))
    b[:, 2] = rng.uniform(-1, 1, n)
    b[:, 3:6] = rng.uniform([3.5, 1.6, 1.3], [5.5, 2.3, 2.0], (n, 3))
    b[:, 6] = rng.uniform(-np.pi, np.pi, n)
    # clusters of near-duplicates (what NMS sees), and a few identical boxes
    k = n // 4
    b[:k] = b[k:2 * k] + np.c_[rng.normal(0, 0.3, (k, 2)), np.zeros((k, 4)), rng.normal(0, 0.1, k)]
    b[-3:] = b[0]
    return b


def check_iou_nms(device: str = "cuda", num_boxes: int = 600, seed: int = 0) -> dict:
    """Rotated IoU (BEV and 3D) matrices and NMS on ``device`` vs the CPU kernels."""
    from ops.iou3d import boxes_iou3d, boxes_iou_bev, nms_bev
    dev = torch.device(device)
    rng = np.random.default_rng(seed)
    a = torch.from_numpy(_random_boxes(rng, num_boxes))
    b = torch.from_numpy(_random_boxes(rng, num_boxes // 2))
    problems = []
    max_diff = {}
    for name, fn in (("iou_bev", boxes_iou_bev), ("iou3d", boxes_iou3d)):
        ref, out = fn(a, b), fn(a.to(dev), b.to(dev))
        if out.device.type != dev.type:
            problems.append(f"{name} on {out.device}")
        diff = float((ref - out.cpu()).abs().max()) if ref.numel() else 0.0
        max_diff[name] = diff
        if diff > 1e-9:  # float64 kernels; the same arithmetic, a different compiler
            problems.append(f"{name}: max |CPU - {dev.type}| = {diff:.3g} > 1e-9")
    scores = torch.from_numpy(rng.uniform(0, 1, num_boxes))
    for thr in (0.1, 0.5, 0.7):
        ref = nms_bev(a, scores, thr, pre_max_size=4096, post_max_size=500)
        out = nms_bev(a.to(dev), scores.to(dev), thr, pre_max_size=4096, post_max_size=500)
        d = _tensor_diff(f"nms kept indices (threshold {thr})", ref, out)
        if d:
            problems.append(d)
    return dict(ok=not problems, problems=problems, max_abs_diff=max_diff, num_boxes=num_boxes,
                device=str(dev))


# ------------------------------------------------------------------------------------ 4. train
def make_check_data(root: Path, train_frames: int = 2, val_frames: int = 1) -> Path:
    """Synthetic segments converted like the demo's (TOP lidar, first return), once per ``root``."""
    from detector.datasets.synthetic import SceneConfig, generate_dataset
    from detector.datasets.waymo.conversion import convert
    root = Path(root)
    done = root / "DONE"
    if not done.exists():
        cfg = SceneConfig(half_length=40.0)
        for split, nfr, seed in (("train", train_frames, 0), ("val", val_frames, 1000)):
            paths = generate_dataset(root / "raw" / split, 1, nfr, seed, split, workers=1, config=cfg)
            convert(paths, root / "converted", split, workers=1, lidars=[1], returns=[1],
                    progress=False, log=None)
        done.write_text("ok")
    return root / "converted"


def _state_probe():
    """An mmengine hook that records the runner's full training state at ``before_train``,
    i.e. after a resume has loaded the checkpoint."""
    from mmengine.hooks import Hook

    class StateProbe(Hook):
        priority = "LOWEST"
        state = None

        def before_train(self, runner):
            self.state = _runner_state(runner)

    return StateProbe()


def _runner_state(runner) -> dict:
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    return dict(iter=runner.iter, epoch=runner.epoch,
                params={k: v.detach().clone() for k, v in model.state_dict().items()},
                optim=_clone(runner.optim_wrapper.state_dict()),
                sched=[_clone(s.state_dict()) for s in runner.param_schedulers])


def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    return x


def _state_diff(a: dict, b: dict, what: str) -> list[str]:
    out = []

    def walk(x, y, path):
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            d = _tensor_diff(path, torch.as_tensor(x), torch.as_tensor(y))
            if d:
                out.append(d)
        elif isinstance(x, dict) and isinstance(y, dict):
            if set(x) != set(y):
                out.append(f"{path}: keys {sorted(map(str, set(x) ^ set(y)))} differ")
            for k in set(x) & set(y):
                if k == "_get_lr_called_within_step":
                    continue
                walk(x[k], y[k], f"{path}.{k}")
        elif isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            if len(x) != len(y):
                out.append(f"{path}: length {len(x)} vs {len(y)}")
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{path}[{i}]")
        elif x != y and not (isinstance(x, float) and isinstance(y, float) and math.isnan(x)
                             and math.isnan(y)):
            out.append(f"{path}: {x!r} vs {y!r}")

    walk(a, b, what)
    return out


def _train_run(cfg_path: Path, data_root: Path, work_dir: Path, device: str, amp: bool,
               max_epochs: int | None, resume: bool, overrides: dict):
    from mmengine.registry import DefaultScope

    from detector.engine.runner import build_runner, load_config
    opts = {"train_dataloader.batch_size": 2, "train_dataloader.num_workers": 0,
            "default_hooks.logger.interval": 1, **overrides}
    if max_epochs is not None:
        opts["train_cfg.max_epochs"] = max_epochs
    if amp:
        opts["optim_wrapper.type"] = "AmpOptimWrapper"
        opts["optim_wrapper.loss_scale"] = "dynamic"
    cfg = load_config(str(cfg_path), None, str(data_root), phases=("train",))
    cfg.merge_from_dict(opts)  # our own keys (loss_scale is new to the demo config), not user input
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h["type"] != "ProgressBarHook"]
    cfg.work_dir = str(work_dir)
    cfg.visualizer = dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend")])
    cfg.env_cfg = {**cfg.env_cfg, "dist_cfg": dict(backend="gloo")}
    runner = build_runner(cfg, resume=True if resume else None)
    if device != "cpu" and next(runner.model.parameters()).device.type != torch.device(device).type:
        raise RuntimeError(f"the runner put the model on {next(runner.model.parameters()).device}, "
                           f"not {device}")
    probe = _state_probe()
    runner.register_hook(probe, priority="LOWEST")
    runner.train()
    hist = runner.message_hub.get_scalar("train/loss").data[0]
    out = dict(state=_runner_state(runner), start=probe.state, losses=[float(x) for x in hist])
    DefaultScope._instance_dict.clear()
    return out


def check_training(device: str = "cuda", amp: bool = False, data_root: Path | None = None,
                   work_dir: Path | None = None, config: Path = DEMO_CONFIG, epochs: int = 30,
                   half: int = 15, overrides: dict | None = None,
                   require_falling: bool = True) -> dict:
    """``epochs`` one-iteration epochs of ``config`` on ``device`` (2 training frames, batch 2),
    uninterrupted and as ``half`` + resume: losses finite (and falling), exact resume."""
    if device != "cpu" and torch.device(device).type != "cuda":
        raise ValueError(f"device {device!r}: expected cpu or cuda")
    if device == "cpu" and amp:
        raise ValueError("AMP (AmpOptimWrapper) needs CUDA")
    if (device == "cpu") == torch.cuda.is_available():
        # mmengine's Runner picks the device itself: CUDA whenever there is one
        raise RuntimeError(f"device {device!r} but torch.cuda.is_available() is "
                           f"{torch.cuda.is_available()}; mmengine trains on CUDA exactly when "
                           f"it is available (hide the GPU with CUDA_VISIBLE_DEVICES= for cpu)")
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="gpu_check_train_"))
    data_root = Path(data_root) if data_root else make_check_data(work_dir / "data")
    over = {"default_hooks.checkpoint.interval": half, "default_hooks.checkpoint.max_keep_ckpts": 4,
            **(overrides or {})}
    tag = "amp" if amp else "fp32"
    import shutil
    for run in ("full", "part"):  # a previous gpu_check's checkpoints must not be resumed from
        shutil.rmtree(work_dir / f"{tag}_{run}", ignore_errors=True)
    full = _train_run(config, data_root, work_dir / f"{tag}_full", device, amp, None, False, over)
    part = _train_run(config, data_root, work_dir / f"{tag}_part", device, amp, half, False, over)
    ckpt = work_dir / f"{tag}_part" / f"epoch_{half}.pth"
    problems = []
    if not ckpt.is_file():
        problems.append(f"no checkpoint {ckpt}")
    res = _train_run(config, data_root, work_dir / f"{tag}_part", device, amp, None, True, over)
    losses = full["losses"]
    if len(losses) != epochs:
        problems.append(f"{len(losses)} training steps logged, expected {epochs}")
    if not all(math.isfinite(x) for x in losses + res["losses"]):
        problems.append("non-finite loss")
    falling = losses_fall(losses)
    if require_falling and not falling:
        problems.append(f"losses do not fall: first {losses[:5]}, last {losses[-5:]}")
    # the resumed run starts from exactly the state the interrupted one saved
    start_diff = _state_diff(part["state"], res["start"], "resumed start") if res["start"] else \
        ["no state captured at the resumed run's start"]
    problems += start_diff[:10]
    end_diff = _state_diff(full["state"], res["state"], "resumed end")
    bitwise = not end_diff
    if device == "cpu" and not bitwise:
        problems += end_diff[:10]
    max_param_diff = max((float((full["state"]["params"][k].double()
                                 - res["state"]["params"][k].double()).abs().max())
                          for k in full["state"]["params"]
                          if full["state"]["params"][k].is_floating_point()), default=0.0)
    return dict(ok=not problems, problems=problems, amp=amp, device=device, steps=len(losses),
                first_losses=losses[:5], last_losses=losses[-5:], losses_fall=falling,
                resume_state_exact=not start_diff, resume_end_bitwise=bitwise,
                resume_end_max_param_diff=max_param_diff, work_dir=str(work_dir))


# ------------------------------------------------------------------------------- 5. throughput
def _synthetic_batch(n: int, seed: int, frame_kwargs: dict, class_count: int = 1):
    from detector.testing.model_frame import make_frame
    from detector.structures import Det3DSample
    pts, samples = [], []
    for i in range(n):
        p, b = make_frame(seed=seed + i, **frame_kwargs)
        pts.append(p)
        labels = torch.arange(len(b), dtype=torch.long) % class_count
        samples.append(Det3DSample(b, labels, frame_id=i))
    return pts, samples


def check_throughput(device: str = "cuda", config: Path = WAYMO_CONFIG, batch: int = 4,
                     warmup: int = 3, steps: int = 10, infer_frames: int = 20,
                     frame_kwargs: dict | None = None) -> dict:
    """Training frames/s (batch ``batch``) and inference ms/frame of ``config``'s model."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper

    import detector.models  # noqa: F401  (registers the modules)
    from detector.registry import MODELS
    dev = torch.device(device)
    cfg = Config.fromfile(str(config))
    model = MODELS.build(cfg.model).to(dev)
    ow = build_optim_wrapper(model, cfg.optim_wrapper)
    kw = dict(num_boxes=40, box_range=70.0, max_range=75.0)
    kw.update(frame_kwargs or {})
    ncls = len(model.class_names)
    batches = [_synthetic_batch(batch, 100 * i, kw, ncls) for i in range(min(3, warmup + steps))]
    npts = [int(p.shape[0]) for p in batches[0][0]]
    model.train()
    times = []
    losses = []
    for i in range(warmup + steps):
        pts, samples = batches[i % len(batches)]
        _sync(dev)
        t0 = time.perf_counter()
        log = model.train_step(dict(inputs=dict(points=pts), data_samples=samples), ow)
        _sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        losses.append(float(log["loss"].detach()))
    model.eval()
    frames = _synthetic_batch(min(infer_frames, 3), 999, kw, ncls)
    lat = []
    with torch.no_grad():
        for i in range(warmup + infer_frames):
            j = i % len(frames[0])
            _sync(dev)
            t0 = time.perf_counter()
            out = model.test_step(dict(inputs=dict(points=[frames[0][j]]),
                                       data_samples=[frames[1][j]]))
            _sync(dev)
            if i >= warmup:
                lat.append(time.perf_counter() - t0)
    problems = [] if all(math.isfinite(x) for x in losses) else ["non-finite training loss"]
    if len(out) != 1:
        problems.append(f"test_step returned {len(out)} results for one frame")
    step = float(np.median(times))
    res = dict(ok=not problems, problems=problems, device=str(dev), config=str(config.name)
               if isinstance(config, Path) else str(config), batch=batch,
               points_per_frame=int(np.mean(npts)), train_step_s=round(step, 4),
               train_frames_per_s=round(batch / step, 2),
               inference_ms_per_frame=round(1000 * float(np.median(lat)), 2),
               timed_train_steps=len(times), timed_inference_frames=len(lat))
    if dev.type == "cuda":
        res["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 30, 2)
    return res


# ---------------------------------------------------------------------------------------- main
def environment(libraries: bool = True) -> dict:
    """Versions and devices for the report (``libraries=False``: torch only, fast)."""
    env = dict(python=sys.version.split()[0], torch=torch.__version__,
               cuda_available=torch.cuda.is_available(), torch_cuda=torch.version.cuda)
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    if not libraries:
        return env
    for mod in ("numba", "spconv", "mmengine"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - report, do not fail here
            env[mod] = f"unavailable ({type(e).__name__}: {e})"
    try:
        from numba import cuda
        env["numba_cuda_available"] = bool(cuda.is_available())
    except Exception as e:  # noqa: BLE001
        env["numba_cuda_available"] = f"error: {e}"
    return env


def write_report(report: dict, path: Path) -> None:
    """Write the JSON report atomically (temp file in the same folder, then rename)."""
    from detector.fileio import atomic_write

    with atomic_write(Path(path), "w") as f:
        json.dump(report, f, indent=2, default=str)
        f.write("\n")


CHECKS = ("voxelize", "graddrop", "iou_nms", "train_fp32", "train_amp", "throughput")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "work_dirs/gpu_check/report.json",
                   help="JSON report (default work_dirs/gpu_check/report.json)")
    p.add_argument("--work-dir", type=Path, default=REPO / "work_dirs/gpu_check",
                   help="synthetic data and training runs (default work_dirs/gpu_check)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    p.add_argument("--only", nargs="+", choices=CHECKS, help="run only these checks")
    args = p.parse_args(argv)
    no_cuda = args.device != "cpu" and not torch.cuda.is_available()
    env = environment(libraries=not no_cuda)
    report = dict(tool="tools/gpu_check.py", started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  device=args.device, environment=env, checks=[])
    if no_cuda:
        report.update(ok=False, status="no CUDA device: torch.cuda.is_available() is False; "
                                       "nothing was checked")
        write_report(report, args.out)
        print(json.dumps(report, indent=2, default=str))
        print("gpu_check: no CUDA device, nothing checked (exit 2)", file=sys.stderr)
        return 2
    selected = args.only or list(CHECKS)
    if args.device == "cpu":
        selected = [c for c in selected if c != "train_amp"]  # AmpOptimWrapper needs CUDA
    t0 = time.perf_counter()
    data_root = None
    for name in selected:
        if name.startswith("train") and data_root is None:
            data_root = make_check_data(args.work_dir / "data")
        fn = dict(voxelize=lambda: check_voxelize(args.device),
                  graddrop=lambda: check_graddrop(args.device),
                  iou_nms=lambda: check_iou_nms(args.device),
                  train_fp32=lambda: check_training(args.device, False, data_root,
                                                    args.work_dir / "train"),
                  train_amp=lambda: check_training(args.device, True, data_root,
                                                   args.work_dir / "train"),
                  throughput=lambda: check_throughput(args.device))[name]
        res = _run_check(name, fn)
        report["checks"].append(res)
        print(f"gpu_check: {name}: {'ok' if res['ok'] else 'FAILED'} ({res['seconds']} s)",
              file=sys.stderr)
        write_report(report, args.out)  # partial results survive a crash or a timeout
    report["ok"] = all(c["ok"] for c in report["checks"])
    report["status"] = "all checks passed" if report["ok"] else "FAILED: " + ", ".join(
        c["name"] for c in report["checks"] if not c["ok"])
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_report(report, args.out)
    print(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
