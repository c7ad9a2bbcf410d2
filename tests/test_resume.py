"""``--resume`` continues exactly: same iteration, optimizer, scheduler and parameters bit-for-bit
as an uninterrupted run (CPU, fixed seed, one intra-op thread), through torch's
``weights_only=True`` loading with our allow-list - which still refuses foreign globals."""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from test_train_support import tiny_cfg, tiny_data_root

from detector.engine.checkpoint import allow_project_checkpoint_globals
from detector.engine.runner import build_runner


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_data_root(tmp_path_factory)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # spconv's CPU kernels are only deterministic single-threaded
    yield
    torch.set_num_threads(n)


def _train(cfg, resume=False):
    from mmengine.registry import DefaultScope
    runner = build_runner(cfg, resume=True if resume else None)
    runner.train()
    state = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
    out = dict(iter=runner.iter, epoch=runner.epoch, params=state,
               optim=runner.optim_wrapper.state_dict(),
               sched=[s.state_dict() for s in runner.param_schedulers])
    DefaultScope._instance_dict.clear()
    return out


def _assert_same(a, b):
    assert a["iter"] == b["iter"] and a["epoch"] == b["epoch"]
    assert a["params"].keys() == b["params"].keys()
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), f"parameter {k} differs"
    sa, sb = a["optim"]["state"], b["optim"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)
    assert a["optim"]["param_groups"] == b["optim"]["param_groups"]
    for x, y in zip(a["sched"], b["sched"]):
        assert {k: v for k, v in x.items() if k != "_get_lr_called_within_step"} == \
               {k: v for k, v in y.items() if k != "_get_lr_called_within_step"}


def test_resume_matches_uninterrupted_run(root, tmp_path, one_thread):
    full = _train(tiny_cfg(root, tmp_path / "full", validate=False))
    assert full["iter"] == 4 and full["epoch"] == 2

    part = tiny_cfg(root, tmp_path / "part", validate=False, **{"train_cfg.max_epochs": 1})
    first = _train(part)
    assert first["iter"] == 2
    ckpt = tmp_path / "part" / "epoch_1.pth"
    assert ckpt.is_file()
    # torch >= 2.6 loads weights_only by default; our allow-list makes the checkpoint load so
    allow_project_checkpoint_globals()
    meta = torch.load(ckpt, map_location="cpu")["meta"]
    assert (meta["epoch"], meta["iter"]) == (1, 2)

    resumed = _train(tiny_cfg(root, tmp_path / "part", validate=False), resume=True)
    _assert_same(full, resumed)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_allow_list_still_refuses_foreign_globals(tmp_path):
    allow_project_checkpoint_globals()
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": {"x": _Evil()}}, path)
    with pytest.raises(pickle.UnpicklingError, match="print|Unsupported global"):
        torch.load(path)
    # getattr is allowed only for HistoryBuffer's statistics methods
    from detector.engine.checkpoint import restricted_getattr
    from mmengine.logging.history_buffer import HistoryBuffer
    assert restricted_getattr(HistoryBuffer, "mean") is HistoryBuffer.mean
    with pytest.raises(RuntimeError, match="only HistoryBuffer"):
        restricted_getattr(HistoryBuffer, "__init__")
    with pytest.raises(RuntimeError, match="only HistoryBuffer"):
        restricted_getattr(torch, "load")


def _onecycle_overrides() -> dict:
    """The Waymo configs' one-cycle (configs/_base_/schedules/adam_onecycle_30e.py) squeezed into
    2 epochs: warm-up epoch 0, decay epoch 1 (the tiny config has 2 iterations per epoch)."""
    from mmengine.config import Config

    from test_train_support import REPO
    sched = Config.fromfile(str(REPO / "configs/_base_/schedules/adam_onecycle_30e.py"))
    to_tiny = {0: 0, sched.warmup_epochs: 1, sched.max_epochs: 2}
    params = []
    for s in sched.param_scheduler:
        s = dict(s)
        s["begin"], s["end"] = to_tiny[s["begin"]], to_tiny[s["end"]]
        params.append(s)
    return {"optim_wrapper": sched.optim_wrapper.to_dict(), "param_scheduler": params}


def test_resume_with_onecycle_schedule_is_exact(root, tmp_path, one_thread):
    """The composed one-cycle (lr and Adam beta1 cosines) resumes exactly under weights_only."""
    over = _onecycle_overrides()  # 4 iterations; the checkpoint is at the cycle's peak
    full = _train(tiny_cfg(root, tmp_path / "full", validate=False, **over))
    assert full["iter"] == 4
    part = tiny_cfg(root, tmp_path / "part", validate=False, **over, **{"train_cfg.max_epochs": 1})
    _train(part)
    ckpt = tmp_path / "part" / "epoch_1.pth"
    allow_project_checkpoint_globals()
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert len(saved["param_schedulers"]) == 4
    betas = saved["optimizer"]["param_groups"][0]["betas"]
    assert betas[0] < 0.95 and betas[1] == 0.99  # beta1 is being cycled
    assert saved["optimizer"]["param_groups"][0]["lr"] > 3e-4  # lr warmed up
    resumed = _train(tiny_cfg(root, tmp_path / "part", validate=False, **over), resume=True)
    _assert_same(full, resumed)
