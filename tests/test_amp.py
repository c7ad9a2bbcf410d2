"""``tools/train.py --amp`` on the CPU: bfloat16 autocast (CPUAmpOptimWrapper), finite losses,
a checkpoint, and ``--resume`` continuing from it; the head, targets, losses and decoding accept
half-precision inputs and compute the losses in float32."""
from __future__ import annotations

import json
import math

import pytest
import torch
from mmengine.config import Config
from test_train_support import TINY_CONFIG, clear_scope, load_tool, tiny_data_root






@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_data_root(tmp_path_factory)


def _losses(work):
    """The logged training losses of a work dir's latest run (scalars.json, one per iteration)."""
    path = sorted(work.glob("*/vis_data/scalars.json"))[-1]  # run folders are timestamps
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "loss" in r]


def test_enable_amp_picks_the_wrapper_for_the_device():
    from detector.engine.runner import ConfigError, enable_amp

    cfg = Config(dict(optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="AdamW"),
                                         clip_grad=dict(max_norm=1.0))))
    assert "bfloat16" in enable_amp(cfg, cuda=False)
    assert cfg.optim_wrapper.type == "CPUAmpOptimWrapper" and cfg.optim_wrapper.dtype == "bfloat16"
    assert "float16" in enable_amp(cfg, cuda=True)
    ow = cfg.optim_wrapper
    assert (ow.type, ow.dtype, ow.loss_scale) == ("AmpOptimWrapper", "float16", "dynamic")
    assert ow.clip_grad == dict(max_norm=1.0)
    enable_amp(cfg, cuda=False)  # an AMP config carried to a CPU machine
    assert cfg.optim_wrapper.type == "CPUAmpOptimWrapper" and "loss_scale" not in cfg.optim_wrapper
    with pytest.raises(ConfigError, match="optim_wrapper.type"):
        enable_amp(Config(dict(optim_wrapper=dict(type="ApexOptimWrapper"))), cuda=False)
    from detector.engine.runner import CPUAmpOptimWrapper
    with pytest.raises(ValueError, match="bfloat16 only"):
        CPUAmpOptimWrapper(dtype="float16", optimizer=torch.optim.SGD([torch.zeros(1)], lr=1))


def test_cpu_amp_runs_the_model_in_bfloat16_and_the_losses_in_float32():
    """Under the wrapper's context the head's outputs are bfloat16; every loss is float32 and
    finite, and the gradients of the float32 parameters are float32."""
    import detector.models  # noqa: F401
    from detector.engine.runner import CPUAmpOptimWrapper
    from detector.registry import MODELS
    from detector.structures import Det3DSample

    cfg = Config.fromfile(str(TINY_CONFIG))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(3000, 5, generator=g) * torch.tensor([40.0, 40.0, 4.0, 1, 1]) \
        - torch.tensor([20.0, 20.0, 1.0, 0, 0])
    boxes = torch.tensor([[3.0, 4.0, 0.5, 4.5, 2.0, 1.6, 0.3], [-8.0, 2.0, 0.4, 4.0, 1.9, 1.5, -2.0]])
    data = dict(inputs=dict(points=[pts]),
                data_samples=[Det3DSample(boxes, torch.zeros(2, dtype=torch.long))])
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=1e-3))
    with wrapper.optim_context(model):
        batch = model.data_preprocessor(data, True)
        out = model(batch["inputs"], batch["data_samples"], "tensor")
        losses = model.head.loss(out, batch["data_samples"], batch["inputs"]["points"])
    assert out.groups[0]["heatmap"].dtype == torch.bfloat16
    assert {v.dtype for v in losses.values()} == {torch.float32}
    assert all(math.isfinite(float(v)) for v in losses.values())
    sum(losses.values()).backward()
    w = model.head.shared_conv[0].weight
    assert w.dtype == torch.float32 and w.grad.dtype == torch.float32 and w.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_head_losses_of_half_precision_outputs_are_float32_and_match(dtype):
    """Head outputs in float16 / bfloat16 (IoU branch and neighbour slots included): every loss
    is float32 and equals the loss of the same outputs rounded to half and read as float32."""
    import copy

    import detector.models  # noqa: F401
    from detector.models.types import HeadOutputs
    from detector.registry import MODELS
    from detector.structures import Det3DSample

    cfg = Config.fromfile(str(TINY_CONFIG)).model
    cfg.head.train_cfg = dict(reg_radius=1)
    torch.manual_seed(0)
    head = MODELS.build(copy.deepcopy(cfg)).head
    h, w = head.grid.shape
    g = torch.Generator().manual_seed(1)
    groups = [{b: torch.randn(2, m[b][-1].out_channels, h, w, generator=g).to(dtype)
               for b in head.branch_names} for m in head.heads]
    boxes = torch.tensor([[3.0, 4.0, 0.5, 4.5, 2.0, 1.6, 0.3], [-8.0, 2.0, 0.4, 4.0, 1.9, 1.5, -2.0]])
    samples = [Det3DSample(boxes, torch.zeros(2, dtype=torch.long)),
               Det3DSample(boxes[:1] + 1, torch.zeros(1, dtype=torch.long))]
    half = head.loss(HeadOutputs(groups), samples)
    full = head.loss(HeadOutputs([{b: v.float() for b, v in gr.items()} for gr in groups]), samples)
    assert "loss_iou" in half and set(half) == set(full)
    for k in full:
        assert half[k].dtype == torch.float32, k
        torch.testing.assert_close(half[k], full[k], rtol=1e-5, atol=1e-6)


def test_train_cli_amp_on_cpu_trains_checkpoints_and_resumes(root, tmp_path):
    work = tmp_path / "amp"
    common = [str(TINY_CONFIG), "--work-dir", str(work), "--data-root", str(root), "--amp",
              "--cfg-options", "train_cfg.val_interval=100", "default_hooks.checkpoint.interval=1"]
    train = load_tool("train")
    rc = train.main(common[:-2] + ["train_cfg.max_epochs=1", *common[-2:]])
    clear_scope()
    assert rc == 0
    ckpt = work / "epoch_1.pth"
    assert ckpt.is_file()
    from detector.engine.checkpoint import allow_project_checkpoint_globals
    allow_project_checkpoint_globals()
    saved = torch.load(ckpt, map_location="cpu")
    assert saved["meta"]["iter"] == 2 and "CPUAmpOptimWrapper" in saved["meta"]["cfg"]
    first = _losses(work)
    assert len(first) == 2 and all(math.isfinite(r["loss"]) for r in first)

    rc = train.main(common + ["--resume"])  # max_epochs 2 from the config: one more epoch
    clear_scope()
    assert rc == 0
    assert (work / "epoch_2.pth").is_file()
    resumed = torch.load(work / "epoch_2.pth", map_location="cpu")
    assert resumed["meta"]["iter"] == 4 and resumed["meta"]["epoch"] == 2
    later = _losses(work)
    assert [r["iter"] for r in later] == [3, 4] and all(math.isfinite(r["loss"]) for r in later)
    # The resumed run started from the checkpoint's weights, not from scratch.
    assert any(not torch.equal(saved["state_dict"][k], resumed["state_dict"][k])
               for k in saved["state_dict"])
