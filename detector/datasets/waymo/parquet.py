"""Waymo Open Dataset perception v2 (Parquet) -> the same :class:`DecodedFrame` as v1.

A v2 split folder holds one Parquet file per component and segment,
``<split_dir>/<component>/<context_name>.parquet``. This module reads five components with
pyarrow alone (no TensorFlow, pandas or dask) and hands the range images to the decoder the v1
path uses (:func:`frame.assemble_points`), so both sources give the same points:

- ``lidar``: one row per (frame, lidar): ``[LiDARComponent].range_image_return{1,2}.values``
  (the range image's float32 values, uncompressed) and ``.shape`` ([H, W, 4]);
- ``lidar_pose``: the TOP lidar's per-pixel vehicle pose, ``[LiDARPoseComponent].
  range_image_return1.values`` / ``.shape`` ([H, W, 6]);
- ``lidar_calibration``: one row per lidar: ``extrinsic.transform`` (16 float64, row-major) and
  ``beam_inclination.{min,max,values}`` (``values`` null when the lidar has uniform beams);
- ``lidar_box``: one row per label: ``box.center.{x,y,z}``, ``box.size.{x,y,z}`` (length,
  width, height), ``box.heading``, ``type``, ``num_lidar_points_in_box``,
  ``num_top_lidar_points_in_box``, ``speed.*``, ``acceleration.*`` (null -> 0, as v1 reads a
  missing field) and ``difficulty_level.detection``;
- ``vehicle_pose``: ``world_from_vehicle.transform`` (16 float64), one row per frame.

Frames are the ``vehicle_pose`` timestamps, yielded in time order. A split folder without a
``lidar_box`` folder (the release's unlabelled test split) gives frames without labels. Memory stays bounded: the
small components are read whole (a few thousand numbers), the lidar files only their key columns
up front and then their range images frame by frame, streamed in batches when the file is in
time order (as the release writes it) or row group by row group otherwise.

Bad input raises :class:`V2FormatError` naming the file and, where it applies, the column, the
lidar and the frame timestamp: a missing component file, a file that is not Parquet or is
truncated, a missing column, a lidar row without a calibration, a lidar or box row of a frame
without a vehicle pose, a range image whose values do not fill its shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ...conventions import LIDAR_NAMES
from .frame import (TOP, DecodedFrame, FrameDecodeError, _lidar_ids, assemble_points,
                    labels_from_arrays)

__all__ = ["COMPONENTS", "COLUMNS", "V2FormatError", "iter_v2_frames", "list_v2_segments",
           "is_v2_split", "v2_segment_files", "count_v2_frames"]

KEY_SEGMENT = "key.segment_context_name"
KEY_TIME = "key.frame_timestamp_micros"
KEY_LASER = "key.laser_name"
KEY_OBJECT = "key.laser_object_id"

_L = "[LiDARComponent]."
_P = "[LiDARPoseComponent]."
_C = "[LiDARCalibrationComponent]."
_B = "[LiDARBoxComponent]."
_V = "[VehiclePoseComponent]."

# the columns this reader needs, per component folder (all official names)
COLUMNS = {
    "lidar": (KEY_SEGMENT, KEY_TIME, KEY_LASER, _L + "range_image_return1.values",
              _L + "range_image_return1.shape", _L + "range_image_return2.values",
              _L + "range_image_return2.shape"),
    "lidar_pose": (KEY_SEGMENT, KEY_TIME, KEY_LASER, _P + "range_image_return1.values",
                   _P + "range_image_return1.shape"),
    "lidar_calibration": (KEY_SEGMENT, KEY_LASER, _C + "extrinsic.transform",
                          _C + "beam_inclination.min", _C + "beam_inclination.max",
                          _C + "beam_inclination.values"),
    "lidar_box": (KEY_SEGMENT, KEY_TIME, KEY_OBJECT, _B + "box.center.x", _B + "box.center.y",
                  _B + "box.center.z", _B + "box.size.x", _B + "box.size.y", _B + "box.size.z",
                  _B + "box.heading", _B + "type", _B + "num_lidar_points_in_box",
                  _B + "num_top_lidar_points_in_box", _B + "speed.x", _B + "speed.y",
                  _B + "speed.z", _B + "acceleration.x", _B + "acceleration.y",
                  _B + "acceleration.z", _B + "difficulty_level.detection"),
    "vehicle_pose": (KEY_SEGMENT, KEY_TIME, _V + "world_from_vehicle.transform"),
}
COMPONENTS = tuple(COLUMNS)
# rows of the lidar file per streamed batch: one frame of five lidars
_BATCH_ROWS = 5


class V2FormatError(FrameDecodeError):
    """A v2 segment could not be read; the message names the file (and column, lidar, frame)."""


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise ImportError("reading Waymo v2 Parquet files needs pyarrow "
                          "(pip install 'pyarrow>=16,<27')") from e
    return pa, pq


def v2_segment_files(split_dir, context_name: str) -> dict[str, Path]:
    return {c: Path(split_dir) / c / f"{context_name}.parquet" for c in COMPONENTS}


def is_v2_split(folder) -> bool:
    """A folder laid out as a v2 release split: ``lidar/*.parquet`` inside."""
    d = Path(folder) / "lidar"
    return d.is_dir() and any(p.suffix == ".parquet" for p in d.iterdir())


def list_v2_segments(split_dir) -> list[str]:
    """Context names of the segments of a v2 split (from its ``lidar`` folder), sorted."""
    d = Path(split_dir) / "lidar"
    if not d.is_dir():
        raise FileNotFoundError(f"{split_dir}: not a Waymo v2 split folder (no lidar/ folder)")
    return sorted(p.name[:-len(".parquet")] for p in d.iterdir()
                  if p.is_file() and p.name.endswith(".parquet"))


def _open(path: Path, component: str):
    pa, pq = _pa()
    if not path.is_file():
        raise V2FormatError(f"{path}: missing component file ({component} of this segment)")
    try:
        pf = pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowException, OSError) as e:
        raise V2FormatError(f"{path}: not a readable Parquet file ({e})") from None
    names = set(pf.schema_arrow.names)
    for col in COLUMNS[component]:
        if col not in names:
            raise V2FormatError(f"{path}: missing column {col!r}")
    return pf


def _read(pf, path: Path, columns, **kw):
    pa, _ = _pa()
    try:
        return pf.read(columns=list(columns), **kw)
    except (pa.ArrowException, OSError) as e:
        raise V2FormatError(f"{path}: cannot read columns {list(columns)} ({e})") from None


def _np(table, col: str, path: Path, dtype, fill=None) -> np.ndarray:
    import pyarrow.compute as pc
    arr = table.column(col)
    if arr.null_count:
        if fill is None:
            raise V2FormatError(f"{path}: column {col!r} has {arr.null_count} null value(s)")
        arr = pc.fill_null(arr, fill)
    return np.asarray(arr.to_numpy(), dtype=dtype)


def _check_segment(table, path: Path, context_name: str) -> None:
    segs = set(table.column(KEY_SEGMENT).unique().to_pylist()) if table.num_rows else set()
    if segs - {context_name}:
        raise V2FormatError(f"{path}: column {KEY_SEGMENT!r} holds {sorted(segs)}, expected only "
                            f"{context_name!r}")


@dataclass
class _Extrinsic:
    transform: tuple


@dataclass
class V2Calibration:
    """A lidar calibration with the attribute names the shared decoder reads (as v1's proto)."""
    name: int
    extrinsic: _Extrinsic
    beam_inclination_min: float
    beam_inclination_max: float
    beam_inclinations: tuple = field(default_factory=tuple)


def _fixed(values, n: int, path: Path, col: str, what: str) -> np.ndarray:
    if values is None or len(values) != n:
        raise V2FormatError(f"{path}: column {col!r}, {what}: expected {n} values, got "
                            f"{None if values is None else len(values)}")
    return np.asarray(values, np.float64)


class _RowSource:
    """Rows of one big component file (lidar / lidar_pose) frame by frame, bounded memory.

    The key columns are read up front; ``rows(ts)`` returns a table of the rows of frame ``ts``.
    In time order the file is streamed in small batches (each batch read once); otherwise the
    row groups holding the frame's rows are read (the last one cached)."""

    def __init__(self, pf, path: Path, columns: Sequence[str], context_name: str):
        self.pf, self.path, self.columns = pf, path, list(columns)
        keys = _read(pf, path, (KEY_SEGMENT, KEY_TIME, KEY_LASER))
        _check_segment(keys, path, context_name)
        self.ts = _np(keys, KEY_TIME, path, np.int64)
        self.laser = _np(keys, KEY_LASER, path, np.int64)
        self.sorted = bool(np.all(np.diff(self.ts) >= 0))
        self._stream = None
        self._buf: list = []        # streamed batches not yet consumed
        self._buf_start = 0          # file row of the first buffered row
        self._cache: tuple[int, object] | None = None
        rg_rows = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        self._rg_start = np.concatenate([[0], np.cumsum(rg_rows)]).astype(np.int64)

    def timestamps(self) -> np.ndarray:
        return np.unique(self.ts)

    def _batches(self):
        pa, _ = _pa()
        try:
            # columns decode on pyarrow's threads (the range images are list<float> columns,
            # whose levels cost more than the values)
            yield from self.pf.iter_batches(batch_size=_BATCH_ROWS, columns=self.columns,
                                            use_threads=True)
        except (pa.ArrowException, OSError) as e:
            raise V2FormatError(f"{self.path}: cannot read rows ({e})") from None

    def rows(self, ts: int):
        """The rows of frame ``ts`` (a pyarrow Table) or None when it has none."""
        idx = np.flatnonzero(self.ts == ts)
        return self._rows_streamed(idx, ts) if self.sorted else self._rows_random(idx)

    def _rows_streamed(self, idx: np.ndarray, ts: int):
        pa, _ = _pa()
        if not idx.size:
            return None
        end = int(idx[-1]) + 1
        if self._stream is None:
            self._stream = self._batches()
        have = self._buf_start + sum(b.num_rows for b in self._buf)
        while have < end:
            try:
                b = next(self._stream)
            except StopIteration:
                raise V2FormatError(f"{self.path}: file ends at row {have}, its key column "
                                    f"lists {self.ts.size} rows (frame {ts})") from None
            except V2FormatError as e:
                raise V2FormatError(f"{e} (reading frame {ts})") from None
            self._buf.append(b)
            have += b.num_rows
            self._trim(int(idx[0]))     # rows of frames skipped by keep(): never held
        tab = pa.Table.from_batches(self._buf) if self._buf else None
        local = idx - self._buf_start
        out = None
        if tab is not None and idx.size:
            if local[-1] - local[0] + 1 == local.size:      # contiguous: a zero-copy slice
                out = tab.slice(int(local[0]), int(local.size))
            else:
                out = tab.take(pa.array(local))
        self._trim(end)   # (out holds its own references to the batches it slices)
        return out

    def _trim(self, upto: int) -> None:
        """Forget buffered rows before file row ``upto``."""
        drop = upto - self._buf_start
        while self._buf and drop > 0 and self._buf[0].num_rows <= drop:
            drop -= self._buf[0].num_rows
            self._buf_start += self._buf[0].num_rows
            self._buf.pop(0)
        if self._buf and drop > 0:
            self._buf[0] = self._buf[0].slice(drop)
            self._buf_start += drop

    def _rows_random(self, idx: np.ndarray):
        pa, _ = _pa()
        if not idx.size:
            return None
        parts = []
        for g in np.unique(np.searchsorted(self._rg_start, idx, side="right") - 1):
            if self._cache is None or self._cache[0] != g:
                self._cache = None
                try:
                    self._cache = (int(g), self.pf.read_row_group(int(g), columns=self.columns))
                except (pa.ArrowException, OSError) as e:
                    raise V2FormatError(f"{self.path}: cannot read row group {g} ({e}; frame "
                                        f"{int(self.ts[idx[0]])})") from None
            lo, hi = self._rg_start[g], self._rg_start[g + 1]
            sel = idx[(idx >= lo) & (idx < hi)] - lo
            parts.append(self._cache[1].take(pa.array(sel)))
        return pa.concat_tables(parts)


def _range_image(tab, row: int, prefix: str, ret: int, path: Path, ts: int, lid: int,
                 channels: int) -> np.ndarray | None:
    vcol, scol = f"{prefix}range_image_return{ret}.values", f"{prefix}range_image_return{ret}.shape"
    v = tab.column(vcol)[row]
    if not v.is_valid:
        return None
    s = tab.column(scol)[row]
    what = f"frame {ts}, lidar {LIDAR_NAMES.get(lid, lid)}"
    if not s.is_valid:
        raise V2FormatError(f"{path}: column {scol!r} is null ({what})")
    shape = [int(x) for x in s.as_py()]
    vals = v.values.to_numpy(zero_copy_only=False)
    if len(shape) != 3 or shape[2] < channels or int(np.prod(shape)) != vals.size:
        raise V2FormatError(f"{path}: column {vcol!r}: {vals.size} values do not fill shape "
                            f"{shape} ({what})")
    return np.asarray(vals, np.float32).reshape(shape)


def count_v2_frames(split_dir, context_name: str) -> int:
    """Number of frames of a v2 segment (rows of its vehicle_pose file; metadata only)."""
    pa, pq = _pa()
    path = v2_segment_files(split_dir, context_name)["vehicle_pose"]
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowException, OSError):   # reported when the segment is converted
        return 0


def iter_v2_frames(split_dir, context_name: str, returns: Sequence[int] = (1, 2),
                   lidars: Iterable | None = None, with_points: bool = True,
                   keep=None) -> Iterator[DecodedFrame]:
    """Yield the :class:`DecodedFrame` of every frame of a v2 segment, in time order.

    The same contract as ``decode_frame``: ``returns`` a subset of (1, 2), ``lidars`` names or
    ids (default all), points return-major then by lidar id. ``keep(frame_position)``, if
    given, selects frames by their position in time order (0, 1, ...) before their range images
    are decoded. Raises :class:`V2FormatError` (see the module docstring).
    """
    returns = sorted(set(int(r) for r in returns))
    if any(r not in (1, 2) for r in returns):
        raise ValueError(f"returns must be a subset of (1, 2), got {returns}")
    lidar_ids = _lidar_ids(lidars)
    files = v2_segment_files(split_dir, context_name)
    # a split without any lidar_box folder is unlabelled (the release's test split); a split
    # that has the folder but not this segment's file is an error like any missing component
    labelled = (Path(split_dir) / "lidar_box").is_dir()
    pfs = {c: _open(files[c], c) for c in COMPONENTS if labelled or c != "lidar_box"}

    # vehicle poses: the frames
    vp_path = files["vehicle_pose"]
    vp = _read(pfs["vehicle_pose"], vp_path, COLUMNS["vehicle_pose"])
    _check_segment(vp, vp_path, context_name)
    vp_ts = _np(vp, KEY_TIME, vp_path, np.int64)
    tcol = _V + "world_from_vehicle.transform"
    vp_tf = vp.column(tcol).to_pylist()
    poses: dict[int, np.ndarray] = {}
    for t, m in zip(vp_ts.tolist(), vp_tf):
        if t in poses:
            raise V2FormatError(f"{vp_path}: frame {t} has two vehicle poses")
        poses[t] = _fixed(m, 16, vp_path, tcol, f"frame {t}").reshape(4, 4)
    frames = sorted(poses)

    # calibrations
    cal_path = files["lidar_calibration"]
    cal = _read(pfs["lidar_calibration"], cal_path, COLUMNS["lidar_calibration"])
    _check_segment(cal, cal_path, context_name)
    calibs: dict[int, V2Calibration] = {}
    ecol = _C + "extrinsic.transform"
    for lid, E, lo, hi, inc in zip(_np(cal, KEY_LASER, cal_path, np.int64).tolist(),
                                   cal.column(ecol).to_pylist(),
                                   cal.column(_C + "beam_inclination.min").to_pylist(),
                                   cal.column(_C + "beam_inclination.max").to_pylist(),
                                   cal.column(_C + "beam_inclination.values").to_pylist()):
        what = f"lidar {LIDAR_NAMES.get(lid, lid)}"
        if lo is None or hi is None:
            raise V2FormatError(f"{cal_path}: column {_C}beam_inclination.min/max is null "
                                f"({what})")
        calibs[lid] = V2Calibration(
            lid, _Extrinsic(tuple(_fixed(E, 16, cal_path, ecol, what).tolist())), float(lo),
            float(hi), tuple(float(x) for x in inc) if inc else ())

    # labels, grouped by frame (file order within a frame)
    box_path = files["lidar_box"]
    if labelled:
        box = _read(pfs["lidar_box"], box_path, COLUMNS["lidar_box"])
    else:
        pa, _ = _pa()
        box = pa.table({c: pa.array([], pa.string() if c in (KEY_SEGMENT, KEY_OBJECT)
                                    else pa.float64()) for c in COLUMNS["lidar_box"]})
    _check_segment(box, box_path, context_name)
    b_ts = _np(box, KEY_TIME, box_path, np.int64)
    for t in np.unique(b_ts).tolist():
        if t not in poses:
            raise V2FormatError(f"{box_path}: frame {t} has boxes but {vp_path} has no vehicle "
                                f"pose for it")
    b = {k: _np(box, _B + k, box_path, np.float64, fill=0.0) for k in (
        "box.center.x", "box.center.y", "box.center.z", "box.size.x", "box.size.y", "box.size.z",
        "box.heading", "speed.x", "speed.y", "speed.z", "acceleration.x", "acceleration.y",
        "acceleration.z")}
    b_boxes = np.stack([b[k] for k in ("box.center.x", "box.center.y", "box.center.z",
                                       "box.size.x", "box.size.y", "box.size.z",
                                       "box.heading")], 1) if box.num_rows else np.zeros((0, 7))
    b_speed = np.stack([b[f"speed.{c}"] for c in "xyz"], 1) if box.num_rows else np.zeros((0, 3))
    b_accel = np.stack([b[f"acceleration.{c}"] for c in "xyz"], 1) if box.num_rows \
        else np.zeros((0, 3))
    b_type = _np(box, _B + "type", box_path, np.int64)
    b_npts = _np(box, _B + "num_lidar_points_in_box", box_path, np.int64, fill=0)
    b_ntop = _np(box, _B + "num_top_lidar_points_in_box", box_path, np.int64, fill=0)
    b_diff = _np(box, _B + "difficulty_level.detection", box_path, np.int64, fill=0)
    b_ids = box.column(KEY_OBJECT).to_pylist()
    del box, b

    lidar = pose_src = None
    if with_points:
        lidar = _RowSource(pfs["lidar"], files["lidar"], COLUMNS["lidar"], context_name)
        pose_src = _RowSource(pfs["lidar_pose"], files["lidar_pose"], COLUMNS["lidar_pose"],
                              context_name)
        for src in (lidar, pose_src):
            for t in src.timestamps().tolist():
                if t not in poses:
                    raise V2FormatError(f"{src.path}: frame {t} has lidar rows but {vp_path} has "
                                        "no vehicle pose for it")
        for t, lid in zip(lidar.ts.tolist(), lidar.laser.tolist()):
            if lid in lidar_ids and lid not in calibs:
                raise V2FormatError(f"{files['lidar']}: frame {t}, lidar "
                                    f"{LIDAR_NAMES.get(lid, lid)} has a range image but "
                                    f"{cal_path} has no calibration for it")

    for pos, t in enumerate(frames):
        if keep is not None and not keep(pos):
            continue
        pose = poses[t]
        sel = np.flatnonzero(b_ts == t)
        labels = labels_from_arrays(b_boxes[sel], b_type[sel], b_diff[sel], b_npts[sel],
                                    b_ntop[sel], [b_ids[i] for i in sel], b_speed[sel],
                                    b_accel[sel])
        points = np.zeros((0, 8), np.float32)
        counts: dict = {}
        if with_points:
            tab = lidar.rows(t)
            ptab = pose_src.rows(t)
            top_pose = None
            if TOP in lidar_ids and ptab is not None:
                lasers = ptab.column(KEY_LASER).to_pylist()
                if TOP in lasers:
                    top_pose = _range_image(ptab, lasers.index(TOP), _P, 1, pose_src.path, t,
                                            TOP, 6)
            images = []
            if tab is not None:
                row_of = {lid: k for k, lid in enumerate(tab.column(KEY_LASER).to_pylist())}
                for r in returns:
                    for lid in lidar_ids:
                        if lid not in row_of:
                            continue
                        ri = _range_image(tab, row_of[lid], _L, r, lidar.path, t, lid, 4)
                        if ri is not None:
                            images.append((r, lid, ri, f"{lidar.path}: frame {t}, lidar "
                                                       f"{LIDAR_NAMES[lid]} return {r}"))
            points, counts = assemble_points(images, calibs, top_pose, pose)
        yield DecodedFrame(points=points, pose=pose, timestamp_micros=int(t),
                           context_name=context_name, num_points_per_lidar=counts, **labels)
