"""Every config in configs/ builds (model, optimizer, schedulers, datasets on tiny converted data,
one training sample through the pipeline), the Waymo configs hold OpenPCDet's CenterPoint recipe
(docs/recipe.md), the composed one-cycle follows the recipe's formula, and GT sampling's
``collision="drop"`` drops exactly the candidates the recipe drops."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_train_support import REPO, tiny_data_root

CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.py")
                 if "_base_" not in p.parts)
WAYMO = [c for c in CONFIGS if c.startswith("configs/waymo/")]
ONECYCLE = REPO / "configs" / "_base_" / "schedules" / "adam_onecycle_30e.py"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_data_root(tmp_path_factory)


def _load(path: str, data_root=None):
    from detector.engine.runner import load_config
    return load_config(str(REPO / path), data_root=None if data_root is None else str(data_root))


def _build_schedulers(optim_wrapper, schedulers, epoch_length: int):
    from mmengine.registry import PARAM_SCHEDULERS
    out = []
    for s in schedulers:
        s = dict(s)
        cls = PARAM_SCHEDULERS.get(s.pop("type"))
        if s.pop("convert_to_iter_based", False):
            out.append(cls.build_iter_from_epoch(optim_wrapper, epoch_length=epoch_length, **s))
        else:
            out.append(cls(optim_wrapper, **s))
    return out


def test_config_list_is_complete():
    assert len(WAYMO) >= 7 and any("3class_2group" in c for c in WAYMO)
    assert "configs/demo/centerpoint_graddrop_demo.py" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds(path, root):
    from mmengine.optim import build_optim_wrapper

    from detector.registry import DATASETS, MODELS

    cfg = _load(path, root)
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    ow = build_optim_wrapper(model, cfg.optim_wrapper)
    scheds = _build_schedulers(ow, cfg.param_scheduler, epoch_length=3)
    for _ in range(3 * cfg.train_cfg.max_epochs):  # the whole schedule: no scheduler raises
        ow.optimizer.step()
        for s in scheds:
            s.step()
    assert all(math.isfinite(g["lr"]) and g["lr"] > 0 for g in ow.optimizer.param_groups)
    train = DATASETS.build(cfg.train_dataloader.dataset)
    sample = train[0]  # GT sampling, augmentation, range filters
    assert sample["points"].ndim == 2 and sample["points"].shape[1] == 5
    assert list(train.class_names) == list(model.class_names), "dataset / head class lists"
    val = DATASETS.build(cfg.val_dataloader.dataset)
    assert list(val.class_names) == list(model.class_names)
    assert len(val) >= 1


@pytest.mark.parametrize("path", WAYMO)
def test_waymo_config_holds_the_recipe(path):
    """The values of docs/recipe.md's table (OpenPCDet tools/cfgs/waymo_models/centerpoint.yaml)."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(REPO / path))
    m = cfg.model
    assert m.voxel_encoder.type == "MeanVFE" and m.voxel_encoder.num_features == 5
    dp = m.data_preprocessor
    assert dp.voxel_size == [0.1, 0.1, 0.15] and dp.max_points_per_voxel == 5
    assert list(dp.point_cloud_range) == [-75.2, -75.2, -2.0, 75.2, 75.2, 4.0]
    assert tuple(dp.max_voxels) == (150000, 150000)
    b = m.backbone_3d
    assert b.residual is True and tuple(b.blocks_per_stage) == (2, 2, 2, 2)
    assert tuple(b.stage_channels) == (16, 32, 64, 128) and b.base_channels == 16
    assert b.out_channels == 128
    n = m.neck
    assert tuple(n.layer_nums) == (5, 5) and tuple(n.out_channels) == (128, 256)
    assert tuple(n.upsample_strides) == (1, 2) and tuple(n.upsample_channels) == (256, 256)
    h = m.head
    assert h.share_channels == 64 and h.head_channels == 64 and h.num_branch_convs == 1
    assert h.loss_weights == dict(heatmap=1.0, offset=2.0, z=2.0, size=2.0, heading=2.0)
    assert m.train_cfg.gaussian_overlap == 0.1 and m.train_cfg.min_radius == 2
    assert m.train_cfg.max_objs == 500
    t = m.test_cfg
    assert (t.top_k, t.score_threshold, t.pool_kernel, t.nms_iou_threshold) == (500, 0.1, 1, 0.7)
    assert (t.nms_pre_max_size, t.nms_post_max_size) == (4096, 500)
    # optimisation
    o = cfg.optim_wrapper
    assert o.optimizer.type == "AdamW" and o.optimizer.weight_decay == 0.01
    assert o.optimizer.betas == (0.95, 0.99) and o.optimizer.lr == pytest.approx(3e-4)
    assert o.clip_grad.max_norm == 10.0  # the same for baseline and GradDrop
    assert cfg.train_cfg.max_epochs == 30 and cfg.train_dataloader.batch_size == 4
    # data
    ds = cfg.train_dataloader.dataset
    assert ds.load_interval == 5 and ds.drop_nlz and ds.min_box_points == 1
    assert cfg.val_dataloader.dataset.drop_nlz
    pipe = {p["type"]: p for p in ds.pipeline}
    assert pipe["GlobalRotScaleTrans"]["translation_std"] == [0.0, 0.0, 0.0]
    assert pipe["GlobalRotScaleTrans"]["scale_range"] == [0.95, 1.05]
    assert pipe["RandomFlip3D"]["flip_x_axis"] and pipe["RandomFlip3D"]["flip_y_axis"]
    gt = pipe["ObjectSample"]
    assert gt["collision"] == "drop"
    want = dict(VEHICLE=15, PEDESTRIAN=10, CYCLIST=10)
    assert gt["sample_counts"] == {c: want[c] for c in ds.class_names}
    assert gt["min_points"] == {c: 5 for c in ds.class_names}
    flat = [c for g in h.class_groups for c in g]
    assert flat == list(ds.class_names) == list(cfg.val_dataloader.dataset.class_names)


