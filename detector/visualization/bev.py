"""Bird's-eye-view plots with matplotlib, for reports: points, ground truth and predictions.

The plot is the vehicle frame seen from above in metres, x (forward) to the right and y (left)
up, equal aspect, so a box looks the same shape as on the road. Boxes are the bottom faces from
:func:`geometry.box_corners` (corners 0-3) with a line from the centre to the front edge for
the heading; ground truth in its type's colour, predictions dashed in the prediction colour
with their scores. matplotlib's object API with the Agg canvas is used directly (no pyplot),
so plotting never touches a display or global figure state.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.visualization.colors import (BACKGROUND_COLOR, EGO_COLOR, PREDICTION_COLOR,
                                           point_colors, type_color)
from detector.visualization.geometry import as_boxes, box_corners
from detector.visualization.render import EGO_BOX, _filter_predictions, _gt_types, _points_xyz


def _box_outlines(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed bottom-face outlines (M, 5, 2) and heading lines (M, 2, 2) in the x-y plane."""
    corners = box_corners(boxes)[:, :4, :2]                      # 0 FL, 1 FR, 2 RR, 3 RL
    outline = np.concatenate([corners, corners[:, :1]], axis=1)
    front_mid = corners[:, :2].mean(axis=1)
    heading = np.stack([boxes[:, :2], front_mid], axis=1)
    return outline, heading


def plot_bev(points, gt_boxes, pred_boxes, pred_scores, out_path, *, gt_types=None,
             score_thr: float = 0.0, x_range: tuple[float, float] | None = None,
             y_range: tuple[float, float] | None = None, color_by: str = "height",
             title: str | None = None, figsize: tuple[float, float] | None = None,
             dpi: int = 120, point_size: float = 0.3, max_points: int | None = 200_000,
             show_scores: bool = True, legend: bool = True) -> Path:
    """Plot a frame from above and write it to ``out_path`` (PNG, atomically).

    Args:
        points: (N, C >= 3) as ``load_points`` returns; coloured by ``color_by`` ("height",
            "intensity", "lidar", "return"). Rows with NaN / inf are left out (counted in a
            ``NonFinitePointsWarning``).
        gt_boxes: (M, 7); gt_types: (M,) Waymo types (None = all VEHICLE).
        pred_boxes: (K, 7) or None; pred_scores: (K,) or None (= all 1). Predictions below
            ``score_thr`` are left out.
        x_range, y_range: axis limits in metres; default: the points' extent (at most 80 m
            from the ego vehicle), always including every drawn box.
        figsize: inches; default 12 wide and as tall as the ranges' aspect needs.
        legend: draw a legend of the ground-truth types present and the predictions.
        max_points: draw an evenly spaced subset of at most this many points (None = all),
            which keeps the file small and the plot fast for 200k-point frames.
    Returns the output path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = _points_xyz(points)  # non-finite rows dropped (counted in a warning)
    gt = as_boxes(gt_boxes, "gt_boxes")
    types = _gt_types(gt, gt_types)
    pred, scores = _filter_predictions(pred_boxes, pred_scores, score_thr)
    if max_points is not None and len(pts) > max_points:
        pts = pts[np.linspace(0, len(pts) - 1, max_points).astype(np.int64)]
    rgb = point_colors(pts, color_by)

    xr, yr = _default_ranges(pts, np.concatenate([gt, pred]) if len(pred) else gt)
    xr, yr = x_range or xr, y_range or yr
    if figsize is None:
        aspect = (yr[1] - yr[0]) / max(xr[1] - xr[0], 1e-6)
        figsize = (12.0, float(np.clip(10.0 * aspect + 1.6, 4.0, 12.0)))
    fig = Figure(figsize=figsize, dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor(BACKGROUND_COLOR)
    ax.scatter(pts[:, 0], pts[:, 1], s=point_size, c=rgb, marker=".", linewidths=0,
               rasterized=True)

    def draw(boxes, colors, style, width, label_scores=None):
        if len(boxes) == 0:
            return
        outline, heading = _box_outlines(boxes)
        for i in range(len(boxes)):
            ax.plot(outline[i, :, 0], outline[i, :, 1], style, color=colors[i], lw=width)
            ax.plot(heading[i, :, 0], heading[i, :, 1], "-", color=colors[i], lw=width)
            if label_scores is not None:
                ax.annotate(f"{label_scores[i]:.2f}", xy=(outline[i, :4, 0].max(),
                                                          outline[i, :4, 1].max()),
                            color=colors[i], fontsize=7, ha="left", va="bottom")

    draw(EGO_BOX, [EGO_COLOR], "-", 1.0)
    draw(gt, [type_color(t) for t in types], "-", 1.2)
    draw(pred, [PREDICTION_COLOR] * len(pred), "--", 1.2, scores if show_scores else None)

    # Legend from proxy artists: one entry per ground-truth type present, and predictions.
    from matplotlib.lines import Line2D

    from detector.structures import WAYMO_TYPE_NAMES
    handles = [Line2D([], [], color=type_color(t), lw=1.5,
                      label=f"GT {WAYMO_TYPE_NAMES.get(int(t), int(t))}")
               for t in sorted(set(int(t) for t in types))]
    if len(pred):
        handles.append(Line2D([], [], color=PREDICTION_COLOR, lw=1.5, ls="--",
                              label=f"predicted, score >= {score_thr:g} ({len(pred)})"))
    if handles and legend:
        ax.legend(handles=handles, loc="upper right", fontsize=8, facecolor="0.15",
                  labelcolor="white", framealpha=0.8)

    ax.set_xlim(*xr)
    ax.set_ylim(*yr)
    ax.set_aspect("equal")
    ax.set_xlabel("x (forward) [m]")
    ax.set_ylabel("y (left) [m]")
    ax.grid(True, color="0.35", lw=0.4, alpha=0.6)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()

    from ..fileio import atomic_write

    out = Path(out_path)
    with atomic_write(out, fsync=False) as f:
        fig.savefig(f, format="png", dpi=dpi)
    return out


def _default_ranges(pts: np.ndarray, boxes: np.ndarray, limit: float = 80.0, margin: float = 2.0):
    """Axis limits covering 99.8 % of the points (clipped to ``limit`` m; a few stray far
    returns should not shrink the scene), every box and the ego vehicle."""
    xs = [np.array([-5.0, 5.0])]
    ys = [np.array([-5.0, 5.0])]
    if len(pts):
        lo, hi = np.percentile(pts[:, :2], [0.1, 99.9], axis=0)
        xs.append(np.clip([lo[0], hi[0]], -limit, limit))
        ys.append(np.clip([lo[1], hi[1]], -limit, limit))
    if len(boxes):
        corners = box_corners(boxes)
        xs.append(corners[..., 0].ravel())
        ys.append(corners[..., 1].ravel())
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x.min() - margin, x.max() + margin), (y.min() - margin, y.max() + margin)
