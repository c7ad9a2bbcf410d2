"""Read point clouds from the files people have, for ``tools/infer.py`` (no torch here).

Formats (``FORMATS``), chosen by name or detected from the file:

- ``kitti-bin``: raw float32 rows of x, y, z, intensity (KITTI, N x 4) or x, y, z, intensity,
  elongation (N x 5). The column count is given (``bin_columns``) or detected from the size: a
  size that only 16 divides is N x 4, one that only 20 divides is N x 5; a size both divide
  (a multiple of 80 bytes) is read as N x 4, with a warning saying so.
- ``npy``: a 2-D numpy array (no pickles) with columns x, y, z, intensity[, elongation, ...].
- ``pcd`` / ``ply``: through Open3D's tensor I/O; x, y, z from the positions and intensity from an
  ``intensity`` field when the file has one (else :data:`DEFAULT_INTENSITY`, with a warning).
- ``tfrecord``: a Waymo (perception v1) segment, one frame per record, decoded with
  ``detector.datasets.waymo.decode_frame`` (all lidars and returns unless told otherwise).
- ``parquet``: a Waymo v2 ``lidar`` component file ``SPLIT_DIR/lidar/CONTEXT.parquet``, through
  ``detector.datasets.waymo.parquet.iter_v2_frames`` (the other components beside it).

Detection without a named format: a valid TFRecord header (its length CRC) wins; then the numpy
magic, a PCD or PLY header, a ``.parquet`` name, and last a raw ``.bin``. A file that fits none is
an error naming the file and every format tried.

Intensity is raw (as Waymo stores it); the model's tanh is applied at inference.
"""
from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["FORMATS", "DEFAULT_INTENSITY", "PointCloudFormatError", "PointFrame",
           "detect_format", "read_point_frames"]

FORMATS = ("kitti-bin", "npy", "pcd", "ply", "tfrecord", "parquet")

#: Intensity given to points of a .pcd/.ply file without an intensity field.
DEFAULT_INTENSITY = 0.0


class PointCloudFormatError(ValueError):
    """A file is not a point cloud in the format(s) tried; the message names file and formats."""


@dataclass
class PointFrame:
    """One frame read from a file: (N, C >= 4) float32 points x, y, z, intensity[, elongation..]."""
    points: np.ndarray
    name: str                   # "file.bin", or "segment.tfrecord:3" for one frame of many
    context_name: str = ""
    timestamp_micros: int = 0


def _is_tfrecord(path: Path) -> bool:
    from .waymo.tfrecord import masked_crc32c

    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12:
        return False
    (crc,) = struct.unpack("<I", head[8:12])
    return masked_crc32c(head[:8]) == crc


def _sniff(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(256)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"ply\n") or head.startswith(b"ply\r\n"):
        return "ply"
    text = head.decode("latin-1")
    if text.startswith("# .PCD") or text.startswith("VERSION") or "\nFIELDS " in text[:200]:
        return "pcd"
    return None


