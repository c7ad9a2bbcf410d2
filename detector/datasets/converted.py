"""Converted Waymo data: the on-disk format written by ``tools/convert_waymo.py`` and its readers.

Training code reads converted data ONLY through this module (docs/ARCHITECTURE.md, "Data flow").
Nothing here unpickles: indices are ``.npz`` files of plain arrays loaded with
``allow_pickle=False`` and JSON manifests, so loading an index can never execute code.

On-disk layout (``FORMAT_VERSION`` = 1)::

    ROOT/<split>/                         split = "train" | "val" | ...
      manifest/<segment>.json             one entry per COMPLETED segment (written last, atomically)
      segments/<segment>/                 a segment's output; lands by renaming a finished temp dir
        points/<frame_index:06d>.npy      (N, 8) float32, columns POINT_COLUMNS, memory-mappable
        frames.npz                        per-frame arrays and the labels of all frames
        gt_points.npy                     (K, 8) float32: points inside each labelled box, xyz
                                          relative to the box centre, other columns unchanged
        gt_index.npz                      per ground-truth-database entry arrays
      .tmp/                               segments being written (never read; removed on rerun)

``<segment>`` is the input file's name without ``.tfrecord``. A segment is trusted only when its
manifest entry exists (frame count, sha256 of every file, conversion options, source size/mtime).

``frames.npz`` arrays (F frames, M labels in total, labels of frame f are
``box_offsets[f]:box_offsets[f+1]``): ``frame_index`` (F,) int64 (record index in the segment
file), ``timestamp_micros`` (F,) int64, ``frame_id`` (F,) int64 (:func:`make_frame_id`),
``context_name`` (F,) str, ``num_points`` (F,) int64, ``pose`` (F, 4, 4) float64 vehicle->global,
``box_offsets`` (F+1,) int64, ``boxes`` (M, 7) float32 (cx, cy, cz, l, w, h, heading),
``types`` (M,) int8 (Waymo label types), ``difficulty`` (M,) int8, ``num_points_in_box`` (M,)
int32 (the label's ``num_lidar_points_in_box``), ``num_top_points_in_box`` (M,) int32,
``ids`` (M,) str, ``speed`` / ``accel`` (M, 3) float32.

``gt_index.npz`` arrays (K entries: every label with at least one point of the converted cloud
inside its box): ``type`` int8, ``box`` (K, 7) float32, ``difficulty`` int8, ``num_points``
int32 (points stored for it), ``frame_index`` int64, ``offset`` int64 (first row in
``gt_points.npy``), ``id`` str.

Point-in-box test: a point is in a box if, in the box frame, |dx| <= l/2, |dy| <= w/2 and
|dz| <= h/2.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .waymo.frame import POINT_COLUMNS

__all__ = ["FORMAT_VERSION", "FrameRecord", "GTDatabase", "load_index", "load_points",
           "load_gt_database", "make_frame_id", "completed_segments", "save_npz", "split_dir"]

FORMAT_VERSION = 1
# label.proto Type enum (same as detector.structures.WAYMO_TYPES, which would pull in torch)
WAYMO_TYPES = {"UNKNOWN": 0, "VEHICLE": 1, "PEDESTRIAN": 2, "SIGN": 3, "CYCLIST": 4}
NUM_POINT_COLUMNS = len(POINT_COLUMNS)


def make_frame_id(context_name: str, timestamp_micros: int) -> int:
    """Stable unique int64 frame id (>= 0): the first 63 bits of sha256(context:timestamp)."""
    h = hashlib.sha256(f"{context_name}:{int(timestamp_micros)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFFFFFFFFFFFFFF


def split_dir(root, split: str) -> Path:
    return Path(root) / split


def save_npz(path, arrays: dict) -> None:
    """Write an uncompressed .npz deterministically (fixed zip timestamps, sorted keys), so the
    same arrays always give the same bytes; np.load(..., allow_pickle=False) reads it."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            arr = np.asarray(arrays[key])
            if arr.dtype == object:
                raise TypeError(f"save_npz({path}): array {key!r} has dtype object (would pickle)")
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            zi = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zf.writestr(zi, buf.getvalue())


def _load_npz(path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: not a readable converted-data .npz ({e})") from None


def completed_segments(root, split: str) -> dict[str, dict]:
    """{segment name: manifest entry} of the split's completed segments, sorted by name."""
    mdir = split_dir(root, split) / "manifest"
    out = {}
    if not mdir.is_dir():
        return out
    for p in sorted(mdir.glob("*.json")):
        try:
            entry = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: unreadable manifest entry ({e})") from None
        if entry.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{p}: format_version {entry.get('format_version')}, this code "
                             f"reads {FORMAT_VERSION}")
        out[entry["segment"]] = entry
    return out


@dataclass
class FrameRecord:
    """One converted frame and its labels (see the module docstring for the meaning)."""
    segment: str
    frame_index: int
    context_name: str
    timestamp_micros: int
    frame_id: int
    points_path: Path          # absolute path of the (N, 8) float32 .npy
    num_points: int
    pose: np.ndarray           # (4, 4) float64
    boxes: np.ndarray          # (M, 7) float32
    types: np.ndarray          # (M,) int8
    difficulty: np.ndarray     # (M,) int8
    num_points_in_box: np.ndarray  # (M,) int32
    ids: list[str] = field(default_factory=list)
    points_relpath: str = ""   # points path relative to ROOT/<split>

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


def _points_relpath(segment: str, frame_index: int) -> str:
    return f"segments/{segment}/points/{frame_index:06d}.npy"


