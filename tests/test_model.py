"""The detector end to end on a small grid: shapes, dtypes, spconv forward/backward on the CPU,
GradDrop on the gradient path, multi-group heads, and the shipped model configs."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

import detector.models  # noqa: F401  (registers the modules)
from detector.testing.model_frame import make_frame
from detector.registry import MODELS
from detector.structures import Det3DSample, Detections
from ops.graddrop import graddrop_combine

REPO = Path(__file__).resolve().parents[1]
RANGE = [-12.8, -12.8, -2.0, 12.8, 12.8, 4.0]


def tiny_cfg(**head_overrides) -> dict:
    head = dict(type="CenterHead", class_groups=[["VEHICLE"]], share_channels=16, head_channels=16,
                graddrop=dict(mode="graddrop", grouping="cls_box"))
    head.update(head_overrides)
    return dict(
        type="CenterPointDetector",
        data_preprocessor=dict(type="VoxelDataPreprocessor", voxel_size=[0.2, 0.2, 0.25],
                               point_cloud_range=RANGE, max_points_per_voxel=5,
                               max_voxels=(20000, 20000), mode="hard"),
        voxel_encoder=dict(type="MeanVFE", num_features=5),
        backbone_3d=dict(type="SparseEncoder", base_channels=8, stage_channels=(8, 16, 16, 32),
                         blocks_per_stage=(1, 1, 1, 1), out_channels=32),
        neck=dict(type="SECONDFPN", layer_nums=(1, 1), layer_strides=(1, 2), out_channels=(32, 32),
                  upsample_strides=(2, 4), upsample_channels=(16, 16)),
        head=head,
        test_cfg=dict(score_threshold=0.0, top_k=50))


def frames(batch: int, num_boxes: int = 3, labels=None, seed: int = 0):
    pts, samples = [], []
    for i in range(batch):
        p, b = make_frame(num_boxes=num_boxes, beams=16, azimuths=300, max_range=14.0,
                          box_range=9.0, points_per_box=150, seed=seed + i)
        lab = torch.zeros(len(b), dtype=torch.long) if labels is None else torch.as_tensor(labels[:len(b)])
        pts.append(p)
        samples.append(Det3DSample(b, lab, frame_id=100 + i, context_name=f"ctx{i}",
                                   timestamp_micros=1_000_000 + i))
    return pts, samples


def build(cfg: dict, seed: int = 0):
    torch.manual_seed(seed)
    return MODELS.build(copy.deepcopy(cfg))


@pytest.mark.parametrize("batch", [1, 2])
def test_shapes_dtypes_forward_backward_predict(batch):
    model = build(tiny_cfg())
    assert model.head.grid.out_size_factor == 4 and model.head.grid.shape == (32, 32)
    pts, samples = frames(batch)
    data = model.data_preprocessor(dict(inputs=dict(points=pts), data_samples=samples), True)
    vox = data["inputs"]["voxels"]
    assert vox.voxels.dtype == torch.float32 and vox.voxels.shape[1:] == (5, 5)
    assert vox.coords.dtype == torch.int32 and set(vox.coords[:, 0].tolist()) == set(range(batch))

    model.train()
    outs = model(data["inputs"], samples, "tensor")
    expect = dict(heatmap=1, offset=2, z=1, size=3, heading=2)
    assert set(outs.groups[0]) == set(expect)
    for name, c in expect.items():
        t = outs.groups[0][name]
        assert t.shape == (batch, c, 32, 32) and t.dtype == torch.float32
    assert outs.shared.shape == (batch, 16, 32, 32)

    losses = model(data["inputs"], samples, "loss")
    assert set(losses) == {"loss_heatmap", "loss_reg_offset", "loss_reg_z", "loss_reg_size",
                           "loss_reg_heading"}
    for v in losses.values():
        assert v.dim() == 0 and v.dtype == torch.float32 and torch.isfinite(v) and v > 0
    model.zero_grad()
    sum(losses.values()).backward()
    # The spconv path ran backward on the CPU: every sparse conv weight received a gradient.
    for name, p in model.backbone_3d.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith("weight") and p.dim() == 5:
            assert p.grad.abs().sum() > 0, name
    for name, p in model.named_parameters():
        assert p.grad is not None, name

    model.eval()
    dets = model(data["inputs"], samples, "predict")
    assert len(dets) == batch
    for d, s in zip(dets, samples):
        assert isinstance(d, Detections) and len(d) > 0
        assert d.boxes.dtype == torch.float32 and d.boxes.shape[1] == 7
        assert d.scores.dtype == torch.float32 and d.labels.dtype == torch.int64
        assert d.scores.shape == d.labels.shape == (len(d),)
        assert torch.all(d.boxes[:, 6] >= -math.pi) and torch.all(d.boxes[:, 6] < math.pi)
        assert (d.frame_id, d.context_name, d.timestamp_micros) == (s.frame_id, s.context_name,
                                                                    s.timestamp_micros)
    # Raw points are voxelized on the fly too.
    dets2 = model(dict(points=pts), samples, "predict")
    torch.testing.assert_close(dets2[0].boxes, dets[0].boxes)


def test_mmengine_train_step_uses_the_preprocessor():
    from mmengine.optim import OptimWrapper

    model = build(tiny_cfg())
    pts, samples = frames(2)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    before = model.head.shared_conv[0].weight.detach().clone()
    log = model.train_step(dict(inputs=dict(points=pts), data_samples=samples), wrapper)
    assert "loss" in log and "loss_heatmap" in log and "loss_reg_size" in log
    assert not torch.equal(before, model.head.shared_conv[0].weight)
    preds = model.test_step(dict(inputs=dict(points=pts), data_samples=samples))
    assert [p.frame_id for p in preds] == [100, 101]


def test_dynamic_mean_matches_hard_mean_and_residual_encoder_runs():
    hard = build(tiny_cfg())
    cfg = tiny_cfg()
    cfg["data_preprocessor"]["mode"] = "dynamic"
    cfg["voxel_encoder"]["type"] = "DynamicMeanVFE"
    cfg["backbone_3d"]["residual"] = True
    dyn = build(cfg)
    pts, samples = frames(2)
    # With room for every point, the hard voxel means equal the dynamic ones.
    hard.data_preprocessor.max_points_per_voxel = 1000
    vh = hard.data_preprocessor(dict(inputs=dict(points=pts)), True)["inputs"]["voxels"]
    vd = dyn.data_preprocessor(dict(inputs=dict(points=pts)), True)["inputs"]["voxels"]
    fh = hard.voxel_encoder(vh)
    fd = dyn.voxel_encoder(vd)
    kh = [tuple(r) for r in vh.coords.tolist()]
    kd = [tuple(r) for r in vd.coords.tolist()]
    assert sorted(kh) == sorted(kd)
    order_h = sorted(range(len(fh)), key=kh.__getitem__)
    order_d = sorted(range(len(fd)), key=kd.__getitem__)
    torch.testing.assert_close(fh[order_h], fd[order_d], atol=1e-5, rtol=1e-5)
    # The residual encoder on dynamic voxels: forward and backward.
    dyn.train()
    losses = dyn(dict(points=pts), samples, "loss")
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in dyn.backbone_3d.parameters())
    assert any(type(m).__name__ == "SparseBasicBlock" for m in dyn.backbone_3d.modules())


def _branch_inputs(model):
    """Capture the tensor each head branch consumed (its GradDrop copy) during a forward."""
    seen = {}
    handles = []
    for g, branches in enumerate(model.head.heads):
        for name, mod in branches.items():
            handles.append(mod.register_forward_pre_hook(
                lambda m, args, key=(g, name): seen.__setitem__(key, args[0])))
    return seen, handles


@pytest.mark.parametrize("grouping", ["cls_box", "per_branch"])
def test_graddrop_is_on_the_gradient_path(grouping):
    cfg = tiny_cfg(graddrop=dict(mode="graddrop", grouping=grouping, leaks=0.0))
    model = build(cfg)
    model.train()
    pts, samples = frames(2, num_boxes=4)
    data = model.data_preprocessor(dict(inputs=dict(points=pts), data_samples=samples), True)
    seen, handles = _branch_inputs(model)
    outs = model(data["inputs"], samples, "tensor")
    for h in handles:
        h.remove()
    losses = model.head.loss(outs, samples)
    shared = outs.shared
    # Each task's own gradient, taken at the copy its branches consumed.
    task_grads = []
    for t, keys in enumerate(model.head.loss_keys_of_task()):
        copy_t = next(seen[k] for k, task in model.head.task_of.items() if task == t)
        task_grads.append(torch.autograd.grad(sum(losses[k] for k in keys), copy_t, retain_graph=True)[0])
    assert len(task_grads) == (2 if grouping == "cls_box" else 5)
    state = model.head.graddrop.generator.get_state()
    model.zero_grad()
    shared.retain_grad()
    sum(losses.values()).backward(retain_graph=True)
    expected = graddrop_combine(task_grads, shared.detach(), leaks=model.head.graddrop.leaks,
                                batch_separated=True,
                                generator=torch.Generator().set_state(state))
    plain = torch.stack(task_grads).sum(0)
    torch.testing.assert_close(shared.grad, expected, rtol=1e-6, atol=1e-9)
    changed = (shared.grad - plain).abs() > 1e-6 * plain.abs().max()
    assert changed.float().mean() > 0.05  # GradDrop really dropped signs somewhere
    # ... and the shared conv's weights got GradDrop's gradient, not the plain sum's.
    w = model.head.shared_conv[0].weight
    w_plain = torch.autograd.grad(shared, w, grad_outputs=plain, retain_graph=True)[0]
    assert not torch.allclose(w.grad, w_plain, rtol=1e-3, atol=1e-6)


def test_graddrop_off_gives_the_plain_sum():
    model = build(tiny_cfg(graddrop=dict(mode="off", grouping="cls_box")))
    assert model.head.graddrop is None
    model.train()
    pts, samples = frames(2, num_boxes=4)
    outs = model(dict(points=pts), samples, "tensor")
    losses = model.head.loss(outs, samples)
    shared = outs.shared
    grads = [torch.autograd.grad(sum(losses[k] for k in keys), shared, retain_graph=True)[0]
             for keys in model.head.loss_keys_of_task()]
    shared.retain_grad()  # after the autograd.grad calls, which would also fill .grad
    sum(losses.values()).backward()
    torch.testing.assert_close(shared.grad, grads[0] + grads[1], rtol=1e-5, atol=1e-9)


def test_graddrop_config_keys():
    h = build(tiny_cfg(graddrop=dict(mode="random_sign"))).head
    assert h.graddrop.random_sign and h.task_names == ["cls", "box"] and h.graddrop.batch_separated
    h = build(tiny_cfg(graddrop=dict(mode="graddrop", grouping="per_branch",
                                     leaks={"vehicle/heatmap": 1.0}))).head
    assert h.task_names == ["vehicle/heatmap", "vehicle/offset", "vehicle/z", "vehicle/size",
                            "vehicle/heading"]
    assert list(h.graddrop.leaks) == [1.0, 0.0, 0.0, 0.0, 0.0]
    h = build(tiny_cfg(with_iou=True, graddrop=dict(grouping="cls_box"))).head
    assert h.task_of[(0, "iou")] == 1
    with pytest.raises(ValueError, match="mode"):
        build(tiny_cfg(graddrop=dict(mode="sometimes")))
    with pytest.raises(ValueError, match="grouping"):
        build(tiny_cfg(graddrop=dict(grouping="by_colour")))
    with pytest.raises(ValueError, match="leaks"):
        build(tiny_cfg(graddrop=dict(leaks=(0.0, 0.0, 0.0))))


def test_multi_group_head_losses_targets_and_labels():
    groups = [["VEHICLE"], ["PEDESTRIAN", "CYCLIST"]]
    model = build(tiny_cfg(class_groups=groups, graddrop=dict(grouping="per_group_cls_box")))
    assert model.class_names == ["VEHICLE", "PEDESTRIAN", "CYCLIST"]
    assert len(model.head.task_names) == 4
    pts, samples = frames(1, num_boxes=3, labels=[0, 1, 2])
    outs = model(dict(points=pts), samples, "tensor")
    assert outs.groups[0]["heatmap"].shape[1] == 1 and outs.groups[1]["heatmap"].shape[1] == 2
    targets = model.head.targets(samples)
    assert int(targets[0].mask.sum()) == 1 and int(targets[1].mask.sum()) == 2
    # The pedestrian (flat label 1) peaks in group 1's channel 0, the cyclist in channel 1.
    assert targets[1].heatmap[0, 0].max() == 1 and targets[1].heatmap[0, 1].max() == 1
    model.train()
    losses = model(dict(points=pts), samples, "loss")
    assert "loss_heatmap_vehicle" in losses and "loss_reg_size_pedestrian_cyclist" in losses
    assert len(losses) == 10
    sum(losses.values()).backward()
    model.eval()
    det = model(dict(points=pts), samples, "predict")[0]
    assert set(det.labels.tolist()) <= {0, 1, 2} and len(set(det.labels.tolist())) >= 2


def test_axis_dir_heading_adds_a_direction_branch_and_loss():
    model = build(tiny_cfg(heading_encoding="axis_dir"))
    assert model.head.branch_names == ["heatmap", "offset", "z", "size", "heading", "direction"]
    # The direction branch is box regression for GradDrop's cls/box split.
    assert model.head.task_of[(0, "direction")] == model.head.task_of[(0, "heading")]
    model.train()
    pts, samples = frames(2)
    out = model(dict(points=pts), samples, "tensor")
    assert out.groups[0]["direction"].shape == (2, 1, 32, 32)
    losses = model(dict(points=pts), samples, "loss")
    assert set(losses) == {"loss_heatmap", "loss_reg_offset", "loss_reg_z", "loss_reg_size",
                           "loss_reg_heading", "loss_dir"}
    # Untrained logits are near 0: the BCE is near log 2 per object, times the weight 0.2.
    n = sum(len(s.gt_boxes) for s in samples)
    assert 0.2 * 0.3 < float(losses["loss_dir"]) < 0.2 * 1.2, (float(losses["loss_dir"]), n)
    sum(losses.values()).backward()
    assert model.head.heads[0]["direction"][-1].weight.grad.abs().sum() > 0
    model.eval()
    det = model(dict(points=pts), samples, "predict")[0]
    assert len(det) > 0 and torch.all(det.boxes[:, 6] >= -math.pi) and torch.all(det.boxes[:, 6] < math.pi)
    with pytest.raises(ValueError, match="heading_encoding"):
        build(tiny_cfg(heading_encoding="degrees"))


def test_neighbour_regression_supervises_the_cells_around_each_centre():
    base = build(tiny_cfg())
    model = build(tiny_cfg(train_cfg=dict(reg_radius=1, reg_neighbour_weight=0.5)))
    model.load_state_dict(base.state_dict())
    pts, samples = frames(2)
    model.train()
    base.train()
    out = base(dict(points=pts), samples, "tensor")
    tgt0 = base.head.targets(samples)[0]
    tgt1 = model.head.targets(samples)[0]
    assert tgt1.indices.shape[1] == 9 * tgt0.indices.shape[1]
    assert torch.equal(tgt1.centre, torch.cat([tgt0.mask, torch.zeros_like(tgt1.centre[:, tgt0.mask.shape[1]:])], 1))
    # Same outputs (same weights, eval of the same maps): the heatmap loss is unchanged, the
    # regression losses are the centre-only ones plus half the neighbours' terms.
    from detector.models.losses import masked_l1_loss
    from detector.models.targets import gather_cells
    l0 = base.head.loss(out, samples)
    l1 = model.head.loss(out, samples)
    torch.testing.assert_close(l0["loss_heatmap"], l1["loss_heatmap"])
    num = tgt0.mask.sum().float()
    k = tgt0.mask.shape[1]
    for b in ("offset", "size"):
        pred = gather_cells(out.groups[0][b], tgt1.indices)
        nb = masked_l1_loss(pred[:, k:], tgt1.reg[b][:, k:], tgt1.mask[:, k:])
        torch.testing.assert_close(l1[f"loss_reg_{b}"], l0[f"loss_reg_{b}"] + 0.25 * 0.5 * nb / num)
    sum(l1.values()).backward()


def test_iou_branch_trains_and_rectifies_scores():
    model = build(tiny_cfg(with_iou=True, test_cfg=dict(iou_rectifier=0.5)))
    model.train()
    pts, samples = frames(1)
    losses = model(dict(points=pts), samples, "loss")
    assert "loss_iou" in losses and torch.isfinite(losses["loss_iou"])
    sum(losses.values()).backward()
    assert model.head.heads[0]["iou"][-1].weight.grad.abs().sum() > 0


def test_iou_loss_covers_the_neighbour_slots():
    """With reg_radius, the IoU target of every regression slot is the 3D IoU of the box decoded
    there with its ground truth (checked with the pure-Python reference IoU), weighted like the
    other regression terms: 1 at the centre, reg_neighbour_weight around it."""
    from detector.models.targets import decode_boxes, gather_cells
    from ops.iou3d import boxes_iou3d_reference

    model = build(tiny_cfg(with_iou=True, train_cfg=dict(reg_radius=1, reg_neighbour_weight=0.5)))
    model.train()
    pts, samples = frames(2)
    out = model(dict(points=pts), samples, "tensor")
    head = model.head
    tgt = head.targets(samples)[0]
    live = tgt.mask.bool()
    assert live.sum() > tgt.centre.sum()          # neighbour slots exist
    gathered = {b: gather_cells(out.groups[0][b], tgt.indices) for b in head.branch_names
                if b != "heatmap"}
    boxes = decode_boxes({b: gathered[b] for b in head.reg_branches}, tgt.indices, head.grid,
                         head.heading_encoding)[live].detach().double().numpy()
    gt = tgt.boxes[live].double().numpy()
    iou_t = torch.tensor([boxes_iou3d_reference(boxes[i:i + 1], gt[i:i + 1])[0, 0]
                          for i in range(len(gt))])
    w = torch.where(tgt.centre, 1.0, 0.5)[live].double()
    pred = gathered["iou"][live][:, 0].detach().double()
    expected = ((pred - (2 * iou_t - 1)).abs() * w).sum() / tgt.centre.sum()
    losses = head.loss(out, samples)
    torch.testing.assert_close(losses["loss_iou"].double(), head.loss_weights["iou"] * expected,
                               rtol=1e-4, atol=1e-5)


def test_bad_inputs_are_named():
    model = build(tiny_cfg())
    with pytest.raises(ValueError, match=r"inputs\['points'\]\[1\]"):
        model.data_preprocessor(dict(inputs=dict(points=[torch.zeros(4, 5), torch.zeros(4)])), True)
    with pytest.raises(KeyError, match="points"):
        model.data_preprocessor(dict(inputs=dict(pts=[])), True)
    with pytest.raises(ValueError, match="whole number of voxels"):
        MODELS.build(dict(type="VoxelDataPreprocessor", voxel_size=[0.3, 0.3, 0.25],
                          point_cloud_range=RANGE))
    with pytest.raises(ValueError, match="mode"):
        model(dict(points=[torch.zeros(4, 5)]), None, "train")


@pytest.mark.parametrize("name", ["centerpoint_graddrop_waymo", "centerpoint_graddrop_small"])
def test_shipped_configs_build(name):
    from mmengine.config import Config

    cfg = Config.fromfile(str(REPO / "configs/_base_/models" / f"{name}.py"))
    model = MODELS.build(cfg.model)
    assert model.class_names == ["VEHICLE"] == cfg.class_names
    assert model.head.graddrop is not None and model.head.graddrop.batch_separated
    assert model.head.task_names == ["cls", "box"]
    if name.endswith("waymo"):
        assert model.data_preprocessor.grid_size == (1504, 1504, 40)
        assert model.backbone_3d.sparse_shape == [41, 1504, 1504]
        assert model.backbone_3d.out_channels == 256 and model.head.grid.shape == (188, 188)
    else:
        # The small config runs a real frame through forward and backward.
        pts, b = make_frame(num_boxes=10, beams=32, azimuths=1000, seed=1)
        samples = [Det3DSample(b, torch.zeros(len(b), dtype=torch.long))]
        model.train()
        losses = model(dict(points=[pts]), samples, "loss")
        sum(losses.values()).backward()
        assert all(torch.isfinite(v) for v in losses.values())
