"""Conversion tool (tools/convert_waymo.py, detector/datasets/waymo/conversion.py) and the
converted-data readers (detector/datasets/converted.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from detector.datasets import converted
from detector.datasets.converted import load_gt_database, load_index, load_points, make_frame_id
from detector.datasets.waymo import decode_frame, write_tfrecord
from detector.datasets.waymo import conversion
from detector.datasets.waymo.conversion import convert
from detector.testing.waymo_frame import make_test_frame

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import convert_waymo  # noqa: E402


def _segments(folder: Path, n_seg=3, n_frames=4, scale=0.06, prefix="seg"):
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for s in range(n_seg):
        frames = [make_test_frame(100 * s + i, scale=scale, context_name=f"ctx{s}",
                                  timestamp_micros=10_000 + 100_000 * i, num_labels=10)
                  for i in range(n_frames)]
        for f in frames:   # some labels around real points so the GT database is not empty
            d = decode_frame(f, returns=(1,))
            for k in range(4):
                p = d.points[(k * 97) % len(d.points)]
                f.laser_labels[k].box.center_x, f.laser_labels[k].box.center_y = p[0], p[1]
                f.laser_labels[k].box.center_z = p[2]
        path = folder / f"{prefix}{s}.tfrecord"
        write_tfrecord(path, [f.SerializeToString() for f in frames])
        out[path] = frames
    return out


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def segs(tmp_path_factory):
    return _segments(tmp_path_factory.mktemp("in"))


@pytest.fixture(scope="module")
def reference_root(segs, tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    s = convert(list(segs), root, "train", progress=False, log=None)
    assert s.ok and s.frames == 12
    return root


def _points_in_boxes_reference(xyz, boxes):
    out = []
    for b in boxes.astype(np.float64):
        d = xyz.astype(np.float64) - b[:3]
        c, s = np.cos(b[6]), np.sin(b[6])
        lx, ly = d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c
        out.append(np.flatnonzero((np.abs(lx) <= b[3] / 2) & (np.abs(ly) <= b[4] / 2) &
                                  (np.abs(d[:, 2]) <= b[5] / 2)))
    return out


def test_converted_content(segs, reference_root):
    recs = load_index(reference_root, "train")
    assert [(r.segment, r.frame_index) for r in recs] == \
        [(f"seg{s}", i) for s in range(3) for i in range(4)]
    assert len({r.frame_id for r in recs}) == 12
    frames = [f for fs in segs.values() for f in fs]
    for r, f in zip(recs, frames):
        d = decode_frame(f)
        pts = load_points(r)
        assert isinstance(pts, np.memmap) and pts.dtype == np.float32
        np.testing.assert_array_equal(pts, d.points)
        np.testing.assert_array_equal(load_points(reference_root, r, split="train", mmap=False), d.points)
        assert r.num_points == len(d.points) and r.context_name == d.context_name
        assert r.timestamp_micros == d.timestamp_micros
        assert r.frame_id == make_frame_id(d.context_name, d.timestamp_micros)
        np.testing.assert_array_equal(r.pose, d.pose)
        np.testing.assert_array_equal(r.boxes, d.boxes)
        np.testing.assert_array_equal(r.types, d.types)
        np.testing.assert_array_equal(r.difficulty, d.difficulty)
        np.testing.assert_array_equal(r.num_points_in_box, d.num_points_in_box)
        assert r.ids == d.ids
        assert (r.boxes.dtype, r.types.dtype, r.difficulty.dtype, r.num_points_in_box.dtype) == \
            (np.float32, np.int8, np.int8, np.int32)


def test_gt_database(segs, reference_root):
    db = load_gt_database(reference_root, "train")
    recs = {(r.segment, r.frame_index): r for r in load_index(reference_root, "train")}
    assert len(db) >= 12
    seen = 0
    where = {(db.segment_of(i), int(db.frame_index[i]), db.ids[i]): i for i in range(len(db))}
    assert len(where) == len(db)
    for (seg, fi), r in recs.items():
        pts = np.array(load_points(r))
        ref = _points_in_boxes_reference(pts[:, :3], r.boxes)
        for b, idx in enumerate(ref):
            i = where.get((seg, fi, r.ids[b]))
            if len(idx) == 0:
                assert i is None
                continue
            seen += 1
            e = db.entry(i)
            assert e["type"] == r.types[b] and e["num_points"] == len(idx)
            np.testing.assert_array_equal(e["box"], r.boxes[b])
            got = db.points(i)
            assert isinstance(got.base, np.memmap) or isinstance(got, np.memmap)
            exp = pts[idx].copy()
            exp[:, :3] -= r.boxes[b, :3]
            np.testing.assert_array_equal(got, exp)
    assert seen == len(db)
    for t in (1, 2, 3, 4):
        idx = db.indices_of_type(t)
        assert np.all(db.types[idx] == t)
    assert len(db.indices_of_type("VEHICLE")) == int(np.sum(db.types == 1))


def test_options_sampling_returns_lidars_shard(segs, tmp_path):
    s = convert(list(segs), tmp_path, "val", sampled_interval=3, returns=[1], lidars=["TOP", "REAR"],
                shard=(1, 2), progress=False, log=None)
    assert s.ok and [x.segment for x in s.segments] == ["seg1"]
    recs = load_index(tmp_path, "val")
    assert [r.frame_index for r in recs] == [0, 3]
    for r in recs:
        p = load_points(r)
        assert set(np.unique(p[:, 5])) == {1.0} and set(np.unique(p[:, 6])) == {1.0, 5.0}
    # other options: the completed segment is not trusted, it is converted again
    s2 = convert(list(segs), tmp_path, "val", shard=(1, 2), progress=False, log=None)
    assert [x.status for x in s2.segments] == ["converted"]
    assert [r.frame_index for r in load_index(tmp_path, "val")] == [0, 1, 2, 3]
    s3 = convert(list(segs), tmp_path, "val", shard=(1, 2), progress=False, log=None)
    assert [x.status for x in s3.segments] == ["resumed"] and s3.frames == 4


def test_workers_give_identical_output(segs, reference_root, tmp_path):
    s = convert(list(segs)[:2], tmp_path, "train", workers=2, progress=False, log=None)
    assert s.ok and s.frames == 8
    ref = {k: v for k, v in _tree(reference_root).items() if "seg2" not in k}
    assert _tree(tmp_path) == ref


def test_resume_after_interruptions_is_byte_identical(segs, reference_root, tmp_path, monkeypatch):
    # 1. Ctrl-C in the middle of the second segment
    calls = {"n": 0}
    real_save = conversion._save_npy

    def interrupting_save(path, arr):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real_save(path, arr)

    monkeypatch.setattr(conversion, "_save_npy", interrupting_save)
    with pytest.raises(KeyboardInterrupt):
        convert(list(segs), tmp_path, "train", progress=False, log=None)
    monkeypatch.undo()
    assert [r.segment for r in load_index(tmp_path, "train")] == ["seg0"] * 4
    # 2. killed between the rename of seg1 and its manifest entry; a stale temp dir of seg2
    real_json = conversion._write_json_atomic

    def dying_json(path, obj):
        raise KeyboardInterrupt

    monkeypatch.setattr(conversion, "_write_json_atomic", dying_json)
    with pytest.raises(KeyboardInterrupt):
        convert(list(segs)[1:2], tmp_path, "train", progress=False, log=None)
    monkeypatch.setattr(conversion, "_write_json_atomic", real_json)
    assert (tmp_path / "train/segments/seg1").is_dir()
    assert [r.segment for r in load_index(tmp_path, "train")] == ["seg0"] * 4   # not trusted
    stale = tmp_path / "train/.tmp/seg2.deadbeef/points"
    stale.mkdir(parents=True)
    (stale / "000000.npy").write_bytes(b"half")
    # 3. rerun: seg0 resumed, seg1 and seg2 converted, same bytes as one uninterrupted run
    s = convert(list(segs), tmp_path, "train", progress=False, log=None)
    assert [x.status for x in s.segments] == ["resumed", "converted", "converted"] and s.ok
    assert _tree(tmp_path) == _tree(reference_root)


@pytest.fixture(scope="module")
def big_segments(tmp_path_factory):
    """Two 30-frame segments and their uninterrupted conversion."""
    tmp = tmp_path_factory.mktemp("big")
    big = _segments(tmp / "in", n_seg=2, n_frames=30, scale=0.08, prefix="big")
    clean = tmp / "clean"
    convert(list(big), clean, "train", progress=False, log=None)
    return list(big), _tree(clean)


@pytest.mark.parametrize("sig,workers", [(signal.SIGKILL, 1), (signal.SIGINT, 2)])
def test_killed_run_then_resume(tmp_path, big_segments, sig, workers):
    """kill -9 (one process) or Ctrl-C (SIGINT to the process group, two workers) while a segment
    is being written; the rerun must give the bytes of an uninterrupted run."""
    big, clean_tree = big_segments
    out = tmp_path / "out"
    args = [*map(str, big), "--out", str(out), "--split", "train", "--no-progress",
            "--workers", str(workers)]
    # A job started in the background of a non-interactive shell (CI runners, `cmd &`) inherits
    # SIGINT as ignored, and Python then never raises KeyboardInterrupt: give the child the
    # terminal's default disposition, as a real Ctrl-C would meet.
    proc = subprocess.Popen([sys.executable, str(REPO / "tools/convert_waymo.py"), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    interrupted = False
    while time.time() - t0 < 120 and proc.poll() is None:
        if list((out / "train/.tmp").glob("big1.*/points/*.npy")):
            os.killpg(proc.pid, sig)
            interrupted = True
            break
        time.sleep(0.005)
    rc = proc.wait(timeout=60)
    assert interrupted, "the conversion finished before it could be interrupted"
    assert rc != 0
    done = load_index(out, "train")
    assert {r.segment for r in done} <= {"big0"} and len(done) in (0, 30)
    assert convert_waymo.main(args) == 0
    assert _tree(out) == clean_tree and len(load_index(out, "train")) == 60


def test_corrupt_segments_are_reported_and_others_survive(segs, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in segs:
        (folder / p.name).write_bytes(p.read_bytes())
    # seg1: flip a data byte of record 2; seg2: cut the file inside its last record
    sizes = [len(f.SerializeToString()) for f in segs[next(p for p in segs if p.name == "seg1.tfrecord")]]
    off = int(np.cumsum([0] + [16 + n for n in sizes])[2])
    b = bytearray((folder / "seg1.tfrecord").read_bytes())
    b[off + 12 + 100] ^= 1
    (folder / "seg1.tfrecord").write_bytes(bytes(b))
    raw2 = (folder / "seg2.tfrecord").read_bytes()
    (folder / "seg2.tfrecord").write_bytes(raw2[:-10])
    off2 = len(raw2) - (16 + len(segs[next(p for p in segs if p.name == "seg2.tfrecord")][3].SerializeToString()))
    out = tmp_path / "out"
    rc = convert_waymo.main([str(folder), "--out", str(out), "--split", "train", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 1
    assert f"SKIPPED {folder / 'seg1.tfrecord'}: record 2 at byte offset {off}: data CRC mismatch" in text
    assert f"SKIPPED {folder / 'seg2.tfrecord'}: record 3 at byte offset {off2}: truncated" in text
    assert "2 corrupt record(s) skipped" in text
    recs = load_index(out, "train")
    assert [(r.segment, r.frame_index) for r in recs] == \
        [("seg0", i) for i in range(4)] + [("seg1", 0), ("seg1", 1), ("seg1", 3)] + \
        [("seg2", i) for i in range(3)]
    # a rerun trusts the completed segments but still reports the known corrupt records
    rc = convert_waymo.main([str(folder), "--out", str(out), "--split", "train", "--no-progress"])
    assert rc == 1 and "resumed" in capsys.readouterr().out
    # bad usage
    assert convert_waymo.main([str(tmp_path / "nope"), "--out", str(out), "--split", "x"]) == 2


def test_manifest_checksums_and_verify(segs, reference_root, tmp_path):
    import hashlib
    import shutil
    root = tmp_path / "r"
    shutil.copytree(reference_root, root)
    entries = converted.completed_segments(root, "train")
    for seg, e in entries.items():
        d = root / "train/segments" / seg
        assert sorted(e["files"]) == sorted(p.relative_to(d).as_posix() for p in d.rglob("*")
                                            if p.is_file())
        for rel, h in e["files"].items():
            assert hashlib.sha256((d / rel).read_bytes()).hexdigest() == h
        assert e["num_frames"] == 4 and e["options"]["returns"] == [1, 2]
    victim = root / "train/segments/seg1/points/000002.npy"
    b = bytearray(victim.read_bytes())
    b[-1] ^= 1
    victim.write_bytes(bytes(b))
    assert not conversion.verify_segment(root, "train", entries["seg1"])
    s = convert(list(segs), root, "train", verify=True, progress=False, log=None)
    assert [x.status for x in s.segments] == ["resumed", "converted", "resumed"]
    assert _tree(root) == _tree(reference_root)


def test_real_segment_file(real_frame_path, tmp_path):
    s = convert([real_frame_path], tmp_path, "val", progress=False, log=None)
    assert s.ok and s.frames == 1
    (r,) = load_index(tmp_path, "val")
    assert r.segment == "pvps_data_one_frame" and r.context_name == "1024360143612057520_3580_000_3600_000"
    assert r.num_boxes == 75 and r.num_points == 0 and load_points(r).shape == (0, 8)
    assert len(load_gt_database(tmp_path, "val")) == 0   # the file has no range images


def test_index_never_unpickles(reference_root, tmp_path):
    with pytest.raises(TypeError, match="object"):
        converted.save_npz(tmp_path / "x.npz", {"a": np.array([{"x": 1}], dtype=object)})
    root = tmp_path / "r"
    import shutil
    shutil.copytree(reference_root, root)
    f = root / "train/segments/seg0/frames.npz"
    z = dict(np.load(f))
    z["ids"] = np.array(list(z["ids"]), dtype=object)   # an object array needs pickle to load
    np.savez(f, **z)
    with pytest.raises(ValueError, match="frames.npz"):
        load_index(root, "train")


# ---------------------------------------------------------------------------------------------
# v2 (Parquet) input, bad input, options, corrupt converted data, orphaned workers
def _v1_v2_segments(tmp: Path, n_seg=2, n_frames=3):
    from detector.testing.waymo_v2 import make_test_segment, write_v2_segment
    v1, v2 = tmp / "v1", tmp / "v2"
    v1.mkdir(parents=True)
    for s in range(n_seg):
        frames = make_test_segment(n_frames, seed=10 * s, scale=0.06, context_name=f"ctx{s}",
                                   num_labels=8)
        for f in frames:   # labels around real points so the GT database is not empty
            d = decode_frame(f, returns=(1,))
            for k in range(3):
                p = d.points[(k * 89) % len(d.points)]
                b = f.laser_labels[k].box
                b.center_x, b.center_y, b.center_z = float(p[0]), float(p[1]), float(p[2])
        write_tfrecord(v1 / f"ctx{s}.tfrecord", [f.SerializeToString() for f in frames])
        write_v2_segment(v2, frames, row_group_size=4)
    return v1, v2


def _segment_tree(root: Path, split: str) -> dict:
    """Converted bytes of a split, with the manifest entries minus their ``source``."""
    import json
    tree = {k: v for k, v in _tree(root / split / "segments").items()}
    for p in sorted((root / split / "manifest").glob("*.json")):
        e = json.loads(p.read_text())
        e.pop("source")
        tree[f"manifest/{p.name}"] = e
    return tree


def test_v1_and_v2_inputs_convert_to_identical_bytes(tmp_path):
    v1, v2 = _v1_v2_segments(tmp_path / "in")
    a, b = tmp_path / "a", tmp_path / "b"
    sa = convert([v1], a, "train", progress=False, log=None)
    assert convert_waymo.main([str(v2), "--out", str(b), "--split", "train", "--no-progress",
                               "--workers", "2"]) == 0          # v2 detected from the layout
    assert sa.ok and sa.frames == 6
    assert _segment_tree(a, "train") == _segment_tree(b, "train")
    assert len(load_gt_database(b, "train")) > 0
    for src in (converted.read_root_manifest(a), converted.read_root_manifest(b)):
        assert src["splits"]["train"]["options"] == {
            "returns": [1, 2], "lidars": ["TOP", "FRONT", "SIDE_LEFT", "SIDE_RIGHT", "REAR"],
            "sampled_interval": 1}
    assert converted.read_root_manifest(b)["splits"]["train"]["input_format"] == "v2"
    # options, shard, resume on v2; one component file as input; --format mismatch
    c = tmp_path / "c"
    s = convert([v2], c, "val", sampled_interval=2, returns=[1], lidars=["TOP"], shard=(1, 2),
                progress=False, log=None)
    s1 = convert([v1], tmp_path / "c1", "val", sampled_interval=2, returns=[1], lidars=["TOP"],
                 shard=(1, 2), progress=False, log=None)
    assert [x.segment for x in s.segments] == ["ctx1"] and s.frames == 2
    assert _segment_tree(c, "val") == _segment_tree(tmp_path / "c1", "val") and s1.ok
    again = convert([v2 / "lidar" / "ctx1.parquet"], c, "val", sampled_interval=2, returns=[1],
                    lidars=["TOP"], progress=False, log=None)
    assert [x.status for x in again.segments] == ["resumed"]
    with pytest.raises(ValueError, match="looks like Waymo v2.*--format v1"):
        convert([v2], c, "val", format="v1", progress=False, log=None)
    with pytest.raises(ValueError, match="mix Waymo v1"):
        convert([v1, v2], c, "val", progress=False, log=None)


def test_bad_v2_segment_is_reported_and_the_others_converted(tmp_path, capsys):
    _, v2 = _v1_v2_segments(tmp_path / "in", n_seg=3, n_frames=2)
    (v2 / "lidar_calibration" / "ctx1.parquet").write_bytes(b"PAR1 not really")
    (v2 / "vehicle_pose" / "ctx2.parquet").unlink()
    out = tmp_path / "out"
    rc = convert_waymo.main([str(v2), "--out", str(out), "--split", "train", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 1
    assert f"lidar_calibration/ctx1.parquet: not a readable Parquet file" in text
    assert f"vehicle_pose/ctx2.parquet: missing component file" in text
    assert "2 segment(s) failed" in text
    assert {r.segment for r in load_index(out, "train")} == {"ctx0"}


def test_empty_inputs_are_errors(tmp_path, capsys):
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    out = tmp_path / "out"
    assert convert_waymo.main([str(empty_dir), "--out", str(out), "--split", "train",
                               "--no-progress"]) == 2
    assert f"input folder {empty_dir} is empty" in capsys.readouterr().err
    (tmp_path / "zero.tfrecord").write_bytes(b"")
    write_tfrecord(tmp_path / "one.tfrecord", [make_test_frame(0, scale=0.05).SerializeToString()])
    rc = convert_waymo.main([str(tmp_path / "zero.tfrecord"), str(tmp_path / "one.tfrecord"),
                             "--out", str(out), "--split", "train", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 1 and "zero.tfrecord: no frames (empty segment)" in text
    assert [r.segment for r in load_index(out, "train")] == ["one"]


def test_progress_bar_has_a_total(segs, tmp_path, capsys):
    convert(list(segs), tmp_path, "train", sampled_interval=3, progress=True, log=None)
    err = capsys.readouterr().err
    assert "6/6" in err and "frame/s" in err and "3 segment(s)" in err


def test_training_start_checks_conversion_options(segs, tmp_path, capsys):
    from mmengine.config import Config

    from detector.datasets.dataset import check_training_data
    root = tmp_path / "root"
    convert(list(segs)[:2], root, "train", progress=False, log=None)
    convert(list(segs)[2:], root, "val", returns=[1], progress=False, log=None)

    def cfg(db_split="train"):
        return Config(dict(
            train_dataloader=dict(dataset=dict(type="WaymoDetDataset", data_root=str(root),
                                               split="train", pipeline=[dict(
                                                   type="ObjectSample", db=dict(
                                                       data_root=str(root), split=db_split))])),
            val_dataloader=dict(dataset=dict(type="WaymoDetDataset", data_root=str(root),
                                             split="train")),
        ))
    assert check_training_data(cfg())["returns"] == [1, 2]
    with pytest.raises(converted.ConvertedDataError,
                       match=r"GT database \(.*/val\) was converted with .*'returns': \[1\].* but "
                             r"train split \(.*/train\) with .*'returns': \[1, 2\]"):
        check_training_data(cfg("val"))
    # the same through tools/train.py, before any model is built
    import train
    conf = tmp_path / "c.py"
    conf.write_text(f"""_base_ = ['{REPO}/configs/demo/centerpoint_graddrop_tiny.py']
