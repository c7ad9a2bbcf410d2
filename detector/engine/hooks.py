"""mmengine hooks of the training loop: NaN guard, per-epoch seeding, RNG state in checkpoints,
and a cross-rank parameter-sync check for distributed runs.

- ``NaNGuardHook``: stops training at the first non-finite loss, naming the iteration and every
  loss value of that step. It runs before the checkpoint hook, so the bad state is never saved
  and the last good checkpoint stays intact.
- ``EpochSeedHook``: at each epoch start reseeds python/numpy/torch (and any ``torch.Generator``
  a module of the model owns, e.g. GradDrop's) from ``(seed, epoch, rank)`` and tells the
  dataset the epoch. Training inside an epoch then depends only on (seed, epoch, weights,
  optimizer state), which is what makes ``--resume`` continue bit-for-bit like an uninterrupted
  run, whatever ran in between (validation draws from the global RNG too).
- ``RNGStateHook``: stores the RNG states in every checkpoint and restores them on load (the
  iteration-based counterpart of the above).
- ``RankSyncCheckHook``: every ``interval`` iterations all-gathers a checksum of the parameters
  and fails when the ranks disagree (DDP must keep them identical).
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from mmengine.dist import all_gather, get_rank, get_world_size, is_distributed
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS

__all__ = ["NaNGuardHook", "EpochSeedHook", "RNGStateHook", "RankSyncCheckHook",
           "ProgressBarHook", "NonFiniteLossError", "model_generators", "params_checksum",
           "GradientStatsHook", "gradient_layers"]


class NonFiniteLossError(FloatingPointError):
    """Training stopped because a loss became NaN or infinite."""


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def model_generators(model) -> dict[str, torch.Generator]:
    """The ``torch.Generator`` objects that modules of ``model`` keep as attributes, by name."""
    out = {}
    for name, mod in _unwrap(model).named_modules():
        for attr, val in vars(mod).items():
            if isinstance(val, torch.Generator):
                out[f"{name}.{attr}" if name else attr] = val
    return out


@HOOKS.register_module()
class NaNGuardHook(Hook):
    """Raise :class:`NonFiniteLossError` when any logged loss of a training step is not finite."""

    priority = "VERY_HIGH"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs:
            return
        values = {}
        for k, v in outputs.items():
            try:
                values[k] = float(v.detach().float().mean()) if torch.is_tensor(v) else float(v)
            except (TypeError, ValueError):
                continue
        bad = [k for k, v in values.items() if "loss" in k and not math.isfinite(v)]
        if not bad:
            return
        # This run's own work dir, not the message hub's ``last_ckpt``: after resuming a copied
        # run that still names the checkpoint in the work dir it was copied from.
        from .resume import newest_intact_checkpoint
        ckpt = newest_intact_checkpoint(runner.work_dir)
        shown = ", ".join(f"{k}={v:.6g}" for k, v in values.items())
        raise NonFiniteLossError(
            f"non-finite loss {bad} at iteration {runner.iter + 1} (epoch {runner.epoch + 1}, "
            f"batch {batch_idx}); losses at that step: {shown}. Training stopped; the last good "
            f"checkpoint is {ckpt or 'none (no checkpoint saved yet)'}")


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, np.uint32)[0])


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Reseed every RNG at each epoch start from (seed, epoch, rank); set the dataset's epoch."""

    priority = "VERY_HIGH"

    def __init__(self, seed: int | None = None):
        self.seed = seed

    def before_train_epoch(self, runner) -> None:
        seed = self.seed if self.seed is not None else (runner.seed or 0)
        s = _epoch_seed(seed, runner.epoch, get_rank())
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        for i, gen in enumerate(model_generators(runner.model).values()):
            gen.manual_seed(s + 1 + i)
        dataset = runner.train_dataloader.dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(runner.epoch)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save python/numpy/torch RNG states (and model-owned generators) in checkpoints; restore them."""

    priority = "NORMAL"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        np_state = np.random.get_state()
        checkpoint["rng_state"] = dict(
            python=random.getstate(), numpy=(np_state[0], np_state[1], *np_state[2:]),
            torch=torch.get_rng_state(),
            generators={k: g.get_state() for k, g in model_generators(runner.model).items()})

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get("rng_state")
        if not state:
            return
        random.setstate(state["python"])
        np.random.set_state(tuple(state["numpy"]))
        torch.set_rng_state(state["torch"])
        gens = model_generators(runner.model)
        for k, s in state.get("generators", {}).items():
            if k in gens:
                gens[k].set_state(s)


def params_checksum(model) -> torch.Tensor:
    """A float64 vector (sum, sum of squares, weighted sum) over all parameters."""
    acc = torch.zeros(3, dtype=torch.float64)
    for i, p in enumerate(_unwrap(model).parameters()):
        d = p.detach().double().flatten()
        acc += torch.stack([d.sum(), (d * d).sum(), d.sum() * (i + 1)]).cpu()
    return acc


@HOOKS.register_module()
class RankSyncCheckHook(Hook):
    """In distributed training, check every ``interval`` iterations that all ranks hold the same weights."""

    priority = "LOW"

    def __init__(self, interval: int = 50):
        self.interval = int(interval)

    def _check(self, runner, iteration: int) -> None:
        if not is_distributed() or get_world_size() < 2:
            return
        sums = all_gather(params_checksum(runner.model))
        ref = sums[0]
        bad = [r for r, s in enumerate(sums) if not torch.equal(s, ref)]
        if bad:
            raise RuntimeError(f"ranks {bad} hold different parameters than rank 0 at iteration "
                               f"{iteration}: {[s.tolist() for s in sums]}")
        runner.logger.info(f"ranks in sync at iteration {iteration} "
                           f"({get_world_size()} ranks, checksum {ref.tolist()})")

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            self._check(runner, runner.iter + 1)  # the loop counts this iteration after the hooks

    def after_train(self, runner) -> None:
        self._check(runner, runner.iter)


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """tqdm progress bars over training iterations and evaluation frames (rank 0 only).

    The bar shows the latest total loss; mmengine's text log keeps the per-task losses.
    """

    priority = "BELOW_NORMAL"

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bar = None

    def _open(self, total, desc, initial=0):
        if not self.enabled or get_rank() != 0:
            return
        from tqdm import tqdm
        self._close()
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True,
                         leave=True)

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def before_train(self, runner) -> None:
        self._open(runner.max_iters, "train", initial=runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if outputs and "loss" in outputs:
                self._bar.set_postfix(epoch=runner.epoch + 1, loss=f"{float(torch.as_tensor(outputs['loss']).detach()):.3f}",
                                      refresh=False)

    def after_train(self, runner) -> None:
        self._close()

    def before_val_epoch(self, runner) -> None:
        self._paused = self._bar
        self._bar = None
        self._open(len(runner.val_dataloader), "val")

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._close()
        self._bar = getattr(self, "_paused", None)

    def before_test_epoch(self, runner) -> None:
        self._open(len(runner.test_dataloader), "test")

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._close()


def gradient_layers(model) -> dict[str, "torch.nn.Module"]:
    """The ``ops.multitask.GradientLayer`` modules of ``model``, by module name."""
    from ops.multitask import GradientLayer

    return {name: mod for name, mod in _unwrap(model).named_modules()
            if isinstance(mod, GradientLayer)}


@HOOKS.register_module()
class GradientStatsHook(Hook):
    """Log the multitask gradient diagnostics of the shared activation to the message hub (so
    mmengine's LoggerHook writes them to the text log and TensorBoard as ``grad/<key>``).

    Sets ``stats_interval`` of every gradient layer (0 turns them off; benchmarks leave this hook
    out). The layer computes the statistics inside its backward, every ``interval`` steps, on a
    subsample of at most ``sample`` elements; the method's task weights (GradNorm, uncertainty,
    MGDA, ...) are logged every ``interval`` steps too.
    """

    priority = "NORMAL"

    def __init__(self, interval: int = 50, sample: int = 65536):
        if int(interval) < 0:
            raise ValueError(f"GradientStatsHook: interval must be >= 0, got {interval!r}")
        self.interval = int(interval)
        self.sample = int(sample)
        self._seen: dict[str, float] = {}

    def before_train(self, runner) -> None:
        for layer in gradient_layers(runner.model).values():
            layer.stats_interval = self.interval
            layer.stats_sample = self.sample

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for name, layer in gradient_layers(runner.model).items():
            stats = layer.stats
            if not stats or self._seen.get(name) == stats.get("step"):
                continue
            self._seen[name] = stats.get("step")
            for key, value in stats.items():
                if key != "step" and math.isfinite(value):
                    runner.message_hub.update_scalar(f"train/grad/{key}", value)
