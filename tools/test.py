"""Evaluate a checkpoint with the Waymo metrics (mmdetection3d-style command line).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out-submission FILE.bin]
                         [--out FILE.npz|FILE.json] [--show-dir DIR]
                         [--cfg-options k=v ...] [--launcher none|pytorch|slurm]

Prints the official metrics table (AP / APH per type and range, LEVEL_1 / LEVEL_2), writes
``WORK_DIR/metrics.json`` as ``{breakdown_name: {"AP": .., "APH": ..}}`` plus ``"eval_range"``
(which ground truth was scored), with
``--out-submission`` the detections as a ``metrics_pb2.Objects`` file, with ``--out`` the raw
per-frame detections (boxes, scores, labels), and with ``--show-dir`` pictures of every
frame's detections against its ground truth. The checkpoint must fit the config exactly:
missing, unexpected or mis-shaped weights stop the run (exit status 2) naming them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import detector  # noqa: E402,F401  (first: sets OMP_WAIT_POLICY before torch loads)


def parse_args(argv=None):
    from detector.cli import add_common_cli_args, parse_cli_args

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    add_common_cli_args(p, "where metrics.json and logs go (default work_dirs/<config>)")
    p.add_argument("--out-submission", help="write detections as a metrics_pb2.Objects file")
    p.add_argument("--out", metavar="FILE", help="write the raw per-frame detections (.npz or "
                   ".json: boxes, scores, labels, types)")
    p.add_argument("--show-dir", metavar="DIR", help="write pictures (chase, top, BEV) of every "
                   "test frame's detections vs ground truth into DIR")
    p.add_argument("--score-thr", type=float, default=0.3,
                   help="--show-dir: hide detections scoring below this (default: 0.3)")
    return parse_cli_args(p, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from detector.engine.runner import ConfigError, build_runner, finish_distributed, load_config

    if not Path(args.checkpoint).is_file():
        print(f"error: checkpoint {args.checkpoint!r} does not exist", file=sys.stderr)
        return 2
    if args.out and Path(args.out).suffix.lower() not in (".npz", ".json"):
        print(f"error: --out {args.out}: expected a .npz or .json file name", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.cfg_options, args.data_root, phases=("test",))
    except ConfigError as e:
        print(f"error: {args.config}: {e}", file=sys.stderr)
        return 2
    from detector.engine.inference import CheckpointMismatchError, load_weights

    work_dir = args.work_dir or str(Path("work_dirs") / Path(args.config).stem)
    from detector.fileio import check_writable
    try:  # before the test run, not after it
        if args.out_submission:
            check_writable(args.out_submission, "--out-submission")
        if args.out:
            check_writable(args.out, "--out")
        check_writable(Path(work_dir) / "metrics.json", "metrics file")
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    submission = args.out_submission
    if args.show_dir and not submission:
        submission = str(Path(work_dir) / "show_dir_detections.bin")
    for ev in (cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]):
        if ev.get("type") == "WaymoMetric":
            ev["metrics_json"] = str(Path(work_dir) / "metrics.json")
            ev["print_table"] = True
            if submission:
                ev["submission_path"] = submission
            if args.out:
                ev["predictions_path"] = args.out
    runner = build_runner(cfg, work_dir=work_dir, launcher=args.launcher)
    try:  # strict: a checkpoint of another config must not evaluate to a number
        load_weights(runner.model, args.checkpoint, strict=True)
    except CheckpointMismatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runner.test()
    finish_distributed()
    if args.show_dir:
        from detector.visualization.pictures import write_demo_pictures

        ds = cfg.test_dataloader.dataset
        paths = write_demo_pictures(ds.data_root, args.show_dir, split=ds.get("split", "val"),
                                    num_frames=10**9, predictions=submission,
                                    score_thr=args.score_thr)
        print(f"wrote {len(paths)} pictures of {len(paths) // 3} frames to {args.show_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
