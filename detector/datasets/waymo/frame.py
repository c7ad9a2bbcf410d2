"""Decode one Waymo ``Frame`` (perception v1) into numpy points and labels.

Implements docs/WAYMO.md, sections "Frame" and "Range image -> points" (the algorithm of the
official ``frame_utils.convert_range_image_to_point_cloud``) with numpy and one Numba kernel, in
float64:

1. inclination of row ``i``: the calibration's ``beam_inclinations`` if present, else
   ``min + (i + 0.5) / H * (max - min)``; the table is then reversed so row 0 is the highest beam;
2. azimuth of column ``j``: ``((W - j - 0.5) / W * 2 - 1) * pi - atan2(E[1, 0], E[0, 0])``;
3. sensor point ``r * (cos az cos inc, sin az cos inc, sin inc)``, to the vehicle frame with the
   extrinsic ``E``; the per-pixel unit directions already rotated by ``E`` are cached per
   calibration (:func:`lidar_geometry`), so a frame costs one multiply-add per pixel (a Numba
   kernel, :func:`_fill_points`, that also does step 4 and writes the output rows in one pass;
   the range images are inflated on a few threads, zlib releasing the GIL);
4. TOP only: per-pixel ego-motion correction with the ``range_image_pose`` (roll, pitch, yaw,
   x, y, z; ``R = Rz(yaw) Ry(pitch) Rx(roll)``): ``p_world = R_pix p + t_pix``, then back to this
   frame's vehicle frame with the inverse of ``Frame.pose`` (float64 here; the official code is
   float32, which is only good to ~1e-2 m at ~1e4 m global coordinates). If a frame carries no
   TOP pixel pose the correction is skipped;
5. pixels with range > 0, row-major; the order of the output is **return-major**: for each
   requested return (1 then 2) the requested lidars sorted by name (TOP=1 .. REAR=5) - the same
   order as concatenating the official per-return outputs.

``points`` columns are :data:`POINT_COLUMNS`: x, y, z (vehicle frame, metres), intensity (raw, not
tanh), elongation, return_index (1.0 or 2.0), lidar_id (the LaserName value, 1..5), nlz (1.0 if
the pixel's no-label-zone channel is > 0, i.e. inside a zone; Waymo writes -1 outside).

Range images are read without building protobuf objects for the ``MatrixFloat`` payloads: the
packed ``data`` field is mapped with ``np.frombuffer`` (:func:`parse_matrix_float`), with a
fallback to the protobuf parser for any unusual encoding.
"""
from __future__ import annotations

import math
import os
import zlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numba
import numpy as np
from waymo_open_dataset import dataset_pb2

from ...conventions import LIDAR_IDS, LIDAR_NAMES, POINT_COLUMNS
from ops.boxes import wrap_angle

__all__ = ["POINT_COLUMNS", "LIDAR_NAMES", "LIDAR_IDS", "DecodedFrame", "decode_frame",
           "parse_matrix_float", "lidar_geometry", "range_image_to_points", "parse_frame",
           "FrameDecodeError", "assemble_points", "labels_from_arrays"]

TOP = 1


class FrameDecodeError(ValueError):
    """A Frame could not be decoded; the message names the lidar, return and field."""


@dataclass
class DecodedFrame:
    """One decoded frame. Boxes use the project convention (cx, cy, cz, l, w, h, heading)."""
    points: np.ndarray                 # (N, 8) float32, columns POINT_COLUMNS
    boxes: np.ndarray                  # (M, 7) float32
    types: np.ndarray                  # (M,) int8, label_pb2.Label.Type
    difficulty: np.ndarray             # (M,) int8, detection_difficulty_level
    num_points_in_box: np.ndarray      # (M,) int32, num_lidar_points_in_box
    num_top_points_in_box: np.ndarray  # (M,) int32, num_top_lidar_points_in_box
    ids: list[str]                     # (M,) label ids (tracking ids)
    speed: np.ndarray                  # (M, 3) float32, metadata speed_x/y/z
    accel: np.ndarray                  # (M, 3) float32, metadata accel_x/y/z
    pose: np.ndarray                   # (4, 4) float64, vehicle -> global
    timestamp_micros: int
    context_name: str
    num_points_per_lidar: dict[tuple[int, int], int] = field(default_factory=dict)
    # (return, lidar_id) -> number of points, in output order

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


