"""``make demo``: synthetic Waymo data -> conversion -> GradDrop training on the CPU -> Waymo
metrics -> pictures. The work is in ``detector/engine/demo.py``; outputs go to work_dirs/demo/.

    python tools/demo.py [--fresh]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fresh", action="store_true",
                   help="regenerate the data and retrain instead of reusing work_dirs/demo")
    args = p.parse_args(argv)
    from detector.engine.demo import run_demo

    run_demo(fresh=args.fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
