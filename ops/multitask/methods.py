"""Multitask gradient methods at the shared activation: one registry, one call signature.

Every method turns the k task gradients ``g_1..g_k`` of one shared activation (each shaped like
the activation) into the single gradient that flows into the trunk. Except for GradDrop's
batch-separated masks, every method treats the whole batch's activation gradient of a task as
one vector of N = activation.numel() elements (the "Jacobian" J is k x N); per-sample
aggregation is not offered (the detection losses are batch sums, and a per-sample Gramian would
cost B times more small solves for no documented gain).

Conventions (documented per method in docs/multitask.md):

- Scale: with ``rescale=True`` (default) the methods whose weights form a convex-like
  combination (TorchJD's ``mgda``, ``cagrad``, ``imtl_g``, ``upgrad``, ``aligned_mtl``: for k
  identical gradients they return that gradient, the *mean*) are multiplied by k, so that for k
  identical gradients every method returns their sum, like ``sum`` (the learning rates of the
  configs were tuned for the sum). ``rescale=False`` gives the library's / papers' scale.
  ``pcgrad`` sums its projected gradients (the paper's rule) and is never rescaled; ``nash_mtl``
  has its own scale (the bargaining solution, ``||d||`` of the order of the gradients).
- Gramian methods compute G = J J^T (k x k, float64 from the compute dtype) in O(k^2 N), take
  the weights w from TorchJD's weighting, and return sum_i w_i g_i in O(k N): one pass per task
  over memory besides the Gramian. No k x N copy is made (except for ``nash_mtl``, whose
  TorchJD weighting takes the matrix).
- Sums run in float32 for float16/bfloat16/float32 gradients, float64 for float64; the result
  has the gradients' dtype.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["METHODS", "Combiner", "build_combiner", "combine_gradients", "MultitaskError"]


class MultitaskError(ValueError):
    """A bad method, option, task count or task gradient."""


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _gramian(grads: Sequence[Tensor]) -> Tensor:
    """G_ij = <g_i, g_j> as a float64 k x k matrix (each product reduced in the compute dtype)."""
    k = len(grads)
    flat = [g.reshape(-1) for g in grads]
    cd = _compute_dtype(grads[0].dtype)
    flat = [f.to(cd) for f in flat]
    g = torch.empty((k, k), dtype=torch.float64, device=grads[0].device)
    for i in range(k):
        for j in range(i, k):
            v = torch.dot(flat[i], flat[j]).to(torch.float64)
            g[i, j] = v
            g[j, i] = v
    return g


def _weighted_sum(grads: Sequence[Tensor], weights: Tensor) -> Tensor:
    """sum_i w_i g_i in the compute dtype (one fused multiply-add pass per task), returned in the
    gradients' dtype. ``weights`` is a CPU tensor (read once as Python floats)."""
    cd = _compute_dtype(grads[0].dtype)
    w = [float(v) for v in weights.tolist()]
    out = torch.mul(grads[0].to(cd), w[0])
    for i in range(1, len(grads)):
        out.add_(grads[i].to(cd), alpha=w[i])
    return out.to(grads[0].dtype)


def _plain_sum(grads: Sequence[Tensor]) -> Tensor:
    cd = _compute_dtype(grads[0].dtype)
    out = grads[0].to(cd).clone()
    for g in grads[1:]:
        out += g.to(cd)
    return out.to(grads[0].dtype)


def _seeded(generator: Optional[torch.Generator]):
    """A context running torch's global RNG from one draw of ``generator`` (restored after), so a
    library that draws from the global RNG (TorchJD's PCGrad) follows the layer's generator and
    leaves the training loop's RNG stream untouched."""
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator,
                             device=generator.device if generator is not None else "cpu"))

    class _Ctx:
        def __enter__(self):
            self._fork = torch.random.fork_rng(devices=[])
            self._fork.__enter__()
            torch.manual_seed(seed)

        def __exit__(self, *exc):
            return self._fork.__exit__(*exc)

    return _Ctx()