def _recipe_onecycle(step: int, total: int, lr_max=3e-3, div=10.0, pct=0.4, moms=(0.95, 0.85)):
    """OpenPCDet's OneCycle (learning_schedules_fastai.py), restated: (lr, beta1) at ``step``."""
    def cos(a, b, p):  # a -> b as p goes 0 -> 1
        return b + (a - b) / 2 * (math.cos(math.pi * p) + 1)
    w = int(total * pct)
    low = lr_max / div
    if step < w:
        p = step / w
        return cos(low, lr_max, p), cos(moms[0], moms[1], p)
    p = (step - w) / (total - w)
    return cos(lr_max, low / 1e4, p), cos(moms[1], moms[0], p)


@pytest.mark.parametrize("epoch_length", [7, 40])
def test_onecycle_follows_the_recipe(epoch_length):
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper

    cfg = Config.fromfile(str(ONECYCLE))
    ow = build_optim_wrapper(torch.nn.Linear(2, 1), cfg.optim_wrapper)
    scheds = _build_schedulers(ow, cfg.param_scheduler, epoch_length)
    total = cfg.max_epochs * epoch_length
    w = int(cfg.max_epochs * cfg.pct_start) * epoch_length
    # The composed cycle peaks one iteration early (see the config); bound of the difference:
    tol = (1 - math.cos(math.pi / w)) / 2 + 1e-12
    worst = 0.0
    for step in range(total):
        g = ow.optimizer.param_groups[0]
        lr_ref, mom_ref = _recipe_onecycle(step, total)
        if step == w:  # the one iteration where the peak itself is replaced by its neighbour
            lr_ref, mom_ref = _recipe_onecycle(step - 1, total)
        worst = max(worst, abs(g["lr"] - lr_ref) / lr_ref)
        assert g["lr"] == pytest.approx(lr_ref, rel=tol), step
        assert g["betas"][0] == pytest.approx(mom_ref, rel=tol), step
        assert g["betas"][1] == 0.99
        ow.optimizer.step()
        for s in scheds:
            s.step()
    assert 0 < worst <= tol  # the only difference is the one-iteration peak shift
    # every scheduler's state is plain data: it loads with torch's weights_only=True
    import io
    buf = io.BytesIO()
    torch.save([s.state_dict() for s in scheds], buf)
    buf.seek(0)
    states = torch.load(buf, weights_only=True)
    assert states[0]["eta_min_ratio"] == cfg.div_factor


# --- GT sampling: the recipe's "draw N, drop colliders" ------------------------------------------

