"""A small writer of Waymo v2 Parquet segments from v1 ``Frame`` protos, for tests and
benchmarks (the release's own conversion is the official package's ``compat_v1`` extractors,
which need TensorFlow; ``tests/oracle_scripts/v2_from_v1.py`` runs those, and checks that the
schemas below are the official components' ``schema()``).

``write_v2_segment(split_dir, frames)`` writes ``<split_dir>/<component>/<context>.parquet``
for the five components ``parquet.py`` reads. Field by field it does what the extractors do:
range images are inflated and stored as flat float32 ``values`` + ``shape``; a lidar without
any range image gets no ``lidar`` row; ``lidar_pose`` has TOP's per-pixel pose; calibrations
store ``beam_inclination.values`` only when the v1 calibration lists them; boxes store
``size.{x,y,z}`` = (length, width, height).
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from detector.datasets.waymo.frame import parse_frame, parse_matrix_float

__all__ = ["SCHEMAS", "write_v2_segment", "v2_tables"]


def _schemas():
    import pyarrow as pa
    key_fl = [("key.segment_context_name", pa.string()),
              ("key.frame_timestamp_micros", pa.int64()), ("key.laser_name", pa.int8())]
    vals, shape = pa.list_(pa.float32()), pa.list_(pa.int32(), 3)
    L, P, C, B, V = ("[LiDARComponent].", "[LiDARPoseComponent].",
                     "[LiDARCalibrationComponent].", "[LiDARBoxComponent].",
                     "[VehiclePoseComponent].")
    f64 = pa.float64()
    return {
        "lidar": pa.schema(key_fl + [(L + "range_image_return1.values", vals),
                                     (L + "range_image_return1.shape", shape),
                                     (L + "range_image_return2.values", vals),
                                     (L + "range_image_return2.shape", shape)]),
        "lidar_pose": pa.schema(key_fl + [(P + "range_image_return1.values", vals),
                                          (P + "range_image_return1.shape", shape)]),
        "lidar_calibration": pa.schema([
            ("key.segment_context_name", pa.string()), ("key.laser_name", pa.int8()),
            (C + "extrinsic.transform", pa.list_(f64, 16)), (C + "beam_inclination.min", f64),
            (C + "beam_inclination.max", f64), (C + "beam_inclination.values", pa.list_(f64))]),
        "lidar_box": pa.schema([
            ("key.segment_context_name", pa.string()),
            ("key.frame_timestamp_micros", pa.int64()), ("key.laser_object_id", pa.string())]
            + [(B + f"box.{k}.{c}", f64) for k in ("center", "size") for c in "xyz"]
            + [(B + "box.heading", f64), (B + "type", pa.int8()),
               (B + "num_lidar_points_in_box", pa.int64()),
               (B + "num_top_lidar_points_in_box", pa.int64())]
            + [(B + f"{k}.{c}", f64) for k in ("speed", "acceleration") for c in "xyz"]
            + [(B + "difficulty_level.detection", pa.int8()),
               (B + "difficulty_level.tracking", pa.int8())]),
        "vehicle_pose": pa.schema([("key.segment_context_name", pa.string()),
                                   ("key.frame_timestamp_micros", pa.int64()),
                                   (V + "world_from_vehicle.transform", pa.list_(f64, 16))]),
    }


class _Lazy(dict):
    def __missing__(self, k):
        self.update(_schemas())
        return dict.__getitem__(self, k)


SCHEMAS = _Lazy()


def _image(blob: bytes):
    if not blob:
        return None, None
    arr = parse_matrix_float(zlib.decompress(blob))
    return np.ascontiguousarray(arr, np.float32).ravel(), list(arr.shape)


SCHEMAS_ORDER = ("lidar", "lidar_pose", "lidar_calibration", "lidar_box", "vehicle_pose")


def v2_tables(frames: Sequence, calibrations: bool = True) -> dict:
    """{component: pyarrow.Table} of one segment's frames (v1 protos or serialized bytes);
    ``calibrations=False`` leaves the (per segment) calibration table empty."""
    import pyarrow as pa
    frames = [parse_frame(f) for f in frames]
    rows = {c: [] for c in ("lidar", "lidar_pose", "lidar_calibration", "lidar_box",
                            "vehicle_pose")}
    L, P, C, B, V = ("[LiDARComponent].", "[LiDARPoseComponent].",
                     "[LiDARCalibrationComponent].", "[LiDARBoxComponent].",
                     "[VehiclePoseComponent].")
    if frames and calibrations:
        f0 = frames[0]
        for c in f0.context.laser_calibrations:
            rows["lidar_calibration"].append({
                "key.segment_context_name": f0.context.name, "key.laser_name": c.name,
                C + "extrinsic.transform": list(c.extrinsic.transform),
                C + "beam_inclination.min": c.beam_inclination_min,
                C + "beam_inclination.max": c.beam_inclination_max,
                C + "beam_inclination.values": list(c.beam_inclinations) or None})
    for f in frames:
        ctx, ts = f.context.name, f.timestamp_micros
        rows["vehicle_pose"].append({"key.segment_context_name": ctx,
                                     "key.frame_timestamp_micros": ts,
                                     V + "world_from_vehicle.transform": list(f.pose.transform)})
        for laser in f.lasers:
            key = {"key.segment_context_name": ctx, "key.frame_timestamp_micros": ts,
                   "key.laser_name": laser.name}
            v1, s1 = _image(laser.ri_return1.range_image_compressed)
            v2, s2 = _image(laser.ri_return2.range_image_compressed)
            if v1 is not None or v2 is not None:
                rows["lidar"].append({**key, L + "range_image_return1.values": v1,
                                      L + "range_image_return1.shape": s1,
                                      L + "range_image_return2.values": v2,
                                      L + "range_image_return2.shape": s2})
            pv, ps = _image(laser.ri_return1.range_image_pose_compressed)
            if pv is not None:
                rows["lidar_pose"].append({**key, P + "range_image_return1.values": pv,
                                           P + "range_image_return1.shape": ps})
        for lab in f.laser_labels:
            bx, md = lab.box, lab.metadata
            has_md = lab.HasField("metadata")
            row = {"key.segment_context_name": ctx, "key.frame_timestamp_micros": ts,
                   "key.laser_object_id": lab.id,
                   B + "box.center.x": bx.center_x, B + "box.center.y": bx.center_y,
                   B + "box.center.z": bx.center_z, B + "box.size.x": bx.length,
                   B + "box.size.y": bx.width, B + "box.size.z": bx.height,
                   B + "box.heading": bx.heading, B + "type": lab.type,
                   B + "num_lidar_points_in_box": lab.num_lidar_points_in_box,
                   B + "num_top_lidar_points_in_box": lab.num_top_lidar_points_in_box,
                   B + "difficulty_level.detection": lab.detection_difficulty_level,
                   B + "difficulty_level.tracking": lab.tracking_difficulty_level}
            for k, p in (("speed", "speed"), ("acceleration", "accel")):
                for c in "xyz":
                    row[B + f"{k}.{c}"] = getattr(md, f"{p}_{c}") if has_md else None
            rows["lidar_box"].append(row)
    out = {}
    for c, rs in rows.items():
        sch = SCHEMAS[c]
        out[c] = pa.Table.from_pylist(rs, schema=sch) if rs else sch.empty_table()
    return out


def write_v2_segment(split_dir, frames: Sequence, row_group_size: int | None = None,
                     shuffle_seed: int | None = None, components: Sequence[str] | None = None
                     ) -> dict[str, Path]:
    """Write one segment's v2 files; returns {component: path}.

    Default: streamed, one row group per frame in the lidar files (memory: one frame; frames may
    be a generator). ``row_group_size`` (rows) writes the lidar files in row groups of that many
    rows instead, and ``shuffle_seed`` writes their rows out of time order (a file the reader
    must not assume sorted); both hold the whole segment in memory (small test segments).
    ``components`` writes only those (bad-input tests)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    split_dir = Path(split_dir)
    comps = [c for c in SCHEMAS_ORDER if components is None or c in components]
    writers: dict = {}
    tmps: dict = {}
    held: dict = {c: [] for c in comps}
    ctx = None
    whole = row_group_size is not None or shuffle_seed is not None
    try:
        for k, f in enumerate(frames):
            f = parse_frame(f)
            if ctx is None:
                ctx = f.context.name
            tabs = v2_tables([f], calibrations=(k == 0))
            for c in comps:
                if c in ("lidar", "lidar_pose") and whole or c not in ("lidar", "lidar_pose"):
                    held[c].append(tabs[c])
                    continue
                if c not in writers:
                    p = split_dir / c / f"{ctx}.parquet"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    tmps[c] = p.with_name(f".{p.name}.tmp")
                    writers[c] = pq.ParquetWriter(tmps[c], SCHEMAS[c])
                if tabs[c].num_rows:
                    writers[c].write_table(tabs[c])
        if ctx is None:
            raise ValueError("write_v2_segment: no frames")
        paths = {}
        for c in comps:
            p = split_dir / c / f"{ctx}.parquet"
            p.parent.mkdir(parents=True, exist_ok=True)
            if c in writers:
                writers.pop(c).close()
            else:
                tab = pa.concat_tables(held[c]) if held[c] else SCHEMAS[c].empty_table()
                if shuffle_seed is not None and c in ("lidar", "lidar_pose") and tab.num_rows > 1:
                    tab = tab.take(np.random.default_rng(shuffle_seed).permutation(tab.num_rows))
                tmps[c] = p.with_name(f".{p.name}.tmp")
                pq.write_table(tab, tmps[c], row_group_size=row_group_size
                               if c in ("lidar", "lidar_pose") else None)
            tmps[c].replace(p)
            paths[c] = p
        return paths
    finally:
        for w in writers.values():
            w.close()


def make_test_segment(num_frames: int = 3, seed: int = 0, context_name: str = "test_context",
                      start_micros: int = 1_550_000_000_000_000, **kw) -> list:
    """``num_frames`` frames of ``testing.make_test_frame`` (seeds seed, seed+1, ...), 0.1 s
    apart, sharing frame 0's calibrations as a real segment does (v2 stores them once)."""
    from .waymo_frame import make_test_frame
    frames = [make_test_frame(seed + i, context_name=context_name,
                              timestamp_micros=start_micros + 100_000 * i, **kw)
              for i in range(num_frames)]
    for f in frames[1:]:
        del f.context.laser_calibrations[:]
        f.context.laser_calibrations.extend(frames[0].context.laser_calibrations)
    return frames