# ---------------------------------------------------------------------------------------------
# Combiners
# ---------------------------------------------------------------------------------------------
class Combiner(nn.Module):
    """One method for ``num_tasks`` tasks. ``combiner(grads, losses=..., activation=...,
    generator=...)`` returns the trunk gradient. ``weights`` holds the last per-task weights the
    method used (for logging; None where a method has none, e.g. GradDrop)."""

    name = "base"
    options: dict = {}
    needs_losses = False
    stateful = False

    def __init__(self, num_tasks: int, task_names: Optional[Sequence[str]] = None):
        super().__init__()
        if not (isinstance(num_tasks, numbers.Integral) and num_tasks >= 1):
            raise MultitaskError(f"{self.name}: num_tasks must be an integer >= 1, got {num_tasks!r}")
        self.num_tasks = int(num_tasks)
        if task_names is None:
            task_names = [f"task{i}" for i in range(self.num_tasks)]
        task_names = list(task_names)
        if len(task_names) != self.num_tasks:
            raise MultitaskError(f"{self.name}: {len(task_names)} task names for "
                                 f"{self.num_tasks} tasks")
        self.task_names = task_names
        self.weights: Optional[Tensor] = None
        self.process_group = None  # set by the layer under DDP for stateful methods

    # subclasses implement _combine(grads, losses, activation, generator)
    def forward(self, grads, losses=None, activation=None, generator=None) -> Tensor:
        grads = self.check_grads(grads, activation)
        if self.needs_losses:
            losses = self.check_losses(losses)
        return self._combine(grads, losses, activation, generator)

    def check_grads(self, grads, activation) -> list[Tensor]:
        where = f"multitask[{self.name}]"
        if isinstance(grads, Tensor) or not isinstance(grads, Sequence):
            raise TypeError(f"{where}: grads must be a list/tuple of tensors, got {type(grads).__name__}")
        if len(grads) != self.num_tasks:
            raise MultitaskError(f"{where}: got {len(grads)} task gradients but the method was "
                                 f"built for {self.num_tasks} tasks {self.task_names}")
        ref = next((g for g in grads if g is not None), None)
        if ref is None:
            if activation is None:
                raise MultitaskError(f"{where}: every task gradient is None and no activation given")
            ref = torch.zeros_like(activation)
        out = []
        for name, g in zip(self.task_names, grads):
            if g is None:
                out.append(torch.zeros_like(ref))
                continue
            if not isinstance(g, Tensor) or not g.is_floating_point():
                raise TypeError(f"{where}: gradient of task {name!r} must be a floating tensor")
            if g.shape != ref.shape or g.dtype != ref.dtype or g.device != ref.device:
                raise MultitaskError(f"{where}: gradient of task {name!r} is {tuple(g.shape)} "
                                     f"{g.dtype} on {g.device}, the first "
                                     f"{tuple(ref.shape)} {ref.dtype} on {ref.device}")
            if activation is not None and g.shape != activation.shape:
                raise MultitaskError(f"{where}: gradient of task {name!r} has shape "
                                     f"{tuple(g.shape)}, the activation {tuple(activation.shape)}")
            out.append(g)
        # One float64 reduction per task (no boolean temporary): its sum is finite exactly when
        # every element is (NaN and +-inf propagate; float64 cannot overflow on float32 data).
        if ref.device.type != "cpu":
            # On an accelerator reading the sums back would stall every step: a device-side
            # assert stops the step instead, without a host read (its message cannot name the
            # task; run on the CPU to find it).
            for name, g in zip(self.task_names, out):
                torch._assert_async(torch.isfinite(g.sum(dtype=torch.float64)),
                                    f"{where}: non-finite gradient at the shared activation")
            return out
        bad = [name for name, g in zip(self.task_names, out)
               if not math.isfinite(float(g.sum(dtype=torch.float64)))]
        if bad:
            raise FloatingPointError(f"{where}: non-finite (NaN/inf) gradient at the shared "
                                     f"activation from task(s) {bad}; not passed to the trunk")
        return out

    def check_losses(self, losses) -> Tensor:
        where = f"multitask[{self.name}]"
        if losses is None:
            raise MultitaskError(f"{where}: this method weights by the task losses; pass "
                                 f"losses=<{self.num_tasks} values>")
        t = torch.as_tensor(losses if isinstance(losses, Tensor) else
                            [float(v) for v in losses], dtype=torch.float64).detach().reshape(-1)
        if t.numel() != self.num_tasks:
            raise MultitaskError(f"{where}: got {t.numel()} task losses for {self.num_tasks} "
                                 f"tasks {self.task_names}")
        bad = [n for n, v in zip(self.task_names, t.tolist()) if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"{where}: non-finite loss of task(s) {bad}")
        return t.cpu()

    def extra_loss(self, losses: Sequence[Tensor]) -> Optional[Tensor]:
        """A loss term the method adds (uncertainty's log-variance terms); None for most."""
        return None

    def _all_reduce_mean(self, t: Tensor) -> Tensor:
        """Mean over the DDP ranks (identity without a process group) so stateful methods take
        the same decision on every rank."""
        import torch.distributed as dist

        if self.process_group is None or not dist.is_available() or not dist.is_initialized():
            return t
        t = t.clone()
        dist.all_reduce(t, group=self.process_group)
        return t / dist.get_world_size(self.process_group)

    def _combine(self, grads, losses, activation, generator) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class SumCombiner(Combiner):
    """The plain sum of the task gradients (what autograd does without any layer)."""

    name = "sum"

    def _combine(self, grads, losses, activation, generator):
        self.weights = torch.ones(self.num_tasks, dtype=torch.float64)
        return _plain_sum(grads)


