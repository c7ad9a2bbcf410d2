"""GradDrop under DistributedDataParallel: two CPU processes (gloo), a tiny two-head model.

docs/GRADDROP.md: each rank applies GradDrop to its own local batch before DDP all-reduces the
parameter gradients; no extra synchronisation is needed. The ranks use different data and
different GradDrop generators, so their local gradients differ, and the parameters must still be
identical on both ranks after every step.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from ops.graddrop import GradDrop
from test_train_support import free_port

WORLD_SIZE = 2
STEPS = 4


class TinyTwoHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                         torch.nn.Conv2d(8, 8, 3, padding=1))
        # The CPU kernel explicitly: this activation is small enough for "auto" to pick torch ops.
        self.graddrop = GradDrop(num_tasks=2, batch_separated=True, backend="numba")
        self.cls = torch.nn.Conv2d(8, 1, 1)
        self.box = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        feat_cls, feat_box = self.graddrop(self.trunk(x))
        return self.cls(feat_cls), self.box(feat_box)


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD_SIZE)
    try:
        torch.manual_seed(0)  # same initial weights on both ranks
        model = TinyTwoHead()
        model.graddrop.generator = torch.Generator().manual_seed(1000 + rank)
        initial = [p.detach().clone() for p in model.parameters()]
        ddp = DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        data = torch.Generator().manual_seed(rank)  # each rank its own local batch
        for _ in range(STEPS):
            x = torch.randn(2, 3, 8, 8, generator=data)
            target_cls = torch.rand(2, 1, 8, 8, generator=data)
            target_box = torch.randn(2, 4, 8, 8, generator=data)
            heat, box = ddp(x)
            loss = ((heat.sigmoid() - target_cls) ** 2).mean() + (box - target_box).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        params = [p.detach().clone() for p in model.parameters()]
        torch.save({"initial": initial, "final": params}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_keeps_parameters_identical(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    for p0, p1, init in zip(results[0]["final"], results[1]["final"], results[0]["initial"]):
        assert torch.equal(p0, p1)
        assert not torch.equal(p0, init)  # training really changed every parameter
