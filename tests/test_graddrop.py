"""Tests of ops/graddrop.py against docs/GRADDROP.md (every listed property) and the issue's
acceptance criteria: backends equal to the literal reference, keep-probability statistics,
the module's backward, AMP dtypes, None gradients, eval/no-grad bypass, the paper's toy example.
"""
from __future__ import annotations

import itertools
import math

import numba
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.graddrop import (GradDrop, graddrop_combine, graddrop_combine_reference,
                          graddrop_uniform)

BACKENDS = ("reference", "torch", "numba")
FAST = ("torch", "numba")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_case(shape, k, dtype=torch.float32, seed=0):
    g = gen(seed)
    act = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    grads = [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(k)]
    return act, grads


def combine(grads, act, backend, seed=0, **kw):
    return graddrop_combine(grads, act, generator=gen(seed), backend=backend, **kw)


def plain_sum(grads):
    out = grads[0]
    for g in grads[1:]:
        out = out + g
    return out


def batch_summed_g(grads, act, batch_separated=True, eps=1e-7):
    """G_i of steps 1-2 (input-sign mode), in float64, for checking masks."""
    a = act.double()
    s = torch.where(a.abs() <= eps, torch.zeros_like(a), torch.sign(a))
    out = [s * g.double() for g in grads]
    return [x.sum(0) for x in out] if batch_separated else out


# ------------------------------------------------------------------------------------------
# Backends equal the literal reference on random inputs.
# ------------------------------------------------------------------------------------------
options = st.fixed_dictionaries({
    "batch_separated": st.booleans(),
    "keep_prob": st.sampled_from(["linear", "sigmoid"]),
    "scale": st.sampled_from([1.0, 0.5, 2.5]),
    "use_input_sign": st.booleans(),
    "random_sign": st.booleans(),
    "eps": st.sampled_from([1e-7, 0.0, 0.3]),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), k=st.integers(2, 5),
       dtype=st.sampled_from([torch.float32, torch.float64]), opts=options,
       leak_seed=st.integers(0, 3), seed=st.integers(0, 2 ** 31))
def test_backends_equal_reference_exactly(shape, k, dtype, opts, leak_seed, seed):
    act, grads = random_case(tuple(shape), k, dtype, seed)
    # Exercise exact zeros (sign 0, G == 0) too, not only continuous values.
    act[act.abs() < 0.2] = 0
    leaks = [[0.0] * k, [1.0] * k, [0.25 * (i % 5) for i in range(k)],
             [1.0] + [0.0] * (k - 1)][leak_seed]
    ref = combine(grads, act, "reference", seed, leaks=leaks, **opts)
    assert ref.dtype == dtype and ref.shape == act.shape
    for backend in FAST:
        out = combine(grads, act, backend, seed, leaks=leaks, **opts)
        assert torch.equal(out, ref), backend