class GradDropCombiner(Combiner):
    """GradDrop (ops.graddrop.graddrop_combine, unchanged; batch-separated by default)."""

    name = "graddrop"
    random_sign = False
    options = dict(leaks=None, batch_separated=True, keep_prob="linear", scale=1.0,
                   renormalize=False, use_input_sign=True, eps=1e-7, backend="auto")

    def __init__(self, num_tasks, task_names=None, **options):
        super().__init__(num_tasks, task_names)
        from ops.graddrop import _check_options

        self.opts = {**self.options, **options}
        self.opts["leaks"] = _check_options(num_tasks, self.opts["leaks"], self.opts["keep_prob"],
                                            self.opts["scale"], self.opts["eps"], self.name)
        # Attributes the old GradDrop layer had (read by configs' users and tests).
        for k, v in self.opts.items():
            setattr(self, k, v)

    def forward(self, grads, losses=None, activation=None, generator=None):
        # Validated, but handed on as given: graddrop_combine leaves None gradients out (a zero
        # tensor in their place would change its kernel choice, not its values).
        self.check_grads(grads, activation)
        return self._combine(grads, losses, activation, generator)

    def _combine(self, grads, losses, activation, generator):
        from ops.graddrop import graddrop_combine

        if activation is None:
            raise MultitaskError(f"multitask[{self.name}]: GradDrop needs the activation")
        return graddrop_combine(list(grads), activation, generator=generator,
                                random_sign=self.random_sign, **self.opts)


class RandomSignCombiner(GradDropCombiner):
    """GradDrop's random-sign ablation (keep probability 0.5 at every position)."""

    name = "random_sign"
    random_sign = True


class _GramianCombiner(Combiner):
    """Weights from a TorchJD Gramian weighting; result sum_i w_i g_i (times k with rescale)."""

    mean_scaled = True
    options = dict(rescale=True)

    def __init__(self, num_tasks, task_names=None, **options):
        super().__init__(num_tasks, task_names)
        self.opts = {**self.options, **options}
        self.weighting = self._make_weighting(**{k: v for k, v in self.opts.items()
                                                 if k != "rescale"})

    def _make_weighting(self, **opts):  # pragma: no cover
        raise NotImplementedError

    def compute_weights(self, grads, generator) -> Tensor:
        gram = _gramian(grads)
        return self.weighting(gram).to(torch.float64)

    def _combine(self, grads, losses, activation, generator):
        w = self.compute_weights(grads, generator).detach().cpu()
        if self.mean_scaled and self.opts["rescale"]:
            w = w * self.num_tasks
        self.weights = w
        return _weighted_sum(grads, w)


class PCGradCombiner(_GramianCombiner):
    """PCGrad (Yu et al. 2020) via TorchJD's PCGradWeighting: each g_i projected on the normal
    plane of every other g_j it conflicts with, in a random order, the results summed. The order
    is drawn from the layer's generator."""

    name = "pcgrad"
    mean_scaled = False
    options = dict()

    def _make_weighting(self):
        from torchjd.aggregation import PCGradWeighting

        return PCGradWeighting()

    def compute_weights(self, grads, generator):
        gram = _gramian(grads)
        with _seeded(generator):
            return self.weighting(gram).to(torch.float64)


