"""Read and write ``metrics_pb2.Objects`` files: the official Waymo submission / ground-truth
format for 3D detection (docs/WAYMO.md: one ``Object`` per box with ``context_name``,
``frame_timestamp_micros``, ``object`` = a ``Label`` (box, type, difficulty, number of points),
``score`` and ``overlap_with_nlz``).

Boxes come out in the project convention ``(cx, cy, cz, length, width, height, heading)``
float32 (the proto's ``Label.Box`` stores width in field 4 and length in field 5).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from detector.conventions import frame_id as frame_id_from  # the one frame-id scheme


@dataclass
class ObjectArrays:
    """The content of an Objects file as arrays, one row per object (file order)."""
    context_names: np.ndarray       # (N,) str
    timestamps_micros: np.ndarray   # (N,) int64
    frame_ids: np.ndarray           # (N,) int64, frame_id_from(context, timestamp)
    boxes: np.ndarray               # (N, 7) float32
    types: np.ndarray               # (N,) uint8 label type
    scores: np.ndarray              # (N,) float32 (0 when absent, e.g. ground truth)
    difficulty: np.ndarray          # (N,) uint8 detection_difficulty_level
    num_points: np.ndarray          # (N,) int64 num_lidar_points_in_box
    overlap_nlz: np.ndarray         # (N,) bool

    def __len__(self) -> int:
        return len(self.types)

    def select(self, keep: np.ndarray) -> "ObjectArrays":
        """The rows where ``keep`` (a bool mask or indices) selects, every field alike."""
        return ObjectArrays(*(getattr(self, f.name)[keep] for f in fields(self)))

    def for_frame(self, context_name: str, timestamp_micros: int) -> "ObjectArrays":
        """The objects of one frame, identified by (context_name, frame_timestamp_micros);
        possibly none."""
        return self.select((self.context_names == context_name)
                           & (self.timestamps_micros == int(timestamp_micros)))


def read_objects(path) -> ObjectArrays:
    """Parse a serialized ``metrics_pb2.Objects`` file. Errors name the file (and the record
    for a bad object)."""
    from google.protobuf.message import DecodeError
    from waymo_open_dataset.protos import metrics_pb2

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OSError(f"{path}: cannot read ({e})") from e
    objs = metrics_pb2.Objects()
    try:
        objs.ParseFromString(data)
    except DecodeError as e:
        raise ValueError(f"{path}: not a serialized metrics_pb2.Objects ({len(data)} bytes): {e}") from e
    n = len(objs.objects)
    ctx = np.empty(n, dtype=object)
    ts = np.zeros(n, np.int64)
    boxes = np.zeros((n, 7), np.float64)
    types = np.zeros(n, np.int64)
    scores = np.zeros(n, np.float32)
    diff = np.zeros(n, np.int64)
    npts = np.zeros(n, np.int64)
    nlz = np.zeros(n, bool)
    untyped = []  # rows whose Label.type is absent or a value the enum does not know
    for i, o in enumerate(objs.objects):
        if not o.object.HasField("type"):
            untyped.append(i)
        b = o.object.box
        boxes[i] = (b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading)
        ctx[i] = o.context_name
        ts[i] = o.frame_timestamp_micros
        types[i] = o.object.type
        scores[i] = o.score
        diff[i] = o.object.detection_difficulty_level
        npts[i] = o.object.num_lidar_points_in_box
        nlz[i] = o.overlap_with_nlz
    bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1))
    if bad.size:
        raise ValueError(f"{path}: object {bad[0]} has a non-finite box {boxes[bad[0]].tolist()}")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise ValueError(f"{path}: object {bad[0]} has a non-finite score ({scores[bad[0]]}); "
                         f"{bad.size} object(s) in all")
    if untyped:
        raise ValueError(f"{path}: object {untyped[0]} has {_describe_type_field(objs.objects[untyped[0]])}; "
                         f"expected a Label.Type 1..4 ({len(untyped)} object(s) in all)")
    bad = np.flatnonzero((types < 0) | (types > 4))
    if bad.size:
        raise ValueError(f"{path}: object {bad[0]} has unknown type {types[bad[0]]}")
    bad = np.flatnonzero((diff < 0) | (diff > 2))
    if bad.size:
        raise ValueError(f"{path}: object {bad[0]} has unknown detection_difficulty_level {diff[bad[0]]}")
    cache: dict = {}
    fids = np.array([cache.setdefault((c, t), frame_id_from(c, t)) for c, t in zip(ctx, ts.tolist())],
                    np.int64)
    return ObjectArrays(ctx.astype(str) if n else np.zeros(0, "<U1"), ts, fids,
                        boxes.astype(np.float32), types.astype(np.uint8), scores,
                        diff.astype(np.uint8), npts, nlz)


def _describe_type_field(obj) -> str:
    """Why ``object.type`` is unset: absent, or a number the Label.Type enum does not know
    (proto2 parsers move unknown enum values out of the field, so it reads as UNKNOWN = 0)."""
    try:
        from google.protobuf.unknown_fields import UnknownFieldSet
        for f in UnknownFieldSet(obj.object):
            if f.field_number == 3 and f.wire_type == 0:  # Label.type
                return f"object.type = {f.data}, a value unknown to Label.Type"
    except ImportError:  # protobuf < 4.22 has no UnknownFieldSet
        pass
    return "no object.type"


def write_objects(path, context_names, timestamps, boxes, types, scores,
                  overlap_nlz=None) -> None:
    """Write predictions as a ``metrics_pb2.Objects`` file, atomically (temp file + replace).

    context_names: one str per box (or a single str for all); timestamps: int per box (or one);
    boxes (N, 7) ``(cx, cy, cz, l, w, h, heading)``; types (N,) 1..4; scores (N,).
    """
    from waymo_open_dataset.protos import metrics_pb2

    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    n = len(boxes)
    ctx = [context_names] * n if isinstance(context_names, str) else list(context_names)
    ts = np.broadcast_to(np.asarray(timestamps, np.int64), (n,))
    types = np.asarray(types, np.int64)
    scores = np.asarray(scores, np.float64)
    nlz = np.zeros(n, bool) if overlap_nlz is None else np.asarray(overlap_nlz, bool)
    for name, a in (("context_names", ctx), ("types", types), ("scores", scores),
                    ("overlap_nlz", nlz)):
        if len(a) != n:
            raise ValueError(f"{name}: has {len(a)} rows but boxes have {n}")
    bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1) | ~np.isfinite(scores))
    if bad.size:
        raise ValueError(f"row {bad[0]}: non-finite box or score ({boxes[bad[0]].tolist()}, {scores[bad[0]]})")
    bad = np.flatnonzero((types < 0) | (types > 4))
    if bad.size:
        raise ValueError(f"types: row {bad[0]} is {types[bad[0]]}, expected a label type 0..4")
    objs = metrics_pb2.Objects()
    for i in range(n):
        o = objs.objects.add()
        b = o.object.box
        b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading = boxes[i].tolist()
        o.object.type = int(types[i])
        o.score = float(scores[i])
        o.context_name = str(ctx[i])
        o.frame_timestamp_micros = int(ts[i])
        if nlz[i]:
            o.overlap_with_nlz = True
    from detector.fileio import atomic_write_bytes

    atomic_write_bytes(path, objs.SerializeToString())


def prediction_warnings(pred: ObjectArrays, path="predictions") -> list[str]:
    """What in a prediction file the official metric accepts but is almost surely a mistake.

    Each is scored exactly as the official op scores it (checked against it in the oracle venv):
    a box with a size <= 0.01 m has IoU 0 with everything (a false positive); a score above 1
    passes every cutoff and one below 0 none; a duplicated box is a second prediction (a false
    positive once the first is matched). One line per kind, naming the first row and the count.
    """
    out = []
    small = np.flatnonzero((pred.boxes[:, 3:6] <= 0.01).any(axis=1))
    if small.size:
        out.append(f"{path}: {small.size} box(es) with a size <= 0.01 m (first: object {small[0]}, "
                   f"size {pred.boxes[small[0], 3:6].tolist()}); the metric counts them as false "
                   f"positives")
    off = np.flatnonzero((pred.scores < 0) | (pred.scores > 1))
    if off.size:
        out.append(f"{path}: {off.size} score(s) outside [0, 1] (first: object {off[0]}, score "
                   f"{float(pred.scores[off[0]])}); the metric's cutoffs are 0.00..1.00")
    if len(pred):
        rows = np.concatenate([pred.frame_ids[:, None].view(np.uint8).reshape(len(pred), -1),
                               pred.types[:, None].astype(np.uint8),
                               pred.boxes.view(np.uint8).reshape(len(pred), -1)], axis=1)
        _, first, counts = np.unique(rows, axis=0, return_index=True, return_counts=True)
        dup = counts > 1
        if dup.any():
            out.append(f"{path}: {int((counts[dup] - 1).sum())} duplicated box(es) (same frame, type "
                       f"and box; first: object {int(first[dup].min())}); each copy after the first "
                       f"is a false positive")
    return out


def evaluate_objects(pred: ObjectArrays, gt: ObjectArrays, **kwargs) -> dict:
    """The official evaluation of two Objects files' content: ground truth prepared as the
    official tool does (prepare_ground_truth), then compute_detection_metrics."""
    from .metrics import compute_detection_metrics, prepare_ground_truth

    g = prepare_ground_truth(gt.boxes, gt.types, gt.frame_ids, gt.difficulty, gt.num_points)
    return compute_detection_metrics(pred.boxes, pred.types, pred.scores, pred.frame_ids,
                                     g["boxes"], g["types"], g["frame_ids"], g["difficulty"],
                                     pred_overlap_nlz=pred.overlap_nlz, **kwargs)
