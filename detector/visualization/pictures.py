"""Pictures of a few frames for reports and ``make demo`` (``work_dirs/demo/vis/``).

For each chosen frame: an off-screen Open3D render from the chase camera, one from above, and a
matplotlib bird's-eye-view plot, each with the ground truth and (when given) the detections.
Detections come from a submission file / :class:`ObjectArrays` (matched by context name
and timestamp) or from a callable ``detect(points) -> (boxes, scores)`` the caller supplies (for
example the engine's ``inference_detector`` on a loaded model): this package only
draws, it never loads a model.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detector.visualization.bev import plot_bev
from detector.visualization.predictions import read_submission
from detector.visualization.render import render_frame_png
from detector.visualization.sources import VisFrame, open_frames

if TYPE_CHECKING:
    from detector.evaluation.waymo import ObjectArrays


def write_frame_pictures(frame: VisFrame, out_dir, pred_boxes=None, pred_scores=None, *,
                         score_thr: float = 0.3, width: int = 1280,
                         height: int = 720) -> list[Path]:
    """Write ``<segment>_<index>_{chase,top}.png`` (Open3D) and ``..._bev.png`` (matplotlib)."""
    out_dir = Path(out_dir)
    stem = f"{frame.segment}_{frame.frame_index:04d}"
    title = (f"{frame.name}\ncontext {frame.context_name}, timestamp {frame.timestamp_micros}")
    paths = []
    for view, suffix in (("chase", "chase"), ("bev", "top")):
        path = out_dir / f"{stem}_{suffix}.png"
        render_frame_png(frame.points, frame.gt_boxes, frame.gt_types, pred_boxes, pred_scores,
                         out_path=path, view=view, width=width, height=height,
                         score_thr=score_thr, title=title)
        paths.append(path)
    path = out_dir / f"{stem}_bev.png"
    plot_bev(frame.points, frame.gt_boxes, pred_boxes, pred_scores, path,
             gt_types=frame.gt_types, score_thr=score_thr, title=title)
    paths.append(path)
    return paths


def write_demo_pictures(data, out_dir, *, split: str = "val", num_frames: int = 3,
                        predictions: ObjectArrays | str | Path | None = None, detect=None,
                        score_thr: float = 0.3, width: int = 1280,
                        height: int = 720) -> list[Path]:
    """Pictures of ``num_frames`` frames spread evenly over ``data`` (converted root + split,
    or a .tfrecord), with detections from ``predictions`` (submission) or ``detect``
    (``detect(points) -> (boxes, scores)`` on a frame's (N, 8) points).

    Returns the written paths (3 per frame).
    """
    frames = open_frames(data, split)
    if isinstance(predictions, (str, Path)):
        predictions = read_submission(predictions)
    n = len(frames)
    picks = sorted(set(np.linspace(0, n - 1, min(num_frames, n)).round().astype(int).tolist()))
    written: list[Path] = []
    for i in picks:
        frame = frames.load(i)
        boxes = scores = None
        if detect is not None:
            boxes, scores = detect(frame.points)
        elif predictions is not None:
            sel = predictions.for_frame(frame.context_name, frame.timestamp_micros)
            boxes, scores = sel.boxes, sel.scores
        written += write_frame_pictures(frame, out_dir, boxes, scores, score_thr=score_thr,
                                        width=width, height=height)
    return written