def detect_format(path) -> str:
    """The format of ``path`` (see the module docstring), or PointCloudFormatError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    tried = []
    if _is_tfrecord(path):
        return "tfrecord"
    tried.append("tfrecord (no valid record header)")
    sniffed = _sniff(path)
    if sniffed:
        return sniffed
    tried.append("npy/pcd/ply (no numpy, PCD or PLY header)")
    if path.suffix.lower() == ".parquet":
        return "parquet"
    tried.append("parquet (not a .parquet file)")
    size = path.stat().st_size
    if size > 0 and (size % 16 == 0 or size % 20 == 0):
        return "kitti-bin"
    tried.append(f"kitti-bin ({size} bytes is not a whole number of N x 4 or N x 5 float32 rows)")
    raise PointCloudFormatError(f"{path}: not a point cloud in any supported format; tried "
                                + "; ".join(tried) + f". Name the format with --format "
                                f"{{{','.join(FORMATS)}}}")


def _read_bin(path: Path, columns: int | None) -> np.ndarray:
    size = path.stat().st_size
    if columns is None:
        by4, by5 = size % 16 == 0, size % 20 == 0
        if by4 and by5:
            columns = 4
            warnings.warn(f"{path}: {size} bytes fit both N x 4 and N x 5 float32 rows; reading "
                          f"N x 4 (x, y, z, intensity; KITTI). Pass --bin-columns 5 for "
                          f"x, y, z, intensity, elongation", stacklevel=3)
        elif by4 or by5:
            columns = 4 if by4 else 5
        else:
            raise PointCloudFormatError(
                f"{path}: format kitti-bin: {size} bytes is not a whole number of N x 4 "
                f"(16-byte) or N x 5 (20-byte) float32 rows")
    elif columns not in (4, 5):
        raise ValueError(f"bin_columns must be 4 or 5, got {columns}")
    elif size % (4 * columns):
        raise PointCloudFormatError(f"{path}: format kitti-bin: {size} bytes is not a whole "
                                    f"number of N x {columns} float32 rows")
    return np.fromfile(path, dtype="<f4").reshape(-1, columns)


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise PointCloudFormatError(f"{path}: format npy: cannot read ({e})") from e
    if arr.ndim != 2 or arr.shape[1] < 4 or not np.issubdtype(arr.dtype, np.number):
        raise PointCloudFormatError(f"{path}: format npy: expected a numeric (N, >= 4) array with "
                                    f"columns x, y, z, intensity[, elongation], got "
                                    f"{arr.dtype} {arr.shape}")
    return arr.astype(np.float32)


def _read_open3d(path: Path, fmt: str) -> np.ndarray:
    import open3d as o3d

    if not _sniff(path) == fmt:
        raise PointCloudFormatError(f"{path}: format {fmt}: no {fmt.upper()} header")
    pc = o3d.t.io.read_point_cloud(str(path))
    fields = set(pc.point)
    if "positions" not in fields:
        raise PointCloudFormatError(f"{path}: format {fmt}: Open3D read no point positions")
    xyz = pc.point.positions.numpy().astype(np.float32).reshape(-1, 3)
    if "intensity" in fields:
        inten = pc.point.intensity.numpy().astype(np.float32).reshape(len(xyz), -1)[:, :1]
    else:
        inten = np.full((len(xyz), 1), DEFAULT_INTENSITY, np.float32)
        warnings.warn(f"{path}: no intensity field (fields: {sorted(fields)}); using intensity = "
                      f"{DEFAULT_INTENSITY} for every point", stacklevel=3)
    return np.concatenate([xyz, inten], axis=1)


def _tfrecord_frames(path: Path, lidars, returns) -> Iterator[PointFrame]:
    from .waymo import TFRecordError, decode_frame, read_tfrecord

    try:
        for i, record in enumerate(read_tfrecord(path)):
            fr = decode_frame(record, returns=returns, lidars=lidars)
            yield PointFrame(fr.points, f"{path.name}:{i}", fr.context_name, fr.timestamp_micros)
    except TFRecordError as e:
        raise PointCloudFormatError(f"{path}: format tfrecord: {e}") from e


def _parquet_frames(path: Path, lidars, returns) -> Iterator[PointFrame]:
    from .waymo.parquet import iter_v2_frames  # pyarrow only

    split_dir, context = path.parent.parent, path.stem  # SPLIT_DIR/lidar/CONTEXT.parquet
    kwargs = {}
    if lidars is not None:
        kwargs["lidars"] = lidars
    if returns is not None:
        kwargs["returns"] = returns
    for i, fr in enumerate(iter_v2_frames(split_dir, context, **kwargs)):
        yield PointFrame(np.asarray(fr.points, np.float32), f"{path.name}:{i}", fr.context_name,
                         int(fr.timestamp_micros))


def read_point_frames(path, fmt: str | None = None, *, bin_columns: int | None = None,
                      lidars=None, returns=(1, 2)) -> Iterator[PointFrame]:
    """The frames of ``path`` (one for single point-cloud files, one per record of a segment).

    fmt: one of :data:`FORMATS`, or None to detect. lidars / returns: which Waymo lidars and
    returns to decode from TFRecord / Parquet input (default all lidars, both returns).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if fmt is None:
        fmt = detect_format(path)
    elif fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {FORMATS}")
    if fmt == "tfrecord":
        if not _is_tfrecord(path):
            raise PointCloudFormatError(f"{path}: format tfrecord: the first record's header "
                                        f"is not valid (length CRC mismatch or too short)")
        yield from _tfrecord_frames(path, lidars, returns)
        return
    if fmt == "parquet":
        yield from _parquet_frames(path, lidars, returns)
        return
    if fmt == "kitti-bin":
        if _is_tfrecord(path) or _sniff(path):
            raise PointCloudFormatError(f"{path}: format kitti-bin: the file is a "
                                        f"{'tfrecord' if _is_tfrecord(path) else _sniff(path)}, "
                                        f"not raw float32 rows (leave --format out to detect it)")
        pts = _read_bin(path, bin_columns)
    elif fmt == "npy":
        pts = _read_npy(path)
    else:
        pts = _read_open3d(path, fmt)
    yield PointFrame(pts, path.name, path.stem, 0)
