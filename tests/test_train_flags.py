"""mmdetection3d-style training flags: --auto-scale-lr (mmengine's auto_scale_lr convention) and a
learning-rate schedule that follows --cfg-options train_cfg.max_epochs."""
from __future__ import annotations

import importlib.util

import pytest
from test_train_support import REPO, TINY_CONFIG, tiny_data_root

from detector.engine.runner import ConfigError, load_config


def _train_tool():
    spec = importlib.util.spec_from_file_location("tool_train", REPO / "tools" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cosine(cfg):
    (cos,) = [s for s in cfg.param_scheduler if s["type"] == "CosineAnnealingLR"]
    return cos


def test_schedule_follows_max_epochs(tmp_path_factory):
    root = str(tiny_data_root(tmp_path_factory))
    base = load_config(str(TINY_CONFIG), None, root)
    assert _cosine(base)["end"] == _cosine(base)["T_max"] == base.train_cfg.max_epochs == 2
    cfg = load_config(str(TINY_CONFIG), {"train_cfg.max_epochs": 3}, root)
    assert _cosine(cfg)["end"] == _cosine(cfg)["T_max"] == 3
    warm = [s for s in cfg.param_scheduler if s["type"] == "LinearLR"][0]
    assert warm["end"] == 2 and warm["by_epoch"] is False        # iterations: left alone
    assert _cosine(load_config(str(TINY_CONFIG), {"train_cfg.max_epochs": 1}, root))["end"] == 1
    # a by-epoch scheduler set to end after the last epoch fails loudly, naming it
    with pytest.raises(ConfigError, match=r"param_scheduler\[1\].end' = 5 .*max_epochs = 3"):
        load_config(str(TINY_CONFIG), {"train_cfg.max_epochs": 3,
                                       "param_scheduler": [base.param_scheduler[0],
                                                           dict(_cosine(base), end=5, T_max=5)]},
                    root)


def test_auto_scale_lr_scales_by_total_batch(tmp_path_factory, tmp_path):
    from mmengine.registry import DefaultScope

    from detector.engine.runner import build_runner
    train = _train_tool()
    root = str(tiny_data_root(tmp_path_factory))
    cfg = load_config(str(TINY_CONFIG), {"train_dataloader.batch_size": 1}, root)
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=2)
    train.enable_auto_scale_lr(cfg)
    runner = build_runner(cfg, work_dir=tmp_path)
    ow = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.scale_lr(ow, runner.auto_scale_lr)
    DefaultScope._instance_dict.clear()
    lr = cfg.optim_wrapper.optimizer.lr
    assert [g["lr"] for g in ow.optimizer.param_groups] == [pytest.approx(lr * 1 / 2)] * len(
        ow.optimizer.param_groups)
    cfg.auto_scale_lr = dict(enable=False)
    with pytest.raises(ConfigError, match="auto_scale_lr.base_batch_size"):
        train.enable_auto_scale_lr(cfg)
    assert train.parse_args([str(TINY_CONFIG), "--auto-scale-lr"]).auto_scale_lr


def test_fine_tuning_from_an_empty_checkpoint_fails(tmp_path_factory, tmp_path, capsys):
    import torch
    root = str(tiny_data_root(tmp_path_factory))
    empty = tmp_path / "empty.pth"
    torch.save({"state_dict": {}, "meta": {}}, empty)
    rc = _train_tool().main([str(TINY_CONFIG), "--work-dir", str(tmp_path / "w"), "--data-root",
                             root, "--cfg-options", f"load_from={empty}"])
    assert rc == 2
    assert "'load_from'" in capsys.readouterr().err and not (tmp_path / "w").exists()