class MGDACombiner(_GramianCombiner):
    """MGDA-UB's min-norm point of the convex hull (Sener & Koltun 2018) by TorchJD's Frank-Wolfe
    solver (``epsilon`` = step size below which it stops, ``max_iters``; TorchJD's defaults
    1e-3 / 100). For k = 2 one exact line-search step is the minimum. For k = 3..6 random
    conflicting gradients the norm found was up to 2.4 % above the exact minimum with the
    defaults (52 ms per call for k = 6 here), up to 0.53 % with 1e-4 / 1000 (470 ms) and 0.08 %
    with 1e-5 / 10000: the solver's Python loop costs ~0.5 ms per iteration."""

    name = "mgda"
    options = dict(rescale=True, epsilon=1e-3, max_iters=100)

    def _make_weighting(self, epsilon, max_iters):
        from torchjd.aggregation import MGDAWeighting

        return MGDAWeighting(epsilon=float(epsilon), max_iters=int(max_iters))


class CAGradCombiner(_GramianCombiner):
    """CAGrad (Liu et al. 2021) via TorchJD (Clarabel solver); ``c=0`` is the mean gradient.
    TorchJD does not divide by 1 + c^2 as the official code's ``rescale`` option does."""

    name = "cagrad"
    options = dict(rescale=True, c=0.4, norm_eps=1e-4)

    def _make_weighting(self, c, norm_eps):
        from torchjd.aggregation import CAGradWeighting

        return CAGradWeighting(c=float(c), norm_eps=float(norm_eps))


class IMTLGCombiner(_GramianCombiner):
    """IMTL-G (Liu et al. 2021): the combination with equal projections on every task
    gradient's direction, weights summing to 1 (TorchJD's pseudo-inverse form)."""

    name = "imtl_g"

    def _make_weighting(self):
        from torchjd.aggregation import IMTLGWeighting

        return IMTLGWeighting()


class UPGradCombiner(_GramianCombiner):
    """UPGrad (Quinton & Rey 2024): the mean of each g_i projected onto the dual cone of all
    task gradients, so it conflicts with no task (TorchJD's quadprog projector). TorchJD solves
    the projections on the trace-normalised Gramian plus ``reg_eps`` times the identity (default
    1e-4, for a positive-definite QP): the result is then up to ~0.2 % (k = 4..6 random
    gradients) away from the exact projections; ``reg_eps=1e-8`` is exact to ~1e-5."""

    name = "upgrad"
    options = dict(rescale=True, reg_eps=1e-4, norm_eps=1e-4)

    def _make_weighting(self, reg_eps, norm_eps):
        from torchjd.aggregation import UPGradWeighting
        from torchjd.linalg import QuadprogProjector

        return UPGradWeighting(projector=QuadprogProjector(norm_eps=float(norm_eps),
                                                           reg_eps=float(reg_eps)))


class AlignedMTLCombiner(_GramianCombiner):
    """Aligned-MTL (Senushkin et al. 2023): the mean of the gradients after the balance
    transformation that equalises the Gramian's singular values (``scale_mode`` min|median|rmse)."""

    name = "aligned_mtl"
    options = dict(rescale=True, scale_mode="min")

    def _make_weighting(self, scale_mode):
        from torchjd.aggregation import AlignedMTLWeighting

        if scale_mode not in ("min", "median", "rmse"):
            raise MultitaskError(f"aligned_mtl: scale_mode must be one of min, median, rmse, "
                                 f"got {scale_mode!r}")
        return AlignedMTLWeighting(scale_mode=scale_mode)


