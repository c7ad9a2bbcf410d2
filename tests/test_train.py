"""tools/train.py and tools/test.py end to end on tiny synthetic data: checkpoints, per-task
loss logs, TensorBoard, the Waymo metrics table / metrics.json / submission file, start-up
errors naming the config key, and the NaN guard keeping the last good checkpoint."""
from __future__ import annotations

import hashlib
import json

import pytest
from test_train_support import TINY_CONFIG, clear_scope, load_tool, tiny_data_root






@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_data_root(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(root, tmp_path_factory):
    """One epoch of the tiny config through the train CLI (validation off: tested via test.py)."""
    work = tmp_path_factory.mktemp("train")
    rc = load_tool("train").main([str(TINY_CONFIG), "--work-dir", str(work), "--data-root", str(root),
                              "--cfg-options", "train_cfg.max_epochs=1",
                              "train_cfg.val_interval=100"])
    clear_scope()
    assert rc == 0
    return work


def test_text_caching_config_formats_once_and_follows_changes(monkeypatch):
    """build_runner's config formats its text (yapf, ~1 s) once, not at every checkpoint, and
    re-formats when the content changes."""
    import copy

    import mmengine.config.config as mmcfg
    from mmengine.config import Config

    from detector.engine.runner import TextCachingConfig

    cfg = Config.fromfile(str(TINY_CONFIG))
    plain = cfg.pretty_text
    calls = []
    real = mmcfg.FormatCode
    monkeypatch.setattr(mmcfg, "FormatCode", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    object.__setattr__(cfg, "__class__", TextCachingConfig)
    assert cfg.pretty_text == plain and cfg.pretty_text == plain
    assert len(calls) == 1
    cfg.train_cfg.max_epochs = 7
    text = cfg.pretty_text
    assert text != plain and "max_epochs=7" in text and len(calls) == 2
    twin = copy.deepcopy(cfg)                       # what the Runner keeps
    assert type(twin) is TextCachingConfig and twin.pretty_text == text and len(calls) == 2


def test_train_writes_checkpoint_logs_and_tensorboard(trained):
    assert (trained / "epoch_1.pth").is_file()
    assert (trained / "last_checkpoint").read_text().strip().endswith("epoch_1.pth")
    logs = list(trained.glob("*/*.log"))
    assert logs, "no text log"
    text = logs[0].read_text()
    for key in ("loss_heatmap", "loss_reg_offset", "loss_reg_size", "loss_reg_heading",
                "grad_norm", "lr"):
        assert key in text, f"{key} missing from the training log"
    assert list(trained.glob("*/vis_data/events.out.tfevents.*")), "no TensorBoard event file"
    assert list(trained.glob("*/vis_data/scalars.json"))
    import torch
    meta = torch.load(trained / "epoch_1.pth", map_location="cpu", weights_only=False)["meta"]
    assert "max_epochs=1" in meta["cfg"] and str(trained) in meta["cfg"]


def test_test_cli_prints_table_writes_metrics_and_submission(trained, root, tmp_path, capsys):
    from waymo_open_dataset.protos import metrics_pb2

    sub = tmp_path / "det.bin"
    rc = load_tool("test").main([str(TINY_CONFIG), str(trained / "epoch_1.pth"), "--work-dir",
                             str(tmp_path), "--data-root", str(root), "--out-submission", str(sub)])
    clear_scope()
    assert rc == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    names = {"OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1", "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_2",
             "RANGE_TYPE_VEHICLE_[0, 30)_LEVEL_1", "RANGE_TYPE_VEHICLE_[30, 50)_LEVEL_2",
             "RANGE_TYPE_VEHICLE_[50, +inf)_LEVEL_2"}
    assert names <= set(metrics)
    assert metrics.pop("eval_range")["point_cloud_range"] == [-25.6, -25.6, -2.0, 25.6, 25.6, 4.0]
    for v in metrics.values():
        assert set(v) == {"AP", "APH"} and 0.0 <= v["APH"] <= v["AP"] <= 1.0
    out = capsys.readouterr()
    assert "OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1" in out.out + out.err
    logs = list(tmp_path.glob("*/*.log"))       # and in this run's own log file
    assert len(logs) == 1 and "RANGE_TYPE_VEHICLE_[30, 50)_LEVEL_2" in logs[0].read_text()
    objs = metrics_pb2.Objects()
    objs.ParseFromString(sub.read_bytes())
    from detector.datasets.converted import load_index
    val = load_index(root, "val")
    assert len(objs.objects) > 0
    assert {o.context_name for o in objs.objects} <= {r.context_name for r in val}
    assert {o.frame_timestamp_micros for o in objs.objects} <= {r.timestamp_micros for r in val}
    assert all(o.object.type == 1 and 0 <= o.score <= 1 for o in objs.objects)


def test_runs_started_within_one_second_get_their_own_logger(monkeypatch):
    """mmengine reuses a logger by name (<config>_<second>): build_runner waits for a second
    whose name is unused, so a second run never writes into the first run's log or stdout.
    On a fake clock (a second in 2001), so no other run's logger can interfere."""
    import time

    from mmengine.config import Config
    from mmengine.logging import MMLogger

    from detector.engine.runner import _wait_for_unused_run_name

    clock = [1e9 + 0.25]
    slept = []
    monkeypatch.setattr(time, "time", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", lambda s: (slept.append(s), clock.__setitem__(0, clock[0] + s)))
    cfg = Config.fromfile(str(TINY_CONFIG))

    def name_now():
        return f"{TINY_CONFIG.stem}_{time.strftime('%Y%m%d_%H%M%S', time.localtime(clock[0]))}"

    _wait_for_unused_run_name(cfg)
    assert slept == []                              # the name is free: no wait
    taken = name_now()
    MMLogger.get_instance(taken)
    try:
        _wait_for_unused_run_name(cfg)
        assert len(slept) == 1 and 0.75 < slept[0] < 0.8 and name_now() != taken
    finally:
        MMLogger._instance_dict.pop(taken, None)


def test_unknown_module_fails_at_startup_naming_the_key(root, tmp_path, capsys):
    rc = load_tool("train").main([str(TINY_CONFIG), "--work-dir", str(tmp_path), "--data-root",
                              str(root), "--cfg-options", "model.neck.type=SECONDFNP"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "model.neck.type" in err and "SECONDFNP" in err and "SECONDFPN" in err
    assert not list(tmp_path.glob("*.pth"))


def test_missing_data_folder_fails_at_startup_naming_the_key(tmp_path, capsys):
    rc = load_tool("train").main([str(TINY_CONFIG), "--work-dir", str(tmp_path), "--data-root",
                              str(tmp_path / "missing")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "train_dataloader.dataset.data_root" in err and "does not exist" in err


@pytest.mark.parametrize("mode", ["graddrop", "off"])
def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(trained, root, tmp_path, mode):
    """GradDrop (any method with a layer at the shared activation) refuses the NaN gradient in
    its backward, naming the task; without a layer (the plain sum without diagnostics) the NaN
    guard stops the run after the step, naming the step, every loss and the last good checkpoint. Either way the
    checkpoint is untouched and no later one is written."""
    import shutil

    from detector.engine.hooks import NonFiniteLossError

    work = tmp_path / "nan"
    shutil.copytree(trained, work)
    digest = hashlib.sha256((work / "epoch_1.pth").read_bytes()).hexdigest()
    with pytest.raises(FloatingPointError) as exc:
        load_tool("train").main([str(TINY_CONFIG), "--work-dir", str(work), "--data-root", str(root),
                                 "--resume", str(work / "epoch_1.pth"), "--cfg-options",
                                 "model.head.loss_weights.heatmap=nan", "train_cfg.val_interval=100",
                                 f"model.head.graddrop.mode={mode}",
                                 # no diagnostics: the plain sum then puts no layer on the path
                                 *(["custom_hooks.5.interval=0"] if mode == "off" else [])])
    clear_scope()
    msg = str(exc.value)
    if mode == "off":
        assert isinstance(exc.value, NonFiniteLossError)
        assert "iteration 3" in msg and "loss_heatmap=nan" in msg and "loss_reg_size=" in msg
        # the copied work dir's checkpoint, not the path recorded in the run it was copied from
        assert f"the last good checkpoint is {work / 'epoch_1.pth'}" in msg
    else:
        assert "multitask[graddrop]: non-finite (NaN/inf) gradient" in msg and "['cls']" in msg
    assert hashlib.sha256((work / "epoch_1.pth").read_bytes()).hexdigest() == digest
    assert not (work / "epoch_2.pth").exists()
