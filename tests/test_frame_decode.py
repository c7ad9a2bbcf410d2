"""Frame decoding (detector/datasets/waymo/frame.py) vs a literal reference, the official
frame_utils (oracle venv), and the real frame's labels."""
from __future__ import annotations

import math
import time
import zlib

import numpy as np
import pytest
from waymo_open_dataset import dataset_pb2, label_pb2

from detector.datasets.waymo import POINT_COLUMNS, FrameDecodeError, decode_frame, read_tfrecord
from detector.datasets.waymo import frame as frame_mod
from detector.testing.waymo_frame import make_test_frame, matrix_float
from oracle import run_oracle



def _reference_points(frame: dataset_pb2.Frame, returns=(1, 2)) -> np.ndarray:
    """docs/WAYMO.md "Range image -> points", one pixel at a time, straight from the proto."""
    pose = np.array(frame.pose.transform, dtype=np.float64).reshape(4, 4)
    calibs = {c.name: c for c in frame.context.laser_calibrations}
    top_pose = None
    rows = []
    for r in returns:
        for laser in sorted(frame.lasers, key=lambda l: l.name):
            c = calibs[laser.name]
            rimg = laser.ri_return1 if r == 1 else laser.ri_return2
            m = dataset_pb2.MatrixFloat.FromString(zlib.decompress(rimg.range_image_compressed))
            ri = np.array(m.data, np.float32).reshape(list(m.shape.dims))
            if laser.name == 1 and laser.ri_return1.range_image_pose_compressed:
                mp = dataset_pb2.MatrixFloat.FromString(
                    zlib.decompress(laser.ri_return1.range_image_pose_compressed))
                top_pose = np.array(mp.data, np.float32).reshape(list(mp.shape.dims))
            H, W = ri.shape[:2]
            E = np.array(c.extrinsic.transform, dtype=np.float64).reshape(4, 4)
            if len(c.beam_inclinations):
                inc = list(c.beam_inclinations)
            else:
                inc = [c.beam_inclination_min + (i + 0.5) / H *
                       (c.beam_inclination_max - c.beam_inclination_min) for i in range(H)]
            inc = inc[::-1]
            for i in range(H):
                for j in range(W):
                    rng = float(ri[i, j, 0])
                    if rng <= 0:
                        continue
                    az = ((W - j - 0.5) / W * 2 - 1) * math.pi - math.atan2(E[1, 0], E[0, 0])
                    p = np.array([rng * math.cos(az) * math.cos(inc[i]),
                                  rng * math.sin(az) * math.cos(inc[i]), rng * math.sin(inc[i])])
                    p = E[:3, :3] @ p + E[:3, 3]
                    if laser.name == 1 and top_pose is not None:
                        roll, pitch, yaw, x, y, z = top_pose[i, j].astype(np.float64)
                        Rx = np.array([[1, 0, 0], [0, math.cos(roll), -math.sin(roll)],
                                       [0, math.sin(roll), math.cos(roll)]])
                        Ry = np.array([[math.cos(pitch), 0, math.sin(pitch)], [0, 1, 0],
                                       [-math.sin(pitch), 0, math.cos(pitch)]])
                        Rz = np.array([[math.cos(yaw), -math.sin(yaw), 0],
                                       [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
                        world = Rz @ Ry @ Rx @ p + np.array([x, y, z])
                        p = np.linalg.inv(pose) @ np.append(world, 1.0)
                    rows.append([p[0], p[1], p[2], ri[i, j, 1], ri[i, j, 2], r, laser.name,
                                 1.0 if ri[i, j, 3] > 0 else 0.0])
    return np.array(rows, dtype=np.float64).reshape(-1, 8)


@pytest.mark.parametrize("seed,top_pose", [(0, True), (1, False)])
def test_decode_matches_reference(seed, top_pose):
    f = make_test_frame(seed, scale=0.05, top_pose=top_pose)
    d = decode_frame(f.SerializeToString())
    ref = _reference_points(f)
    assert d.points.dtype == np.float32 and d.points.shape == ref.shape and ref.shape[0] > 500
    assert len(POINT_COLUMNS) == d.points.shape[1]
    # float64 pipelines on both sides: only the final float32 rounding differs (1e4 m globals
    # are subtracted away before rounding)
    np.testing.assert_allclose(d.points[:, :3], ref[:, :3], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(d.points[:, 3:], ref[:, 3:].astype(np.float32))
    assert set(np.unique(d.points[:, 7])) == {0.0, 1.0}


def test_returns_and_lidars_selection():
    f = make_test_frame(3, scale=0.05)
    full = decode_frame(f)
    for returns in [(1,), (2,)]:
        for lidars in [("TOP",), ("FRONT", "REAR"), (5, 2)]:
            d = decode_frame(f, returns=returns, lidars=lidars)
            ids = [frame_mod.LIDAR_IDS[x] if isinstance(x, str) else x for x in lidars]
            keep = np.isin(full.points[:, 5], returns) & np.isin(full.points[:, 6], ids)
            np.testing.assert_array_equal(d.points, full.points[keep])
    with pytest.raises(ValueError, match="unknown lidar"):
        decode_frame(f, lidars=["MIDDLE"])
    with pytest.raises(ValueError, match="returns"):
        decode_frame(f, returns=(3,))


def test_point_order_is_return_major_row_major():
    d = decode_frame(make_test_frame(4, scale=0.05))
    key = d.points[:, 5] * 10 + d.points[:, 6]
    assert np.all(np.diff(key) >= 0)
    assert list(d.num_points_per_lidar) == [(r, l) for r in (1, 2) for l in range(1, 6)]


def test_parse_matrix_float_fast_path_and_fallback():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 5, 4)).astype(np.float32)
    raw = matrix_float(a)
    assert frame_mod._parse_matrix_fast(raw) is not None
    np.testing.assert_array_equal(frame_mod.parse_matrix_float(raw), a)
    # unpacked dims + a shape message before the data: still exact
    shape = b"".join(b"\x08" + bytes([d]) for d in a.shape)
    packed = a.tobytes()
    alt = b"\x12" + bytes([len(shape)]) + shape + b"\x0a" + _varint(len(packed)) + packed
    np.testing.assert_array_equal(frame_mod.parse_matrix_float(alt), a)
    # unknown field -> protobuf fallback, same result
    m = dataset_pb2.MatrixFloat.FromString(raw)
    odd = raw + b"\x18\x01"  # field 3 varint: unknown to the fast path
    assert frame_mod._parse_matrix_fast(odd) is None
    np.testing.assert_array_equal(frame_mod.parse_matrix_float(odd), np.array(m.data).reshape(a.shape))
    with pytest.raises(FrameDecodeError, match="do not fill shape"):
        frame_mod.parse_matrix_float(b"\x0a\x14" + np.zeros(5, "<f4").tobytes() + b"\x12\x04\x08\x02\x08\x03")


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_geometry_cache():
    f = make_test_frame(5, scale=0.05)
    c = f.context.laser_calibrations[1]  # FRONT: uniform inclinations
    g1 = frame_mod.lidar_geometry(c, 10, 20)
    assert frame_mod.lidar_geometry(c, 10, 20) is g1
    c2 = dataset_pb2.LaserCalibration()
    c2.CopyFrom(c)
    c2.extrinsic.transform[3] += 1.0
    g2 = frame_mod.lidar_geometry(c2, 10, 20)
    assert g2 is not g1 and g2[1][0] == g1[1][0] + 1.0


def test_bad_range_images_name_the_lidar():
    f = make_test_frame(6, scale=0.05)
    f.lasers[2].ri_return2.range_image_compressed = b"not zlib"
    with pytest.raises(FrameDecodeError, match="lidar SIDE_LEFT return 2.*zlib"):
        decode_frame(f)
    f = make_test_frame(6, scale=0.05)
    f.lasers[0].ri_return1.range_image_compressed = zlib.compress(matrix_float(np.ones((5, 4, 4))))
    with pytest.raises(FrameDecodeError, match="TOP.*beam_inclinations"):
        decode_frame(f)
    with pytest.raises(FrameDecodeError, match="not a serialized"):
        decode_frame(b"\xff\xff\xff")


def test_labels_conversion():
    f = make_test_frame(7, scale=0.05, num_labels=6)
    f.laser_labels[0].box.heading = math.pi     # wraps to -pi
    d = decode_frame(f, with_points=False)
    for k, lab in enumerate(f.laser_labels):
        b = lab.box
        exp = np.array([b.center_x, b.center_y, b.center_z, b.length, b.width, b.height,
                        b.heading], np.float32)
        if k == 0:
            exp[6] = -np.float32(math.pi)
        np.testing.assert_array_equal(d.boxes[k], exp)
        assert d.types[k] == lab.type and d.difficulty[k] == lab.detection_difficulty_level
        assert d.num_points_in_box[k] == lab.num_lidar_points_in_box
        assert d.num_top_points_in_box[k] == lab.num_top_lidar_points_in_box
        assert d.ids[k] == lab.id
        np.testing.assert_array_equal(d.speed[k], np.float32([lab.metadata.speed_x,
                                                              lab.metadata.speed_y, 0]))
    assert np.all((d.boxes[:, 6] >= -np.pi) & (d.boxes[:, 6] < np.pi))
    assert d.boxes.dtype == np.float32 and d.types.dtype == np.int8
    assert d.points.shape == (0, 8)


def test_real_frame_labels(real_frame_path):
    recs = list(read_tfrecord(real_frame_path))
    assert len(recs) == 1
    frame = dataset_pb2.Frame.FromString(recs[0])
    d = decode_frame(recs[0])
    assert d.context_name == "1024360143612057520_3580_000_3600_000"
    assert d.timestamp_micros == 1553735853462203
    assert d.num_boxes == 75 and len(d.ids) == 75 and len(set(d.ids)) == 75
    np.testing.assert_array_equal(d.pose, np.array(frame.pose.transform).reshape(4, 4))
    # first label, values as stored in the file (proto width 0.582..., length 0.129...)
    assert d.ids[0] == "-uZgRjAOvgiK1-0dUx_4Sg"
    assert d.types[0] == label_pb2.Label.TYPE_SIGN and d.num_points_in_box[0] == 46
    np.testing.assert_allclose(d.boxes[0], [-25.852690630985308, -10.849918868696477,
                                            2.3494061628945246, 0.12923822353497522,
                                            0.58208972809431281, 0.539999999999992,
                                            -0.21582798044719897], rtol=1e-7)
    for k, lab in enumerate(frame.laser_labels):
        b = lab.box
        np.testing.assert_allclose(d.boxes[k], [b.center_x, b.center_y, b.center_z, b.length,
                                                b.width, b.height, b.heading], rtol=1e-6, atol=1e-6)
        assert (d.types[k], d.difficulty[k], d.num_points_in_box[k], d.ids[k]) == \
            (lab.type, lab.detection_difficulty_level, lab.num_lidar_points_in_box, lab.id)
        np.testing.assert_allclose(d.speed[k], [lab.metadata.speed_x, lab.metadata.speed_y,
                                                lab.metadata.speed_z], rtol=1e-6)
        np.testing.assert_allclose(d.accel[k], [lab.metadata.accel_x, lab.metadata.accel_y,
                                                lab.metadata.accel_z], rtol=1e-6, atol=1e-30)
    assert set(d.types.tolist()) <= {1, 2, 3, 4}
    assert d.points.shape == (0, 8)   # this file has no range images
    # its real TOP calibration drives the geometry: 64 explicit inclinations
    top = [c for c in frame.context.laser_calibrations if c.name == 1][0]
    inc = frame_mod.inclinations_for(top, 64)
    assert inc[0] == max(top.beam_inclinations) and inc[-1] == min(top.beam_inclinations)


def _real_calibrated_frame(real_frame_path, seed=0, sizes=None) -> dataset_pb2.Frame:
    """A test frame with the real frame's five calibrations (TOP: 64 real inclinations)."""
    real = dataset_pb2.Frame.FromString(next(iter(read_tfrecord(real_frame_path))))
    f = make_test_frame(seed, sizes=sizes)
    del f.context.laser_calibrations[:]
    for c in sorted(real.context.laser_calibrations, key=lambda c: c.name):
        f.context.laser_calibrations.add().CopyFrom(c)
    assert [c.name for c in f.context.laser_calibrations] == [1, 2, 3, 4, 5]
    return f


@pytest.mark.oracle
def test_matches_official_frame_utils(real_frame_path, tmp_path):
    # 1) a full-size synthetic frame of the project's generator: five lidars, two returns,
    #    TOP per-pixel poses; 2) the real frame's five calibrations (TOP: 64 real explicit
    #    inclinations) on column-decimated random range images
    from detector.datasets.synthetic import generate_segment
    synthetic = next(iter(read_tfrecord(generate_segment(tmp_path, seed=3, num_frames=1))))
    small = {1: (64, 400), 2: (200, 60), 3: (200, 60), 4: (200, 60), 5: (200, 60)}
    frames = [dataset_pb2.Frame.FromString(synthetic),
              _real_calibrated_frame(real_frame_path, 12, small)]
    full = decode_frame(frames[0])
    assert {l for _, l in full.num_points_per_lidar} == {1, 2, 3, 4, 5}
    assert {r for r, _ in full.num_points_per_lidar} == {1, 2}
    assert frames[0].lasers[0].ri_return1.range_image_pose_compressed
    blobs = [f.SerializeToString() for f in frames]
    out = run_oracle("oracle_scripts/frame_points.py",
                     {"blob": np.frombuffer(b"".join(blobs), np.uint8),
                      "offsets": np.cumsum([0] + [len(b) for b in blobs])})
    for k, (f, b) in enumerate(zip(frames, blobs)):
        d = decode_frame(b)
        off = out[f"points_{k}"]
        counts = out[f"counts_{k}"]
        assert [[d.num_points_per_lidar[(r, l)] for l in range(1, 6)] for r in (1, 2)] == \
            counts.tolist()
        assert off.shape == (d.points.shape[0], 3)
        err = np.abs(off.astype(np.float64) - d.points[:, :3]).max(axis=1)
        top = d.points[:, 6] == 1
        assert err[~top].max() < 1e-4, err[~top].max()
        assert err[top].max() < 2e-2, err[top].max()
