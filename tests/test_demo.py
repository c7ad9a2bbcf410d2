"""``make demo``'s library (detector/engine/demo.py) on tiny data: trains, evaluates, writes
metrics.json with the official breakdown names and pictures, and a second run reuses the data
and the trained checkpoint instead of redoing them."""
from __future__ import annotations

import json
import shutil

from test_train_support import TINY_CONFIG, tiny_data_root

from detector.engine.demo import DemoSettings, run_demo


def _clear_scope():
    from mmengine.registry import DefaultScope
    DefaultScope._instance_dict.clear()


def test_demo_runs_and_reuses_its_outputs(tmp_path_factory, tmp_path, capsys):
    converted = tiny_data_root(tmp_path_factory)
    work = tmp_path / "demo"
    shutil.copytree(converted.parent, work / "data")  # raw/<split>/*.tfrecord + converted/
    s = DemoSettings(work_dir=work, config=TINY_CONFIG, train_segments=1, val_segments=1,
                     frames_per_segment=2, num_vis=1, workers=1,
                     cfg_options={"train_cfg.max_epochs": 1, "train_cfg.val_interval": 1})
    metrics = run_demo(settings=s)
    _clear_scope()
    out = capsys.readouterr().out
    assert "reusing synthetic train segments" in out and "reusing converted val data" in out
    on_disk = json.loads((work / "metrics.json").read_text())
    assert on_disk == metrics
    assert "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1" in on_disk and "RANGE_TYPE_VEHICLE_[0, 30)_LEVEL_2" in on_disk
    assert all(set(v) == {"AP", "APH"} for k, v in on_disk.items() if k != "eval_range")
    assert on_disk["eval_range"]["point_cloud_range"] is not None  # the tiny config's +-25.6 m
    pictures = list((work / "vis").glob("*.png"))
    assert pictures and all(p.stat().st_size > 1000 for p in pictures)
    ckpt = work / "train" / "epoch_1.pth"
    mtime = ckpt.stat().st_mtime_ns
    assert str(ckpt) in out and str(work / "metrics.json") in out
    # evaluated once, by the demo's test step: the training run's own validation loop is off
    # even though the config asks for it after every epoch
    train_logs = list((work / "train").glob("*/*.log"))
    assert train_logs and "Epoch(train)" in train_logs[0].read_text()
    assert "Epoch(val)" not in train_logs[0].read_text()

    run_demo(settings=s)
    _clear_scope()
    out = capsys.readouterr().out
    assert "reusing trained checkpoint" in out
    assert ckpt.stat().st_mtime_ns == mtime


def test_three_class_demo_scores_every_class(tmp_path_factory, tmp_path, capsys):
    """``make demo CLASSES=3``'s settings: the 3-class config trains and evaluates end to end, and
    metrics.json and the closing line show all three classes."""
    from detector.engine.demo import DEMO_CONFIG_3CLASS, demo_settings

    s3 = demo_settings(3)
    assert s3.config == DEMO_CONFIG_3CLASS and s3.data_dir == demo_settings(1).work_dir / "data"
    converted = tiny_data_root(tmp_path_factory)
    data = tmp_path / "shared_data"
    shutil.copytree(converted.parent, data)
    s = DemoSettings(work_dir=tmp_path / "demo_3class", data_dir=data, config=s3.config,
                     train_segments=1, val_segments=1, frames_per_segment=2, num_vis=1, workers=1,
                     cfg_options={"train_cfg.max_epochs": 1, "train_cfg.val_interval": 1,
                                  "custom_hooks": []})
    metrics = run_demo(settings=s)
    _clear_scope()
    out = capsys.readouterr().out
    assert "reusing converted train data" in out            # the shared data, not a new copy
    for name in ("VEHICLE", "PEDESTRIAN", "CYCLIST"):
        assert f"OBJECT_TYPE_TYPE_{name}_LEVEL_1" in metrics
        assert f"OBJECT_TYPE_TYPE_{name}_LEVEL_2" in metrics
    closing = [line for line in out.splitlines() if "LEVEL_1 AP / APH:" in line]
    assert closing and all(n in closing[0] for n in ("VEHICLE", "PEDESTRIAN", "CYCLIST"))
    assert (tmp_path / "demo_3class" / "metrics.json").is_file()
    assert not (tmp_path / "demo_3class" / "data").exists()


def test_demo_classes_must_be_one_or_three():
    import pytest

    from detector.engine.demo import demo_settings
    with pytest.raises(ValueError, match="classes must be 1"):
        demo_settings(2)


def test_demo_with_more_segments_than_on_disk_regenerates_and_reconverts(tmp_path_factory,
                                                                         tmp_path, capsys):
    """A demo directory from an older, smaller demo (here: one train segment fewer than asked):
    the raw segments are generated again and the converted split is rebuilt from them, not
    reused with the old segment count."""
    from detector.datasets.converted import completed_segments
    from detector.engine.demo import prepare_data

    converted = tiny_data_root(tmp_path_factory)
    data = tmp_path / "data"
    shutil.copytree(converted.parent, data)
    before = len(completed_segments(data / "converted", "train"))
    s = DemoSettings(work_dir=tmp_path, data_dir=data, train_segments=before + 1,
                     val_segments=1, frames_per_segment=2, workers=1)
    root = prepare_data(s)
    out = capsys.readouterr().out
    assert f"generating {before + 1} synthetic train segment(s)" in out
    assert "converting train" in out and "reusing converted val data" in out
    assert len(list((data / "raw" / "train").glob("*.tfrecord"))) == before + 1
    assert len(completed_segments(root, "train")) == before + 1
