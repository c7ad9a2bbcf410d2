"""tools/gpu_check.py: its checks run on the CPU with tiny inputs (the same functions the GPU run
calls with device="cuda"), they report real differences, and without CUDA the tool exits 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_train_support import REPO, TINY_CONFIG, tiny_data_root

sys.path.insert(0, str(REPO / "tools"))
import gpu_check  # noqa: E402

ON_CUDA_MACHINE = torch.cuda.is_available()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_data_root(tmp_path_factory)


def test_kernel_checks_pass_on_cpu():
    vox = gpu_check.check_voxelize("cpu", num_points=20_000, max_voxels=5_000)
    assert vox["ok"], vox["problems"]
    assert vox["num_voxels"] == 5_000  # the cap was hit: the dropped-voxel path is compared too
    gd = gpu_check.check_graddrop("cpu", shape=(2, 8, 12, 12), num_tasks=3)
    assert gd["ok"], gd["problems"]
    iou = gpu_check.check_iou_nms("cpu", num_boxes=40)
    assert iou["ok"], iou["problems"]
    assert iou["max_abs_diff"] == {"iou_bev": 0.0, "iou3d": 0.0}


def test_comparisons_report_differences():
    a = torch.arange(6.0)
    assert gpu_check._tensor_diff("x", a, a.clone()) is None
    assert gpu_check._tensor_diff("x", torch.tensor([float("nan")]), torch.tensor([float("nan")])) is None
    b = a.clone()
    b[4] += 1e-6
    msg = gpu_check._tensor_diff("x", a, b)
    assert msg and "1 of 6" in msg and "index 4" in msg
    assert "shape" in gpu_check._tensor_diff("x", a, a[:5])
    assert "dtype" in gpu_check._tensor_diff("x", a, a.double())
    s1 = dict(iter=3, params={"w": a}, sched=[{"last_step": 2, "base": [0.1]}])
    s2 = dict(iter=3, params={"w": b}, sched=[{"last_step": 3, "base": [0.1]}])
    diffs = gpu_check._state_diff(s1, s2, "s")
    assert any("s.params.w" in d for d in diffs) and any("last_step" in d for d in diffs)
    assert gpu_check._state_diff(s1, s1, "s") == []
    assert gpu_check.losses_fall([5, 5, 5, 5, 5, 4, 4, 3, 3, 2])
    assert not gpu_check.losses_fall([2, 2, 2, 2, 2, 4, 4, 3, 3, 5])
    assert not gpu_check.losses_fall([5, 5, 5, 5, 5, 4, 4, 3, float("nan"), 2])
    assert not gpu_check.losses_fall([3, 2])  # too short to tell


def test_throughput_check_runs_on_cpu():
    r = gpu_check.check_throughput(
        "cpu", config=TINY_CONFIG, batch=2, warmup=1, steps=1, infer_frames=1,
        frame_kwargs=dict(num_boxes=4, beams=16, azimuths=400, box_range=20.0, max_range=25.0))
    assert r["ok"], r["problems"]
    assert r["train_frames_per_s"] > 0 and r["inference_ms_per_frame"] > 0
    assert r["timed_train_steps"] == 1 and r["points_per_frame"] > 1000


@pytest.mark.skipif(ON_CUDA_MACHINE, reason="with a GPU mmengine's Runner trains on it; "
                                           "tools/gpu_check.py runs this check there")
def test_training_check_resumes_exactly_on_cpu(root, tmp_path):
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # spconv's CPU kernels are deterministic single-threaded only
    try:
        r = gpu_check.check_training("cpu", amp=False, data_root=root, work_dir=tmp_path,
                                     config=TINY_CONFIG, epochs=2, half=1, require_falling=False)
    finally:
        torch.set_num_threads(n)
    assert r["ok"], r["problems"]
    assert r["steps"] == 2 and r["resume_state_exact"] and r["resume_end_bitwise"]
    assert r["resume_end_max_param_diff"] == 0.0
    assert (tmp_path / "fp32_part" / "epoch_1.pth").is_file()
    with pytest.raises(ValueError, match="AMP"):
        gpu_check.check_training("cpu", amp=True, data_root=root, work_dir=tmp_path)


def test_main_writes_a_json_report(tmp_path):
    out = tmp_path / "r" / "report.json"
    rc = gpu_check.main(["--device", "cpu", "--only", "iou_nms", "--out", str(out),
                         "--work-dir", str(tmp_path / "w")])
    rep = json.loads(out.read_text())
    assert rc == 0 and rep["ok"] and [c["name"] for c in rep["checks"]] == ["iou_nms"]
    assert rep["environment"]["torch"] == torch.__version__
    assert not list(out.parent.glob("*.tmp"))  # written atomically


def test_failed_check_is_reported_with_its_error():
    # A check that raises is reported (type, message, traceback) and fails the run.
    def broken(device):
        raise RuntimeError("Tensor on device cpu is not on the expected device cuda")
    res = gpu_check._run_check("train_fp32", broken, "cuda")
    assert not res["ok"] and "expected device cuda" in res["error"] and res["traceback"]


def test_without_cuda_it_says_so_and_exits_2(tmp_path):
    out = tmp_path / "report.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "no CUDA device" in p.stderr
    rep = json.loads(out.read_text())
    assert rep["ok"] is False and rep["checks"] == [] and "no CUDA" in rep["status"]
    assert rep["environment"]["cuda_available"] is False
    np.testing.assert_equal(json.loads(p.stdout)["status"], rep["status"])
