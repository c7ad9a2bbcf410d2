"""tools/infer.py on real files of every format: KITTI-style .bin (N x 4 and N x 5), .npy, .pcd and
.ply written by Open3D, a synthetic Waymo TFRecord segment; the same points give the same
detections whatever the container; wrong formats fail naming the file and the formats tried."""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from test_train_support import REPO, TINY_CONFIG, tiny_data_root

from detector.datasets.pointcloud_io import (PointCloudFormatError, detect_format,
                                             read_point_frames)


def _infer():
    spec = importlib.util.spec_from_file_location("tool_infer", REPO / "tools" / "infer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny data's val frame as every file format, and a random tiny checkpoint."""
    import open3d as o3d

    from detector.datasets.converted import load_index, load_points
    from detector.engine.inference import init_detector
    root = tiny_data_root(tmp_path_factory)
    rec = load_index(root, "val")[0]
    pts = np.array(load_points(root, rec), np.float32)
    if len(pts) % 4 == 0:
        # N x 5 floats must not also fit N x 4 rows: drop one point the model never sees (outside
        # the tiny config's +-25.6 m range), so the TFRecord's frame still gives the same boxes.
        far = np.flatnonzero(np.abs(pts[:, :2]).max(1) > 30.0)
        assert len(far), "no point outside the model's range to drop"
        pts = np.delete(pts, far[0], axis=0)
    d = tmp_path_factory.mktemp("clouds")
    pts[:, :5].tofile(d / "frame5.bin")
    four = pts[:len(pts) - len(pts) % 5, :4]          # a size only 16 divides: N x 4
    if (four.nbytes % 20) == 0:
        four = four[:-1]
    four.tofile(d / "frame4.bin")
    np.save(d / "frame.npy", pts)
    pc = o3d.t.geometry.PointCloud()
    pc.point.positions = o3d.core.Tensor(four[:, :3].copy())
    pc.point.intensity = o3d.core.Tensor(four[:, 3:4].copy())
    o3d.t.io.write_point_cloud(str(d / "frame.pcd"), pc)
    bare = o3d.t.geometry.PointCloud()
    bare.point.positions = o3d.core.Tensor(four[:, :3].copy())
    o3d.t.io.write_point_cloud(str(d / "bare.ply"), bare)
    tfrecord = sorted((root.parent / "raw" / "val").glob("*.tfrecord"))[0]
    torch.manual_seed(0)
    ckpt = d / "tiny.pth"
    torch.save({"state_dict": init_detector(TINY_CONFIG).state_dict()}, ckpt)
    return dict(dir=d, pts=pts, four=four, tfrecord=tfrecord, ckpt=ckpt, rec=rec)


def test_formats_are_detected_from_content(setup):
    d = setup["dir"]
    assert [detect_format(d / n) for n in ("frame5.bin", "frame4.bin", "frame.npy", "frame.pcd",
                                           "bare.ply")] == ["kitti-bin"] * 2 + ["npy", "pcd", "ply"]
    assert detect_format(setup["tfrecord"]) == "tfrecord"
    renamed = d / "segment_as.bin"                    # a TFRecord called .bin is still one
    renamed.write_bytes(setup["tfrecord"].read_bytes())
    assert detect_format(renamed) == "tfrecord"
    (five,) = read_point_frames(d / "frame5.bin")
    np.testing.assert_array_equal(five.points, setup["pts"][:, :5])
    (four,) = read_point_frames(d / "frame4.bin")
    np.testing.assert_array_equal(four.points, setup["four"])
    (pcd,) = read_point_frames(d / "frame.pcd")
    np.testing.assert_allclose(pcd.points, setup["four"], rtol=1e-6)
    with pytest.warns(UserWarning, match="bare.ply: no intensity field"):
        (ply,) = read_point_frames(d / "bare.ply")
    assert (ply.points[:, 3] == 0).all()
    # explicit column count; and a size both 16 and 20 divide is read as N x 4 with a warning
    (as5,) = read_point_frames(d / "frame5.bin", bin_columns=5)
    assert as5.points.shape[1] == 5
    (d / "both.bin").write_bytes(np.zeros(20, np.float32).tobytes())      # 80 bytes
    with pytest.warns(UserWarning, match="fit both N x 4 and N x 5"):
        (both,) = read_point_frames(d / "both.bin")
    assert both.points.shape == (5, 4)


def test_wrong_formats_name_the_file_and_the_formats_tried(setup, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a point cloud\n")             # 18 bytes: no format fits
    with pytest.raises(PointCloudFormatError,
                       match=r"notes.txt: not a point cloud in any supported format; tried "
                             r"tfrecord .*npy/pcd/ply .*parquet .*kitti-bin \(18 bytes"):
        detect_format(text)
    with pytest.raises(PointCloudFormatError, match="frame5.bin: format npy: cannot read"):
        list(read_point_frames(setup["dir"] / "frame5.bin", "npy"))
    with pytest.raises(PointCloudFormatError, match="format kitti-bin: the file is a tfrecord"):
        list(read_point_frames(setup["tfrecord"], "kitti-bin"))
    with pytest.raises(PointCloudFormatError, match="frame.npy: format tfrecord: the first record"):
        list(read_point_frames(setup["dir"] / "frame.npy", "tfrecord"))
    # Waymo v2 Parquet: SPLIT/lidar/CONTEXT.parquet read with its sibling components, the same
    # points as the v1 decoder gives for the same frames
    from detector.datasets.waymo import decode_frame
    from detector.testing.waymo_v2 import make_test_segment, write_v2_segment
    frames = make_test_segment(2, seed=3, scale=0.05, context_name="ctx_infer")
    paths = write_v2_segment(tmp_path / "v2", frames)
    got = list(read_point_frames(paths["lidar"]))
    assert detect_format(paths["lidar"]) == "parquet" and len(got) == 2
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g.points, decode_frame(f).points)
        assert g.context_name == "ctx_infer" and g.timestamp_micros == f.timestamp_micros


def test_infer_cli_every_format_same_detections(setup, tmp_path, capsys):
    from detector.evaluation.detections_io import read_detections
    from detector.evaluation.waymo import read_objects
    d, out = setup["dir"], tmp_path / "out"
    inputs = [d / "frame5.bin", d / "frame.npy", setup["tfrecord"], d / "frame4.bin",
              d / "frame.pcd"]
    rc = _infer()([str(TINY_CONFIG), str(setup["ckpt"]), *map(str, inputs), "--out-dir", str(out),
                   "--lidars", "1", "--returns", "1", "--score-thr", "0",
                   "--out-submission", str(out / "sub.bin")])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "frame4.bin: no elongation column" in printed.err      # the one-line warning
    frames, classes = read_detections(out / "detections.npz")
    js, _ = read_detections(out / "detections.json")
    assert classes == ["VEHICLE"] and [f["source"] for f in frames] == [
        "frame5.bin", "frame.npy", f"{setup['tfrecord'].name}:0", "frame4.bin", "frame.pcd"]
    assert len(frames[0]["scores"]) > 0, "the random tiny model made no detections"
    # the converted frame as .bin (5 columns), .npy (8) and the TFRecord it came from: same input
    for f in frames[1:3]:
        np.testing.assert_allclose(f["boxes"], frames[0]["boxes"], atol=1e-5)
        np.testing.assert_allclose(f["scores"], frames[0]["scores"], atol=1e-6)
    # 4 columns as .bin and as .pcd (with its intensity field): same input
    np.testing.assert_allclose(frames[4]["boxes"], frames[3]["boxes"], atol=1e-5)
    for a, b in zip(frames, js):
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-4)
    assert frames[2]["context_name"] == setup["rec"].context_name
    assert frames[2]["timestamp_micros"] == setup["rec"].timestamp_micros
    sub = read_objects(out / "sub.bin")
    assert len(sub) == sum(len(f["scores"]) for f in frames)
    assert set(sub.context_names.tolist()) == {"frame5", "frame", setup["rec"].context_name,
                                               "frame4"}
    doc = json.loads((out / "detections.json").read_text())
    assert doc["box_columns"] == ["cx", "cy", "cz", "length", "width", "height", "heading"]