def _fake_db(boxes, types, num_points):
    pts = [np.c_[np.zeros((k, 3)), np.full((k, 1), 7.0), np.zeros((k, 4))].astype(np.float32)
           for k in num_points]
    return SimpleNamespace(boxes=np.asarray(boxes, np.float32), types=np.asarray(types),
                           num_points=np.asarray(num_points), difficulty=np.ones(len(types), int),
                           get_points=lambda i: pts[i])


def _scene(rng, n):
    boxes = np.c_[rng.uniform(-12, 12, (n, 2)), np.ones(n), np.tile([4.5, 2.0, 1.6], (n, 1)),
                  rng.uniform(-np.pi, np.pi, n)].astype(np.float32)
    from detector.datasets.transforms import bev_boxes_overlap
    ov = bev_boxes_overlap(boxes, boxes)
    np.fill_diagonal(ov, False)
    keep = []
    for i in range(n):  # a valid scene: disjoint boxes
        if not ov[i, keep].any():
            keep.append(i)
    boxes = boxes[keep]
    pts = np.zeros((50, 8), np.float32)
    pts[:, :2] = rng.uniform(-15, 15, (50, 2))
    k = len(boxes)
    return dict(points=pts, gt_boxes=boxes, gt_labels=np.zeros(k, np.int64),
                gt_types=np.ones(k, np.int64), gt_num_points=np.full(k, 10, np.int64))


def _reference_drop(scene, db, classes, counts, min_points, seed):
    """The recipe's rule restated: per class draw (target - present) candidates without
    replacement; keep those overlapping neither the scene (with the samples kept so far) nor
    another candidate of the same draw."""
    from detector.datasets.transforms import bev_boxes_overlap
    from detector.structures import WAYMO_TYPES
    rng = np.random.default_rng(seed)
    existing = scene["gt_boxes"].copy()
    kept = []
    for label, name in enumerate(classes):
        pool = np.flatnonzero((db.types == WAYMO_TYPES[name]) & (db.num_points >= min_points))
        missing = counts[name] - int((scene["gt_labels"] == label).sum())
        if missing <= 0 or len(pool) == 0:
            continue
        cand = rng.choice(pool, size=min(len(pool), missing), replace=False)
        cb = db.boxes[cand]
        hit_scene = bev_boxes_overlap(cb, existing).any(1) if len(existing) else np.zeros(len(cb), bool)
        among = bev_boxes_overlap(cb, cb)
        np.fill_diagonal(among, False)
        ok = ~hit_scene & ~among.any(1)
        kept += list(cand[ok])
        existing = np.concatenate([existing, cb[ok]])
    return kept


def test_object_sample_drop_matches_the_recipe_rule():
    from detector.datasets.transforms import ObjectSample, bev_boxes_overlap
    rng = np.random.default_rng(3)
    n = 120
    boxes = np.c_[rng.uniform(-14, 14, (n, 2)), np.ones(n), np.tile([4.5, 2.0, 1.6], (n, 1)),
                  rng.uniform(-np.pi, np.pi, n)]
    types = rng.choice([1, 2, 4], n)
    num_points = rng.integers(0, 20, n)
    db = _fake_db(boxes, types, num_points)
    classes = ["VEHICLE", "PEDESTRIAN", "CYCLIST"]
    counts = dict(VEHICLE=9, PEDESTRIAN=6, CYCLIST=4)
    drop = ObjectSample(db, classes, counts, min_points=5, collision="drop")
    fill = ObjectSample(db, classes, counts, min_points=5)  # default: "fill"
    fewer = 0
    for seed in range(12):
        scene = _scene(np.random.default_rng(seed), 4)
        n0 = len(scene["gt_boxes"])
        want = _reference_drop(scene, db, classes, counts, 5, seed)
        r = drop({**{k: v.copy() for k, v in scene.items()}, "rng": np.random.default_rng(seed)})
        got = r["gt_boxes"][n0:]
        np.testing.assert_array_equal(got, db.boxes[want])
        assert list(r["gt_types"][n0:]) == [int(db.types[i]) for i in want]
        ov = bev_boxes_overlap(r["gt_boxes"], r["gt_boxes"])
        np.fill_diagonal(ov, False)
        assert not ov.any()
        f = fill({**{k: v.copy() for k, v in scene.items()}, "rng": np.random.default_rng(seed)})
        fewer += len(f["gt_boxes"]) > len(r["gt_boxes"])
    assert fewer >= 6  # crowded scenes: dropping colliders leaves fewer samples than refilling