@pytest.mark.parametrize("batch_separated", [True, False])
def test_backends_equal_reference_on_a_large_input(batch_separated):
    # Many chunks of the Numba kernel (and a partial last chunk), both modes.
    act, grads = random_case((3, 37, 41, 29), 3, seed=5)
    ref = combine(grads, act, "reference", 7, batch_separated=batch_separated)
    for backend in FAST:
        assert torch.equal(combine(grads, act, backend, 7, batch_separated=batch_separated), ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_amp_dtypes_compute_in_float32_and_return_input_dtype(dtype, backend):
    act, grads = random_case((4, 6, 9, 9), 3, dtype, seed=1)
    out = combine(grads, act, backend, 3, leaks=(0.0, 0.5, 0.0))
    assert out.dtype == dtype
    # Same as running in float32 on the (exactly representable) upcast values, then rounding.
    f32 = combine([g.float() for g in grads], act.float(), "reference", 3, leaks=(0.0, 0.5, 0.0))
    assert torch.equal(out, f32.to(dtype))


def test_renormalize_backends_agree_and_keep_the_plain_norm():
    act, grads = random_case((4, 8, 15, 15), 3, seed=2)
    outs = {b: combine(grads, act, b, 4, renormalize=True) for b in BACKENDS}
    plain = plain_sum([g.double() for g in grads])
    for backend, out in outs.items():
        # Spec: ||out|| == ||sum g_i|| (up to float32 rounding of out).
        assert torch.linalg.vector_norm(out.double()).item() == pytest.approx(
            torch.linalg.vector_norm(plain).item(), rel=1e-6), backend
        # Same masks as the reference; the global norms are reductions in different orders.
        assert torch.equal(out == 0, outs["reference"] == 0)
        torch.testing.assert_close(out, outs["reference"], rtol=2e-7, atol=0)
    not_renorm = combine(grads, act, "reference", 4)
    ratio = torch.linalg.vector_norm(plain) / torch.linalg.vector_norm(not_renorm.double())
    torch.testing.assert_close(outs["numba"].double(), not_renorm.double() * ratio,
                               rtol=1e-6, atol=0)
    assert ratio.item() > 1.05  # dropping really shrank the norm: the test is not vacuous


def test_numba_result_does_not_depend_on_thread_count():
    act, grads = random_case((2, 16, 64, 64), 2, seed=3)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = combine(grads, act, "numba", 9, renormalize=True)
        numba.set_num_threads(before)
        many = combine(grads, act, "numba", 9, renormalize=True)
    finally:
        numba.set_num_threads(before)
    assert torch.equal(one, many)


def test_non_contiguous_gradients_give_the_contiguous_result():
    act, grads = random_case((3, 5, 6, 7), 2, seed=4)
    t_grads = [g.transpose(2, 3).contiguous().transpose(2, 3) for g in grads]
    assert not t_grads[0].is_contiguous()
    zero = torch.zeros(()).expand(3, 5, 6, 7)  # stride-0 zeros, as autograd may produce
    for backend in BACKENDS:
        assert torch.equal(combine(t_grads, act, backend), combine(grads, act, backend))
        assert torch.equal(combine([grads[0], zero], act, backend),
                           combine([grads[0], torch.zeros_like(grads[0])], act, backend))


def test_torch_backend_never_reads_values_on_the_host():
    # Meta tensors have no data: .item(), bool(tensor), nonzero() etc. would raise here, so
    # running end to end proves the GPU path has no host synchronisation.
    act = torch.empty((4, 8, 5, 5), device="meta")
    grads = [torch.empty((4, 8, 5, 5), device="meta") for _ in range(3)]
    for kw in ({}, {"renormalize": True, "keep_prob": "sigmoid"}, {"batch_separated": False},
               {"random_sign": True, "use_input_sign": False}):
        out = graddrop_combine(grads, act, backend="torch", **kw)
        assert out.device.type == "meta" and out.shape == act.shape
    half = [g.half() for g in grads]
    assert graddrop_combine(half, act.half(), backend="auto").dtype == torch.float16


# ------------------------------------------------------------------------------------------
# The properties listed in docs/GRADDROP.md.
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_separated", [True, False])
def test_all_leaks_one_is_exactly_the_plain_sum(backend, batch_separated):
    act, grads = random_case((4, 7, 11), 3, seed=6)
    out = combine(grads, act, backend, leaks=(1.0, 1.0, 1.0), batch_separated=batch_separated)
    assert torch.equal(out, plain_sum(grads))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opts", [{}, {"keep_prob": "sigmoid"}, {"scale": 0.3},
                                  {"keep_prob": "sigmoid", "scale": 5.0},
                                  {"batch_separated": False}, {"use_input_sign": False}])
def test_nothing_dropped_where_all_g_share_one_sign(backend, opts):
    # G_i tiny next to eps: the literal P is far from 0/1 there, yet nothing may be dropped.
    shape = (2, 3000)
    g = gen(11)
    act = torch.rand(shape, generator=g) + 0.5                      # sign +1 everywhere
    sign = torch.where(torch.rand(shape[1:], generator=g) < 0.5, -1.0, 1.0)
    magnitude = torch.where(torch.rand(shape[1:], generator=g) < 0.5, 1e-8, 1.0)
    grads = [sign * magnitude * (torch.rand(shape, generator=g) + 0.1) for _ in range(3)]
    out = combine(grads, act, backend, 1, **opts)
    assert torch.equal(out, plain_sum(grads))


