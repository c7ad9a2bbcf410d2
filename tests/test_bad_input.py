"""Bad input that used to become a crash or a silently wrong number (docs/robustness.md lists
every probe): misspelled ``--cfg-options``, a broken last checkpoint under ``--resume``, invalid
prediction files in ``tools/waymo_eval.py``, an unwritable ``--out-submission``, file modes."""
from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from oracle import oracle_available, run_oracle
from test_train_support import TINY_CONFIG, clear_scope, load_tool, tiny_data_root

from detector.engine.resume import CheckpointError, checkpoint_problem, resolve_resume
from detector.engine.runner import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "waymo"






@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_data_root(tmp_path_factory)


# --- --cfg-options ------------------------------------------------------------------------------

def test_misspelled_top_level_key_fails_naming_the_closest(root):
    with pytest.raises(ConfigError) as e:
        load_config(str(TINY_CONFIG), {"optim_wraper.optimizer.lr": 1e-4}, str(root))
    msg = str(e.value)
    assert "'optim_wraper'" in msg and "did you mean 'optim_wrapper'" in msg and "'+'" in msg


def test_misspelled_constructor_argument_fails_naming_the_class(root):
    with pytest.raises(ConfigError) as e:
        load_config(str(TINY_CONFIG), {"model.backbone_3d.residul": True}, str(root))
    msg = str(e.value)
    assert "'SparseEncoder' takes no argument 'residul'" in msg
    assert "model.backbone_3d.residual" in msg


def test_existing_keys_constructor_arguments_and_plus_keys_are_accepted(root):
    cfg = load_config(str(TINY_CONFIG), {
        "optim_wrapper.optimizer.lr": 1e-4,              # exists
        "model.head.focal_alpha": 3.0,                   # CenterHead argument left at its default
        "train_dataloader.dataset.pipeline.0.type": "ObjectRangeFilter",  # list index
        "+my_experiment.tag": "x",                       # marked new
    }, str(root))
    assert cfg.optim_wrapper.optimizer.lr == 1e-4
    assert cfg.model.head.focal_alpha == 3.0
    assert cfg.my_experiment.tag == "x"
    with pytest.raises(ConfigError, match="list of .* entries; '99'"):
        load_config(str(TINY_CONFIG), {"train_dataloader.dataset.pipeline.99.type": "X"}, str(root))


def test_train_cli_rejects_misspelled_key_before_training(root, tmp_path, capsys):
    rc = load_tool("train").main([str(TINY_CONFIG), "--work-dir", str(tmp_path), "--data-root",
                              str(root), "--cfg-options", "train_cfg.max_epoch=3"])
    clear_scope()
    assert rc == 2
    err = capsys.readouterr().err
    assert "'max_epoch'" in err and "train_cfg.max_epochs" in err
    assert not list(tmp_path.glob("*.pth"))


# --- --resume with a broken last checkpoint ---------------------------------------------------------

def _save(path: Path, value: float) -> Path:
    torch.save({"state_dict": {"w": torch.full((64, 64), value)}, "meta": {"epoch": 1}}, path)
    return path


def test_checkpoint_problem_names_each_kind_of_damage(tmp_path):
    good = _save(tmp_path / "epoch_1.pth", 1.0)
    assert checkpoint_problem(good) is None
    data = good.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    flipped = bytearray(data)
    i = data.index(np.float32(1.0).tobytes() * 4)  # inside the tensor's data member
    flipped[i] ^= 0xFF
    (tmp_path / "flip.pth").write_bytes(bytes(flipped))
    assert "truncated" in checkpoint_problem(tmp_path / "trunc.pth")
    assert "empty" in checkpoint_problem(tmp_path / "empty.pth")
    assert "not a torch checkpoint" in checkpoint_problem(tmp_path / "text.pth")
    assert "CRC" in checkpoint_problem(tmp_path / "flip.pth")
    assert "cannot read" in checkpoint_problem(tmp_path / "missing.pth")


