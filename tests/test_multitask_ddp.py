"""Multitask gradient methods under DistributedDataParallel: two CPU processes (gloo).

Each rank combines the task gradients of its own local batch (as GradDrop does) before DDP
all-reduces the parameter gradients. Stateful methods must take the same decision on every rank:
GradNorm averages its norms and losses over the ranks, Nash-MTL its Gramian, and uncertainty's
log-variances are parameters (all-reduced by DDP). DDP's buffer broadcast is off, so equal
GradNorm weights come from the method itself, not from DDP copying rank 0's buffers.
"""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from ops.multitask import GradientLayer
from test_train_support import free_port

WORLD_SIZE = 2
STEPS = 2
METHODS = ["gradnorm", "nash_mtl", "uncertainty"]


class TinyTwoHead(torch.nn.Module):
    def __init__(self, method):
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                         torch.nn.Conv2d(8, 8, 3, padding=1))
        self.layer = GradientLayer(method, 2, ["cls", "box"])
        self.cls = torch.nn.Conv2d(8, 1, 1)
        self.box = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        feat_cls, feat_box = self.layer(self.trunk(x))
        return self.cls(feat_cls), self.box(feat_box)


def _state(layer):
    c = layer.combiner
    if hasattr(c, "task_weights"):
        return c.task_weights.clone()
    if hasattr(c, "agg"):
        return torch.as_tensor(c.agg.weighting.prvs_alpha).double().clone()
    return c.weights.clone()


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD_SIZE)
    try:
        results = {}
        for method in METHODS:
            torch.manual_seed(0)  # same initial weights on both ranks
            model = TinyTwoHead(method)
            model.layer.generator.manual_seed(1000 + rank)  # different draws per rank
            ddp = DistributedDataParallel(model, broadcast_buffers=False)
            opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
            data = torch.Generator().manual_seed(rank)  # each rank its own local batch
            states = []
            for _ in range(STEPS):
                x = torch.randn(2, 3, 8, 8, generator=data)
                target_cls = torch.rand(2, 1, 8, 8, generator=data)
                target_box = torch.randn(2, 4, 8, 8, generator=data) * (1 + rank)
                heat, box = ddp(x)
                losses = [((heat.sigmoid() - target_cls) ** 2).mean(), (box - target_box).abs().mean()]
                model.layer.set_losses(losses)
                total = losses[0] + losses[1]
                extra = model.layer.extra_loss(losses)
                if extra is not None:
                    total = total + extra
                opt.zero_grad()
                total.backward()
                opt.step()
                states.append(_state(model.layer))
            results[method] = dict(params=[p.detach().clone() for p in model.parameters()],
                                   states=states)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("mt_ddp")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("method", METHODS)
def test_ranks_keep_identical_parameters_and_method_state(ddp_results, method):
    r0, r1 = ddp_results[0][method], ddp_results[1][method]
    for p0, p1 in zip(r0["params"], r1["params"]):
        assert torch.equal(p0, p1)
    if method in ("gradnorm", "nash_mtl", "uncertainty"):
        for s0, s1 in zip(r0["states"], r1["states"]):
            torch.testing.assert_close(s0, s1, rtol=0, atol=0)
        assert not torch.equal(r0["states"][-1], torch.ones_like(r0["states"][-1]))
