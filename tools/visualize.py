#!/usr/bin/env python
"""Look at a LiDAR frame with its ground truth and, optionally, detections.

    python tools/visualize.py --data DATA_ROOT --frame SEGMENT:INDEX --save out.png
    python tools/visualize.py --data DATA_ROOT --frame SEGMENT:INDEX --view bev --save bev.png
    python tools/visualize.py --data DATA_ROOT --frame SEGMENT:INDEX \
        --config CONFIG --checkpoint CKPT --score-thr 0.3 --save out.png --bev-plot plot.png
    python tools/visualize.py --data DATA_ROOT --predictions submission.bin --interactive
    python tools/visualize.py --data segment.tfrecord --frame :0 --save out.png
    python tools/visualize.py --data frame_kitti.bin --bev-plot plot.png

``--data`` is a converted data root (``--split``, default val), a raw Waymo ``.tfrecord`` or a
point cloud file without labels (.bin N x 4 / N x 5, .npy, .pcd, .ply; as tools/infer.py reads).
``--save`` renders off screen with Open3D (no display needed), ``--bev-plot`` writes a
matplotlib bird's-eye view, ``--interactive`` opens a window (N / P step through frames).
Without any of the three, the window opens where there is a display.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", required=True, help="converted data root, a .tfrecord segment or a "
                   "point cloud file (.bin, .npy, .pcd, .ply)")
    p.add_argument("--split", default="val", help="split of a converted root (default: val)")
    p.add_argument("--frame", default=None, metavar="SEGMENT:INDEX",
                   help="frame to show (default: the first frame)")
    det = p.add_argument_group("detections (optional)")
    det.add_argument("--config", help="model config; with --checkpoint, runs the detector")
    det.add_argument("--checkpoint", help="model weights for --config")
    det.add_argument("--predictions", metavar="FILE.bin",
                     help="submission file (metrics_pb2.Objects) with detections to overlay")
    det.add_argument("--score-thr", type=float, default=0.3,
                     help="hide detections scoring below this (default: 0.3)")
    det.add_argument("--device", default="cpu", help="torch device for --config (default: cpu)")
    out = p.add_argument_group("output")
    out.add_argument("--save", metavar="OUT.png", help="render off screen with Open3D to this PNG")
    out.add_argument("--view", choices=("chase", "bev"), default="chase",
                     help="camera of --save: high behind the ego vehicle, or top down")
    out.add_argument("--width", type=int, default=1280)
    out.add_argument("--height", type=int, default=720)
    out.add_argument("--bev-plot", metavar="OUT.png", help="write a matplotlib bird's-eye view")
    out.add_argument("--interactive", action="store_true",
                     help="open the Open3D window (needs a display)")
    out.add_argument("--color-by", choices=("intensity", "height", "lidar", "return"),
                     help="point colours (default: intensity for --save and the window, height "
                        "for --bev-plot)")
    out.add_argument("--no-antialias", action="store_true",
                     help="--save: skip anti-aliasing (about 2.5x faster on a CPU, jagged lines)")
    out.add_argument("--point-size", type=float, default=None,
                     help="pixels (default: 2 for the chase view, 1 top down)")
    return p


def _check_args(p: argparse.ArgumentParser, args) -> None:
    if bool(args.config) != bool(args.checkpoint):
        p.error("--config and --checkpoint go together (one is missing)")
    if args.config and args.predictions:
        p.error("use either --config/--checkpoint or --predictions, not both")
    if args.width <= 0 or args.height <= 0:
        p.error(f"--width/--height must be positive, got {args.width}x{args.height}")


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    _check_args(p, args)

    # Decide about the window before loading anything: without a display, say so at once.
    from detector.visualization.render import has_display
    if not (args.save or args.bev_plot or args.interactive):
        if not has_display():
            p.error("no output chosen and no display for a window: add --save OUT.png "
                    "(off-screen render) and/or --bev-plot OUT.png")
        args.interactive = True
    if args.interactive and not has_display():
        p.error("--interactive needs a display, and none is available (DISPLAY/WAYLAND_DISPLAY "
                "unset). Render off screen instead with --save OUT.png (and --view bev for a "
                "top-down view)")

    from detector.visualization.sources import open_frames, parse_frame_spec
    try:
        frames = open_frames(args.data, args.split)
        segment, index = parse_frame_spec(args.frame)
        position = frames.find(segment, index)
    except (FileNotFoundError, ValueError) as exc:
        p.error(str(exc))

    model = submission = None
    if args.config:
        from detector.engine.inference import CheckpointMismatchError, init_detector
        try:
            model = init_detector(args.config, args.checkpoint, args.device)
        except (FileNotFoundError, CheckpointMismatchError) as exc:
            p.error(str(exc))
    if args.predictions:
        from detector.visualization.predictions import read_submission
        try:
            submission = read_submission(args.predictions)
        except (FileNotFoundError, ValueError) as exc:
            p.error(str(exc))

    def detections(frame):
        if model is not None:
            from detector.engine.inference import inference_detector
            det = inference_detector(model, frame.points, source=frame.name)
            return det.boxes.numpy(), det.scores.numpy()
        if submission is not None:
            sel = submission.for_frame(frame.context_name, frame.timestamp_micros)
            if len(sel) == 0:
                print(f"note: {args.predictions} has no objects for frame {frame.name} "
                      f"(context {frame.context_name}, timestamp {frame.timestamp_micros})",
                      file=sys.stderr)
            return sel.boxes, sel.scores
        return None, None

    from detector.visualization.render import FrameView

    def frame_view(i: int) -> FrameView:
        frame = frames.load(i)
        boxes, scores = detections(frame)
        return FrameView(frame.points, frame.gt_boxes, frame.gt_types, boxes, scores,
                         title=f"{frame.name}\ncontext {frame.context_name}, timestamp "
                               f"{frame.timestamp_micros}")

    try:
        fv = frame_view(position)
    except (IndexError, ValueError) as exc:
        p.error(str(exc))
    n_pred = 0 if fv.pred_boxes is None else int((fv.pred_scores >= args.score_thr).sum())
    print(f"frame {fv.title.splitlines()[0]}: {len(fv.points)} points, "
          f"{len(fv.gt_boxes)} ground-truth boxes"
          + ("" if fv.pred_boxes is None else f", {n_pred} detections >= {args.score_thr:g}"))

    if args.save:
        from detector.visualization.render import render_frame_png
        t0 = time.perf_counter()
        render_frame_png(fv.points, fv.gt_boxes, fv.gt_types, fv.pred_boxes, fv.pred_scores,
                         out_path=args.save, view=args.view, width=args.width,
                         height=args.height, color_by=args.color_by or "intensity",
                         score_thr=args.score_thr, point_size=args.point_size, title=fv.title,
                         antialias=not args.no_antialias)
        print(f"wrote {args.save} ({args.view} view, {time.perf_counter() - t0:.1f} s)")
    if args.bev_plot:
        from detector.visualization.bev import plot_bev
        plot_bev(fv.points, fv.gt_boxes, fv.pred_boxes, fv.pred_scores, args.bev_plot,
                 gt_types=fv.gt_types, score_thr=args.score_thr, title=fv.title,
                 color_by=args.color_by or "height")
        print(f"wrote {args.bev_plot}")
    if args.interactive:
        from detector.visualization.render import show_interactive
        cache = {position: fv}
        show_interactive(lambda i: cache.pop(i) if i in cache else frame_view(i), len(frames),
                         position, color_by=args.color_by or "intensity",
                         score_thr=args.score_thr, point_size=args.point_size or 2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
