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
