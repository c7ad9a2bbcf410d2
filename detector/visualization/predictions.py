"""Detections to overlay: from an official submission file (``metrics_pb2.Objects``).

The submission format is the Waymo challenge's (docs WAYMO.md, end of "Official 3D detection
metric"): one ``Object`` per box with ``context_name``, ``frame_timestamp_micros``, ``object`` (a
``Label``: box, type) and ``score``. A frame's detections are the objects whose
(context_name, frame_timestamp_micros) equal the frame's.

The project's reader is ``detector.evaluation.waymo.read_objects``; until that module exists
a small private parser of the same file is used (:func:`_read_objects_fallback`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class SubmissionObjects:
    """All objects of a submission file as parallel arrays."""
    context_names: np.ndarray      # (K,) str
    timestamps_micros: np.ndarray  # (K,) int64
    boxes: np.ndarray              # (K, 7) float32, project box convention
    types: np.ndarray              # (K,) int8 Waymo types
    scores: np.ndarray             # (K,) float32

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def for_frame(self, context_name: str, timestamp_micros: int) -> "SubmissionObjects":
        """The objects of one frame (possibly none)."""
        keep = ((self.context_names == context_name)
                & (self.timestamps_micros == int(timestamp_micros)))
        return SubmissionObjects(self.context_names[keep], self.timestamps_micros[keep],
                                 self.boxes[keep], self.types[keep], self.scores[keep])


def _read_objects_fallback(path) -> dict[str, np.ndarray]:
    """Parse a ``metrics_pb2.Objects`` file into arrays (same keys as read_objects)."""
    from waymo_open_dataset.protos import metrics_pb2

    data = Path(path).read_bytes()
    objs = metrics_pb2.Objects()
    try:
        objs.ParseFromString(data)
    except Exception as exc:
        raise ValueError(f"{path}: not a metrics_pb2.Objects submission file ({len(data)} bytes): "
                         f"{exc}") from None
    k = len(objs.objects)
    boxes = np.array([(o.object.box.center_x, o.object.box.center_y, o.object.box.center_z,
                       o.object.box.length, o.object.box.width, o.object.box.height,
                       o.object.box.heading) for o in objs.objects],
                     dtype=np.float64).reshape(k, 7)
    return dict(context_names=np.array([o.context_name for o in objs.objects], dtype=str),
                timestamps_micros=np.array([o.frame_timestamp_micros for o in objs.objects],
                                           dtype=np.int64),
                boxes=boxes.astype(np.float32),
                types=np.array([o.object.type for o in objs.objects], dtype=np.int8),
                scores=np.array([o.score for o in objs.objects], dtype=np.float32))


def read_submission(path) -> SubmissionObjects:
    """Read a submission ``.bin`` (``metrics_pb2.Objects``) into :class:`SubmissionObjects`."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--predictions {path}: no such file")
    try:
        from detector.evaluation.waymo import read_objects
    except ImportError:
        arrays = _read_objects_fallback(path)
    else:
        arrays = read_objects(path)
    get = arrays.get if isinstance(arrays, dict) else (lambda key: getattr(arrays, key))
    return SubmissionObjects(
        context_names=np.asarray(get("context_names")).astype(str),
        timestamps_micros=np.asarray(get("timestamps_micros"), dtype=np.int64),
        boxes=np.asarray(get("boxes"), dtype=np.float32).reshape(-1, 7),
        types=np.asarray(get("types")).astype(np.int8),
        scores=np.asarray(get("scores"), dtype=np.float32))