def load_index(root, split: str) -> list[FrameRecord]:
    """All frames of the split's completed segments, ordered by (segment, frame_index)."""
    sdir = split_dir(root, split)
    segs = completed_segments(root, split)
    if not segs and not sdir.is_dir():
        raise FileNotFoundError(f"{sdir}: no converted split {split!r} under {root}")
    records: list[FrameRecord] = []
    for seg in segs:
        z = _load_npz(sdir / "segments" / seg / "frames.npz")
        off = z["box_offsets"]
        ids = z["ids"].tolist()
        for f in range(z["frame_index"].shape[0]):
            a, b = int(off[f]), int(off[f + 1])
            fi = int(z["frame_index"][f])
            rel = _points_relpath(seg, fi)
            records.append(FrameRecord(
                segment=seg, frame_index=fi, context_name=str(z["context_name"][f]),
                timestamp_micros=int(z["timestamp_micros"][f]), frame_id=int(z["frame_id"][f]),
                points_path=(sdir / rel).resolve(), num_points=int(z["num_points"][f]),
                pose=z["pose"][f], boxes=z["boxes"][a:b], types=z["types"][a:b],
                difficulty=z["difficulty"][a:b], num_points_in_box=z["num_points_in_box"][a:b],
                ids=[str(s) for s in ids[a:b]], points_relpath=rel))
    return records


def load_points(root_or_record, record: FrameRecord | None = None, mmap: bool = True,
                split: str | None = None) -> np.ndarray:
    """(N, 8) float32 points of a frame, columns POINT_COLUMNS.

    ``load_points(record)`` uses ``record.points_path``; ``load_points(root, record, split=...)``
    resolves the point file under another root (e.g. a moved copy). ``mmap=True`` returns a
    read-only memory map.
    """
    if record is None:
        record, path = root_or_record, root_or_record.points_path
    elif split is not None:
        path = split_dir(root_or_record, split) / record.points_relpath
    else:
        path = record.points_path
    arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if arr.ndim != 2 or arr.shape[1] != NUM_POINT_COLUMNS or arr.dtype != np.float32:
        raise ValueError(f"{path}: expected (N, {NUM_POINT_COLUMNS}) float32 points, got "
                         f"{arr.shape} {arr.dtype}")
    return arr


class GTDatabase:
    """Ground-truth database of one split for GT-sampling augmentation.

    Per entry ``i``: ``types[i]`` (int8), ``boxes[i]`` (7,) float32, ``difficulty[i]``,
    ``num_points[i]``, ``segments[i]``, ``frame_index[i]``, ``ids[i]``; ``points(i)`` returns the
    entry's (K, 8) float32 points (xyz relative to the box centre) as a read-only memory-map
    slice (alias ``get_points``). ``indices_of_type(t)`` (alias ``entries_of_type``) lists the
    entries of a Waymo type (int or name); ``entry(i)`` returns one entry's metadata as a dict.
    """

    def __init__(self, root, split: str):
        self.root = Path(root)
        self.split = split
        sdir = split_dir(root, split)
        parts = {k: [] for k in ("type", "box", "difficulty", "num_points", "frame_index",
                                 "offset", "id")}
        seg_idx, self.segment_names = [], []
        for s, seg in enumerate(completed_segments(root, split)):
            z = _load_npz(sdir / "segments" / seg / "gt_index.npz")
            for k in parts:
                parts[k].append(z[k])
            seg_idx.append(np.full(z["type"].shape[0], s, np.int32))
            self.segment_names.append(seg)
        empty = {"type": np.zeros(0, np.int8), "box": np.zeros((0, 7), np.float32),
                 "difficulty": np.zeros(0, np.int8), "num_points": np.zeros(0, np.int32),
                 "frame_index": np.zeros(0, np.int64), "offset": np.zeros(0, np.int64),
                 "id": np.zeros(0, "<U1")}
        cat = {k: (np.concatenate(v) if v else empty[k]) for k, v in parts.items()}
        self.types, self.boxes = cat["type"], cat["box"]
        self.difficulty, self.num_points = cat["difficulty"], cat["num_points"]
        self.frame_index, self._offset = cat["frame_index"], cat["offset"]
        self.ids = [str(x) for x in cat["id"]]
        self._seg = np.concatenate(seg_idx) if seg_idx else np.zeros(0, np.int32)
        self._mmaps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.types.shape[0])

    @property
    def segments(self) -> list[str]:
        return [self.segment_names[s] for s in self._seg]

    def segment_of(self, i: int) -> str:
        return self.segment_names[int(self._seg[i])]

    def indices_of_type(self, waymo_type) -> np.ndarray:
        if isinstance(waymo_type, str):
            if waymo_type.upper() not in WAYMO_TYPES:
                raise KeyError(f"unknown Waymo type {waymo_type!r}; one of {list(WAYMO_TYPES)}")
            waymo_type = WAYMO_TYPES[waymo_type.upper()]
        return np.flatnonzero(self.types == int(waymo_type))

    def points(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(f"GT database entry {i} out of range (0..{len(self) - 1})")
        s = int(self._seg[i])
        mm = self._mmaps.get(s)
        if mm is None:
            seg_dir = split_dir(self.root, self.split) / "segments" / self.segment_names[s]
            path = seg_dir / "gt_points.npy"
            mm = self._mmaps[s] = np.load(path, mmap_mode="r", allow_pickle=False)
        a = int(self._offset[i])
        return mm[a:a + int(self.num_points[i])]

    get_points = points
    entries_of_type = indices_of_type

    def entry(self, i: int) -> dict:
        return dict(type=int(self.types[i]), box=self.boxes[i], difficulty=int(self.difficulty[i]),
                    num_points=int(self.num_points[i]), segment=self.segment_of(i),
                    frame_index=int(self.frame_index[i]), id=self.ids[i])


def load_gt_database(root, split: str) -> GTDatabase:
    return GTDatabase(root, split)
