"""Random detection datasets for cross-checking the Waymo metric against the official op and for
benchmarks (tests/test_waymo_metrics*.py, tools/benchmarks/bench_metrics.py).

The generator exercises the metric's corner cases: all four types plus UNKNOWN, both difficulty
levels (and unlabelled ones), zero-point ground truths, predictions in no-label zones, headings
near +-pi, centres straddling the 30 m and 50 m range edges, exact duplicate predictions,
frames with only predictions, only ground truths, or nothing.
"""
from __future__ import annotations

import numpy as np

_SIZES = {1: (4.5, 2.0, 1.7), 2: (0.9, 0.9, 1.8), 3: (0.3, 0.7, 0.8), 4: (1.8, 0.7, 1.7)}


def random_dataset(rng: np.random.Generator, n_frames: int = 20, gt_per_frame: float = 30.0,
                   fp_per_frame: float = 20.0, copies_per_gt: float = 1.3, noise: float = 0.15,
                   frame_id_base: int = 0) -> dict:
    """Returns a dict with pred_* and raw gt_* arrays (gt_num_points, gt_difficulty may be 0:
    run prepare_ground_truth before evaluating)."""
    g_boxes, g_types, g_frames, g_diff, g_pts = [], [], [], [], []
    p_boxes, p_types, p_frames, p_scores, p_nlz = [], [], [], [], []
    for f in range(n_frames):
        fid = frame_id_base + f * 7919 + 3          # arbitrary, non-contiguous ids
        kind = rng.random()
        n_gt = 0 if kind < 0.1 else rng.poisson(gt_per_frame)
        n_fp = 0 if 0.05 < kind < 0.15 else rng.poisson(fp_per_frame)
        types = rng.choice([0, 1, 2, 3, 4], size=n_gt, p=[0.05, 0.4, 0.25, 0.15, 0.15])
        # Distance: a third of the boxes right next to the 30 m / 50 m edges.
        dist = rng.uniform(2.0, 75.0, n_gt)
        near = rng.random(n_gt) < 0.33
        dist[near] = rng.choice([30.0, 50.0], near.sum()) + rng.normal(0, 0.3, near.sum())
        ang = rng.uniform(-np.pi, np.pi, n_gt)
        z = rng.normal(0.5, 1.0, n_gt)
        rxy = np.sqrt(np.maximum(dist ** 2 - z ** 2, 0.0))
        size = np.array([_SIZES.get(int(t), (2.0, 1.5, 1.5)) for t in types]).reshape(-1, 3)
        size = size * rng.uniform(0.7, 1.3, (n_gt, 3))
        head = rng.uniform(-np.pi, np.pi, n_gt)
        edge = rng.random(n_gt) < 0.2
        head[edge] = np.where(rng.random(edge.sum()) < 0.5, np.pi, -np.pi) + rng.normal(0, 0.02, edge.sum())
        gb = np.column_stack([rxy * np.cos(ang), rxy * np.sin(ang), z, size, head]).astype(np.float32)
        g_boxes.append(gb)
        g_types.append(types)
        g_frames.append(np.full(n_gt, fid))
        g_diff.append(rng.choice([0, 1, 2], size=n_gt, p=[0.2, 0.5, 0.3]))
        g_pts.append(np.where(rng.random(n_gt) < 0.08, 0, rng.integers(1, 40, n_gt)))
        # Predictions: noisy copies of ground truths (some with the heading flipped).
        n_copy = rng.poisson(copies_per_gt, n_gt)
        src = np.repeat(np.arange(n_gt), n_copy)
        pb = gb[src].astype(np.float64)
        pb[:, :3] += rng.normal(0, noise, (len(src), 3)) * pb[:, 3:6]
        pb[:, 3:6] *= np.exp(rng.normal(0, noise, (len(src), 3)))
        pb[:, 6] += rng.normal(0, 0.2, len(src)) + np.where(rng.random(len(src)) < 0.15, np.pi, 0.0)
        pb[:, 6] = (pb[:, 6] + np.pi) % (2 * np.pi) - np.pi
        ptypes = types[src].copy()
        wrong = rng.random(len(src)) < 0.05
        ptypes[wrong] = rng.integers(1, 5, wrong.sum())
        # Random false positives anywhere.
        fb = np.column_stack([rng.uniform(-70, 70, (n_fp, 2)), rng.normal(0.5, 1, n_fp),
                              rng.uniform(0.5, 5, (n_fp, 3)), rng.uniform(-np.pi, np.pi, n_fp)])
        pb = np.concatenate([pb, fb]).astype(np.float32)
        ptypes = np.concatenate([ptypes, rng.integers(0, 5, n_fp)])
        scores = rng.random(len(pb)).astype(np.float32)
        # Scores exactly on cutoffs, and exact duplicates.
        on_cut = rng.random(len(pb)) < 0.05
        scores[on_cut] = np.float32(rng.integers(0, 101, on_cut.sum()) * 0.01)
        if len(pb):
            dup = rng.integers(0, len(pb), rng.poisson(1.0))
            pb = np.concatenate([pb, pb[dup]])
            ptypes = np.concatenate([ptypes, ptypes[dup]])
            scores = np.concatenate([scores, scores[dup]])
        p_boxes.append(pb)
        p_types.append(ptypes)
        p_scores.append(scores)
        p_frames.append(np.full(len(pb), fid))
        p_nlz.append(rng.random(len(pb)) < 0.1)
    cat = np.concatenate
    return {
        "pred_boxes": cat(p_boxes).astype(np.float32).reshape(-1, 7),
        "pred_types": cat(p_types).astype(np.uint8),
        "pred_scores": cat(p_scores).astype(np.float32),
        "pred_frame_ids": cat(p_frames).astype(np.int64),
        "pred_overlap_nlz": cat(p_nlz).astype(bool),
        "gt_boxes": cat(g_boxes).astype(np.float32).reshape(-1, 7),
        "gt_types": cat(g_types).astype(np.uint8),
        "gt_frame_ids": cat(g_frames).astype(np.int64),
        "gt_difficulty": cat(g_diff).astype(np.uint8),
        "gt_num_points": cat(g_pts).astype(np.int64),
    }


def prepared(ds: dict) -> dict:
    """ds with its ground truth run through prepare_ground_truth: the 9 arrays the metric
    (and the official op) take."""
    from detector.evaluation.waymo.metrics import prepare_ground_truth
    g = prepare_ground_truth(ds["gt_boxes"], ds["gt_types"], ds["gt_frame_ids"],
                             ds["gt_difficulty"], ds["gt_num_points"])
    out = {k: v for k, v in ds.items() if k.startswith("pred_")}
    out.update(gt_boxes=g["boxes"], gt_types=g["types"], gt_frame_ids=g["frame_ids"],
               gt_difficulty=g["difficulty"])
    return out
