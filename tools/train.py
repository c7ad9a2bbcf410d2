"""Train a detector from an mmengine config (mmdetection3d-style command line).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr] [--verify]
                          [--cfg-options k=v ...] [--launcher none|pytorch|slurm] [--data-root DIR]

Distributed: ``torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch``.
``--resume`` without a path continues from ``WORK_DIR/last_checkpoint``.
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
    p.add_argument("config", help="config file (python)")
    add_common_cli_args(p, "where logs and checkpoints go (default work_dirs/<config>)")
    p.add_argument("--resume", nargs="?", type=str, const="auto",
                   help="resume from CKPT, or from the work dir's last checkpoint when no path")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: float16 + loss scaling on CUDA, bfloat16 on the CPU")
    p.add_argument("--auto-scale-lr", action="store_true",
                   help="scale the learning rate by the total batch (processes x batch_size) "
                        "over the config's auto_scale_lr.base_batch_size")
    p.add_argument("--verify", action="store_true",
                   help="re-hash the converted data against its manifest checksums first")
    return parse_cli_args(p, argv)


def enable_auto_scale_lr(cfg) -> None:
    """``--auto-scale-lr``: switch mmengine's auto_scale_lr on, or fail naming what is missing."""
    from detector.engine.runner import ConfigError

    asl = cfg.get("auto_scale_lr")
    if not asl or not asl.get("base_batch_size"):
        raise ConfigError("--auto-scale-lr needs auto_scale_lr.base_batch_size in the config "
                          "(the total batch its learning rate was tuned for)")
    asl["enable"] = True


def main(argv=None) -> int:
    args = parse_args(argv)
    from detector.engine.runner import ConfigError, build_runner, finish_distributed, load_config

    try:
        cfg = load_config(args.config, args.cfg_options, args.data_root, phases=("train", "val"))
        if args.auto_scale_lr:
            enable_auto_scale_lr(cfg)
        if cfg.get("load_from") and not args.resume:
            # fine-tuning loads non-strictly (mmengine lists what it skipped); no weights at all
            # is an error, not a silent fresh start
            from detector.engine.inference import CheckpointMismatchError, read_state_dict
            try:
                read_state_dict(cfg.load_from)
            except (FileNotFoundError, CheckpointMismatchError) as e:
                raise ConfigError(f"config key 'load_from': {e}") from None
    except ConfigError as e:
        print(f"error: {args.config}: {e}", file=sys.stderr)
        return 2
    from detector.datasets.converted import ConvertedDataError
    from detector.datasets.dataset import check_training_data
    try:  # splits / GT database converted alike (and, with --verify, intact)
        check_training_data(cfg, verify=args.verify, log=lambda m: print(m, file=sys.stderr))
    except ConvertedDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from detector.engine.resume import CheckpointError

    try:
        runner = build_runner(cfg, work_dir=args.work_dir, resume=args.resume, amp=args.amp,
                              launcher=args.launcher, logger=lambda m: print(m, file=sys.stderr))
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runner.train()
    finish_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
