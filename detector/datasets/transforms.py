"""Training-time augmentations and test-time formatting for converted Waymo frames.

Every transform is a callable ``results -> results`` on one frame's dict:

- ``points``: (N, 8) float32, columns x, y, z, intensity (raw), elongation, return_index,
  lidar_id, nlz (the converter's layout, ``converted.load_points``);
- ``gt_boxes``: (M, 7) float32 ``(cx, cy, cz, length, width, height, heading)``;
- ``gt_labels``: (M,) int64 class indices into the dataset's ``class_names``;
- ``gt_types`` / ``gt_difficulty`` / ``gt_num_points``: (M,) Waymo type, difficulty, #points;
- ``rng``: a ``numpy.random.Generator`` that the dataset derives from (seed, epoch, index), so
  augmentation is reproducible and independent of the number of loader workers.

Boxes and points always move together: a flip, rotation, scaling or translation is applied to
both with the same parameters, and headings are wrapped back into [-pi, pi). The augmentations
are the ones the CenterPoint / SECOND line of work uses on Waymo (GT sampling, global flip,
rotation, scaling, translation, range filter, point shuffle); the implementation is our own.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ops.boxes import points_in_boxes, wrap_angle

from ..registry import TRANSFORMS

__all__ = [
    "box_corners_bev", "bev_boxes_overlap",
    "ObjectSample", "RandomFlip3D", "GlobalRotScaleTrans", "PointsRangeFilter",
    "ObjectRangeFilter", "PointShuffle", "Compose",
]

_BOX_KEYS = ("gt_boxes", "gt_labels", "gt_types", "gt_difficulty", "gt_num_points")


def box_corners_bev(boxes: np.ndarray) -> np.ndarray:
    """(M, 7) boxes -> (M, 4, 2) BEV corners, counter-clockwise."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    hl, hw = boxes[:, 3] / 2, boxes[:, 4] / 2
    local = np.stack([np.stack([hl, hw], -1), np.stack([-hl, hw], -1),
                      np.stack([-hl, -hw], -1), np.stack([hl, -hw], -1)], 1)  # (M, 4, 2)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], 1)  # (M, 2, 2)
    return np.einsum("mij,mkj->mki", rot, local) + boxes[:, None, :2]