def test_object_sample_rejects_unknown_collision_mode():
    from detector.datasets.transforms import ObjectSample
    db = _fake_db(np.zeros((1, 7)) + [0, 0, 0, 4, 2, 1.5, 0], [1], [10])
    with pytest.raises(ValueError, match="collision"):
        ObjectSample(db, ["VEHICLE"], dict(VEHICLE=3), collision="greedy")


# OpenPCDet's VoxelResBackBone8x (spconv_backbone.py), conv by conv in forward order:
# (kind, in, out, kernel, stride, padding); a residual block is two SubM 3x3x3 convs.
def _res_block(c):
    return [("SubMConv3d", c, c, [3, 3, 3], [1, 1, 1], [1, 1, 1])] * 2


VOXEL_RES_BACKBONE_8X = (
    [("SubMConv3d", 5, 16, [3, 3, 3], [1, 1, 1], [1, 1, 1])] + _res_block(16) * 2
    + [("SparseConv3d", 16, 32, [3, 3, 3], [2, 2, 2], [1, 1, 1])] + _res_block(32) * 2
    + [("SparseConv3d", 32, 64, [3, 3, 3], [2, 2, 2], [1, 1, 1])] + _res_block(64) * 2
    + [("SparseConv3d", 64, 128, [3, 3, 3], [2, 2, 2], [0, 1, 1])] + _res_block(128) * 2
    + [("SparseConv3d", 128, 128, [3, 1, 1], [2, 1, 1], [0, 0, 0])])


# VoxelBackBone8x (centerpoint_without_resnet.yaml): single SubM convs, 64 channels in stage 4.
def _subm(c):
    return ("SubMConv3d", c, c, [3, 3, 3], [1, 1, 1], [1, 1, 1])


VOXEL_BACKBONE_8X = (
    [("SubMConv3d", 5, 16, [3, 3, 3], [1, 1, 1], [1, 1, 1]), _subm(16)]
    + [("SparseConv3d", 16, 32, [3, 3, 3], [2, 2, 2], [1, 1, 1]), _subm(32), _subm(32)]
    + [("SparseConv3d", 32, 64, [3, 3, 3], [2, 2, 2], [1, 1, 1]), _subm(64), _subm(64)]
    + [("SparseConv3d", 64, 64, [3, 3, 3], [2, 2, 2], [0, 1, 1]), _subm(64), _subm(64)]
    + [("SparseConv3d", 64, 128, [3, 1, 1], [2, 1, 1], [0, 0, 0])])


def _encoder_convs(enc):
    return [(type(m).__name__, m.in_channels, m.out_channels, list(m.kernel_size), list(m.stride),
             list(m.padding)) for m in enc.modules()
            if type(m).__name__ in ("SubMConv3d", "SparseConv3d")]


def test_recipe_encoders_match_openpcdet_layouts():
    from mmengine.config import Config

    from detector.models.backbone_3d import SparseBasicBlock
    from detector.registry import MODELS
    path = str(REPO / "configs/waymo/centerpoint_nograddrop_waymo_3class.py")
    enc = MODELS.build(Config.fromfile(path).model).backbone_3d
    assert _encoder_convs(enc) == VOXEL_RES_BACKBONE_8X
    assert sum(isinstance(m, SparseBasicBlock) for m in enc.modules()) == 8  # identity adds
    assert enc.sparse_shape == [41, 1504, 1504] and enc.out_channels == 256  # 128 x 2 z slices
    # docs/recipe.md's override for the plain-encoder reference model
    cfg = Config.fromfile(path)
    cfg.merge_from_dict({"model.backbone_3d.residual": False,
                         "model.backbone_3d.blocks_per_stage": (1, 2, 2, 2),
                         "model.backbone_3d.stage_channels": (16, 32, 64, 64)})
    plain = MODELS.build(cfg.model).backbone_3d
    assert _encoder_convs(plain) == VOXEL_BACKBONE_8X and plain.out_channels == 256
