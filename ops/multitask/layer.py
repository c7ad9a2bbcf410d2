"""The autograd layer: one shared activation in, one copy per task out; in the backward the k
task gradients are combined by a method of ``ops.multitask.methods`` (one trunk backward).

Also computes the gradient diagnostics (issue 19.9) inside the backward, every
``stats_interval`` calls, on a strided subsample of at most ``stats_sample`` elements:

- ``norm/<task>``: the task's gradient norm at the shared activation (full tensor);
- ``cos/<a>~<b>``: cosine between two task gradients;
- ``conflict``: fraction of (subsampled) elements where some task gradient is > 0 and another
  < 0, among the elements where any is non-zero (element signs, not GradDrop's batch sums);
- ``kept/<task>``: <c, g_i> / ||g_i||^2 for the combined gradient c: the part of task i's
  gradient that reaches the trunk (1 for the plain sum of orthogonal gradients; for GradDrop
  about the fraction of its energy the masks keep);
- ``weight/<task>``: the method's task weights where it has them (every step, not subsampled).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .methods import Combiner, MultitaskError, build_combiner

__all__ = ["GradientLayer", "gradient_stats"]


def gradient_stats(grads: Sequence[Tensor], combined: Tensor, task_names: Sequence[str],
                   sample: int = 65536, weights: Optional[Tensor] = None) -> dict[str, float]:
    """The diagnostics above as a flat dict of floats (float64 arithmetic)."""
    present = [(n, g) for n, g in zip(task_names, grads) if g is not None]
    out: dict[str, float] = {}
    if not present:
        return out
    numel = present[0][1].numel()
    step = max(1, math.ceil(numel / max(1, int(sample))))
    sub = {n: g.reshape(-1)[::step].to(torch.float64) for n, g in present}
    c = combined.reshape(-1)[::step].to(torch.float64)
    for n, g in present:
        out[f"norm/{n}"] = float(torch.linalg.vector_norm(g, dtype=torch.float64))
        sq = float(sub[n].dot(sub[n]))
        out[f"kept/{n}"] = float(c.dot(sub[n])) / sq if sq > 0 else float("nan")
    names = [n for n, _ in present]
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = sub[names[i]], sub[names[j]]
            den = float(torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
            out[f"cos/{names[i]}~{names[j]}"] = float(a.dot(b)) / den if den > 0 else float("nan")
    stack = torch.stack(list(sub.values()))
    pos = (stack > 0).any(0)
    neg = (stack < 0).any(0)
    nonzero = int((pos | neg).sum())
    out["conflict"] = int((pos & neg).sum()) / nonzero if nonzero else 0.0
    if weights is not None:
        for n, w in zip(task_names, weights.tolist()):
            out[f"weight/{n}"] = float(w)
    return out


class _CombineFunction(torch.autograd.Function):
    """Forward: k views of A. Backward: the layer's combiner applied to the k task gradients."""

    @staticmethod
    def forward(ctx, x: Tensor, layer: "GradientLayer"):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x)
        ctx.layer = layer
        return tuple(x.view_as(x) for _ in range(layer.num_tasks))

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        if all(g is None for g in grads):
            return None, None
        (x,) = ctx.saved_tensors
        return ctx.layer._backward(list(grads), x), None


class GradientLayer(nn.Module):
    """Hands the shared activation to ``num_tasks`` task heads; combines their gradients.

    Args:
        method: a name of ``ops.multitask.METHODS``.
        num_tasks: the number of tasks (copies).
        task_names: names used in errors and logged statistics.
        seed: seeds the layer's own ``torch.Generator`` (GradDrop's draws, PCGrad's order).
        stats_interval: compute the diagnostics every this many backward calls (0: never).
        stats_sample: at most this many elements enter the subsampled diagnostics.
        **options: the method's options (see its combiner class).

    Forward returns a tuple of ``num_tasks`` tensors equal to ``x`` (views while training with
    gradients; ``x`` itself otherwise, or with one task, or for ``sum`` without diagnostics,
    where autograd's own accumulation is the plain sum at no cost).
    """

    def __init__(self, method: str, num_tasks: int, task_names: Optional[Sequence[str]] = None,
                 seed: int = 0, stats_interval: int = 0, stats_sample: int = 65536, **options):
        super().__init__()
        self.combiner: Combiner = build_combiner(method, num_tasks, task_names, **options)
        self.method = method
        self.num_tasks = self.combiner.num_tasks
        self.task_names = self.combiner.task_names
        self.generator = torch.Generator().manual_seed(int(seed))
        if int(stats_interval) < 0:
            raise MultitaskError(f"stats_interval must be >= 0, got {stats_interval!r}")
        self.stats_interval = int(stats_interval)
        self.stats_sample = int(stats_sample)
        self.stats: dict[str, float] = {}
        self.stats_calls = 0  # backward calls so far (the diagnostics' clock)
        self._losses: Optional[Tensor] = None

    # Old GradDrop layer attributes (head.graddrop.leaks, .random_sign, ...) stay readable.
    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            combiner = super().__getattr__("combiner")
            if hasattr(combiner, "opts") and name in combiner.opts:
                return combiner.opts[name]
            if name == "random_sign":
                return getattr(combiner, "random_sign", False)
            raise

    def set_losses(self, losses: Sequence[Tensor]) -> None:
        """The task losses of this step (needed before the backward by loss-based methods)."""
        self._losses = torch.stack([torch.as_tensor(v).detach().double().cpu().reshape(())
                                    for v in losses])

    def extra_loss(self, losses: Sequence[Tensor]) -> Optional[Tensor]:
        return self.combiner.extra_loss(losses)

    def _backward(self, grads: list, x: Tensor) -> Tensor:
        import torch.distributed as dist

        if self.combiner.stateful and dist.is_available() and dist.is_initialized():
            self.combiner.process_group = dist.group.WORLD
        losses = self._losses if self.combiner.needs_losses else None
        out = self.combiner(grads, losses=losses, activation=x.detach(), generator=self.generator)
        self.stats_calls += 1
        if self.stats_interval and (self.stats_calls - 1) % self.stats_interval == 0:
            self.stats = gradient_stats(grads, out, self.task_names, self.stats_sample,
                                        self.combiner.weights)
            self.stats["step"] = float(self.stats_calls)
        return out

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        active = self.training and torch.is_grad_enabled() and x.requires_grad
        if not active or self.num_tasks == 1:
            return (x,) * self.num_tasks
        if self.method == "sum" and not self.stats_interval:
            return (x,) * self.num_tasks
        return _CombineFunction.apply(x, self)

    def extra_repr(self) -> str:
        opts = getattr(self.combiner, "opts", {})
        return f"method={self.method!r}, num_tasks={self.num_tasks}, options={opts}"
