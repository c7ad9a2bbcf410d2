"""Command-line plumbing without torch: the options tools/train.py and tools/test.py share, and
the console scripts of ``pyproject.toml`` ([project.scripts]).

Each console script runs the matching ``tools/NAME.py``'s ``main()`` with the command line's
arguments, e.g. ``graddrop-train CONFIG ...`` is ``python tools/train.py CONFIG ...``. The tools
live in the repository next to the package (an editable install, ``pip install -e .``, as
``tools/setup_env.sh`` does), so the scripts need the repository checkout.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

__all__ = ["add_common_cli_args", "parse_cli_args", "run_tool", "TOOLS"]

REPO = Path(__file__).resolve().parents[1]

#: console script name -> tools/<file>.py
TOOLS = {"graddrop-train": "train", "graddrop-test": "test", "graddrop-infer": "infer",
         "graddrop-convert": "convert_waymo", "graddrop-eval": "waymo_eval",
         "graddrop-make-gt": "make_gt_bin", "graddrop-visualize": "visualize",
         "graddrop-analyze": "analyze_detections", "graddrop-demo": "demo",
         "graddrop-synthetic": "make_synthetic"}


def add_common_cli_args(parser, work_dir_help: str = "where logs and outputs go "
                        "(default work_dirs/<config name>)") -> None:
    """The options tools/train.py and tools/test.py share: --work-dir, --data-root,
    --cfg-options, --launcher and the launcher's --local-rank."""
    import argparse

    from mmengine.config import DictAction

    parser.add_argument("--work-dir", help=work_dir_help)
    parser.add_argument("--data-root", help="override every dataset's data_root (and GT sampling's)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config keys, e.g. train_cfg.max_epochs=2; a key that the config "
                        "lacks (and no constructor takes) is an error unless written +key=value")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)


def parse_cli_args(parser, argv=None):
    """Parse, and pass a launcher's --local-rank on as LOCAL_RANK (torch.distributed.launch)."""
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args



def run_tool(name: str, argv=None) -> int:
    """Run ``tools/<name>.py``'s ``main(argv)`` (default: this process's arguments)."""
    path = REPO / "tools" / f"{name}.py"
    if not path.is_file():
        print(f"error: {path} not found: the console scripts run the repository's tools/ and need "
              f"the checkout (pip install -e .)", file=sys.stderr)
        return 2
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(sys.argv[1:] if argv is None else argv)
    return int(rc or 0)


def _entry(name: str):
    def main() -> None:
        sys.exit(run_tool(name))
    main.__name__ = name
    main.__doc__ = f"Console script: python tools/{name}.py"
    return main


train = _entry("train")
test = _entry("test")
infer = _entry("infer")
convert = _entry("convert_waymo")
waymo_eval = _entry("waymo_eval")
make_gt_bin = _entry("make_gt_bin")
visualize = _entry("visualize")
analyze_detections = _entry("analyze_detections")
demo = _entry("demo")
make_synthetic = _entry("make_synthetic")