def decode_masks(out, grads):
    """Masks M_i from out = sum_i M_i g_i when g_i = +-2**i (all subset sums are distinct)."""
    k = len(grads)
    masks = torch.zeros((k,) + out.shape, dtype=torch.bool)
    found = torch.zeros(out.shape, dtype=torch.bool)
    for subset in itertools.product([False, True], repeat=k):
        total = sum((g for g, keep in zip(grads, subset) if keep), torch.zeros_like(out))
        hit = out == total
        assert not (hit & found).any()
        found |= hit
        for i, keep in enumerate(subset):
            masks[i] |= hit & keep
    assert found.all(), "out is not a 0/1 combination of the gradients"
    return masks


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_separated", [True, False])
@pytest.mark.parametrize("opts", [{}, {"random_sign": True}, {"keep_prob": "sigmoid"}])
def test_zero_leak_keeps_one_sign_per_position(backend, batch_separated, opts):
    k, shape = 4, (3, 40, 50)
    g = gen(12)
    act = torch.randn(shape, generator=g)
    grads = [torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0) * 2.0 ** i
             for i in range(k)]
    out = combine(grads, act, backend, 2, batch_separated=batch_separated, **opts)
    masks = decode_masks(out, grads)
    big_g = batch_summed_g(grads, act, batch_separated)
    if batch_separated:
        # One mask per feature position, broadcast over the batch.
        assert torch.equal(masks, masks[:, :1].expand_as(masks))
        masks = masks[:, 0]
    kept_pos = torch.stack([m & (G > 0) for m, G in zip(masks, big_g)]).any(0)
    kept_neg = torch.stack([m & (G < 0) for m, G in zip(masks, big_g)]).any(0)
    assert not (kept_pos & kept_neg).any()
    assert not torch.stack([m & (G == 0) for m, G in zip(masks, big_g)]).any()
    # Every G_i of the surviving sign is kept (nothing else is dropped).
    for m, G in zip(masks, big_g):
        assert torch.equal(m, (kept_pos & (G > 0)) | (kept_neg & (G < 0)))
    mixed = torch.stack([G > 0 for G in big_g]).any(0) & torch.stack([G < 0 for G in big_g]).any(0)
    # Both outcomes really occur at mixed positions (the test is not vacuous).
    assert (kept_pos & mixed).sum() > 50 and (kept_neg & mixed).sum() > 50
    unanimous = torch.stack([G != 0 for G in big_g]).any(0) & ~mixed
    kept_any = kept_pos | kept_neg
    if opts.get("random_sign"):
        # The ablation keeps a random sign everywhere: unanimous positions lose it half the time.
        frac = kept_any[unanimous].double().mean().item()
        assert unanimous.sum() > 200 and 0.4 < frac < 0.6
    else:
        assert kept_any[unanimous].all()


def constructed_p_case(p_values, n, batch_separated):
    """k=2 gradients whose purity P is p at n positions for each p (A = 1, G = g)."""
    p = torch.tensor(p_values, dtype=torch.float64).repeat_interleave(n)
    shape = (1, p.numel()) if batch_separated else (p.numel(),)
    act = torch.ones(shape, dtype=torch.float64)
    grads = [p.reshape(shape).clone(), (p - 1.0).reshape(shape)]  # G1 = p, G2 = -(1 - p)
    return p, act, grads


# The default (Numba) backend; the torch path equals it bit for bit (tests above).
@pytest.mark.parametrize("backend", ["numba"])
@pytest.mark.parametrize("opts,f", [
    ({}, lambda p: p),
    ({"scale": 2.0}, lambda p: (0.5 + 2.0 * (p - 0.5)).clamp(0, 1)),
    ({"scale": 0.5}, lambda p: 0.5 + 0.5 * (p - 0.5)),
    ({"keep_prob": "sigmoid"}, lambda p: torch.sigmoid(4.0 * (p - 0.5))),
    ({"keep_prob": "sigmoid", "scale": 3.0}, lambda p: torch.sigmoid(12.0 * (p - 0.5))),
    ({"random_sign": True}, lambda p: torch.full_like(p, 0.5)),
])
def test_fraction_keeping_the_positive_side_is_f_of_p(backend, opts, f):
    p_values, n = [0.05, 0.2, 0.4, 0.5, 0.65, 0.9], 40000
    for batch_separated in (True, False):
        p, act, grads = constructed_p_case(p_values, n, batch_separated)
        out = combine(grads, act, backend, 21 + batch_separated, batch_separated=batch_separated,
                      **opts).reshape(-1)
        kept_pos = out == grads[0].reshape(-1)
        kept_neg = out == grads[1].reshape(-1)
        assert torch.equal(kept_pos | kept_neg, torch.ones_like(kept_pos))
        for j, pv in enumerate(p_values):
            frac = kept_pos[j * n:(j + 1) * n].double().mean().item()
            expect = f(torch.tensor(pv, dtype=torch.float64)).item()
            sigma = math.sqrt(expect * (1 - expect) / n)
            assert abs(frac - expect) <= 5 * sigma + 1e-12, (pv, frac, expect)


