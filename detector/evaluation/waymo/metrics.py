"""The official Waymo Open Dataset 3D detection metric (AP / APH), reimplemented in Numba.

Implements docs/WAYMO.md, "Official 3D detection metric", item by item, and is cross-checked
against the official op (``py_metrics_ops.detection_metrics``) by tests/test_waymo_metrics*.py:

1. shards: OBJECT_TYPE (type) and RANGE (type x band of the 3D centre distance, [0, 30),
   [30, 50), [50, +inf)); predictions and ground truths are sharded by their own attributes;
   type UNKNOWN (0) is in no shard;
2. for every score cutoff, the predictions with ``score >= cutoff`` are matched to the shard's
   ground truths of the same frame by a maximum-weight assignment with integer weights
   ``round(IoU * 1e6)`` where ``IoU >= threshold[type]`` (else 0); pairs of weight 0 never match;
3. TP = matched prediction (whatever the ground truth's difficulty); FP = unmatched prediction
   outside no-label zones; FN at level L = unmatched ground truth with difficulty <= L;
4. heading accuracy of a TP; 5. precision / recall per cutoff; 6. AP and APH from the
   precision envelope (``average_precision``); 7. 3D IoU from ``ops.iou3d`` (float64, exact).

Speed (the official op recomputes every IoU and the full assignment per cutoff):

* IoU is computed once per frame and type; the RANGE shards reuse that matrix;
* the bipartite graph of positive weights splits into small connected components, each
  solved on its own (an optimal assignment of the whole is the union of the components' ones);
* inside a component, the matching only changes at the cutoffs where one of its predictions
  drops out, and only if that prediction was matched: one assignment per such event, and the
  counts are added to a whole range of cutoffs at once with difference arrays;
* frames are processed in parallel (Numba ``prange`` over chunks with private accumulators),
  so memory grows linearly with the number of boxes.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from ops.iou3d import iou3d_pair

TYPE_NAMES = ("TYPE_UNKNOWN", "TYPE_VEHICLE", "TYPE_PEDESTRIAN", "TYPE_SIGN", "TYPE_CYCLIST")
NUM_TYPES = 5
RANGE_NAMES = ("[0, 30)", "[30, 50)", "[50, +inf)")
RANGE_EDGES = (30.0, 50.0)
DEFAULT_IOU_THRESHOLDS = (0.0, 0.7, 0.5, 0.5, 0.5)
# Official default: i * 0.01 for i = 0..99 and 1.0, stored as float32 in the config proto.
DEFAULT_SCORE_CUTOFFS = np.array([i * 0.01 for i in range(100)] + [1.0], np.float32)
WEIGHT_SCALE = 1e6
MAX_RECALL_DELTA = 0.05
BREAKDOWNS = ("OBJECT_TYPE", "RANGE")

# Shard layout: OBJECT_TYPE shard of type t (1..4) is t - 1; RANGE shard is 4 + 3 (t - 1) + band.
NUM_SHARDS = 4 + 4 * 3
# Accumulator channels (difference arrays over cutoffs).
_TP1, _TP2, _TPN, _HA = 0, 1, 2, 3


def breakdown_names(breakdowns=BREAKDOWNS) -> list[str]:
    """Official breakdown names in the official order (config_util_py)."""
    names = []
    for b in breakdowns:
        for t in range(1, NUM_TYPES):
            if b == "OBJECT_TYPE":
                names += [f"OBJECT_TYPE_{TYPE_NAMES[t]}_LEVEL_{lv}" for lv in (1, 2)]
            else:
                for r in RANGE_NAMES:
                    names += [f"RANGE_{TYPE_NAMES[t]}_{r}_LEVEL_{lv}" for lv in (1, 2)]
    return names


def _shard_of_breakdown(b: str, t: int, band: int = 0) -> int:
    return t - 1 if b == "OBJECT_TYPE" else 4 + 3 * (t - 1) + band


# --------------------------------------------------------------------------------------------
# Numba kernels
# --------------------------------------------------------------------------------------------

@nb.njit(cache=True)
def _assign_max(w):
    """Maximum-weight assignment of a small dense (nr, nc) float64 weight matrix.

    Shortest augmenting paths with dual variables (the rectangular Jonker-Volgenant variant
    described by Crouse, 2016, the algorithm behind scipy's linear_sum_assignment), run on
    cost = -weight with the smaller side as rows. Integer-valued weights keep it exact.
    Returns for each row of ``w`` its column or -1.
    """
    nr0, nc0 = w.shape
    transpose = nr0 > nc0
    if transpose:
        cost = -w.T.copy()
    else:
        cost = -w.copy()
    nr, nc = cost.shape
    u = np.zeros(nr)
    v = np.zeros(nc)
    spc = np.empty(nc)
    path = np.full(nc, -1, np.int64)
    col4row = np.full(nr, -1, np.int64)
    row4col = np.full(nc, -1, np.int64)
    sr = np.zeros(nr, np.bool_)
    sc = np.zeros(nc, np.bool_)
    remaining = np.empty(nc, np.int64)
    for cur in range(nr):
        min_val = 0.0
        i = cur
        num_rem = nc
        for it in range(nc):
            remaining[it] = nc - it - 1
        sr[:] = False
        sc[:] = False
        spc[:] = np.inf
        sink = -1
        while sink == -1:
            index = -1
            lowest = np.inf
            sr[i] = True
            for it in range(num_rem):
                j = remaining[it]
                r = min_val + cost[i, j] - u[i] - v[j]
                if r < spc[j]:
                    path[j] = i
                    spc[j] = r
                if spc[j] < lowest or (spc[j] == lowest and row4col[j] == -1):
                    lowest = spc[j]
                    index = it
            min_val = lowest
            j = remaining[index]
            if row4col[j] == -1:
                sink = j
            else:
                i = row4col[j]
            sc[j] = True
            num_rem -= 1
            remaining[index] = remaining[num_rem]
        u[cur] += min_val
        for i in range(nr):
            if sr[i] and i != cur:
                u[i] += min_val - spc[col4row[i]]
        for j in range(nc):
            if sc[j]:
                v[j] -= min_val - spc[j]
        j = sink
        while True:
            i = path[j]
            row4col[j] = i
            tmp = col4row[i]
            col4row[i] = j
            j = tmp
            if i == cur:
                break
    out = np.full(nr0, -1, np.int64)
    if transpose:
        for j in range(nc):
            if row4col[j] >= 0:
                out[j] = row4col[j]
    else:
        out[:] = col4row
    return out


@nb.njit(cache=True)
def _heading_accuracy(hp, hg):
    two_pi = 2.0 * math.pi
    a = hp - two_pi * math.floor((hp + math.pi) / two_pi)
    b = hg - two_pi * math.floor((hg + math.pi) / two_pi)
    d = abs(a - b)
    if d > math.pi:
        d = two_pi - d
    return min(max(1.0 - d / math.pi, 0.0), 1.0)


@nb.njit(cache=True)
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@nb.njit(cache=True)
def _match_shard(wmat, sel_p, sel_g, kp, nlz, hp, gdiff, hg, shard, acc):
    """Match one shard of one frame at every cutoff; add the TP counts and heading accuracy to
    the difference arrays acc[channel, shard, cutoff].

    wmat: (n, m) integer weights of the frame's predictions x ground truths of this type;
    sel_p / sel_g: local indices of the shard's predictions (only kp > 0) / ground truths, in
    input order; kp[p]: number of cutoffs at which prediction p is active.
    """
    a = sel_p.shape[0]
    b = sel_g.shape[0]
    if a == 0 or b == 0:
        return
    parent = np.arange(a + b)
    any_edge = False
    for ii in range(a):
        for jj in range(b):
            if wmat[sel_p[ii], sel_g[jj]] > 0.0:
                any_edge = True
                ra = _find(parent, ii)
                rb = _find(parent, a + jj)
                if ra != rb:
                    parent[rb] = ra
    if not any_edge:
        return
    roots = np.empty(a + b, np.int64)
    for x in range(a + b):
        roots[x] = _find(parent, x)
    order = np.argsort(roots, kind="mergesort")   # stable: input order inside a component
    start = 0
    while start < a + b:
        r = roots[order[start]]
        end = start
        npc = 0
        ngc = 0
        while end < a + b and roots[order[end]] == r:
            if order[end] < a:
                npc += 1
            else:
                ngc += 1
            end += 1
        if npc > 0 and ngc > 0:
            cp = np.empty(npc, np.int64)
            cg = np.empty(ngc, np.int64)
            ip = 0
            ig = 0
            for t in range(start, end):
                x = order[t]
                if x < a:
                    cp[ip] = sel_p[x]
                    ip += 1
                else:
                    cg[ig] = sel_g[x - a]
                    ig += 1
            _match_component(wmat, cp, cg, kp, nlz, hp, gdiff, hg, shard, acc)
        start = end


@nb.njit(cache=True)
def _match_component(wmat, cp, cg, kp, nlz, hp, gdiff, hg, shard, acc):
    npc = cp.shape[0]
    ngc = cg.shape[0]
    if npc == 1 and ngc == 1:
        # One edge: matched at every cutoff where the prediction is active.
        _add_pair(cp[0], cg[0], 0, kp[cp[0]], nlz, hp, gdiff, hg, shard, acc)
        return
    # Distinct activity levels, ascending.
    levels = np.unique(kp[cp])
    k_lo = 0
    match_p = np.empty(0, np.int64)
    match_g = np.empty(0, np.int64)
    have = False
    for s in range(levels.shape[0]):
        us = levels[s]
        # Active at cutoffs [k_lo, us): predictions with kp >= us, in input order.
        recompute = not have
        if have:
            for t in range(match_p.shape[0]):
                if kp[match_p[t]] < us:
                    recompute = True
                    break
        if recompute:
            na = 0
            for t in range(npc):
                if kp[cp[t]] >= us:
                    na += 1
            act = np.empty(na, np.int64)
            na = 0
            for t in range(npc):
                if kp[cp[t]] >= us:
                    act[na] = cp[t]
                    na += 1
            w = np.empty((na, ngc))
            for ii in range(na):
                for jj in range(ngc):
                    w[ii, jj] = wmat[act[ii], cg[jj]]
            col = _assign_max(w)
            nm = 0
            for ii in range(na):
                if col[ii] >= 0 and w[ii, col[ii]] > 0.0:
                    nm += 1
            match_p = np.empty(nm, np.int64)
            match_g = np.empty(nm, np.int64)
            nm = 0
            for ii in range(na):
                if col[ii] >= 0 and w[ii, col[ii]] > 0.0:
                    match_p[nm] = act[ii]
                    match_g[nm] = cg[col[ii]]
                    nm += 1
            have = True
        for t in range(match_p.shape[0]):
            _add_pair(match_p[t], match_g[t], k_lo, us, nlz, hp, gdiff, hg, shard, acc)
        k_lo = us


@nb.njit(cache=True)
def _add_pair(p, g, k_lo, k_hi, nlz, hp, gdiff, hg, shard, acc):
    if k_hi <= k_lo:
        return
    ch = _TP1 if gdiff[g] <= 1 else _TP2
    acc[ch, shard, k_lo] += 1.0
    acc[ch, shard, k_hi] -= 1.0
    if not nlz[p]:
        acc[_TPN, shard, k_lo] += 1.0
        acc[_TPN, shard, k_hi] -= 1.0
    ha = _heading_accuracy(hp[p], hg[g])
    acc[_HA, shard, k_lo] += ha
    acc[_HA, shard, k_hi] -= ha


@nb.njit(cache=True, parallel=True)
def _accumulate(groups, p_box, p_kp, p_nlz, p_band, g_box, g_diff, g_band, thresholds,
                n_cutoffs, n_chunks):
    """groups: (G, 5) int64 rows (type, pred_start, pred_end, gt_start, gt_end) over the
    inputs sorted by (frame, type). Returns acc[4, NUM_SHARDS, n_cutoffs + 1] (differences)."""
    n_groups = groups.shape[0]
    accs = np.zeros((n_chunks, 4, NUM_SHARDS, n_cutoffs + 1))
    for c in nb.prange(n_chunks):
        acc = accs[c]
        g0 = n_groups * c // n_chunks
        g1 = n_groups * (c + 1) // n_chunks
        for gi in range(g0, g1):
            t = groups[gi, 0]
            ps, pe, gs, ge = groups[gi, 1], groups[gi, 2], groups[gi, 3], groups[gi, 4]
            n = pe - ps
            m = ge - gs
            if n == 0 or m == 0:
                continue
            pb = p_box[ps:pe]
            gb = g_box[gs:ge]
            thr = thresholds[t]
            wmat = np.zeros((n, m))
            for i in range(n):
                if p_kp[ps + i] == 0:
                    continue
                for j in range(m):
                    iou = iou3d_pair(pb, i, gb, j)
                    if iou >= thr and iou > 0.0:
                        wmat[i, j] = np.round(iou * WEIGHT_SCALE)
            kp = p_kp[ps:pe]
            nlz = p_nlz[ps:pe]
            hp = pb[:, 6].astype(np.float64)
            hg = gb[:, 6].astype(np.float64)
            gdiff = g_diff[gs:ge]
            # OBJECT_TYPE shard: everything of this type.
            cnt = 0
            for i in range(n):
                if kp[i] > 0:
                    cnt += 1
            sel_p = np.empty(cnt, np.int64)
            cnt = 0
            for i in range(n):
                if kp[i] > 0:
                    sel_p[cnt] = i
                    cnt += 1
            sel_g = np.arange(m)
            _match_shard(wmat, sel_p, sel_g, kp, nlz, hp, gdiff, hg, t - 1, acc)
            # RANGE shards: the same weights restricted to one band on both sides.
            for band in range(3):
                cnt = 0
                for i in range(n):
                    if kp[i] > 0 and p_band[ps + i] == band:
                        cnt += 1
                sp = np.empty(cnt, np.int64)
                cnt = 0
                for i in range(n):
                    if kp[i] > 0 and p_band[ps + i] == band:
                        sp[cnt] = i
                        cnt += 1
                cnt = 0
                for j in range(m):
                    if g_band[gs + j] == band:
                        cnt += 1
                sg = np.empty(cnt, np.int64)
                cnt = 0
                for j in range(m):
                    if g_band[gs + j] == band:
                        sg[cnt] = j
                        cnt += 1
                _match_shard(wmat, sp, sg, kp, nlz, hp, gdiff, hg, 4 + 3 * (t - 1) + band, acc)
    return accs.sum(axis=0)


# --------------------------------------------------------------------------------------------
# AP integration
# --------------------------------------------------------------------------------------------

@nb.njit(cache=True)
def _average_precision_f32(p, r, delta, slack):
    """Numba version of _average_precision_py (same float32 operations, same order)."""
    n = p.shape[0]
    keys = np.empty(n + 1, np.float32)
    vals = np.empty(n + 1, np.float32)
    keys[0] = np.float32(0.0)
    vals[0] = np.float32(1.0)
    keys[1:] = r
    vals[1:] = p
    order = np.argsort(keys, kind="mergesort")
    # Unique recalls (ascending) with their largest precision; the seed keeps recall 0 at >= 1.
    uk = np.empty(n + 1, np.float32)
    uv = np.empty(n + 1, np.float32)
    m = 0
    for t in range(n + 1):
        k = keys[order[t]]
        v = vals[order[t]]
        if m > 0 and uk[m - 1] == k:
            if v > uv[m - 1]:
                uv[m - 1] = v
        else:
            uk[m] = k
            uv[m] = v if v > 0 else np.float32(0.0)
            m += 1
    pts_p = np.empty(m + int(1.0 / delta) + 2 * m + 2, np.float32)
    pts_r = np.empty_like(pts_p)
    c = 0
    last_r = uk[0]
    max_p = np.float32(0.0)
    for t in range(m - 1, -1, -1):
        key = uk[t]
        while np.float32(last_r - key) > slack:
            last_r = np.float32(last_r - delta)
            pts_p[c] = max_p
            pts_r[c] = last_r
            c += 1
        if uv[t] > max_p:
            max_p = uv[t]
        pts_p[c] = max_p
        pts_r[c] = key
        c += 1
        last_r = key
    if c >= 2:
        pts_p[c - 1] = pts_p[c - 2]
    area = np.float32(0.0)
    for i in range(1, c):
        area = np.float32(np.float64(area) + 0.5 * np.float64(np.float32(pts_r[i - 1] - pts_r[i]))
                          * np.float64(np.float32(pts_p[i - 1] + pts_p[i])))
    return area


def average_precision(precision, recall, max_recall_delta: float = MAX_RECALL_DELTA) -> float:
    """Area under the precision envelope, the official way (docs/WAYMO.md item 6), in float32 like
    the official op (see _average_precision_py for the steps; this is its Numba twin)."""
    p = np.ascontiguousarray(np.asarray(precision, np.float64).astype(np.float32))
    r = np.ascontiguousarray(np.asarray(recall, np.float64).astype(np.float32))
    if p.shape != r.shape or p.ndim != 1:
        raise ValueError(f"precision {p.shape} and recall {r.shape}: expected equal 1-D shapes")
    if p.size == 0:
        return 0.0
    delta = np.float32(max_recall_delta)
    return float(_average_precision_f32(p, r, delta, np.float32(delta + np.float32(1e-6))))


def _average_precision_py(precision, recall, max_recall_delta: float = MAX_RECALL_DELTA) -> float:
    """Area under the precision envelope, computed the official way (docs/WAYMO.md item 6), in
    float32 like the official op (whose inputs and accumulator are floats). Slow reference.

    * recall -> largest precision at that recall, seeded with (recall 0, precision 1);
    * walk from the highest recall down keeping the running maximum precision (the envelope);
      while the gap to the next lower recall exceeds ``max_recall_delta`` (+1e-6 slack), insert
      a point ``max_recall_delta`` lower carrying the envelope of the recalls above it;
    * the recall-0 point then takes the precision of its neighbour, and the area is the
      trapezoid sum (no extrapolation past the largest recall reached).
    """
    f = np.float32
    p = np.asarray(precision, np.float64).astype(f)
    r = np.asarray(recall, np.float64).astype(f)
    if p.shape != r.shape:
        raise ValueError(f"precision {p.shape} and recall {r.shape} differ in shape")
    if p.size == 0:
        return 0.0
    best: dict = {f(0.0): f(1.0)}
    for pi, ri in zip(p.tolist(), r.tolist()):
        key = f(ri)
        best[key] = max(best.get(key, f(0.0)), f(pi))
    keys = sorted(best, reverse=True)
    delta = f(max_recall_delta)
    slack = f(delta + f(1e-6))
    pts_p, pts_r = [], []
    last_r = keys[-1]              # the official starts from the smallest recall (0)
    max_p = f(0.0)
    for key in keys:
        while f(last_r - key) > slack:
            last_r = f(last_r - delta)
            pts_p.append(max_p)
            pts_r.append(last_r)
        max_p = max(best[key], max_p)
        pts_p.append(max_p)
        pts_r.append(key)
        last_r = key
    if len(pts_p) >= 2:
        pts_p[-1] = pts_p[-2]
    area = f(0.0)
    for i in range(1, len(pts_p)):
        # 0.5 is a double in the official code: the product is formed in double.
        area = f(float(area) + 0.5 * float(f(pts_r[i - 1] - pts_r[i])) * float(f(pts_p[i - 1] + pts_p[i])))
    return float(area)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def _rows(x, name: str, n: int | None, dtype, ndim: int = 1):
    a = np.asarray(x)
    if a.ndim == 0 or (ndim == 2 and a.size == 0 and a.ndim == 1):
        a = a.reshape((0,) + ((7,) if ndim == 2 else ()))
    if ndim == 2 and (a.ndim != 2 or a.shape[1] != 7):
        raise ValueError(f"{name}: expected shape (N, 7), got {a.shape}")
    if ndim == 1 and a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name}: has {a.shape[0]} rows but the boxes have {n}")
    if a.dtype.kind == "f" and np.dtype(dtype).kind != "f":
        bad = np.flatnonzero(~np.isfinite(a) | (a != np.round(a)))
        if bad.size:
            raise ValueError(f"{name}: row {bad[0]} is {a[bad[0]]}, expected an integer")
    return a.astype(dtype, copy=False)


def _check_finite(a: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(a), -1).any(axis=1))[0])
        raise ValueError(f"{name}: non-finite value at row {row}: {a[row]}")


def _check_range(a: np.ndarray, name: str, lo: int, hi: int, what: str) -> None:
    bad = np.flatnonzero((a < lo) | (a > hi))
    if bad.size:
        raise ValueError(f"{name}: row {bad[0]} is {a[bad[0]]}, expected {what}")


def _range_band(boxes: np.ndarray) -> np.ndarray:
    c = boxes[:, :3].astype(np.float64)
    d = np.sqrt((c * c).sum(axis=1))
    return np.searchsorted(np.array(RANGE_EDGES), d, side="right").astype(np.int64)


def compute_detection_metrics(pred_boxes, pred_types, pred_scores, pred_frame_ids,
                              gt_boxes, gt_types, gt_frame_ids, gt_difficulty,
                              pred_overlap_nlz=None, breakdowns=BREAKDOWNS,
                              iou_thresholds=None, score_cutoffs=None) -> dict:
    """The official Waymo 3D detection metric (see the module docstring).

    pred_boxes / gt_boxes: (N, 7) float32 ``(cx, cy, cz, l, w, h, heading)``; *_types: label
    types 0..4 (UNKNOWN=0 is in no breakdown); pred_scores float32; *_frame_ids int64 (any
    values; frames are the union of both sides); gt_difficulty 1 (LEVEL_1) or 2 (LEVEL_2)
    (0 counts like LEVEL_1, as in the official op; see prepare_ground_truth);
    pred_overlap_nlz: bool per prediction (an unmatched one is not a false positive).
    breakdowns: any of "OBJECT_TYPE", "RANGE". iou_thresholds: 5 per-type thresholds
    (default 0, 0.7, 0.5, 0.5, 0.5); score_cutoffs: increasing (default 0, 0.01, ..., 0.99, 1).

    Returns {breakdown name: {"AP", "APH", "num_gt", "num_pred", "precision",
    "precision_ha", "recall"}} with official names (e.g. "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1");
    num_pred counts predictions in the shard at the lowest cutoff; the last three are
    per-cutoff arrays. Raises ValueError naming the field and row on malformed input.
    """
    pb = _rows(pred_boxes, "pred_boxes", None, np.float32, ndim=2)
    n = pb.shape[0]
    pt = _rows(pred_types, "pred_types", n, np.int64)
    ps = _rows(pred_scores, "pred_scores", n, np.float32)
    pf = _rows(pred_frame_ids, "pred_frame_ids", n, np.int64)
    pn = (np.zeros(n, bool) if pred_overlap_nlz is None
          else _rows(pred_overlap_nlz, "pred_overlap_nlz", n, bool))
    gb = _rows(gt_boxes, "gt_boxes", None, np.float32, ndim=2)
    m = gb.shape[0]
    gt = _rows(gt_types, "gt_types", m, np.int64)
    gf = _rows(gt_frame_ids, "gt_frame_ids", m, np.int64)
    gd = _rows(gt_difficulty, "gt_difficulty", m, np.int64)
    _check_finite(pb, "pred_boxes")
    _check_finite(ps, "pred_scores")
    _check_finite(gb, "gt_boxes")
    _check_range(pt, "pred_types", 0, NUM_TYPES - 1, "a label type 0..4")
    _check_range(gt, "gt_types", 0, NUM_TYPES - 1, "a label type 0..4")
    _check_range(gd, "gt_difficulty", 0, 2, "a difficulty level 0, 1 or 2")
    for b in breakdowns:
        if b not in BREAKDOWNS:
            raise ValueError(f"breakdowns: unknown breakdown {b!r}, expected one of {BREAKDOWNS}")
    thr = np.asarray(DEFAULT_IOU_THRESHOLDS if iou_thresholds is None else iou_thresholds,
                     np.float32)
    if thr.shape != (NUM_TYPES,) or not np.all((thr >= 0) & (thr <= 1)):
        raise ValueError(f"iou_thresholds: expected 5 values in [0, 1] (one per type), got {thr}")
    # The official config stores thresholds as float and compares them with a double IoU.
    thr = thr.astype(np.float64)
    cut = DEFAULT_SCORE_CUTOFFS if score_cutoffs is None else np.asarray(score_cutoffs, np.float32)
    if cut.ndim != 1 or cut.size == 0 or not np.all(np.isfinite(cut)) or np.any(np.diff(cut) <= 0):
        raise ValueError(f"score_cutoffs: expected a non-empty increasing finite sequence, got {cut}")
    k = cut.size

    # Number of cutoffs at which each prediction is active (score >= cutoff).
    kp = np.searchsorted(cut, ps, side="right").astype(np.int64)
    p_band = _range_band(pb)
    g_band = _range_band(gb)
    p_use = pt > 0
    g_use = gt > 0

    # Sort both sides by (frame, type); groups are the (frame, type) cells with both sides.
    _, frame_dense = np.unique(np.concatenate([pf, gf]), return_inverse=True)
    p_key = frame_dense[:n].astype(np.int64) * NUM_TYPES + pt
    g_key = frame_dense[n:].astype(np.int64) * NUM_TYPES + gt
    p_ord = np.flatnonzero(p_use)
    p_ord = p_ord[np.argsort(p_key[p_ord], kind="stable")]
    g_ord = np.flatnonzero(g_use)
    g_ord = g_ord[np.argsort(g_key[g_ord], kind="stable")]
    pu, p_start, p_count = np.unique(p_key[p_ord], return_index=True, return_counts=True)
    gu, g_start, g_count = np.unique(g_key[g_ord], return_index=True, return_counts=True)
    _, ip, ig = np.intersect1d(pu, gu, assume_unique=True, return_indices=True)
    groups = np.stack([pu[ip] % NUM_TYPES, p_start[ip], p_start[ip] + p_count[ip],
                       g_start[ig], g_start[ig] + g_count[ig]], 1).astype(np.int64)
    n_chunks = max(1, min(len(groups), 8 * nb.get_num_threads()))
    acc = _accumulate(np.ascontiguousarray(groups), np.ascontiguousarray(pb[p_ord]), kp[p_ord],
                      pn[p_ord], p_band[p_ord], np.ascontiguousarray(gb[g_ord]), gd[g_ord],
                      g_band[g_ord], thr, k, n_chunks)
    sums = np.cumsum(acc, axis=2)[:, :, :k]
    tp1 = np.rint(sums[_TP1])
    tp2 = np.rint(sums[_TP2])
    tpn = np.rint(sums[_TPN])
    ha = sums[_HA]

    # Per-shard counts of active non-NLZ predictions per cutoff and of ground truths.
    p_shard_o = pt - 1
    p_shard_r = 4 + 3 * (pt - 1) + p_band
    g_shard_o = gt - 1
    g_shard_r = 4 + 3 * (gt - 1) + g_band
    # np.bincount over flattened (shard, value) indices: much faster than np.add.at.
    def count(shards_a, shards_b, values, sel, width):
        idx = np.concatenate([shards_a[sel] * width + values[sel], shards_b[sel] * width + values[sel]])
        return np.bincount(idx, minlength=NUM_SHARDS * width).reshape(NUM_SHARDS, width).astype(np.float64)

    hist = count(p_shard_o, p_shard_r, kp, p_use & ~pn, k + 1)
    # active(k) = #{kp > k}
    active = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
    n_pred = count(p_shard_o, p_shard_r, kp, p_use, k + 1)[:, 1:].sum(axis=1)
    ngt = count(g_shard_o, g_shard_r, gd, g_use, 3)
    ngt1 = ngt[:, 0] + ngt[:, 1]
    ngt2 = ngt1 + ngt[:, 2]

    result = {}
    for b in breakdowns:
        for t in range(1, NUM_TYPES):
            for band in range(3 if b == "RANGE" else 1):
                s = _shard_of_breakdown(b, t, band)
                tp = tp1[s] + tp2[s]
                fp = active[s] - tpn[s]
                for level in (1, 2):
                    fn = (ngt1[s] - tp1[s]) if level == 1 else (ngt2[s] - tp)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
                        prec_ha = np.where(tp + fp > 0, ha[s] / np.maximum(tp + fp, 1), 0.0)
                        rec = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
                    prec = np.where(rec == 0, 1.0, prec)
                    prec_ha = np.where(rec == 0, 1.0, prec_ha)
                    name = (f"OBJECT_TYPE_{TYPE_NAMES[t]}_LEVEL_{level}" if b == "OBJECT_TYPE"
                            else f"RANGE_{TYPE_NAMES[t]}_{RANGE_NAMES[band]}_LEVEL_{level}")
                    result[name] = {
                        "AP": average_precision(prec, rec),
                        "APH": average_precision(prec_ha, rec),
                        "num_gt": int(ngt1[s] if level == 1 else ngt2[s]),
                        "num_pred": int(n_pred[s]),
                        "precision": prec, "precision_ha": prec_ha, "recall": rec,
                    }
    return result


def prepare_ground_truth(boxes, types, frame_ids, difficulty, num_points) -> dict:
    """Official ground-truth preparation (docs/WAYMO.md): drop boxes with ``num_points <= 0``; a box
    with difficulty 0 (UNKNOWN) becomes LEVEL_2 if it has <= 5 points, else LEVEL_1; a
    labelled level stays. Returns a dict of arrays: boxes, types, frame_ids, difficulty, and
    index (the kept rows of the input)."""
    b = _rows(boxes, "boxes", None, np.float32, ndim=2)
    n = b.shape[0]
    t = _rows(types, "types", n, np.int64)
    f = _rows(frame_ids, "frame_ids", n, np.int64)
    d = _rows(difficulty, "difficulty", n, np.int64)
    npts = _rows(num_points, "num_points", n, np.int64)
    _check_range(d, "difficulty", 0, 2, "a difficulty level 0, 1 or 2")
    keep = np.flatnonzero(npts > 0)
    d = d[keep].copy()
    unknown = d == 0
    d[unknown] = np.where(npts[keep][unknown] <= 5, 2, 1)
    return {"boxes": b[keep], "types": t[keep].astype(np.uint8), "frame_ids": f[keep],
            "difficulty": d.astype(np.uint8), "index": keep}