def bev_boxes_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) bool: do the rotated BEV rectangles intersect (separating axis theorem)?

    Touching edges count as overlapping, which is the safe side for collision checks.
    """
    ca, cb = box_corners_bev(a), box_corners_bev(b)
    if len(ca) == 0 or len(cb) == 0:
        return np.zeros((len(ca), len(cb)), dtype=bool)

    def axes(corners):  # two edge normals per rectangle: (M, 2, 2)
        e = np.stack([corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 1]], 1)
        return np.stack([-e[..., 1], e[..., 0]], -1)

    all_axes = np.concatenate([np.broadcast_to(axes(ca)[:, None], (len(ca), len(cb), 2, 2)),
                               np.broadcast_to(axes(cb)[None], (len(ca), len(cb), 2, 2))], 2)
    pa = np.einsum("abxk,ack->abxc", all_axes, ca)
    pb = np.einsum("abxk,bck->abxc", all_axes, cb)
    separated = (pa.max(-1) < pb.min(-1)) | (pb.max(-1) < pa.min(-1))
    return ~separated.any(-1)


def _select_boxes(results: dict, keep: np.ndarray) -> None:
    for k in _BOX_KEYS:
        if k in results:
            results[k] = results[k][keep]


@TRANSFORMS.register_module()
class ObjectSample:
    """Ground-truth sampling: paste objects from the GT database into the scene.

    For each class, objects are drawn (uniformly without replacement, from database entries of
    that class with at least ``min_points`` points) so that the scene holds up to
    ``sample_counts[class]`` objects of it; a class the scene already holds that many of gets
    none. How collisions are handled (``collision``):

    - ``"fill"`` (default): ``max_trials`` candidates per missing object are drawn and accepted
      greedily in draw order, skipping any whose BEV rectangle overlaps an object of the scene
      or one accepted before it, until the scene is full;
    - ``"drop"`` (OpenPCDet's ``gt_sampling``): exactly as many candidates as are missing are
      drawn and every one that overlaps the scene, an object accepted before (earlier classes)
      or another candidate of the same draw is dropped, so scenes often end below the target.

    The scene's points inside an accepted box are removed and the object's points (stored
    relative to its centre) are added, at the object's original location so that the lidar
    pattern stays plausible.

    Args:
        db: a ``GTDatabase`` (``converted.load_gt_database``) or ``dict(data_root=, split=)``.
        class_names: classes of the model, in label order.
        sample_counts: {class name: target number of objects of that class per scene}.
        min_points: {class name: minimum points of a database object} (default 5).
        max_trials: candidates drawn per missing object before giving up (``"fill"`` only).
        collision: ``"fill"`` or ``"drop"`` (see above).
    """

    COLLISIONS = ("fill", "drop")

    def __init__(self, db, class_names: Sequence[str], sample_counts: dict,
                 min_points: dict | int = 5, max_trials: int = 4, collision: str = "fill"):
        if collision not in self.COLLISIONS:
            raise ValueError(f"ObjectSample.collision must be one of {self.COLLISIONS}, got "
                             f"{collision!r}")
        self.collision = collision
        from ..structures import WAYMO_TYPES
        if isinstance(db, dict):
            from .converted import load_gt_database
            db = load_gt_database(db["data_root"], db.get("split", "train"))
        self.db = db
        self.class_names = tuple(class_names)
        self.sample_counts = dict(sample_counts)
        unknown = set(self.sample_counts) - set(self.class_names)
        if unknown:
            raise ValueError(f"ObjectSample.sample_counts names {sorted(unknown)}, which are not in "
                             f"class_names {self.class_names}")
        if isinstance(min_points, int):
            min_points = {c: min_points for c in self.class_names}
        self.min_points = dict(min_points)
        self.max_trials = int(max_trials)
        types = np.asarray(_db_field(db, "types"))
        num_points = np.asarray(_db_field(db, "num_points"))
        self._pool = {}
        for label, name in enumerate(self.class_names):
            ok = (types == WAYMO_TYPES[name]) & (num_points >= self.min_points.get(name, 5))
            self._pool[name] = (label, WAYMO_TYPES[name], np.flatnonzero(ok))

    def __call__(self, results: dict) -> dict:
        rng: np.random.Generator = results["rng"]
        boxes = results["gt_boxes"]
        new_boxes, new_points, new_labels, new_types, new_diff, new_np = [], [], [], [], [], []
        occupied = boxes.copy()
        db_boxes = np.asarray(_db_field(self.db, "boxes"), dtype=np.float32)
        db_diff = np.asarray(_db_field(self.db, "difficulty"))
        db_np = np.asarray(_db_field(self.db, "num_points"))
        for name, target in self.sample_counts.items():
            label, wtype, pool = self._pool[name]
            missing = int(target) - int((results["gt_labels"] == label).sum())
            if missing <= 0 or len(pool) == 0:
                continue
            trials = 1 if self.collision == "drop" else self.max_trials
            cand = rng.choice(pool, size=min(len(pool), missing * trials), replace=False)
            cand_boxes = db_boxes[cand]
            # Reject candidates overlapping the scene first (vectorised), then greedily among
            # themselves in draw order ("fill"), or every one touching another ("drop").
            free = ~bev_boxes_overlap(cand_boxes, occupied).any(1) if len(occupied) else \
                np.ones(len(cand), bool)
            if self.collision == "drop":
                if new_boxes:
                    free &= ~bev_boxes_overlap(cand_boxes, np.stack(new_boxes)).any(1)
                among = bev_boxes_overlap(cand_boxes, cand_boxes)
                np.fill_diagonal(among, False)
                free &= ~among.any(1)
            accepted = 0
            for i in np.flatnonzero(free):
                if accepted >= missing:
                    break
                if self.collision == "fill" and new_boxes and bev_boxes_overlap(
                        cand_boxes[i:i + 1], np.stack(new_boxes)).any():
                    continue
                new_boxes.append(cand_boxes[i])
                pts = np.array(_db_points(self.db, int(cand[i])), dtype=np.float32, copy=True)
                pts[:, :3] += cand_boxes[i, :3]
                new_points.append(pts)
                new_labels.append(label)
                new_types.append(wtype)
                new_diff.append(db_diff[cand[i]])
                new_np.append(db_np[cand[i]])
                accepted += 1
        if not new_boxes:
            return results
        sampled = np.stack(new_boxes).astype(np.float32)
        pts = results["points"]
        inside = points_in_boxes(pts, sampled).any(1)
        results["points"] = np.concatenate([pts[~inside]] + new_points, 0).astype(np.float32)
        results["gt_boxes"] = np.concatenate([boxes, sampled], 0).astype(np.float32)
        results["gt_labels"] = np.concatenate([results["gt_labels"], np.asarray(new_labels, np.int64)])
        for key, vals in (("gt_types", new_types), ("gt_difficulty", new_diff),
                          ("gt_num_points", new_np)):
            if key in results:
                results[key] = np.concatenate([results[key], np.asarray(vals, results[key].dtype)])
        return results


def _db_field(db, name: str):
    """Read a per-object array from the GT database (attribute or mapping)."""
    aliases = {"types": ("types", "type"), "boxes": ("boxes", "box"),
               "difficulty": ("difficulty", "difficulties"),
               "num_points": ("num_points", "num_points_in_box")}[name]
    for a in aliases:
        if hasattr(db, a):
            return getattr(db, a)
        if isinstance(db, dict) and a in db:
            return db[a]
    raise AttributeError(f"GT database {type(db).__name__} has no field {aliases}")


def _db_points(db, i: int) -> np.ndarray:
    for name in ("get_points", "points_of", "object_points"):
        fn = getattr(db, name, None)
        if callable(fn):
            return fn(i)
    pts = getattr(db, "points", None)
    if pts is not None:
        if callable(pts):
            return pts(i)
        offsets = getattr(db, "offsets", None)
        if offsets is not None:
            return pts[offsets[i]:offsets[i + 1]]
        return pts[i]
    raise AttributeError(f"GT database {type(db).__name__} gives no access to object points")


@TRANSFORMS.register_module()
class RandomFlip3D:
    """Mirror the scene: across the x axis (y -> -y) and/or the y axis (x -> -x), each with prob 0.5."""

    def __init__(self, flip_x_axis: bool = True, flip_y_axis: bool = False, prob: float = 0.5):
        self.flip_x_axis, self.flip_y_axis, self.prob = flip_x_axis, flip_y_axis, prob

    def __call__(self, results: dict) -> dict:
        rng = results["rng"]
        pts, boxes = results["points"], results["gt_boxes"]
        if self.flip_x_axis and rng.random() < self.prob:
            pts[:, 1] = -pts[:, 1]
            boxes[:, 1] = -boxes[:, 1]
            boxes[:, 6] = -boxes[:, 6]
        if self.flip_y_axis and rng.random() < self.prob:
            pts[:, 0] = -pts[:, 0]
            boxes[:, 0] = -boxes[:, 0]
            boxes[:, 6] = np.pi - boxes[:, 6]
        boxes[:, 6] = wrap_angle(boxes[:, 6])
        return results


@TRANSFORMS.register_module()
class GlobalRotScaleTrans:
    """Rotate about z by U(rot_range), scale by U(scale_range), translate by N(0, translation_std)."""

    def __init__(self, rot_range=(-np.pi / 4, np.pi / 4), scale_range=(0.95, 1.05),
                 translation_std=(0.0, 0.0, 0.0)):
        self.rot_range = tuple(rot_range)
        self.scale_range = tuple(scale_range)
        self.translation_std = np.asarray(translation_std, dtype=np.float64)

    def __call__(self, results: dict) -> dict:
        rng = results["rng"]
        angle = rng.uniform(*self.rot_range)
        scale = rng.uniform(*self.scale_range)
        shift = rng.normal(size=3) * self.translation_std
        c, s = np.cos(angle), np.sin(angle)
        rot = np.array([[c, -s], [s, c]])
        pts, boxes = results["points"], results["gt_boxes"]
        pts[:, :2] = (pts[:, :2].astype(np.float64) @ rot.T * scale + shift[:2]).astype(np.float32)
        pts[:, 2] = (pts[:, 2].astype(np.float64) * scale + shift[2]).astype(np.float32)
        if len(boxes):
            boxes[:, :2] = (boxes[:, :2].astype(np.float64) @ rot.T * scale + shift[:2])
            boxes[:, 2] = boxes[:, 2] * scale + shift[2]
            boxes[:, 3:6] = boxes[:, 3:6] * scale
            boxes[:, 6] = wrap_angle(boxes[:, 6].astype(np.float64) + angle)
        results["aug"] = dict(rotation=angle, scale=scale, translation=shift)
        return results


@TRANSFORMS.register_module()
class PointsRangeFilter:
    """Keep points with x, y, z inside ``point_cloud_range`` (xmin, ymin, zmin, xmax, ymax, zmax)."""

    def __init__(self, point_cloud_range: Sequence[float]):
        self.range = np.asarray(point_cloud_range, dtype=np.float32)

    def __call__(self, results: dict) -> dict:
        p, r = results["points"], self.range
        keep = ((p[:, 0] >= r[0]) & (p[:, 0] < r[3]) & (p[:, 1] >= r[1]) & (p[:, 1] < r[4])
                & (p[:, 2] >= r[2]) & (p[:, 2] < r[5]))
        results["points"] = p[keep]
        return results


@TRANSFORMS.register_module()
class ObjectRangeFilter:
    """Keep boxes whose BEV centre lies inside the x/y extent of ``point_cloud_range``."""

    def __init__(self, point_cloud_range: Sequence[float]):
        self.range = np.asarray(point_cloud_range, dtype=np.float32)

    def __call__(self, results: dict) -> dict:
        b, r = results["gt_boxes"], self.range
        keep = (b[:, 0] >= r[0]) & (b[:, 0] < r[3]) & (b[:, 1] >= r[1]) & (b[:, 1] < r[4])
        _select_boxes(results, keep)
        return results


@TRANSFORMS.register_module()
class PointShuffle:
    """Shuffle the point order (hard voxelization keeps the first points of a voxel)."""

    def __call__(self, results: dict) -> dict:
        results["points"] = results["points"][results["rng"].permutation(len(results["points"]))]
        return results


class Compose:
    """Apply transforms (instances or ``type=`` configs) in order."""

    def __init__(self, transforms: Sequence):
        self.transforms = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in transforms or ()]

    def __call__(self, results: dict) -> dict:
        for t in self.transforms:
            results = t(results)
        return results

    def __repr__(self) -> str:
        return f"Compose({[type(t).__name__ for t in self.transforms]})"
