"""Train one config with several multitask gradient methods over several seeds; compare them.

    python tools/compare_methods.py CONFIG --methods sum graddrop pcgrad ... --seeds 0 1 2
        [--work-dir work_dirs/compare] [--data-root CONVERTED] [--epochs N]
        [--grouping cls_box] [--option METHOD.KEY=VALUE ...] [--jobs N] [--report-only]

Each (method, seed) trains in its own subprocess into ``WORK_DIR/<method>_seed<seed>/`` (the
method set as ``model.head.gradient = dict(method=..., grouping=...)``, the seed as
``randomness.seed``), then the final checkpoint is evaluated on the config's val split. Its
metrics, per-task final losses and step time go to ``result.json`` there (written atomically);
a rerun skips every finished run and resumes an interrupted one from its last checkpoint, so
the command can be stopped and started again at any time. Runs go seed by seed (every method
with seed 0 first), so a partial comparison still covers every method.

Printed table (and ``WORK_DIR/summary.md``): vehicle L1/L2 AP and APH mean +- sd over the
finished seeds, each task's final training loss (mean of the last 20 iterations), the tasks'
gradient cosine and sign-conflict share at the shared activation over the run (``grad cos``,
``conflict``: GradientStatsHook's diagnostics from the run's scalar log), the step-time
ratio against ``sum`` (median iteration time over the run; sequential runs on a shared machine,
so only a rough figure: tools/benchmarks/bench_multitask.py measures it interleaved), and
Welch's t-test of L1 AP against ``sum`` (p-value; needs >= 2 seeds of both). ``WORK_DIR/ap.png``
shows L1 AP per method with every seed's point.

``--epochs N`` shortens the schedule (train_cfg.max_epochs and the cosine schedule's end both
set to N). Help answers without importing torch.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VEHICLE = "TYPE_VEHICLE"
METRICS = [("L1 AP", "LEVEL_1", "AP"), ("L1 APH", "LEVEL_1", "APH"),
           ("L2 AP", "LEVEL_2", "AP"), ("L2 APH", "LEVEL_2", "APH")]


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _parse_options(items):
    """["cagrad.c=0.4", ...] -> {"cagrad": {"c": 0.4}}"""
    out: dict[str, dict] = {}
    for item in items or []:
        try:
            head, value = item.split("=", 1)
            method, key = head.split(".", 1)
        except ValueError:
            raise SystemExit(f"error: --option {item!r} must look like METHOD.KEY=VALUE")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        out.setdefault(method, {})[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# One run (in a subprocess)
# ---------------------------------------------------------------------------------------------
def _set_epochs(cfg, epochs: int) -> None:
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = epochs
    for s in cfg.get("param_scheduler") or []:
        if s.get("type") == "CosineAnnealingLR" and s.get("by_epoch", True):
            s["end"] = epochs
            s["T_max"] = epochs


def run_one(config: str, method: str, seed: int, run_dir: Path, data_root: str | None,
            epochs: int | None, grouping: str, options: dict) -> dict:
    import detector  # noqa: F401  (registers the modules, sets OMP_WAIT_POLICY)
    from detector.engine.runner import build_runner, check_config, load_config
    import numpy as np

    train_dir = run_dir / "train"
    cfg = load_config(config, None, data_root, phases=("train", "test"))
    cfg.model.head.gradient = dict(method=method, grouping=grouping, **options)
    cfg.randomness = dict(seed=int(seed), deterministic=False)
    if epochs:
        _set_epochs(cfg, int(epochs))
    max_epochs = int(cfg.train_cfg.max_epochs)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # evaluated once, below
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    hooks = [h for h in cfg.get("custom_hooks", []) if h.get("type") != "ProgressBarHook"]
    if not any(h.get("type") == "GradientStatsHook" for h in hooks):
        hooks.append(dict(type="GradientStatsHook", interval=50))
    cfg.custom_hooks = hooks
    cfg.work_dir = str(train_dir)
    check_config(cfg, phases=("train",))
    ckpt = train_dir / f"epoch_{max_epochs}.pth"
    t0 = time.time()
    losses: dict[str, float] = {}
    step_s = None
    task_keys = None
    if not ckpt.is_file():
        resume = (train_dir / "last_checkpoint").is_file()
        runner = build_runner(cfg, resume=True if resume else None)
        runner.train()
        hub = runner.message_hub
        for key, buf in hub.log_scalars.items():
            if key.startswith("train/loss"):
                data = np.asarray(buf.data[0], dtype=float)
                losses[key[len("train/"):]] = float(data[-20:].mean())
        times = np.asarray(hub.log_scalars["train/time"].data[0], dtype=float)
        step_s = float(np.median(times[5:] if times.size > 10 else times))
        head = runner.model.module.head if hasattr(runner.model, "module") else runner.model.head
        task_keys = dict(zip(head.task_names, head.loss_keys_of_task()))
        _write_json_atomic(run_dir / "train_stats.json",
                           dict(losses=losses, step_s=step_s, task_keys=task_keys,
                                train_s=time.time() - t0, iters=int(runner.iter)))
    stats = json.loads((run_dir / "train_stats.json").read_text())
    # Evaluate the final checkpoint.
    ecfg = load_config(config, None, data_root, phases=("test",))
    ecfg.model.head.gradient = dict(method=method, grouping=grouping, **options)
    metrics_json = run_dir / "metrics.json"
    ecfg.test_evaluator.update(metrics_json=str(metrics_json), print_table=True)
    ecfg.work_dir = str(run_dir / "eval")
    ecfg.custom_hooks = [h for h in ecfg.get("custom_hooks", [])
                         if h.get("type") != "ProgressBarHook"]
    runner = build_runner(ecfg, load_from=str(ckpt))
    runner.test()
    metrics = json.loads(metrics_json.read_text())
    vehicle = {}
    for name, level, kind in METRICS:
        key = next((k for k in metrics if k.startswith("OBJECT_TYPE") and VEHICLE in k
                    and level in k), None)
        if key is None:
            raise RuntimeError(f"{metrics_json}: no OBJECT_TYPE {VEHICLE} {level} row; rows: "
                               f"{sorted(metrics)}")
        vehicle[name] = float(metrics[key][kind])
    task_losses = {t: sum(stats["losses"].get(k, float("nan")) for k in keys)
                   for t, keys in stats["task_keys"].items()}
    result = dict(method=method, seed=seed, config=str(config), grouping=grouping,
                  options=options, epochs=max_epochs, vehicle=vehicle, losses=stats["losses"],
                  task_losses=task_losses, step_s=stats["step_s"], train_s=stats["train_s"],
                  iters=stats["iters"])
    _write_json_atomic(run_dir / "result.json", result)
    return result


# ---------------------------------------------------------------------------------------------
# Table and plot
# ---------------------------------------------------------------------------------------------
def _mean_sd(values):
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return m, sd


def welch_p(a, b) -> float:
    """Two-sided Welch t-test p-value (NaN with fewer than 2 values on a side)."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue)


