"""Waymo v2 (Parquet) input: detector/datasets/waymo/parquet.py against the v1 decoder, with
v2 files from the project's test writer (always) and from the official compat_v1 extractors
(oracle venv)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from detector.datasets.waymo import decode_frame, read_tfrecord
from detector.datasets.waymo.parquet import V2FormatError, iter_v2_frames, list_v2_segments
from detector.testing.waymo_v2 import SCHEMAS, make_test_segment, write_v2_segment
from oracle import run_oracle

FIELDS = ("points", "boxes", "types", "difficulty", "num_points_in_box", "num_top_points_in_box",
          "speed", "accel", "pose")


def assert_same_frames(got, frames, returns=(1, 2), lidars=None):
    assert len(got) == len(frames)
    for g, f in zip(got, frames):
        e = decode_frame(f, returns=returns, lidars=lidars)
        for k in FIELDS:
            a, b = getattr(g, k), getattr(e, k)
            assert a.dtype == b.dtype and a.shape == b.shape, k
            np.testing.assert_array_equal(a, b, err_msg=k)
        assert g.ids == e.ids and g.context_name == e.context_name
        assert g.timestamp_micros == e.timestamp_micros
        assert g.num_points_per_lidar == e.num_points_per_lidar


@pytest.fixture(scope="module")
def seg_frames():
    fr = make_test_segment(4, seed=5, scale=0.08, context_name="ctx_a")
    # a frame where one lidar has no second return and another is missing entirely
    del fr[2].lasers[3]
    fr[2].lasers[1].ri_return2.range_image_compressed = b""
    fr[3].laser_labels[0].ClearField("metadata")      # v2: null speed -> 0 like v1
    return fr


_LAYOUTS = {"row-group-per-frame": dict(), "one-row-group": dict(row_group_size=1000),
            "row-groups-of-3-rows": dict(row_group_size=3),
            "out-of-time-order": dict(row_group_size=4, shuffle_seed=1)}


@pytest.mark.parametrize("layout,returns,lidars", [
    *[(k, (1, 2), None) for k in _LAYOUTS],
    ("row-group-per-frame", (2,), ["TOP", "REAR"]), ("out-of-time-order", (1,), ["FRONT", 3])])
def test_v2_gives_the_v1_frames(tmp_path, seg_frames, layout, returns, lidars):
    write_v2_segment(tmp_path, seg_frames, **_LAYOUTS[layout])
    assert list_v2_segments(tmp_path) == ["ctx_a"]
    got = list(iter_v2_frames(tmp_path, "ctx_a", returns=returns, lidars=lidars))
    assert_same_frames(got, seg_frames, returns, lidars)
    assert sum(len(g.points) for g in got) > 1000
    # keep= selects frames by time position before decoding; labels-only mode
    some = list(iter_v2_frames(tmp_path, "ctx_a", returns=returns, lidars=lidars,
                               keep=lambda i: i % 3 == 0))
    assert_same_frames(some, [seg_frames[0], seg_frames[3]], returns, lidars)
    nopts = list(iter_v2_frames(tmp_path, "ctx_a", with_points=False))
    assert [len(g.points) for g in nopts] == [0] * 4
    np.testing.assert_array_equal(nopts[1].boxes, got[1].boxes)


def test_frames_come_in_time_order(tmp_path, seg_frames):
    write_v2_segment(tmp_path, seg_frames[::-1], row_group_size=2)   # rows newest first
    got = list(iter_v2_frames(tmp_path, "ctx_a"))
    assert [g.timestamp_micros for g in got] == sorted(f.timestamp_micros for f in seg_frames)
    assert_same_frames(got, seg_frames)


def test_unlabelled_split_without_lidar_box_folder(tmp_path, seg_frames):
    write_v2_segment(tmp_path, seg_frames, components=("lidar", "lidar_pose", "lidar_calibration",
                                                       "vehicle_pose"))
    got = list(iter_v2_frames(tmp_path, "ctx_a"))
    assert [g.num_boxes for g in got] == [0] * 4 and got[0].boxes.shape == (0, 7)
    for g, f in zip(got, seg_frames):
        np.testing.assert_array_equal(g.points, decode_frame(f).points)
    (tmp_path / "lidar_box").mkdir()     # the folder exists, this segment's file does not
    with pytest.raises(V2FormatError, match=r"lidar_box/ctx_a\.parquet: missing component file"):
        list(iter_v2_frames(tmp_path, "ctx_a"))


def _rewrite(path: Path, fn):
    import pyarrow.parquet as pq
    t = fn(pq.read_table(path))
    pq.write_table(t, path)


def test_bad_input_names_file_column_and_frame(tmp_path, seg_frames):
    import pyarrow as pa
    import pyarrow.compute as pc
    base = tmp_path / "base"
    write_v2_segment(base, seg_frames)
    ts = [f.timestamp_micros for f in seg_frames]

    def case(name):
        d = tmp_path / name
        shutil.copytree(base, d)
        return d

    def read(d):
        return list(iter_v2_frames(d, "ctx_a"))

    # missing component file
    d = case("missing")
    (d / "lidar_pose/ctx_a.parquet").unlink()
    with pytest.raises(V2FormatError, match=r"lidar_pose/ctx_a\.parquet: missing component file"):
        read(d)
    # truncated and non-Parquet files
    d = case("truncated")
    p = d / "lidar/ctx_a.parquet"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(V2FormatError, match=r"lidar/ctx_a\.parquet: not a readable Parquet"):
        read(d)
    d = case("text")
    (d / "lidar_box/ctx_a.parquet").write_text("hello\n" * 50)
    with pytest.raises(V2FormatError, match=r"lidar_box/ctx_a\.parquet: not a readable Parquet"):
        read(d)
    # a missing column
    d = case("column")
    col = "[LiDARBoxComponent].box.heading"
    _rewrite(d / "lidar_box/ctx_a.parquet", lambda t: t.drop_columns([col]))
    with pytest.raises(V2FormatError, match=r"lidar_box/ctx_a\.parquet: missing column "
                                            r"'\[LiDARBoxComponent\]\.box\.heading'"):
        read(d)
    # a lidar row without a calibration (SIDE_LEFT's calibration row dropped)
    d = case("calib")
    _rewrite(d / "lidar_calibration/ctx_a.parquet",
             lambda t: t.filter(pc.not_equal(t["key.laser_name"], pa.scalar(3, pa.int8()))))
    with pytest.raises(V2FormatError, match=rf"frame {ts[0]}, lidar SIDE_LEFT has a range image "
                                            r"but .*lidar_calibration/ctx_a\.parquet has no "
                                            "calibration"):
        read(d)
    assert len(list(iter_v2_frames(d, "ctx_a", lidars=["TOP"]))) == 4   # not requested: fine
    # a frame without a pose
    d = case("pose")
    _rewrite(d / "vehicle_pose/ctx_a.parquet",
             lambda t: t.filter(pc.not_equal(t["key.frame_timestamp_micros"], ts[1])))
    with pytest.raises(V2FormatError, match=rf"lidar_box/ctx_a\.parquet: frame {ts[1]} has boxes "
                                            r"but .*vehicle_pose/ctx_a\.parquet has no vehicle"):
        read(d)
    # a range image whose values do not fill its shape
    d = case("shape")

    def bad_shape(t):
        c = "[LiDARComponent].range_image_return1.shape"
        s = t[c].to_pylist()
        s[2] = [s[2][0] + 1, s[2][1], s[2][2]]
        return t.set_column(t.schema.get_field_index(c), c, pa.array(s, t.schema.field(c).type))
    _rewrite(d / "lidar/ctx_a.parquet", bad_shape)
    lid = seg_frames[0].lasers[2].name
    with pytest.raises(V2FormatError, match=r"range_image_return1\.values'.* do not fill shape .*"
                                            rf"frame {ts[0]}, lidar "):
        read(d)
    assert lid
    # another segment's rows in this segment's file
    d = case("segment")
    _rewrite(d / "vehicle_pose/ctx_a.parquet", lambda t: t.set_column(
        0, "key.segment_context_name", pa.array(["ctx_b"] * t.num_rows)))
    with pytest.raises(V2FormatError, match=r"holds \['ctx_b'\], expected only 'ctx_a'"):
        read(d)


def _pack(frames) -> dict:
    blobs = [bytes(f) for f in frames]
    return {"blob": np.frombuffer(b"".join(blobs), np.uint8),
            "offsets": np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)}


@pytest.mark.oracle
@pytest.mark.slow   # ~3 min here: the extractors parse range images with pure-python protobuf
def test_official_v2_extractors_agree(tmp_path, real_frame_path):
    """The official compat_v1 extractors turn v1 frames into v2 Parquet as Google converted the
    release; iter_v2_frames on them gives decode_frame's frames, and the test writer's schemas
    are the official ones."""
    from detector.datasets.synthetic import generate_segment

    synthetic = [bytes(r) for r in read_tfrecord(generate_segment(tmp_path, seed=4, num_frames=1))]
    real = [bytes(r) for r in read_tfrecord(real_frame_path)]
    small_frames = make_test_segment(3, seed=9, scale=0.1, context_name="small")
    for f in small_frames:   # the extractor asserts that speed and accel have x and y
        for lab in f.laser_labels:
            lab.metadata.accel_y = 0.25
    small = [f.SerializeToString() for f in small_frames]
    env = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    for k, frames in enumerate((synthetic, real, small)):
        split = tmp_path / f"v2_{k}"
        out = run_oracle("oracle_scripts/v2_from_v1.py",
                         {**_pack(frames), "out_dir": np.array(str(split))}, env=env,
                         timeout=1200)
        for comp, schema in SCHEMAS.items():
            assert str(out[f"schema_{comp}"]) == schema.to_string(show_schema_metadata=False), comp
        (ctx,) = list_v2_segments(split)
        got = list(iter_v2_frames(split, ctx))
        assert_same_frames(got, frames)
        if k == 0:
            assert all(len(g.points) > 10000 and g.num_boxes > 0 for g in got)
        if k == 1:
            assert got[0].num_boxes == 75 and len(got[0].points) == 0
        # the project's writer gives the same files' content
        own = tmp_path / f"own_{k}"
        write_v2_segment(own, frames)
        assert_same_frames(list(iter_v2_frames(own, ctx)), frames)