class NashMTLCombiner(Combiner):
    """Nash-MTL (Navon et al. 2022) via TorchJD's weighting (ECOS solver, stateful: it warm-starts
    from the previous weights). ``max_norm`` 0 disables TorchJD's clipping of ||d|| (its default
    1.0 assumes parameter gradients; activation gradients have no such unit). The solution's norm
    is always sqrt(k); ``rescale=True`` (default) scales it to the plain sum's norm (the
    direction stays Nash-MTL's), ``rescale=False`` keeps TorchJD's. Under DDP the
    Gramian is averaged over the ranks first, so every rank takes the same decision and keeps
    the same state; the state travels in checkpoints (``get_extra_state``)."""

    name = "nash_mtl"
    stateful = True
    options = dict(rescale=True, max_norm=0.0, update_weights_every=1, optim_niter=20)

    def __init__(self, num_tasks, task_names=None, **options):
        super().__init__(num_tasks, task_names)
        from torchjd.aggregation import NashMTL

        self.opts = {**self.options, **options}
        self.agg = NashMTL(n_tasks=num_tasks, max_norm=float(self.opts["max_norm"]),
                           update_weights_every=int(self.opts["update_weights_every"]),
                           optim_niter=int(self.opts["optim_niter"]))

    def _combine(self, grads, losses, activation, generator):
        import warnings

        gram = self._all_reduce_mean(_gramian(grads))
        # The weighting only uses the matrix through M M^T (and ||w M|| with max_norm): a k x k
        # square root of the (rank-averaged) Gramian stands in for the k x N matrix, no copy made.
        evals, evecs = torch.linalg.eigh(gram)
        root = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cvxpy's "problem is not DPP" note, every step
            w = self.agg.weighting(root).to(torch.float64).detach().cpu()
        if self.opts["rescale"]:
            # The bargaining solution has ||d|| = sqrt(k) whatever the gradients' scale (at the
            # optimum w_i (G w)_i = 1); scale it to the plain sum's norm.
            d_norm = float(w @ gram @ w) ** 0.5
            s_norm = float(gram.sum()) ** 0.5
            if d_norm > 0:
                w = w * (s_norm / d_norm)
        self.weights = w
        return _weighted_sum(grads, w)

    def get_extra_state(self):
        # Tensors (not numpy arrays), so checkpoints load under torch.load(weights_only=True).
        wt = self.agg.weighting
        return dict(step=torch.tensor(float(wt.step), dtype=torch.float64),
                    prvs_alpha=torch.from_numpy(np.asarray(wt.prvs_alpha, dtype=np.float64).copy()),
                    normalization_factor=torch.from_numpy(
                        np.asarray(wt.normalization_factor, dtype=np.float64).copy()))

    def set_extra_state(self, state):
        if not state:
            return
        wt = self.agg.weighting
        wt.step = float(state["step"])
        dtype = np.asarray(wt.prvs_alpha).dtype
        wt.prvs_alpha = state["prvs_alpha"].numpy().astype(dtype)
        wt.normalization_factor = state["normalization_factor"].numpy().copy()
        if wt.step != 0:
            wt._init_optim_problem()


class GradNormCombiner(Combiner):
    """GradNorm (Chen et al. 2018) with the gradient norms taken at the shared activation.

    Weights w (a buffer, start 1, sum k) give the trunk gradient sum_i w_i g_i. After each step
    w moves down the gradient of the GradNorm loss sum_i |w_i ||g_i|| - mean_j(w_j ||g_j||)
    r_i^alpha| (r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0)), the relative inverse training rate)
    by ``lr`` times that gradient divided by mean_j ||g_j|| (so the step is scale-free), then is
    clamped to >= ``min_weight`` and renormalised to sum k. The heads' own parameters get their
    unweighted gradients (only the trunk's gradient is weighted). Under DDP the norms and losses
    are averaged over the ranks first (same weights everywhere). State (w, L(0)) is in the
    state dict, so checkpoints resume exactly.
    """

    name = "gradnorm"
    stateful = True
    needs_losses = True
    options = dict(alpha=1.5, lr=0.025, min_weight=1e-3)

    def __init__(self, num_tasks, task_names=None, **options):
        super().__init__(num_tasks, task_names)
        self.opts = {**self.options, **options}
        for key in ("alpha", "lr", "min_weight"):
            v = self.opts[key]
            if not (isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0):
                raise MultitaskError(f"gradnorm: {key} must be a finite number >= 0, got {v!r}")
        self.register_buffer("task_weights", torch.ones(num_tasks, dtype=torch.float64))
        self.register_buffer("initial_losses", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def _combine(self, grads, losses, activation, generator):
        w = self.task_weights.detach().clone()
        out = _weighted_sum(grads, w)
        self.weights = w.cpu()
        norms = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads])
        stats = self._all_reduce_mean(torch.cat([norms.cpu(), losses.to(torch.float64)]))
        norms, losses = stats[:self.num_tasks], stats[self.num_tasks:]
        if not bool(self.initialised):
            self.initial_losses.copy_(losses.clamp(min=1e-12))
            self.initialised.fill_(True)
        with torch.no_grad():
            ratio = losses / self.initial_losses
            r = ratio / ratio.mean().clamp(min=1e-12)
            wn = w * norms
            target = wn.mean() * r.pow(self.opts["alpha"])
            grad = torch.sign(wn - target) * norms
            step = self.opts["lr"] * grad / norms.mean().clamp(min=1e-30)
            new = (w - step).clamp(min=self.opts["min_weight"])
            self.task_weights.copy_(new * self.num_tasks / new.sum())
        return out


