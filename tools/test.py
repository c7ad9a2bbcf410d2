"""Evaluate a checkpoint with the Waymo metrics (mmdetection3d-style command line).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out-submission FILE.bin]
                         [--cfg-options k=v ...] [--launcher none|pytorch|slurm]

Prints the official metrics table (AP / APH per type and range, LEVEL_1 / LEVEL_2), writes
``WORK_DIR/metrics.json`` as ``{breakdown_name: {"AP": .., "APH": ..}}``, and with
``--out-submission`` the detections as a ``metrics_pb2.Objects`` file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import detector  # noqa: E402,F401  (first: sets OMP_WAIT_POLICY before torch loads)


def parse_args(argv=None):
    from detector.engine.runner import add_common_cli_args, parse_cli_args

    p = argparse.ArgumentParser(description="Evaluate a LiDAR 3D detector on the Waymo metrics")
    p.add_argument("config")
    p.add_argument("checkpoint")
    add_common_cli_args(p, "where metrics.json and logs go (default work_dirs/<config>)")
    p.add_argument("--out-submission", help="write detections as a metrics_pb2.Objects file")
    return parse_cli_args(p, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from detector.engine.runner import ConfigError, build_runner, load_config

    if not Path(args.checkpoint).is_file():
        print(f"error: checkpoint {args.checkpoint!r} does not exist", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.cfg_options, args.data_root, phases=("test",))
    except ConfigError as e:
        print(f"error: {args.config}: {e}", file=sys.stderr)
        return 2
    work_dir = args.work_dir or str(Path("work_dirs") / Path(args.config).stem)
    from detector.fileio import check_writable
    try:  # before the test run, not after it
        if args.out_submission:
            check_writable(args.out_submission, "--out-submission")
        check_writable(Path(work_dir) / "metrics.json", "metrics file")
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for ev in (cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]):
        if ev.get("type") == "WaymoMetric":
            ev["metrics_json"] = str(Path(work_dir) / "metrics.json")
            ev["print_table"] = True
            if args.out_submission:
                ev["submission_path"] = args.out_submission
    runner = build_runner(cfg, work_dir=work_dir, load_from=args.checkpoint, launcher=args.launcher)
    runner.test()
    return 0


if __name__ == "__main__":
    sys.exit(main())
