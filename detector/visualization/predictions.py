"""Detections to overlay: from an official submission file (``metrics_pb2.Objects``).

The submission format is the Waymo challenge's (docs/WAYMO.md, "Objects files"): one ``Object``
per box with ``context_name``, ``frame_timestamp_micros``, ``object`` (a ``Label``: box, type)
and ``score``. A frame's detections are the objects whose (context_name, frame_timestamp_micros)
equal the frame's (``ObjectArrays.for_frame``). The file is read by the evaluation's reader,
imported on use (it brings Numba and the metric).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detector.evaluation.waymo import ObjectArrays

__all__ = ["read_submission"]


def read_submission(path) -> ObjectArrays:
    """Read a submission ``.bin`` (``metrics_pb2.Objects``) into ``ObjectArrays``."""
    from detector.evaluation.waymo import read_objects

    if not Path(path).is_file():
        raise FileNotFoundError(f"--predictions {path}: no such file")
    return read_objects(path)
