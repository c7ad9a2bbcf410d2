"""Where the frames to draw come from: a converted data root or a raw Waymo ``.tfrecord``.

A frame is named ``SEGMENT:INDEX`` on the command line: ``SEGMENT`` is the converted segment's
name (the input file name without ``.tfrecord``; its context name or a unique prefix of either
also works) and ``INDEX`` the frame's record index in that segment file. For a ``.tfrecord``
the segment part may be left out (``:3`` or ``3``).

Converted data is read only through ``detector.datasets.converted`` (``load_index``,
``load_points``), raw segments through ``detector.datasets.waymo`` (``read_tfrecord``,
``decode_frame``), so the points drawn are exactly the points the detector is trained on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class VisFrame:
    """One frame to draw: points (N, 8) as ``load_points``, ground truth, identity."""
    points: np.ndarray
    gt_boxes: np.ndarray          # (M, 7) float32
    gt_types: np.ndarray          # (M,) int8 Waymo types
    context_name: str
    timestamp_micros: int
    segment: str
    frame_index: int

    @property
    def name(self) -> str:
        return f"{self.segment}:{self.frame_index}"


def parse_frame_spec(spec: str | None) -> tuple[str | None, int | None]:
    """``"SEGMENT:INDEX"`` -> (segment or None, index or None); ``None`` -> (None, None)."""
    if spec is None:
        return None, None
    seg, sep, idx = spec.rpartition(":")
    if not sep:
        seg, idx = "", spec
    try:
        index = int(idx)
    except ValueError:
        raise ValueError(f"--frame {spec!r}: expected SEGMENT:INDEX with an integer INDEX "
                         f"(e.g. segment-123_with_camera_labels:0)") from None
    if index < 0:
        raise ValueError(f"--frame {spec!r}: INDEX must be >= 0")
    return (seg or None), index


class ConvertedFrames:
    """Frames of one split of a converted data root, in (segment, frame_index) order."""

    def __init__(self, root, split: str = "val"):
        from detector.datasets.converted import load_index

        self.root, self.split = Path(root), split
        self.records = load_index(root, split)
        if not self.records:
            raise FileNotFoundError(f"{Path(root) / split}: the split {split!r} has no "
                                    "converted segments (run tools/convert_waymo.py first)")

    def __len__(self) -> int:
        return len(self.records)

    def find(self, segment: str | None, index: int | None) -> int:
        """Position of the frame ``segment:index`` (first frame of the split if both None)."""
        if segment is None and index is None:
            return 0
        segments = sorted({r.segment for r in self.records})
        if segment is None:
            if len(segments) > 1:
                raise ValueError(f"{self.root}/{self.split} has {len(segments)} segments: name "
                                 f"one as SEGMENT:INDEX, e.g. {segments[0]}:{index}")
            segment = segments[0]
        matches = [s for s in segments if s == segment]
        if not matches:
            contexts = {r.context_name: r.segment for r in self.records}
            if segment in contexts:
                matches = [contexts[segment]]
            else:
                matches = sorted({s for s in segments if s.startswith(segment)}
                                 | {seg for c, seg in contexts.items() if c.startswith(segment)})
        if len(matches) != 1:
            shown = ", ".join(segments[:5]) + (" ..." if len(segments) > 5 else "")
            what = "matches no" if not matches else f"matches {len(matches)}"
            raise ValueError(f"segment {segment!r} {what} segment of {self.root}/{self.split} "
                             f"(segments: {shown})")
        seg = matches[0]
        positions = [i for i, r in enumerate(self.records) if r.segment == seg]
        for i in positions:
            if self.records[i].frame_index == (index or 0):
                return i
        have = [self.records[i].frame_index for i in positions]
        raise ValueError(f"segment {seg} has no frame {index} (frames {min(have)}..{max(have)})")

    def load(self, i: int) -> VisFrame:
        from detector.datasets.converted import load_points

        rec = self.records[i]
        return VisFrame(points=np.asarray(load_points(rec)), gt_boxes=rec.boxes,
                        gt_types=rec.types, context_name=rec.context_name,
                        timestamp_micros=rec.timestamp_micros, segment=rec.segment,
                        frame_index=rec.frame_index)


class TFRecordFrames:
    """Frames of one raw Waymo segment file, decoded on demand (the file is streamed, not held)."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such .tfrecord file")
        self.segment = self.path.name.removesuffix(".tfrecord")
        self._count: int | None = None

    def _records(self):
        from detector.datasets.waymo import read_tfrecord
        return read_tfrecord(self.path)

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self._records())
        return self._count

    def find(self, segment: str | None, index: int | None) -> int:
        if segment is not None and segment != self.segment:
            raise ValueError(f"--frame names segment {segment!r} but {self.path} is segment "
                             f"{self.segment!r}")
        return index or 0

    def load(self, i: int) -> VisFrame:
        from detector.datasets.waymo import decode_frame

        count = 0
        for k, payload in enumerate(self._records()):
            count = k + 1
            if k == i:
                try:
                    fr = decode_frame(payload)
                except Exception as exc:
                    raise ValueError(f"{self.path}: record {i}: cannot decode the Frame: "
                                     f"{exc}") from exc
                return VisFrame(points=fr.points, gt_boxes=fr.boxes, gt_types=fr.types,
                                context_name=fr.context_name,
                                timestamp_micros=fr.timestamp_micros, segment=self.segment,
                                frame_index=i)
        self._count = count
        raise IndexError(f"{self.path}: frame {i} is out of range (the file has {count} records)")


class PointFileFrames:
    """One point cloud file (.bin, .npy, .pcd, .ply; ``detector.datasets.pointcloud_io``) as a
    single frame without ground truth. Points keep the file's columns (x, y, z, intensity[, ...]);
    colour modes that need a column the file lacks say so."""

    def __init__(self, path):
        from detector.datasets.pointcloud_io import read_point_frames

        self.path = Path(path)
        (self.frame,) = list(read_point_frames(self.path))
        self.segment = self.path.stem

    def __len__(self) -> int:
        return 1

    def find(self, segment: str | None, index: int | None) -> int:
        if index:
            raise ValueError(f"{self.path} holds a single point cloud: --frame {index} is out of "
                             f"range (use 0 or leave --frame out)")
        return 0

    def load(self, i: int) -> VisFrame:
        if i != 0:
            raise IndexError(f"{self.path}: frame {i} is out of range (the file has 1 frame)")
        return VisFrame(points=self.frame.points, gt_boxes=np.zeros((0, 7), np.float32),
                        gt_types=np.zeros(0, np.int8), context_name=self.frame.context_name,
                        timestamp_micros=0, segment=self.segment, frame_index=0)


def open_frames(data, split: str = "val") -> ConvertedFrames | TFRecordFrames | PointFileFrames:
    """A frame source for ``--data``: a ``.tfrecord`` file, a point cloud file (.bin, .npy, .pcd,
    .ply: format detected from the content), or a converted root (with ``split``)."""
    path = Path(data)
    if path.is_file():
        from detector.datasets.pointcloud_io import detect_format
        if path.suffix == ".tfrecord" or detect_format(path) == "tfrecord":
            return TFRecordFrames(path)
        return PointFileFrames(path)
    if path.is_dir():
        return ConvertedFrames(path, split)
    raise FileNotFoundError(f"--data {data}: neither a converted data root (directory) nor a "
                            ".tfrecord / point cloud file")
