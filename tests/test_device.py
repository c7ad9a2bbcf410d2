"""Every tensor of a training step lives on the model's device, and the step reads nothing back to
the host.

The device is ``meta``: tensors with shapes and dtypes but no storage, so a step that runs there
with every tensor on ``meta`` touched no CPU tensor by mistake, and any value read back to the
host (``.item()``, ``.tolist()``, ``nonzero``, boolean indexing, ``if tensor:``) raises. Two
stages cannot run on ``meta`` by nature and are replaced by shape-correct stand-ins: the
voxelization (its number of voxels depends on the data; its device handling, ``cast_data`` and
the moving of the samples, is the real preprocessor's) and the spconv encoder (spconv has no
``meta`` kernels; the stand-in scatters the voxel features densely and pools them to the
encoder's output shape). Everything else - preprocessor, voxel encoder, neck, head forward,
targets, losses, GradDrop's backward, the optimizer step and the fixed-shape decoding - is the
real code.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import detector.models  # noqa: F401  (registers the modules)
from detector.models.data_preprocessor import VoxelDataPreprocessor
from detector.models.targets import decode_heatmap_dense
from detector.models.types import VoxelBatch
from detector.registry import MODELS
from detector.structures import Det3DSample, EvalGroundTruth

RANGE = [-12.8, -12.8, -2.0, 12.8, 12.8, 4.0]
META = torch.device("meta")


def model_cfg(**head) -> dict:
    h = dict(type="CenterHead", class_groups=[["VEHICLE"], ["PEDESTRIAN", "CYCLIST"]],
             share_channels=8, head_channels=8, heading_encoding="axis_dir",
             graddrop=dict(mode="graddrop", grouping="per_group_cls_box"),
             train_cfg=dict(reg_radius=1, min_points_in_box=1))
    h.update(head)
    return dict(
        type="CenterPointDetector",
        data_preprocessor=dict(type="VoxelDataPreprocessor", voxel_size=[0.2, 0.2, 0.25],
                               point_cloud_range=RANGE, max_points_per_voxel=5,
                               max_voxels=(20000, 20000), mode="hard"),
        voxel_encoder=dict(type="MeanVFE", num_features=5),
        backbone_3d=dict(type="SparseEncoder", base_channels=8, stage_channels=(8, 8, 8, 16),
                         blocks_per_stage=(1, 1, 1, 1), out_channels=16),
        neck=dict(type="SECONDFPN", layer_nums=(1, 1), layer_strides=(1, 2), out_channels=(16, 16),
                  upsample_strides=(2, 4), upsample_channels=(8, 8)),
        head=h)


def batch_on_cpu(num_frames: int = 2, seed: int = 0) -> dict:
    """A loader batch as ``collate_det3d`` makes it: CPU points and CPU samples."""
    g = torch.Generator().manual_seed(seed)
    points, samples = [], []
    for i in range(num_frames):
        n, m = 400 + 100 * i, 4 + i
        p = torch.rand(n, 5, generator=g)
        p[:, :3] = p[:, :3] * torch.tensor([20.0, 20.0, 4.0]) - torch.tensor([10.0, 10.0, 1.0])
        boxes = torch.rand(m, 7, generator=g) * torch.tensor([16, 16, 1, 4, 2, 1.5, 6.28]) \
            + torch.tensor([-8, -8, 0, 1, 1, 1, -3.14])
        labels = torch.randint(0, 3, (m,), generator=g)
        gt = EvalGroundTruth(boxes.numpy(), labels.numpy() + 1, torch.ones(m).long().numpy(),
                             torch.full((m,), 10).numpy())
        points.append(p)
        samples.append(Det3DSample(boxes, labels, frame_id=i, context_name=f"c{i}", eval_gt=gt))
    return dict(inputs=dict(points=points), data_samples=samples)


class StandInVoxelization(VoxelDataPreprocessor):
    """The real preprocessor (``cast_data``, moving the samples) with a voxelization that makes
    one voxel per point: the real one sizes its output from the data, which ``meta`` cannot."""

    def voxelize(self, points_list, training):
        pts = torch.cat(points_list)
        v, p = pts.shape[0], self.max_points_per_voxel
        coords = torch.zeros((v, 4), dtype=torch.int32, device=pts.device)
        return VoxelBatch(coords=coords, batch_size=len(points_list), mode="hard",
                          voxels=pts[:, None, :].expand(v, p, pts.shape[1]).contiguous(),
                          num_points=torch.ones(v, dtype=torch.int32, device=pts.device))


class DenseStandInEncoder(nn.Module):
    """Shape-correct dense stand-in for ``SparseEncoder``: scatter-add the voxel features to a
    dense BEV grid, average-pool by the encoder's stride, a 1x1 conv to its output channels."""

    def __init__(self, sparse: nn.Module, in_channels: int):
        super().__init__()
        self.stride, self.out_channels = sparse.stride, sparse.out_channels
        self.nx, self.ny = int(sparse.sparse_shape[2]), int(sparse.sparse_shape[1])
        self.proj = nn.Conv2d(in_channels, sparse.out_channels, 1)

    def forward(self, features: torch.Tensor, batch: VoxelBatch) -> torch.Tensor:
        c = features.shape[1]
        dense = features.new_zeros(batch.batch_size, self.ny, self.nx, c)
        coords = batch.coords.long()
        dense = dense.index_put((coords[:, 0], coords[:, 2], coords[:, 3]), features, accumulate=True)
        dense = nn.functional.avg_pool2d(dense.permute(0, 3, 1, 2), self.stride)
        return self.proj(dense)