def test_infer_cli_save_png_and_errors_exit_2(setup, tmp_path, capsys):
    main = _infer()
    assert main([str(TINY_CONFIG), str(setup["ckpt"]), str(setup["dir"] / "frame5.bin"),
                 "--save-png", "--out-dir", str(tmp_path / "png")]) == 0
    (png,) = (tmp_path / "png").glob("*.png")
    assert png.name == "frame5.bin_bev.png" and png.stat().st_size > 1000
    assert f"wrote {png}" in capsys.readouterr().out
    text = tmp_path / "notes.txt"
    text.write_text("not a point cloud\n")
    assert main([str(TINY_CONFIG), str(setup["ckpt"]), str(text)]) == 2
    assert "notes.txt: not a point cloud in any supported format" in capsys.readouterr().err
    assert main([str(TINY_CONFIG), str(setup["ckpt"]), str(setup["dir"] / "frame5.bin"),
                 "--format", "npy", "--out-dir", str(tmp_path)]) == 2
    assert "frame5.bin: format npy" in capsys.readouterr().err
    empty = tmp_path / "empty.pth"
    torch.save({"state_dict": {}}, empty)
    assert main([str(TINY_CONFIG), str(empty), str(setup["dir"] / "frame5.bin")]) == 2
    assert "state_dict is empty" in capsys.readouterr().err