def summarize(results: list[dict], methods: list[str]) -> str:
    by = {m: [r for r in results if r["method"] == m] for m in methods}
    tasks = sorted({t for r in results for t in r["task_losses"]})
    base_time = _mean_sd([r["step_s"] for r in by.get("sum", [])])[0]
    base_ap = [r["vehicle"]["L1 AP"] for r in by.get("sum", [])]
    head = (["method", "seeds"] + [n for n, _, _ in METRICS] + [f"loss {t}" for t in tasks]
            + ["grad cos", "conflict"] + ["time/sum", "p (L1 AP vs sum)"])
    rows = []
    for m in methods:
        rs = by[m]
        if not rs:
            rows.append([m, "none"] + ["-"] * (len(head) - 2))
            continue
        row = [m, ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))]
        for name, _, _ in METRICS:
            mean, sd = _mean_sd([r["vehicle"][name] for r in rs])
            row.append(f"{mean:.3f}" + (f" +- {sd:.3f}" if not math.isnan(sd) else ""))
        for t in tasks:
            mean, sd = _mean_sd([r["task_losses"].get(t, float("nan")) for r in rs])
            row.append(f"{mean:.3f}")
        for key in ("cos", "conflict"):
            vals = [r.get("grad", {})[key] for r in rs if key in r.get("grad", {})]
            row.append(f"{_mean_sd(vals)[0]:.3f}" if vals else "-")
        t_mean = _mean_sd([r["step_s"] for r in rs])[0]
        row.append(f"{t_mean / base_time:.2f}x" if base_time and not math.isnan(base_time) else "-")
        p = welch_p([r["vehicle"]["L1 AP"] for r in rs], base_ap) if m != "sum" else float("nan")
        row.append("-" if math.isnan(p) else f"{p:.3f}")
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def plot(results: list[dict], methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(methods) + 2), 3.6))
    for i, m in enumerate(methods):
        aps = [r["vehicle"]["L1 AP"] for r in results if r["method"] == m]
        if not aps:
            continue
        ax.scatter([i] * len(aps), aps, color="tab:blue", s=18, zorder=3)
        ax.hlines(sum(aps) / len(aps), i - 0.3, i + 0.3, color="tab:red", zorder=2)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel("vehicle L1 AP")
    ax.set_title("L1 AP per method (dots: seeds, line: mean)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def grad_stats(run_dir: Path) -> dict:
    """Mean over a run's logged iterations of the gradient diagnostics that GradientStatsHook
    puts in mmengine's scalar log (``train/<stamp>/vis_data/scalars.json``, one JSON object per
    logged iteration; a resumed run has one file per start): ``cos`` (mean over task pairs of
    ``grad/cos/a~b``), ``conflict`` (``grad/conflict``) and ``kept/<task>``. Empty without
    the log."""
    sums: dict[str, list[float]] = {}
    for f in sorted(run_dir.glob("train/*/vis_data/scalars.json")):
        for line in f.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption
            cos = [v for k, v in row.items() if k.startswith("grad/cos/")]
            if cos:
                sums.setdefault("cos", []).append(sum(cos) / len(cos))
            if "grad/conflict" in row:
                sums.setdefault("conflict", []).append(row["grad/conflict"])
            for k, v in row.items():
                if k.startswith("grad/kept/"):
                    sums.setdefault(k[len("grad/"):], []).append(v)
    return {k: sum(v) / len(v) for k, v in sums.items()}


def load_results(work_dir: Path, methods, seeds) -> list[dict]:
    out = []
    for seed in seeds:
        for m in methods:
            run_dir = work_dir / f"{m}_seed{seed}"
            f = run_dir / "result.json"
            if f.is_file():
                r = json.loads(f.read_text())
                r.setdefault("grad", grad_stats(run_dir))
                out.append(r)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="Train CONFIG with each multitask gradient method and seed (resumable: "
                    "finished runs are skipped), then print a comparison table and write a plot.")
    p.add_argument("config")
    p.add_argument("--methods", nargs="+", default=["sum", "graddrop", "random_sign", "pcgrad",
                                                    "mgda", "cagrad", "upgrad", "gradnorm"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--work-dir", default=str(REPO / "work_dirs" / "compare"))
    p.add_argument("--data-root", default=None, help="converted data root (default: the config's)")
    p.add_argument("--epochs", type=int, default=None, help="shorter schedule (max_epochs)")
    p.add_argument("--grouping", default="cls_box",
                   help="task layout: cls_box, per_branch, per_group, per_group_cls_box")
    p.add_argument("--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a method option, e.g. cagrad.c=0.4 (repeatable)")
    p.add_argument("--report-only", action="store_true", help="train nothing; table + plot only")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once (each with cpu_count // jobs threads; the CPU "
                        "sparse convolution of spconv uses one thread, so 2 jobs on 2 cores "
                        "finish the queue sooner). Step times are then shared-machine figures")
    p.add_argument("--run-one", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    work_dir = Path(args.work_dir)
    options = _parse_options(args.option)

    if args.run_one:
        method, seed = args.run_one[0], int(args.run_one[1])
        run_dir = work_dir / f"{method}_seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        run_one(args.config, method, seed, run_dir, args.data_root, args.epochs, args.grouping,
                options.get(method, {}))
        return 0

    sys.path.insert(0, str(REPO))
    from ops.multitask.methods import METHODS  # light: torch only, no training stack

    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        print(f"error: unknown method(s) {unknown}; valid: {sorted(METHODS)}", file=sys.stderr)
        return 2
    work_dir.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    if not args.report_only:
        queue = []
        for seed in args.seeds:
            for m in args.methods:
                run_dir = work_dir / f"{m}_seed{seed}"
                if (run_dir / "result.json").is_file():
                    print(f"[compare] {m} seed {seed}: done, skipped", flush=True)
                    continue
                run_dir.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, __file__, args.config, "--run-one", m, str(seed),
                       "--work-dir", str(work_dir), "--grouping", args.grouping]
                cmd += [f"--option={o}" for o in args.option]
                if args.data_root:
                    cmd += ["--data-root", args.data_root]
                if args.epochs:
                    cmd += ["--epochs", str(args.epochs)]
                queue.append((f"{m} seed {seed}", cmd, run_dir / "run.log"))
        failed = run_queue(queue, args.jobs,
                           on_done=lambda: _report(work_dir, args.methods, args.seeds))
    _report(work_dir, args.methods, args.seeds)
    if failed:
        print(f"[compare] {len(failed)} run(s) failed: {', '.join(failed)} (rerun to retry)",
              file=sys.stderr, flush=True)
        return 1
    return 0


def run_queue(queue, jobs: int, on_done=None) -> list[str]:
    """Run ``queue`` ([(name, argv, log_path)], in order) with at most ``jobs`` at once.

    Each child appends its output to its log and, when ``jobs > 1``, gets
    ``OMP_NUM_THREADS`` / ``NUMBA_NUM_THREADS`` = cpu_count // jobs (at least 1), so the jobs
    do not oversubscribe the cores. ``on_done()`` runs after each child that exits 0 (the
    table is rewritten as results arrive). Returns the names of the failed runs.
    """
    jobs = max(1, int(jobs))
    env = dict(os.environ)
    if jobs > 1:
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        env.update(OMP_NUM_THREADS=threads, NUMBA_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    pending = list(queue)
    running: list[tuple] = []
    failed: list[str] = []
    while pending or running:
        while pending and len(running) < jobs:
            name, cmd, log_path = pending.pop(0)
            print(f"[compare] {name}: training -> {Path(log_path).parent}", flush=True)
            log = open(log_path, "a")
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((name, proc, log, log_path, time.time()))
        time.sleep(0.2)
        for item in list(running):
            name, proc, log, log_path, t = item
            rc = proc.poll()
            if rc is None:
                continue
            running.remove(item)
            log.close()
            if rc != 0:
                failed.append(name)
                print(f"[compare] {name}: FAILED (exit {rc}), see {log_path}", flush=True)
                continue
            print(f"[compare] {name}: done in {time.time() - t:.0f} s", flush=True)
            if on_done is not None:
                on_done()
    return failed


def _report(work_dir: Path, methods, seeds) -> None:
    results = load_results(work_dir, methods, seeds)
    table = summarize(results, methods)
    print(table, flush=True)
    tmp = work_dir / "summary.md.tmp"
    tmp.write_text(table + "\n")
    os.replace(tmp, work_dir / "summary.md")
    if results:
        plot(results, methods, work_dir / "ap.png")


if __name__ == "__main__":
    sys.exit(main())
