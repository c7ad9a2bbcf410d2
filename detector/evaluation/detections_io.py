"""Raw detections of many frames as JSON or ``.npz`` (``tools/infer.py``, ``tools/test.py --out``).

One entry per frame: ``source`` (input file, or ``SEGMENT:INDEX``), ``context_name`` and
``timestamp_micros`` (empty / 0 for point clouds that have none), and the detections ``boxes``
(K, 7: cx, cy, cz, length, width, height, heading; metres, radians, vehicle frame), ``scores``
(K,), ``labels`` (K,, indices into ``class_names``) and ``types`` (K,, Waymo label types).

JSON: ``{"class_names": [...], "box_columns": [...], "frames": [{...}, ...]}``.
NPZ: per-frame arrays ``sources``, ``context_names``, ``timestamps_micros``, and per-box arrays
``frame_index`` (which frame a box belongs to), ``boxes``, ``scores``, ``labels``, ``types``,
plus ``class_names``. Both are written atomically (temp file + rename).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["BOX_COLUMNS", "FrameDetections", "write_detections", "read_detections"]

BOX_COLUMNS = ("cx", "cy", "cz", "length", "width", "height", "heading")


class FrameDetections(dict):
    """One frame's detections: a dict with the keys of the module docstring."""

    def __init__(self, source: str, boxes, scores, labels, types, context_name: str = "",
                 timestamp_micros: int = 0):
        super().__init__(source=str(source), context_name=str(context_name),
                         timestamp_micros=int(timestamp_micros),
                         boxes=np.asarray(boxes, np.float32).reshape(-1, 7),
                         scores=np.asarray(scores, np.float32).reshape(-1),
                         labels=np.asarray(labels, np.int64).reshape(-1),
                         types=np.asarray(types, np.int64).reshape(-1))


def _atomic_write(path: Path, write) -> None:
    from ..fileio import atomic_write

    with atomic_write(path) as f:
        write(f)


def write_detections(path, frames: Sequence[dict], class_names: Sequence[str]) -> Path:
    """Write ``frames`` (:class:`FrameDetections`) to ``path``: ``.json`` or ``.npz`` by suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        doc = dict(class_names=list(class_names), box_columns=list(BOX_COLUMNS), frames=[
            dict(source=f["source"], context_name=f["context_name"],
                 timestamp_micros=int(f["timestamp_micros"]),
                 boxes=np.round(np.asarray(f["boxes"], np.float64), 5).tolist(),
                 scores=np.round(np.asarray(f["scores"], np.float64), 6).tolist(),
                 labels=np.asarray(f["labels"]).tolist(), types=np.asarray(f["types"]).tolist())
            for f in frames])
        # one frame per line: readable and diff-able without a number on every line
        frames_text = ",\n  ".join(json.dumps(f) for f in doc["frames"])
        text = (f'{{"class_names": {json.dumps(doc["class_names"])},\n'
                f' "box_columns": {json.dumps(doc["box_columns"])},\n'
                f' "frames": [\n  {frames_text}\n ]}}\n')
        _atomic_write(path, lambda fh: fh.write(text.encode()))
    elif suffix == ".npz":
        n = [len(f["scores"]) for f in frames]

        def cat(key, shape, dtype):
            parts = [np.asarray(f[key], dtype).reshape(shape) for f in frames]
            return np.concatenate(parts) if parts else np.zeros((0,) + shape[1:], dtype)

        arrays = dict(
            class_names=np.asarray(list(class_names), dtype=str),
            sources=np.asarray([f["source"] for f in frames], dtype=str),
            context_names=np.asarray([f["context_name"] for f in frames], dtype=str),
            timestamps_micros=np.asarray([f["timestamp_micros"] for f in frames], np.int64),
            frame_index=np.repeat(np.arange(len(frames), dtype=np.int64), n),
            boxes=cat("boxes", (-1, 7), np.float32), scores=cat("scores", (-1,), np.float32),
            labels=cat("labels", (-1,), np.int64), types=cat("types", (-1,), np.int64))
        _atomic_write(path, lambda fh: np.savez(fh, **arrays))
    else:
        raise ValueError(f"{path}: detections are written as .json or .npz, not {suffix!r}")
    return path


def read_detections(path) -> tuple[list[FrameDetections], list[str]]:
    """Read a file of :func:`write_detections` back: (frames, class_names)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        doc = json.loads(path.read_text())
        frames = [FrameDetections(f["source"], f["boxes"], f["scores"], f["labels"], f["types"],
                                  f["context_name"], f["timestamp_micros"]) for f in doc["frames"]]
        return frames, list(doc["class_names"])
    with np.load(path, allow_pickle=False) as z:
        idx = z["frame_index"]
        frames = [FrameDetections(z["sources"][i], z["boxes"][idx == i], z["scores"][idx == i],
                                  z["labels"][idx == i], z["types"][idx == i],
                                  z["context_names"][i], z["timestamps_micros"][i])
                  for i in range(len(z["sources"]))]
        return frames, z["class_names"].tolist()