def test_uniform_draws_are_uniform_and_independent_of_the_seed():
    seeds = torch.randint(0, 2 ** 32, (2,), generator=gen(3))
    u = graddrop_uniform(seeds, 200000).double()
    assert u.min() > 0 and u.max() < 1 and not (u == 0.5).any()
    counts = torch.histc(u, bins=100, min=0, max=1)
    chi2 = (((counts - 2000) ** 2) / 2000).sum().item()
    assert chi2 < 160, chi2  # 99 dof: P(chi2 > 160) ~ 1e-4
    # Neighbouring positions and another draw are uncorrelated.
    assert abs(torch.corrcoef(torch.stack([u[1:], u[:-1]]))[0, 1]) < 0.01
    other = graddrop_uniform(torch.randint(0, 2 ** 32, (2,), generator=gen(4)), 200000).double()
    assert abs(torch.corrcoef(torch.stack([u, other]))[0, 1]) < 0.01


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_task_is_the_identity(backend):
    act, grads = random_case((3, 4, 5), 1, seed=8)
    act[0, 0] = 0  # the literal rule would drop G == 0 here: one task must not
    assert combine(grads, act, backend, renormalize=True) is grads[0]
    gd = GradDrop(num_tasks=1)
    x = act.clone().requires_grad_()
    (copy,) = gd(x)
    assert copy is x
    copy.backward(grads[0])
    assert torch.equal(x.grad, grads[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_none_gradient_counts_as_zero(backend):
    act, grads = random_case((4, 6, 7), 3, seed=9)
    zeros = torch.zeros_like(grads[1])
    for kw in ({}, {"renormalize": True}, {"leaks": (0.0, 0.5, 0.3)}):
        assert torch.equal(combine([grads[0], None, grads[2]], act, backend, **kw),
                           combine([grads[0], zeros, grads[2]], act, backend, **kw))
    assert torch.equal(combine([None, None], act, backend), torch.zeros_like(act))


def test_eps_threshold_and_input_value_mode():
    # B=2 batch-separated position, A = [1, 5], g1 = [1, -1], g2 = [1, 1], replicated n times.
    n = 20000
    act = torch.tensor([[1.0], [5.0]]).expand(2, n).contiguous()
    g1 = torch.tensor([[1.0], [-1.0]]).expand(2, n).contiguous()
    g2 = torch.ones(2, n)
    for backend in BACKENDS:
        # Sign mode: G1 = 0 contributes nothing, G2 = 2 > 0 is unanimous: out == g2.
        assert torch.equal(combine([g1, g2], act, backend), g2)
        # Value mode: G1 = -4, G2 = 6, P = 0.6: task 2 (positive) survives 60% of the time.
        out = combine([g1, g2], act, backend, use_input_sign=False)
        kept_g2 = (out == g2).all(0)
        assert torch.equal(kept_g2 | (out == g1).all(0), torch.ones(n, dtype=torch.bool))
        assert abs(kept_g2.double().mean().item() - 0.6) < 5 * math.sqrt(0.24 / n)
        # |A| <= eps counts as sign 0: with A[1] below eps, G1 = 1 and G2 = 1: nothing dropped.
        small = torch.tensor([[1.0], [5e-8]]).expand(2, n).contiguous()
        assert torch.equal(combine([g1, g2], small, backend), g1 + g2)
        assert not torch.equal(combine([g1, g2], small, backend, eps=1e-8), g1 + g2)


def test_generator_makes_draws_reproducible():
    act, grads = random_case((4, 16, 20), 2, seed=10)
    a = combine(grads, act, "numba", seed=5)
    assert torch.equal(a, combine(grads, act, "numba", seed=5))
    assert not torch.equal(a, combine(grads, act, "numba", seed=6))
    torch.manual_seed(123)
    b = graddrop_combine(grads, act)
    torch.manual_seed(123)
    assert torch.equal(b, graddrop_combine(grads, act))
    assert torch.equal(graddrop_combine_reference(grads, act, generator=gen(5)), a)


@pytest.mark.parametrize("kwargs,match", [
    ({"leaks": (0.0,)}, "leaks has 1 values for 2 tasks"),
    ({"leaks": (0.0, 1.5)}, r"leaks\[1\] must be a number in \[0, 1\]"),
    ({"keep_prob": "cosine"}, "keep_prob must be one of"),
    ({"scale": 0.0}, "scale must be a finite number > 0"),
    ({"eps": -1.0}, "eps must be a finite number >= 0"),
    ({"backend": "cuda"}, "backend must be one of"),
])
def test_bad_options_are_rejected_with_a_clear_message(kwargs, match):
    act, grads = random_case((2, 3), 2)
    with pytest.raises(ValueError, match=match):
        graddrop_combine(grads, act, **kwargs)


def test_bad_gradients_are_rejected_with_a_clear_message():
    act, grads = random_case((2, 3), 2)
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(3, 2\), the activation \(2, 3\)"):
        graddrop_combine([grads[0], grads[1].T], act)
    with pytest.raises(TypeError,
                       match=r"grads\[1\] is torch.float64 but grads\[0\] is torch.float32"):
        graddrop_combine([grads[0], grads[1].double()], act)
    with pytest.raises(ValueError, match=r"grads\[0\] is on meta"):
        graddrop_combine([torch.empty((2, 3), device="meta"), grads[1]], act)
    with pytest.raises(ValueError, match="backend='numba' needs CPU tensors"):
        graddrop_combine([g.to("meta") for g in grads], act.to("meta"), backend="numba")
    with pytest.raises(TypeError, match="non-empty list"):
        graddrop_combine([], act)
    with pytest.raises(ValueError, match="num_tasks must be an integer >= 1"):
        GradDrop(num_tasks=0)
    with pytest.raises(ValueError, match="leaks has 3 values for 2 tasks"):
        GradDrop(num_tasks=2, leaks=(0.0, 0.0, 0.0))


# ------------------------------------------------------------------------------------------
# The module.
# ------------------------------------------------------------------------------------------
class TwoHeads(torch.nn.Module):
    def __init__(self, gd):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.gd = gd
        self.cls = torch.nn.Conv2d(8, 2, 1)
        self.box = torch.nn.Conv2d(8, 4, 1)

    def losses(self, x, copies=None):
        feat = torch.relu(self.trunk(x))
        c_cls, c_box = self.gd(feat) if copies is None else copies(feat)
        return self.cls(c_cls).pow(2).mean(), self.box(c_box).sin().mean(), feat


@pytest.mark.parametrize("opts", [{}, {"renormalize": True, "leaks": (0.2, 0.0)},
                                  {"keep_prob": "sigmoid", "batch_separated": False}])
def test_module_backward_equals_graddrop_combine_of_the_per_copy_gradients(opts):
    x = torch.randn(4, 3, 12, 12, generator=gen(1))
    model = TwoHeads(GradDrop(num_tasks=2, generator=gen(42), **opts))
    l_cls, l_box, _ = model.losses(x)
    (l_cls + l_box).backward()
    trunk_grad = model.trunk.weight.grad.clone()

    # The same graph without GradDrop: separate copies, per-task gradients of the activation.
    model.zero_grad()
    feat_holder = {}

    def detached_copies(feat):
        feat_holder["feat"] = feat
        feat_holder["copies"] = [feat.detach().requires_grad_() for _ in range(2)]
        return feat_holder["copies"]

    l_cls2, l_box2, feat = model.losses(x, detached_copies)
    g_cls = torch.autograd.grad(l_cls2, feat_holder["copies"][0])[0]
    g_box = torch.autograd.grad(l_box2, feat_holder["copies"][1])[0]
    combined = graddrop_combine([g_cls, g_box], feat.detach(), generator=gen(42), **opts)
    feat.backward(combined)
    assert torch.equal(model.trunk.weight.grad, trunk_grad)
    assert not torch.equal(combined, g_cls + g_box)  # GradDrop really changed the gradient


def test_module_returns_views_in_training_and_references_otherwise():
    gd = GradDrop(num_tasks=3)
    x = torch.randn(2, 4, requires_grad=True)
    copies = gd(x)
    assert len(copies) == 3 and all(torch.equal(c, x) and c is not x for c in copies)
    assert all(c.grad_fn is not None for c in copies)
    with pytest.raises(RuntimeError, match="modified inplace"):
        copies[0].add_(1)  # one head must not change another head's input


def test_module_is_a_no_op_in_eval_and_under_no_grad():
    gd = GradDrop(num_tasks=2)
    x = torch.randn(2, 4, requires_grad=True)
    with torch.no_grad():
        out = gd(x)
        assert len(out) == 2 and all(c is x for c in out)
    gd.eval()
    out = gd(x)
    assert all(c is x for c in out)
    # In eval mode the gradient is the plain sum (nothing dropped).
    (out[0].sum() * 2 - out[1].sum()).backward()
    assert torch.equal(x.grad, torch.ones(2, 4))
    gd.train()
    plain = torch.randn(2, 4)  # needs no gradient: nothing to combine, x returned as is
    assert all(c is plain for c in gd(plain))


def test_module_with_an_unused_head():
    x = torch.randn(4, 5, 6, generator=gen(2), requires_grad=True)
    gd = GradDrop(num_tasks=3, generator=gen(7))
    a, b, c = gd(x)
    (a * torch.arange(6.0)).sum().backward()  # heads b and c produce no loss: None gradients
    g = torch.zeros(4, 5, 6) + torch.arange(6.0)
    expect = graddrop_combine([g, None, None], x.detach(), generator=gen(7))
    assert torch.equal(x.grad, expect)


def test_module_extra_repr_lists_the_options():
    gd = GradDrop(num_tasks=2, leaks=(1.0, 0.0), keep_prob="sigmoid", scale=2.0,
                  renormalize=True)
    text = repr(gd)
    for part in ("num_tasks=2", "leaks=(1.0, 0.0)", "batch_separated=True",
                 "keep_prob='sigmoid'", "scale=2.0", "renormalize=True", "use_input_sign=True",
                 "random_sign=False", "eps=1e-07"):
        assert part in text


def test_module_under_autocast_bfloat16():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    gd = GradDrop(num_tasks=2, generator=gen(3))
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feat = model(x)
        assert feat.dtype == torch.bfloat16
        a, b = gd(feat)
        loss = a.float().pow(2).mean() - b.float().mean()
    loss.backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.dtype == torch.float32
    assert torch.isfinite(model[0].weight.grad).all()


# ------------------------------------------------------------------------------------------
# The paper's toy illustration.
# ------------------------------------------------------------------------------------------
def toy_losses(w):
    # L1 has minima at -2 and 0, L2 only at 0: w = 0 is the joint minimum. Their sum also has a
    # local minimum at w = (-12 - sqrt(1.6)) / 8 = -1.658, where the two gradients cancel.
    return (w + 2) ** 2 * w ** 2, 0.45 * w ** 2


def run_toy(use_graddrop, seed, steps=200, lr=0.08):
    w = torch.nn.Parameter(torch.tensor([-2.5], dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=lr)
    layer = GradDrop(num_tasks=2, batch_separated=False, generator=gen(seed))
    path = []
    for _ in range(steps):
        opt.zero_grad()
        shared = w + 10.0  # the shared activation (positive: its sign is 1)
        c1, c2 = layer(shared) if use_graddrop else (shared, shared)
        l1, _ = toy_losses(c1 - 10.0)
        _, l2 = toy_losses(c2 - 10.0)
        (l1 + l2).sum().backward()
        opt.step()
        path.append(w.item())
    return torch.tensor(path, dtype=torch.float64)


def test_toy_example_plain_sum_settles_between_graddrop_reaches_joint_minimum():
    plain = run_toy(False, 0)
    # The plain sum settles where the two gradients cancel, between L1's minimum at -2 and the
    # joint minimum at 0, with both losses clearly above their minima.
    assert (plain[-50:] - plain[-1]).abs().max() < 1e-9
    assert plain[-1].item() == pytest.approx((-12 - math.sqrt(1.6)) / 8, abs=1e-6)
    l1, l2 = toy_losses(plain[-1])
    assert l1 > 0.3 and l2 > 1.0
    for seed in range(3):
        path = run_toy(True, seed)
        # GradDrop keeps moving (its updates do not cancel) until both losses are at their
        # joint minimum, and stays there: near w = 0 both gradients agree, nothing is dropped.
        hit = int(torch.nonzero(path.abs() < 1e-3)[0])
        assert hit < 150, seed
        assert path[hit:].abs().max() < 1e-3
        l1, l2 = toy_losses(path[-1])
        assert l1 < 1e-8 and l2 < 1e-8
        assert (path[:hit].diff().abs() > 1e-3).float().mean() > 0.5  # it kept moving