train_dataloader = dict(dataset=dict(data_root='{root}', split='train'))
val_dataloader = dict(dataset=dict(data_root='{root}', split='val'))
""")
    assert train.main([str(conf), "--work-dir", str(tmp_path / "w")]) == 2
    assert "was converted with" in capsys.readouterr().err


def test_corrupt_converted_arrays_are_named(reference_root, tmp_path):
    import shutil

    from detector.datasets.dataset import WaymoDetDataset
    root = tmp_path / "r"
    shutil.copytree(reference_root, root)
    # truncated per-frame file: named with its frame when the dataset opens and when loaded
    victim = root / "train/segments/seg1/points/000002.npy"
    raw = victim.read_bytes()
    victim.write_bytes(raw[:-64])
    with pytest.raises(converted.ConvertedDataError,
                       match=r"seg1/points/000002\.npy \(segment seg1, frame 2, .*truncated"):
        WaymoDetDataset(str(root), "train")
    rec = next(r for r in load_index(root, "train") if (r.segment, r.frame_index) == ("seg1", 2))
    with pytest.raises(converted.ConvertedDataError, match=r"000002\.npy \(segment seg1, frame 2"):
        load_points(rec)
    # an overwritten header ("pickled data" from numpy)
    victim.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, "
                       b"'shape': (3,), }" + b" " * 60 + b"\n" + raw[128:])
    with pytest.raises(converted.ConvertedDataError, match=r"000002\.npy .*segment seg1"):
        load_points(rec)
    with pytest.raises(converted.ConvertedDataError, match=r"000002\.npy \(segment seg1, frame 2"):
        converted.check_split_files(root, "train")
    victim.write_bytes(raw)
    assert len(WaymoDetDataset(str(root), "train")) == 12
    # a truncated GT database: named when it opens, not when sampling first reaches it
    gt = root / "train/segments/seg0/gt_points.npy"
    gt.write_bytes(gt.read_bytes()[:-32])
    with pytest.raises(converted.ConvertedDataError, match=r"seg0/gt_points\.npy \(GT database "
                                                           r"of segment seg0\)"):
        load_gt_database(root, "train")
    # --verify: the checksums find a flipped byte the size checks cannot
    shutil.copy(reference_root / "train/segments/seg0/gt_points.npy", gt)
    b = bytearray(victim.read_bytes())
    b[-1] ^= 1
    victim.write_bytes(bytes(b))
    converted.check_split_files(root, "train")
    with pytest.raises(converted.ConvertedDataError, match=r"seg1/points/000002\.npy: sha256"):
        converted.verify_split(root, "train")


def test_workers_die_with_a_killed_parent(tmp_path, big_segments):
    """SIGKILL the converter (two workers): its workers must exit too, not block forever."""
    big, _ = big_segments
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(REPO / "tools/convert_waymo.py"), *map(str, big),
                             "--out", str(out), "--split", "train", "--no-progress",
                             "--workers", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.time()
    kids: list[int] = []
    while time.time() - t0 < 120 and proc.poll() is None:
        try:
            kids = [int(x) for x in Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                    .read_text().split()]
        except OSError:
            kids = []
        if len(kids) >= 2 and list((out / "train/.tmp").glob("*/points/*.npy")):
            break
        time.sleep(0.01)
    assert len(kids) >= 2, "the workers never started"
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.time() + 20
    alive = kids
    while alive and time.time() < deadline:
        alive = [k for k in alive if Path(f"/proc/{k}").exists() and
                 Path(f"/proc/{k}/stat").read_text().split()[2] != "Z"]
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their SIGKILLed parent"
