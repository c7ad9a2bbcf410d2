"""Issue 20.1: a frame with 0 points, all points outside the range, or all-NaN coordinates
gives zero detections and trains as a frame without points, with either backbone
implementation (spconv alone cannot convolve an empty tensor)."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

from test_model import build, frames, tiny_cfg

EMPTY = {
    "no_points": lambda: torch.zeros((0, 5)),
    "outside_range": lambda: torch.tensor([[100.0, -100.0, 0.5, 0.2, 0.1]]).repeat(40, 1),
    "all_nan": lambda: torch.full((40, 5), float("nan")),
}


def _model(impl):
    cfg = copy.deepcopy(tiny_cfg())          # score_threshold 0: every frame with points has boxes
    cfg["backbone_3d"]["conv_impl"] = impl
    return build(cfg, seed=0)


@pytest.mark.parametrize("impl", ["ops", "spconv"])
@pytest.mark.parametrize("kind", sorted(EMPTY))
def test_empty_frame_alone_and_in_a_batch(impl, kind):
    model = _model(impl)
    pts, samples = frames(2, num_boxes=3)
    empty = EMPTY[kind]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # the NaN frame's "dropped 40 points" warning
        for batch_pts, batch_samples in (([empty], samples[:1]), ([empty, pts[1]], samples)):
            model.train()
            losses = model(dict(points=batch_pts), batch_samples, "loss")
            assert all(torch.isfinite(v) for v in losses.values())
            assert losses["loss_heatmap"] > 0          # the targets alone still train the head
            model.zero_grad()
            sum(losses.values()).backward()
            assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
            model.eval()
            with torch.no_grad():
                dets = model(dict(points=batch_pts), batch_samples, "predict")
            assert len(dets) == len(batch_pts)
            assert len(dets[0]) == 0 and dets[0].boxes.shape == (0, 7)
            assert dets[0].frame_id == batch_samples[0].frame_id
            if len(batch_pts) == 2:
                assert len(dets[1]) > 0                # the frame with points is unaffected


@pytest.mark.parametrize("impl", ["ops", "spconv"])
def test_empty_batch_gives_a_zero_bev_map_with_gradient(impl):
    model = _model(impl)
    data = model.data_preprocessor(dict(inputs=dict(points=[torch.zeros((0, 5))] * 2)), True)
    vox = data["inputs"]["voxels"]
    assert vox.num_voxels == 0
    feats = model.voxel_encoder(vox).requires_grad_(True)
    bev = model.backbone_3d(feats, vox)
    assert bev.shape == (2, model.backbone_3d.out_channels, *model.backbone_3d.bev_shape)
    assert not bev.any()
    bev.sum().backward()                               # connected: backward runs
    assert feats.grad is not None


def test_preprocessor_drops_and_counts_nonfinite_points():
    model = _model("ops")
    pts, samples = frames(1)
    p = pts[0].clone()
    p[:7, 1] = float("nan")
    p[7:9, 2] = float("inf")
    with pytest.warns(UserWarning, match=r"inputs\['points'\]\[0\]: dropped 9 of"):
        data = model.data_preprocessor(dict(inputs=dict(points=[p]), data_samples=samples), True)
    kept = data["inputs"]["points"][0]
    assert kept.shape[0] == p.shape[0] - 9 and torch.isfinite(kept[:, :3]).all()
    assert model.data_preprocessor.nonfinite_points_dropped == 9
    ref = model.data_preprocessor(dict(inputs=dict(points=[p[9:]]), data_samples=samples), True)
    assert torch.equal(data["inputs"]["voxels"].coords, ref["inputs"]["voxels"].coords)


@pytest.mark.slow
def test_test_cli_and_visualize_on_a_split_with_an_empty_frame(tmp_path_factory, tmp_path):
    """tools/test.py and tools/visualize.py --checkpoint on a converted split whose frames have
    no points: rc 0, zero detections, metrics written (before: spconv's !empty() abort)."""
    import importlib.util
    import shutil

    import numpy as np
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from detector.registry import MODELS
    from test_train_support import TINY_CONFIG, tiny_data_root

    root = tmp_path / "data"
    shutil.copytree(tiny_data_root(tmp_path_factory), root)
    emptied = 0
    for f in sorted((root / "val" / "segments").glob("*/points/*.npy")):
        np.save(f, np.load(f)[:0])                     # a valid (0, 8) float32 frame
        emptied += 1
    assert emptied >= 1
    for idx in (root / "val" / "segments").glob("*/frames.npz"):  # the index says so too, as a
        with np.load(idx, allow_pickle=False) as z:                 # sensor dropout converts
            arrays = {k: z[k] for k in z.files}
        arrays["num_points"] = np.zeros_like(arrays["num_points"])
        np.savez(idx, **arrays)
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(TINY_CONFIG)).model.to_dict())
    ckpt = tmp_path / "untrained.pth"
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)

    def tool(name):
        spec = importlib.util.spec_from_file_location(f"tool_{name}", TINY_CONFIG.parents[2] / "tools"
                                                      / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    from waymo_open_dataset.protos import metrics_pb2
    sub = tmp_path / "det.bin"
    try:
        rc = tool("test").main([str(TINY_CONFIG), str(ckpt), "--work-dir", str(tmp_path / "w"),
                                "--data-root", str(root), "--out-submission", str(sub),
                                "--cfg-options", "model.test_cfg.score_threshold=0.0"])
    finally:
        DefaultScope._instance_dict.clear()
    assert rc == 0
    objs = metrics_pb2.Objects()
    objs.ParseFromString(sub.read_bytes())
    assert len(objs.objects) == 0
    assert (tmp_path / "w" / "metrics.json").is_file()
    try:
        rc = tool("visualize").main(["--data", str(root), "--split", "val", "--config",
                                     str(TINY_CONFIG), "--checkpoint", str(ckpt), "--score-thr",
                                     "0.0", "--bev-plot", str(tmp_path / "bev.png")])
    finally:
        DefaultScope._instance_dict.clear()
    assert rc == 0 and (tmp_path / "bev.png").stat().st_size > 0