def test_auto_resume_skips_a_broken_newest_checkpoint_with_a_warning(tmp_path):
    _save(tmp_path / "epoch_1.pth", 1.0)
    _save(tmp_path / "epoch_2.pth", 2.0)
    data = (tmp_path / "epoch_2.pth").read_bytes()
    _save(tmp_path / "epoch_3.pth", 3.0).write_bytes(data[:100])
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "epoch_3.pth"))
    with pytest.warns(UserWarning, match=r"epoch_3.pth \(it is truncated.*resuming from .*epoch_2.pth"):
        assert resolve_resume(tmp_path, "auto") == tmp_path / "epoch_2.pth"
    # explicitly named: no fallback, the intact ones are listed
    with pytest.raises(CheckpointError) as e:
        resolve_resume(tmp_path, str(tmp_path / "epoch_3.pth"))
    assert "epoch_3.pth: it is truncated" in str(e.value)
    assert "epoch_1.pth" in str(e.value) and "epoch_2.pth" in str(e.value)
    # nothing intact at all
    for p in tmp_path.glob("*.pth"):
        p.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        resolve_resume(tmp_path, True)
    # nothing there: start from scratch, as mmengine does
    assert resolve_resume(tmp_path / "new", True) is None


def test_last_checkpoint_of_a_copied_work_dir_resolves_inside_it(tmp_path):
    _save(tmp_path / "epoch_1.pth", 1.0)
    (tmp_path / "last_checkpoint").write_text("/elsewhere/old_run/epoch_1.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_resume(tmp_path, True) == tmp_path / "epoch_1.pth"


@pytest.mark.slow
def test_train_resume_continues_from_the_newest_intact_checkpoint(root, tmp_path, capsys):
    work = tmp_path / "run"
    rc = load_tool("train").main([str(TINY_CONFIG), "--work-dir", str(work), "--data-root", str(root),
                              "--cfg-options", "train_cfg.max_epochs=1", "train_cfg.val_interval=100"])
    clear_scope()
    assert rc == 0
    good = (work / "epoch_1.pth").read_bytes()
    (work / "epoch_2.pth").write_bytes(good[: len(good) // 3])  # a save killed half-way
    (work / "last_checkpoint").write_text(str(work / "epoch_2.pth"))
    with pytest.warns(UserWarning, match="skipping broken checkpoint"):
        rc = load_tool("train").main([str(TINY_CONFIG), "--work-dir", str(work), "--data-root",
                                  str(root), "--resume", "--cfg-options", "train_cfg.max_epochs=2",
                                  "train_cfg.val_interval=100"])
    clear_scope()
    assert rc == 0
    assert checkpoint_problem(work / "epoch_2.pth") is None  # trained again and saved whole
    meta = torch.load(work / "epoch_2.pth", map_location="cpu", weights_only=False)["meta"]
    assert meta["epoch"] == 2
    # named explicitly and broken: rc 2 and the intact ones listed, no traceback
    (work / "epoch_2.pth").write_bytes(good[:1000])
    rc = load_tool("train").main([str(TINY_CONFIG), "--work-dir", str(work), "--data-root", str(root),
                              "--resume", str(work / "epoch_2.pth")])
    clear_scope()
    assert rc == 2
    err = capsys.readouterr().err
    assert "epoch_2.pth: it is truncated" in err and "epoch_1.pth" in err


# --- tools/waymo_eval.py on invalid prediction files ------------------------------------------------

GT_BOXES = np.array([[10, 0, 0, 4.5, 2, 1.6, 0.1], [20, 5, 0, 4.5, 2, 1.6, 1.0],
                     [-15, 3, 0, 4, 1.9, 1.5, -2]], np.float32)


def _gt_file(tmp_path) -> Path:
    from waymo_open_dataset.protos import metrics_pb2
    objs = metrics_pb2.Objects()
    for b in GT_BOXES:
        o = objs.objects.add()
        o.context_name, o.frame_timestamp_micros = "seg", 1
        box = o.object.box
        box.center_x, box.center_y, box.center_z, box.length, box.width, box.height, box.heading = \
            b.tolist()
        o.object.type = 1
        o.object.num_lidar_points_in_box = 100
        o.object.detection_difficulty_level = 1
    path = tmp_path / "gt.bin"
    path.write_bytes(objs.SerializeToString())
    return path


def _pred_file(tmp_path, boxes, scores, name="pred.bin") -> Path:
    from detector.evaluation.waymo.objects_io import write_objects
    path = tmp_path / name
    write_objects(path, "seg", 1, boxes, np.ones(len(boxes), np.int64), scores)
    return path


def _eval(capsys, *args):
    rc = load_tool("waymo_eval").main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_waymo_eval_warns_on_what_the_official_metric_accepts(tmp_path, capsys):
    gt = _gt_file(tmp_path)
    boxes = GT_BOXES.copy()
    boxes[0, 3] = -4.5
    boxes = np.concatenate([boxes, boxes[1:2]])
    pred = _pred_file(tmp_path, boxes, [0.9, 1.5, -0.2, 1.5])
    rc, out, err = _eval(capsys, pred, gt)
    assert rc == 0 and "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1" in out
    assert "1 box(es) with a size <= 0.01 m (first: object 0" in err
    assert "3 score(s) outside [0, 1] (first: object 1" in err
    assert "1 duplicated box(es) (same frame, type and box; first: object 1)" in err
    rc, out, err = _eval(capsys, pred, gt, "--strict")
    assert rc == 2 and "error: " in err and not out


def test_waymo_eval_rejects_nan_scores_unknown_types_and_empty_files(tmp_path, capsys):
    from waymo_open_dataset.protos import metrics_pb2
    gt = _gt_file(tmp_path)
    good = _pred_file(tmp_path, GT_BOXES, [0.9, 0.8, 0.7])
    objs = metrics_pb2.Objects.FromString(good.read_bytes())
    objs.objects[1].score = float("nan")
    (tmp_path / "nan.bin").write_bytes(objs.SerializeToString())
    rc, _, err = _eval(capsys, tmp_path / "nan.bin", gt)
    assert rc == 2 and "object 1 has a non-finite score (nan)" in err and "Traceback" not in err

    # type 7: the parser moves the unknown enum value out of the field; it must not read as UNKNOWN
    objs = metrics_pb2.Objects.FromString(good.read_bytes())
    data = bytearray(objs.objects[2].SerializeToString())
    raw = bytearray(good.read_bytes())
    i = raw.index(bytes(data))
    j = i + bytes(data).index(b"\x18\x01")  # Label.type = VEHICLE inside that object
    raw[j + 1] = 7
    (tmp_path / "type7.bin").write_bytes(bytes(raw))
    rc, _, err = _eval(capsys, tmp_path / "type7.bin", gt)
    assert rc == 2 and "object 2 has object.type = 7, a value unknown to Label.Type" in err

    (tmp_path / "empty.bin").write_bytes(b"")
    rc, _, err = _eval(capsys, tmp_path / "empty.bin", gt)
    assert rc == 2 and "no predictions" in err and "--allow-empty" in err
    rc, out, _ = _eval(capsys, tmp_path / "empty.bin", gt, "--allow-empty")
    assert rc == 0 and "0.0000" in out
    rc, _, err = _eval(capsys, good, tmp_path / "empty.bin")
    assert rc == 2 and "no ground-truth objects" in err


@pytest.mark.oracle
@pytest.mark.skipif(not oracle_available(), reason="needs the official Waymo package venv "
                    "(.venv-waymo-official, `make oracle-env`)")
def test_accepted_invalid_predictions_score_as_the_official_op_scores_them():
    from detector.evaluation.waymo.metrics import compute_detection_metrics
    base = GT_BOXES.copy()
    base[:, 0] += 0.1
    neg = base.copy()
    neg[0, 3] = -4.5
    zero = base.copy()
    zero[1, 4] = 0.0
    cases = [(neg, [0.9, 0.8, 0.7]), (zero, [0.9, 0.8, 0.7]), (base, [1.5, 0.8, 0.7]),
             (base, [0.9, -0.2, 0.7]), (np.concatenate([base, base[:1]]), [0.9, 0.8, 0.7, 0.9])]
    inp = {"n_datasets": len(cases)}
    for k, (pb, ps) in enumerate(cases):
        n = len(pb)
        inp.update({f"{k}/pred_boxes": pb.astype(np.float32), f"{k}/pred_types": np.ones(n, np.uint8),
                    f"{k}/pred_scores": np.asarray(ps, np.float32),
                    f"{k}/pred_frame_ids": np.zeros(n, np.int64),
                    f"{k}/pred_overlap_nlz": np.zeros(n, bool), f"{k}/gt_boxes": GT_BOXES,
                    f"{k}/gt_types": np.ones(3, np.uint8), f"{k}/gt_frame_ids": np.zeros(3, np.int64),
                    f"{k}/gt_difficulty": np.ones(3, np.uint8)})
    off = run_oracle("oracle_scripts/metrics.py", inp)
    for k, (pb, ps) in enumerate(cases):
        n = len(pb)
        ours = compute_detection_metrics(pb, np.ones(n, np.uint8), np.asarray(ps, np.float32),
                                         np.zeros(n, np.int64), GT_BOXES, np.ones(3, np.uint8),
                                         np.zeros(3, np.int64), np.ones(3, np.uint8))
        names = [str(s) for s in off[f"{k}/names"]]
        compared = 0
        for i, name in enumerate(names):
            if name in ours:
                assert abs(ours[name]["AP"] - float(off[f"{k}/ap"][i])) < 1e-6, (k, name)
                assert abs(ours[name]["APH"] - float(off[f"{k}/aph"][i])) < 1e-6, (k, name)
                compared += 1
        assert compared >= 2 and "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1" in names


def test_official_sample_predictions_warn_about_their_duplicates(capsys):
    rc, out, err = _eval(capsys, SHARED / "fake_predictions.bin", SHARED / "fake_ground_truths.bin")
    assert rc == 0 and "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1" in out
    assert "1353 duplicated box(es)" in err


# --- outputs --------------------------------------------------------------------------------------

def test_unwritable_out_submission_fails_before_the_test_run(root, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    ckpt = tmp_path / "any.pth"
    ckpt.write_bytes(b"never loaded")
    rc = load_tool("test").main([str(TINY_CONFIG), str(ckpt), "--work-dir", str(tmp_path / "w"),
                             "--data-root", str(root), "--out-submission", str(blocker / "val.bin")])
    clear_scope()
    assert rc == 2
    err = capsys.readouterr().err
    assert f"--out-submission {blocker / 'val.bin'}: cannot create its folder" in err


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_outputs_respect_the_umask(tmp_path, umask):
    from detector.datasets.waymo import write_tfrecord
    from detector.evaluation.waymo.objects_io import write_objects
    from detector.fileio import atomic_write_bytes
    from detector.visualization.bev import plot_bev
    from detector.visualization.render import write_png
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "x.bin", b"abc")
        write_objects(tmp_path / "sub.bin", "seg", 1, GT_BOXES, [1, 1, 1], [0.5, 0.5, 0.5])
        write_tfrecord(tmp_path / "rec.tfrecord", [b"record"])
        plot_bev(np.zeros((10, 5), np.float32), GT_BOXES, GT_BOXES, np.ones(3), tmp_path / "bev.png")
        write_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "pic.png")
    finally:
        os.umask(old)
    for name in ("x.bin", "sub.bin", "rec.tfrecord", "bev.png", "pic.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert (tmp_path / "x.bin").read_bytes() == b"abc"
    assert not list(tmp_path.glob(".*.tmp"))


# --- kill -9 during training, then --resume --------------------------------------------------------

@pytest.mark.slow
def test_sigkill_mid_training_then_resume_gives_bit_identical_weights(root, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), str(TINY_CONFIG), "--data-root",
           str(root), "--cfg-options", "train_cfg.max_epochs=2", "train_cfg.val_interval=100"]
    subprocess.run(cmd + ["--work-dir", str(tmp_path / "full")], check=True, env=env, cwd=REPO,
                   capture_output=True)
    work = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--work-dir", str(work)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    # mmengine writes last_checkpoint once epoch_1.pth is complete
    while not (work / "last_checkpoint").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (work / "epoch_2.pth").exists()
    subprocess.run(cmd + ["--work-dir", str(work), "--resume"], check=True, env=env, cwd=REPO,
                   capture_output=True)
    a = torch.load(tmp_path / "full" / "epoch_2.pth", map_location="cpu", weights_only=False)
    b = torch.load(work / "epoch_2.pth", map_location="cpu", weights_only=False)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
