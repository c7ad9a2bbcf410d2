"""Distributed training: two CPU processes (gloo) train the tiny demo config under torchrun
through ``tools/train.py --launcher pytorch``; ``RankSyncCheckHook`` all-gathers a parameter
checksum every iteration and fails the run if the ranks ever disagree."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from test_train_support import REPO, TINY_CONFIG, free_port, tiny_data_root


def test_two_process_gloo_training_keeps_ranks_in_sync(tmp_path_factory, tmp_path):
    root = tiny_data_root(tmp_path_factory)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(REPO / "tools" / "train.py"), str(TINY_CONFIG), "--launcher", "pytorch",
           "--work-dir", str(tmp_path), "--data-root", str(root), "--cfg-options",
           "train_cfg.max_epochs=2", "train_cfg.val_interval=100", "custom_hooks.3.interval=1",
           "custom_hooks.4.enabled=False"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    logs = list(tmp_path.glob("*/*.log"))
    assert logs, out[-2000:]
    text = logs[0].read_text()
    assert "Distributed training: True" in text
    synced = re.findall(r"ranks in sync at iteration (\d+) \(2 ranks", text)
    # each rank sees one of the two frames per iteration: 1 iteration per epoch, 2 epochs
    assert {"1", "2"} <= set(synced), text[-3000:]
    assert (tmp_path / "epoch_2.pth").is_file()


def test_finish_distributed_destroys_the_group_and_is_a_no_op_without_one():
    """``finish_distributed`` (the last call of tools/train.py and tools/test.py) leaves no
    process group behind for interpreter shutdown to tear down, and is a no-op without one."""
    code = (
        "import torch.distributed as dist\n"
        "from detector.engine.runner import finish_distributed\n"
        "finish_distributed()\n"  # never started: nothing to do
        f"dist.init_process_group('gloo', init_method='tcp://127.0.0.1:{free_port()}', "
        "rank=0, world_size=1)\n"
        "assert dist.is_initialized()\n"
        "finish_distributed()\n"
        "print('initialized after:', dist.is_initialized())\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "initialized after: False" in proc.stdout