class UncertaintyCombiner(Combiner):
    """Uncertainty weighting (Kendall et al. 2018): learned log-variances s_i (parameters, start
    0, trained by the optimizer). The trunk gradient is sum_i exp(-s_i) g_i; the head adds the
    term sum_i exp(-s_i) L_i.detach() + s_i (``extra_loss``), whose gradient trains s exactly as
    the paper's loss sum_i exp(-s_i) L_i + s_i does. The heads get their unweighted gradients.
    Under DDP s is a parameter, so DDP's all-reduce keeps it identical on every rank."""

    name = "uncertainty"
    stateful = True
    options = dict(init=0.0)

    def __init__(self, num_tasks, task_names=None, **options):
        super().__init__(num_tasks, task_names)
        self.opts = {**self.options, **options}
        self.log_vars = nn.Parameter(torch.full((num_tasks,), float(self.opts["init"])))

    def _combine(self, grads, losses, activation, generator):
        w = torch.exp(-self.log_vars.detach().to(torch.float64)).cpu()
        self.weights = w
        return _weighted_sum(grads, w)

    def extra_loss(self, losses):
        if len(losses) != self.num_tasks:
            raise MultitaskError(f"uncertainty: {len(losses)} task losses for {self.num_tasks} "
                                 f"tasks {self.task_names}")
        s = self.log_vars
        total = None
        for i, loss in enumerate(losses):
            term = torch.exp(-s[i]) * loss.detach().to(s.dtype) + s[i]
            total = term if total is None else total + term
        return total


METHODS: dict[str, type[Combiner]] = {c.name: c for c in (
    SumCombiner, GradDropCombiner, RandomSignCombiner, PCGradCombiner, MGDACombiner,
    CAGradCombiner, IMTLGCombiner, UPGradCombiner, AlignedMTLCombiner, NashMTLCombiner,
    GradNormCombiner, UncertaintyCombiner)}


def build_combiner(method: str, num_tasks: int, task_names: Optional[Sequence[str]] = None,
                   **options) -> Combiner:
    """The combiner of ``method`` for ``num_tasks`` tasks; unknown methods/options fail here."""
    if method not in METHODS:
        raise MultitaskError(f"unknown multitask gradient method {method!r}; valid methods: "
                             f"{sorted(METHODS)}")
    cls = METHODS[method]
    unknown = set(options) - set(cls.options)
    if unknown:
        raise MultitaskError(f"method {method!r} has no option(s) {sorted(unknown)}; its options: "
                             f"{sorted(cls.options) or 'none'}")
    return cls(num_tasks, task_names, **options)


def combine_gradients(grads: Sequence[Optional[Tensor]], method: str,
                      activation: Optional[Tensor] = None,
                      generator: Optional[torch.Generator] = None, losses=None,
                      task_names: Optional[Sequence[str]] = None, **options) -> Tensor:
    """Combine k task gradients of one shared activation with ``method`` (a fresh combiner, so a
    stateful method starts from its initial state)."""
    if isinstance(grads, Tensor) or not isinstance(grads, Sequence) or len(grads) == 0:
        raise TypeError("combine_gradients: grads must be a non-empty list/tuple of tensors")
    combiner = build_combiner(method, len(grads), task_names, **options)
    return combiner(grads, losses=losses, activation=activation, generator=generator)