# ---------------------------------------------------------------------------------------------
# MatrixFloat payloads
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _parse_dims(buf: bytes) -> list[int] | None:
    """MatrixShape.dims (field 1, int32, packed or not); None for anything else."""
    dims: list[int] = []
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        if key == 0x08:      # field 1, varint
            v, pos = _varint(buf, pos)
            dims.append(v)
        elif key == 0x0A:    # field 1, packed
            ln, pos = _varint(buf, pos)
            end = pos + ln
            while pos < end:
                v, pos = _varint(buf, pos)
                dims.append(v)
        else:
            return None
    return dims


def _parse_matrix_fast(raw: bytes) -> tuple[np.ndarray, list[int]] | None:
    chunks: list[np.ndarray] = []
    dims = None
    pos, n = 0, len(raw)
    while pos < n:
        key, pos = _varint(raw, pos)
        if key == 0x0A:                          # data, packed floats
            ln, pos = _varint(raw, pos)
            if ln % 4 or pos + ln > n:
                return None
            chunks.append(np.frombuffer(raw, dtype="<f4", count=ln // 4, offset=pos))
            pos += ln
        elif key == 0x12 and dims is None:       # shape (MatrixShape)
            ln, pos = _varint(raw, pos)
            dims = _parse_dims(raw[pos:pos + ln])
            if dims is None:
                return None
            pos += ln
        else:
            return None
    data = chunks[0] if len(chunks) == 1 else (
        np.concatenate(chunks) if chunks else np.zeros(0, np.float32))
    return data, dims or []


def parse_matrix_float(raw: bytes, what: str = "MatrixFloat") -> np.ndarray:
    """Serialized ``MatrixFloat`` -> float32 array of its ``shape.dims`` (read-only view)."""
    fast = _parse_matrix_fast(raw)
    if fast is None:  # unusual encoding: let protobuf handle it
        m = dataset_pb2.MatrixFloat.FromString(raw)
        data, dims = np.asarray(m.data, dtype=np.float32), list(m.shape.dims)
    else:
        data, dims = fast
    if int(np.prod(dims)) != data.size:
        raise FrameDecodeError(f"{what}: {data.size} values do not fill shape {dims}")
    return data.reshape(dims)


try:  # ISA-L inflates ~1.5x faster than zlib, same bytes (optional dependency `isal`)
    from isal.isal_zlib import decompress as _inflate, error as _InflateError
except ImportError:  # pragma: no cover - depends on the environment
    _inflate, _InflateError = zlib.decompress, zlib.error


def _decompress(blob: bytes, what: str) -> bytes:
    try:
        return _inflate(blob)
    except (zlib.error, _InflateError) as e:
        raise FrameDecodeError(f"{what}: zlib decompression failed ({e})") from None


_POOL: ThreadPoolExecutor | None = None
DECOMPRESS_THREADS = min(4, os.cpu_count() or 1)


def _decompress_all(blobs: list[bytes], whats: list[str]) -> list[bytes]:
    """zlib releases the GIL: inflate a frame's range images on a few threads."""
    global _POOL
    if DECOMPRESS_THREADS <= 1 or len(blobs) <= 1:
        return [_decompress(b, w) for b, w in zip(blobs, whats)]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(DECOMPRESS_THREADS, thread_name_prefix="waymo-inflate")
    return list(_POOL.map(_decompress, blobs, whats))


def _forget_pool() -> None:  # a forked child has the pool object but not its threads
    global _POOL
    _POOL = None


os.register_at_fork(after_in_child=_forget_pool)


# ---------------------------------------------------------------------------------------------
# Geometry
_GEOMETRY_CACHE: "OrderedDict[tuple, tuple[np.ndarray, np.ndarray]]" = OrderedDict()
_GEOMETRY_CACHE_SIZE = 64


def inclinations_for(calib, height: int) -> np.ndarray:
    """(H,) float64 beam inclinations, row 0 = highest beam (already reversed)."""
    if len(calib.beam_inclinations):
        inc = np.asarray(calib.beam_inclinations, dtype=np.float64)
        if inc.size != height:
            raise FrameDecodeError(
                f"lidar {LIDAR_NAMES.get(calib.name, calib.name)}: {inc.size} beam_inclinations "
                f"but the range image has {height} rows")
    else:
        lo, hi = float(calib.beam_inclination_min), float(calib.beam_inclination_max)
        inc = lo + (np.arange(height, dtype=np.float64) + 0.5) / height * (hi - lo)
    return inc[::-1].copy()


def lidar_geometry(calib, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Cached per calibration: (H*W, 3) float64 unit directions rotated into the vehicle frame,
    and the (3,) extrinsic translation."""
    extr = tuple(calib.extrinsic.transform)
    key = (int(calib.name), height, width, tuple(calib.beam_inclinations),
           float(calib.beam_inclination_min), float(calib.beam_inclination_max), extr)
    hit = _GEOMETRY_CACHE.get(key)
    if hit is not None:
        _GEOMETRY_CACHE.move_to_end(key)
        return hit
    if len(extr) != 16:
        raise FrameDecodeError(f"lidar {LIDAR_NAMES.get(calib.name, calib.name)}: extrinsic has "
                               f"{len(extr)} values, expected 16")
    E = np.asarray(extr, dtype=np.float64).reshape(4, 4)
    inc = inclinations_for(calib, height)
    az = ((width - np.arange(width, dtype=np.float64) - 0.5) / width * 2.0 - 1.0) * math.pi \
        - math.atan2(E[1, 0], E[0, 0])
    ci, si = np.cos(inc)[:, None], np.sin(inc)[:, None]
    ca, sa = np.cos(az)[None, :], np.sin(az)[None, :]
    d = np.stack([ca * ci, sa * ci, np.broadcast_to(si, (height, width))], axis=-1)  # sensor
    dirs = np.ascontiguousarray((d.reshape(-1, 3) @ E[:3, :3].T))
    dirs.setflags(write=False)
    val = (dirs, E[:3, 3].copy())
    _GEOMETRY_CACHE[key] = val
    if len(_GEOMETRY_CACHE) > _GEOMETRY_CACHE_SIZE:
        _GEOMETRY_CACHE.popitem(last=False)
    return val


@numba.njit(cache=True, nogil=True)
def _fill_points(ri, dirs, t, pose6, frame_pose, ret, lid, out):
    """Valid pixels (range > 0) of one range image -> rows of ``out``, row-major; returns the
    count. ri (P, C>=4) float32, dirs (P, 3) float64, t (3,) float64; pose6 (P, 6) float32 per-
    pixel pose or (0, 6) for none; frame_pose (4, 4) float64. All geometry in float64."""
    use_pose = pose6.shape[0] > 0
    n = 0
    for k in range(ri.shape[0]):
        r = np.float64(ri[k, 0])
        if not r > 0.0:
            continue
        x = dirs[k, 0] * r + t[0]
        y = dirs[k, 1] * r + t[1]
        z = dirs[k, 2] * r + t[2]
        if use_pose:
            cr, sr = np.cos(np.float64(pose6[k, 0])), np.sin(np.float64(pose6[k, 0]))
            cp, sp = np.cos(np.float64(pose6[k, 1])), np.sin(np.float64(pose6[k, 1]))
            cy, sy = np.cos(np.float64(pose6[k, 2])), np.sin(np.float64(pose6[k, 2]))
            # world = Rz(yaw) Ry(pitch) Rx(roll) p + t_pix, minus the frame translation
            wx = (cy * cp) * x + (cy * sp * sr - sy * cr) * y + (cy * sp * cr + sy * sr) * z \
                + (np.float64(pose6[k, 3]) - frame_pose[0, 3])
            wy = (sy * cp) * x + (sy * sp * sr + cy * cr) * y + (sy * sp * cr - cy * sr) * z \
                + (np.float64(pose6[k, 4]) - frame_pose[1, 3])
            wz = -sp * x + (cp * sr) * y + (cp * cr) * z \
                + (np.float64(pose6[k, 5]) - frame_pose[2, 3])
            # inverse of the frame pose's rotation = its transpose
            x = frame_pose[0, 0] * wx + frame_pose[1, 0] * wy + frame_pose[2, 0] * wz
            y = frame_pose[0, 1] * wx + frame_pose[1, 1] * wy + frame_pose[2, 1] * wz
            z = frame_pose[0, 2] * wx + frame_pose[1, 2] * wy + frame_pose[2, 2] * wz
        out[n, 0] = x
        out[n, 1] = y
        out[n, 2] = z
        out[n, 3] = ri[k, 1]
        out[n, 4] = ri[k, 2]
        out[n, 5] = ret
        out[n, 6] = lid
        out[n, 7] = 1.0 if ri[k, 3] > 0 else 0.0
        n += 1
    return n


_NO_POSE = np.zeros((0, 6), np.float32)


def range_image_to_points(ri: np.ndarray, calib, pixel_pose: np.ndarray | None = None,
                          frame_pose: np.ndarray | None = None, return_index: int = 1,
                          out: np.ndarray | None = None) -> np.ndarray:
    """One range image (H, W, C>=4) -> (N, 8) float32 rows in POINT_COLUMNS order (lidar_id =
    ``calib.name``). ``pixel_pose`` (H, W, 6) with ``frame_pose`` (4, 4) applies step 4.
    ``out``: an (N, 8) float32 array of exactly the number of valid pixels, to fill in place."""
    H, W = ri.shape[:2]
    dirs, t = lidar_geometry(calib, H, W)
    flat = ri.reshape(H * W, ri.shape[2])
    if out is None:
        out = np.empty((int(np.count_nonzero(flat[:, 0] > 0)), len(POINT_COLUMNS)), np.float32)
    if pixel_pose is not None:
        if pixel_pose.shape[:2] != (H, W) or pixel_pose.shape[-1] != 6:
            raise FrameDecodeError(f"TOP range_image_pose has shape {pixel_pose.shape}, expected "
                                   f"({H}, {W}, 6)")
        pose6 = pixel_pose.reshape(H * W, 6)
    else:
        pose6 = _NO_POSE
    fp = np.eye(4) if frame_pose is None else np.ascontiguousarray(frame_pose, np.float64)
    n = _fill_points(flat, dirs, t, pose6, fp, float(return_index), float(calib.name), out)
    if n != out.shape[0]:
        raise ValueError(f"out has {out.shape[0]} rows for {n} valid pixels")
    return out


# ---------------------------------------------------------------------------------------------
def _lidar_ids(lidars) -> list[int]:
    if lidars is None or lidars == "all":
        return sorted(LIDAR_NAMES)
    out = []
    for lid in lidars:
        if isinstance(lid, str):
            if lid.upper() not in LIDAR_IDS:
                raise ValueError(f"unknown lidar {lid!r}; expected one of {list(LIDAR_IDS)}")
            out.append(LIDAR_IDS[lid.upper()])
        elif int(lid) in LIDAR_NAMES:
            out.append(int(lid))
        else:
            raise ValueError(f"unknown lidar id {lid!r}; expected 1..5")
    return sorted(set(out))


def parse_frame(frame_or_bytes) -> dataset_pb2.Frame:
    if isinstance(frame_or_bytes, dataset_pb2.Frame):
        return frame_or_bytes
    try:
        return dataset_pb2.Frame.FromString(bytes(frame_or_bytes))
    except Exception as e:  # protobuf's DecodeError
        raise FrameDecodeError(f"not a serialized waymo.open_dataset.Frame: {e}") from None


def decode_labels(frame: dataset_pb2.Frame) -> dict:
    labels = frame.laser_labels
    m = len(labels)
    boxes = np.empty((m, 7), np.float64)
    types = np.empty(m, np.int8)
    diff = np.empty(m, np.int8)
    npts = np.empty(m, np.int32)
    ntop = np.empty(m, np.int32)
    speed = np.empty((m, 3), np.float64)
    accel = np.empty((m, 3), np.float64)
    ids = []
    for k, lab in enumerate(labels):
        b = lab.box
        # proto field 4 is width, 5 is length; ours is (l, w, h)
        boxes[k] = (b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading)
        types[k] = lab.type
        diff[k] = lab.detection_difficulty_level
        npts[k] = lab.num_lidar_points_in_box
        ntop[k] = lab.num_top_lidar_points_in_box
        md = lab.metadata
        speed[k] = (md.speed_x, md.speed_y, md.speed_z)
        accel[k] = (md.accel_x, md.accel_y, md.accel_z)
        ids.append(lab.id)
    return labels_from_arrays(boxes, types, diff, npts, ntop, ids, speed, accel)


def labels_from_arrays(boxes, types, difficulty, num_points, num_top_points, ids, speed,
                       accel) -> dict:
    """The label fields of a :class:`DecodedFrame` from per-label arrays (either source):
    boxes (M, 7) float64 (cx, cy, cz, l, w, h, heading), heading wrapped to [-pi, pi) and
    everything cast to the frame's dtypes."""
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 7)
    m = boxes.shape[0]
    if m:
        boxes[:, 6] = wrap_angle(boxes[:, 6])
    boxes = boxes.astype(np.float32)
    if m:  # float32 rounding can turn pi - tiny into pi
        boxes[boxes[:, 6] >= np.float32(np.pi), 6] = -np.float32(np.pi)
    return dict(boxes=boxes, types=np.asarray(types, np.int8).reshape(m),
                difficulty=np.asarray(difficulty, np.int8).reshape(m),
                num_points_in_box=np.asarray(num_points, np.int32).reshape(m),
                num_top_points_in_box=np.asarray(num_top_points, np.int32).reshape(m),
                ids=[str(x) for x in ids], speed=np.asarray(speed, np.float32).reshape(m, 3),
                accel=np.asarray(accel, np.float32).reshape(m, 3))


def assemble_points(images: list, calibs: dict, top_pose: np.ndarray | None,
                    pose: np.ndarray) -> tuple[np.ndarray, dict]:
    """Range images -> one (N, 8) point array, shared by the v1 and v2 sources.

    images: ``(return, lidar_id, range image (H, W, C>=4), what)`` in output order; calibs:
    ``{lidar_id: calibration}`` (an object with ``name``, ``extrinsic.transform``,
    ``beam_inclinations``, ``beam_inclination_min`` / ``_max``); top_pose: TOP's (H, W, 6)
    per-pixel pose or None. Returns the points and ``{(return, lidar_id): count}``.
    """
    counts: dict[tuple[int, int], int] = {}
    sized = []
    for r, lid, arr, what in images:
        if arr.ndim != 3 or arr.shape[2] < 4:
            raise FrameDecodeError(f"{what}: range image shape {list(arr.shape)}, "
                                   "expected [H, W, 4]")
        n = int(np.count_nonzero(arr[..., 0] > 0))
        sized.append((r, lid, arr, n))
        counts[(r, lid)] = n
    points = np.empty((sum(n for *_, n in sized), len(POINT_COLUMNS)), np.float32)
    start = 0
    for r, lid, arr, n in sized:
        range_image_to_points(arr, calibs[lid], top_pose if lid == TOP else None, pose,
                              r, out=points[start:start + n])
        start += n
    return points, counts


def decode_frame(frame_or_bytes, returns: Sequence[int] = (1, 2), lidars: Iterable | None = None,
                 with_points: bool = True) -> DecodedFrame:
    """Decode a ``Frame`` (proto or serialized bytes) into points and labels.

    returns: which returns to keep (subset of (1, 2)); lidars: names ("TOP", ...) or ids (1..5),
    default all; with_points=False decodes only labels and metadata. A requested lidar that is
    missing from the frame contributes no points; a requested lidar without a calibration, a
    range image that does not inflate or parse, or one whose shape does not match its
    calibration raises :class:`FrameDecodeError` naming the lidar and return.
    """
    frame = parse_frame(frame_or_bytes)
    returns = sorted(set(int(r) for r in returns))
    if any(r not in (1, 2) for r in returns):
        raise ValueError(f"returns must be a subset of (1, 2), got {returns}")
    lidar_ids = _lidar_ids(lidars)
    pose = np.asarray(frame.pose.transform, dtype=np.float64)
    pose = pose.reshape(4, 4) if pose.size == 16 else np.eye(4)

    counts: dict[tuple[int, int], int] = {}
    points = np.zeros((0, len(POINT_COLUMNS)), np.float32)
    if with_points:
        calibs = {c.name: c for c in frame.context.laser_calibrations}
        lasers = {l.name: l for l in frame.lasers}
        jobs, blobs = [], []
        if TOP in lidar_ids and TOP in lasers and \
                lasers[TOP].ri_return1.range_image_pose_compressed:
            jobs.append((0, TOP, "TOP return 1 range_image_pose"))
            blobs.append(lasers[TOP].ri_return1.range_image_pose_compressed)
        for r in returns:
            for lid in lidar_ids:
                laser = lasers.get(lid)
                if laser is None:
                    continue
                rimg = laser.ri_return1 if r == 1 else laser.ri_return2
                if not rimg.range_image_compressed:
                    continue
                what = f"lidar {LIDAR_NAMES[lid]} return {r}"
                if lid not in calibs:
                    raise FrameDecodeError(f"{what}: the frame has no laser calibration for it")
                jobs.append((r, lid, what))
                blobs.append(rimg.range_image_compressed)
        raws = _decompress_all(blobs, [w + " (zlib)" for _, _, w in jobs])
        top_pose = None
        images = []
        for (r, lid, what), raw in zip(jobs, raws):
            arr = parse_matrix_float(raw, what)
            if r == 0:
                top_pose = arr
                continue
            images.append((r, lid, arr, what))
        points, counts = assemble_points(images, calibs, top_pose, pose)
    return DecodedFrame(points=points, pose=pose, timestamp_micros=int(frame.timestamp_micros),
                        context_name=frame.context.name, num_points_per_lidar=counts,
                        **decode_labels(frame))
