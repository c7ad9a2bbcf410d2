"""``make demo``: synthetic Waymo data -> conversion -> GradDrop training on the CPU -> Waymo
metrics -> pictures. The work is in ``detector/engine/demo.py``; outputs go to work_dirs/demo/.

    python tools/demo.py [--fresh] [--classes 1|3]

``--classes 1`` (default) is the vehicle detector (the paper's experiment) in work_dirs/demo;
``--classes 3`` trains VEHICLE / PEDESTRIAN / CYCLIST (configs/demo/centerpoint_graddrop_demo_3class.py)
into work_dirs/demo_3class, on the same synthetic data (generated there if missing).
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
    p.add_argument("--classes", type=int, choices=(1, 3), default=1,
                   help="1: VEHICLE (default); 3: VEHICLE, PEDESTRIAN, CYCLIST")
    args = p.parse_args(argv)
    from detector.engine.demo import demo_settings, run_demo

    run_demo(fresh=args.fresh, settings=demo_settings(args.classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