def meta_model(**head) -> nn.Module:
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(model_cfg(**head)))
    pre = model.data_preprocessor
    model.data_preprocessor = StandInVoxelization(pre.voxel_size, pre.point_cloud_range,
                                                  pre.max_points_per_voxel, pre.max_voxels, pre.mode)
    model.backbone_3d = DenseStandInEncoder(model.backbone_3d, model.voxel_encoder.out_channels)
    return model.to(META)  # BaseModel.to also points the data preprocessor at meta


def tensors_in(obj, path="x"):
    """(path, tensor) for every tensor inside dicts / lists / tuples / dataclass-likes."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors_in(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors_in(v, f"{path}[{i}]")
    elif hasattr(obj, "__dict__"):
        for k, v in vars(obj).items():
            yield from tensors_in(v, f"{path}.{k}")


def assert_all_on_meta(obj, what):
    found = list(tensors_in(obj, what))
    assert found, f"{what}: no tensors"
    off = [f"{p} on {t.device}" for p, t in found if t.device != META]
    assert not off, "not on the model's device: " + ", ".join(off)


def test_the_meta_device_reads_nothing_back_to_the_host():
    """The premise of this file: on meta, host reads raise."""
    t = torch.ones(3, device=META)
    with pytest.raises(Exception):
        t.sum().item()
    with pytest.raises(Exception):
        t.tolist()
    with pytest.raises(Exception):
        torch.nonzero(t > 0)


def test_det3dsample_to_moves_every_tensor_field_and_keeps_the_rest():
    s = batch_on_cpu(1)["data_samples"][0]
    s.meta["sample_idx"] = 3
    m = s.to(META)
    assert m.gt_boxes.device == META and m.gt_labels.device == META
    assert s.gt_boxes.device.type == "cpu"  # a copy, the original untouched
    assert (m.frame_id, m.context_name, m.eval_gt, m.meta) == (s.frame_id, s.context_name,
                                                                s.eval_gt, s.meta)


def test_preprocessor_moves_points_and_samples_to_the_model_device():
    model = meta_model()
    data = batch_on_cpu()
    out = model.data_preprocessor(data, True)
    assert_all_on_meta(out["inputs"], "inputs")
    assert_all_on_meta(out["data_samples"], "data_samples")
    # The evaluation ground truth stays host numpy for the metric.
    assert out["data_samples"][0].eval_gt is data["data_samples"][0].eval_gt


def test_training_step_runs_on_meta_end_to_end():
    """preprocessor -> voxel encoder -> (stand-in encoder) -> neck -> head -> targets -> losses
    -> backward through GradDrop -> optimizer step -> dense decoding, all on meta."""
    from mmengine.optim import OptimWrapper

    model = meta_model()
    model.train()
    assert model.head.graddrop is not None and len(model.head.task_names) == 4
    data = model.data_preprocessor(batch_on_cpu(), True)
    inputs, samples = data["inputs"], data["data_samples"]

    outputs = model(inputs, samples, "tensor")
    assert_all_on_meta(outputs.groups, "head outputs")
    targets = model.head.targets(samples, inputs["points"])
    assert [t.heatmap.shape[1] for t in targets] == [1, 2]
    assert_all_on_meta(targets, "targets")

    losses = model(inputs, samples, "loss")
    assert "loss_dir_pedestrian_cyclist" in losses and len(losses) == 12
    assert_all_on_meta(losses, "losses")
    sum(losses.values()).backward()
    # The shared conv sits below GradDrop: its gradient came through GradDrop's backward.
    shared_w = model.head.shared_conv[0].weight
    assert shared_w.grad is not None and shared_w.grad.device == META
    assert all(p.grad is not None and p.grad.device == META for p in model.neck.parameters())

    # mmengine's own training step: preprocessor, loss, backward, optimizer step.
    model.zero_grad(set_to_none=True)
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    log_vars = model.train_step(batch_on_cpu(seed=1), wrapper)
    assert_all_on_meta(log_vars, "log_vars")
    assert shared_w.grad is None  # zero_grad after the step: the step ran

    model.eval()
    with torch.no_grad():
        out = model(inputs, samples, "tensor")
    head = model.head
    for g, pred in enumerate(out.groups):
        dense = decode_heatmap_dense(pred["heatmap"], {b: pred[b] for b in head.reg_branches},
                                     head.grid, 20, heading_encoding=head.heading_encoding)
        assert_all_on_meta(dense, f"decoded group {g}")
        assert dense[0].shape == (2, 20, 7)


def test_the_head_names_a_frame_whose_ground_truth_is_on_another_device():
    model = meta_model()
    model.train()
    data = model.data_preprocessor(batch_on_cpu(), True)
    outputs = model(data["inputs"], data["data_samples"], "tensor")
    cpu_samples = batch_on_cpu()["data_samples"]
    with pytest.raises(ValueError, match=r"data_samples\[0\] \(frame 0\) gt_boxes is on cpu, "
                                         r"the predictions on meta"):
        model.head.loss(outputs, cpu_samples, data["inputs"]["points"])


def test_iou_branch_target_is_computed_on_the_device():
    """The IoU branch's target (decoded boxes vs their ground truth, per regression slot) runs
    in torch ops off the CPU: the loss, its backward and mmengine's step all stay on meta."""
    from mmengine.optim import OptimWrapper

    model = meta_model(with_iou=True)
    model.train()
    data = model.data_preprocessor(batch_on_cpu(), True)
    losses = model(data["inputs"], data["data_samples"], "loss")
    assert {"loss_iou_vehicle", "loss_iou_pedestrian_cyclist"} <= set(losses)
    assert_all_on_meta(losses, "losses")
    sum(losses.values()).backward()
    model.zero_grad(set_to_none=True)
    log_vars = model.train_step(batch_on_cpu(seed=1),
                                OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3)))
    assert_all_on_meta(log_vars, "log_vars")
