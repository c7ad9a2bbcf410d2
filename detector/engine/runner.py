"""Config checking and Runner construction shared by ``tools/train.py``, ``tools/test.py`` and the demo.

``check_config`` fails at start-up - before any data is loaded or a model built - with a message
naming the config key and what was expected, for the two mistakes people make most: a ``type``
that no registry knows (typo, missing import) and a ``data_root`` that does not exist.
``build_runner`` turns a Config plus command-line choices into an mmengine ``Runner``: work dir,
resume, AMP (float16 + a dynamic loss scaler on CUDA, bfloat16 on the CPU), CPU-friendly DDP
(gloo backend, no ``device_ids``).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

__all__ = ["ConfigError", "check_config", "build_runner", "init_distributed", "set_data_root",
           "load_config", "add_common_cli_args", "parse_cli_args", "follow_max_epochs"]


class ConfigError(ValueError):
    """A config names something that does not exist; the message names the key."""


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """Mixed precision on the CPU: the forward runs under ``torch.autocast("cpu", bfloat16)``.

    mmengine's ``AmpOptimWrapper`` needs CUDA (or another accelerator) for its GradScaler. On the
    CPU autocast supports bfloat16 only, which has float32's exponent range, so gradients do
    not underflow and no loss scaling is needed: parameters, gradients and the optimizer state
    stay float32, only the autocast ops (convolutions, matmuls) compute in bfloat16.
    """

    def __init__(self, dtype: str | torch.dtype = "bfloat16", **kwargs):
        if dtype not in ("bfloat16", torch.bfloat16):
            raise ValueError(f"CPUAmpOptimWrapper: CPU autocast supports bfloat16 only, got {dtype!r}")
        super().__init__(**kwargs)
        self.cast_dtype = torch.bfloat16

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast("cpu", dtype=torch.bfloat16):
            yield


def enable_amp(cfg: Config, cuda: bool | None = None) -> str:
    """Switch ``cfg.optim_wrapper`` to mixed precision, in place; returns what was chosen.

    CUDA: mmengine's ``AmpOptimWrapper``, float16 autocast with a dynamic ``GradScaler``
    (``loss_scale``/``dtype`` kept where the config sets them). No CUDA: ``CPUAmpOptimWrapper``
    (bfloat16, no scaler). A config that already names one of them for the other device is
    switched over."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    ow = cfg.optim_wrapper
    kind = ow.get("type", "OptimWrapper")
    if kind not in ("OptimWrapper", "AmpOptimWrapper", "CPUAmpOptimWrapper"):
        raise ConfigError(f"--amp: config key 'optim_wrapper.type' = {kind!r}; expected "
                          f"OptimWrapper, AmpOptimWrapper or CPUAmpOptimWrapper")
    if cuda:
        ow.type = "AmpOptimWrapper"
        if kind != "AmpOptimWrapper":
            ow.pop("dtype", None)
        ow.setdefault("loss_scale", "dynamic")
        ow.setdefault("dtype", "float16")
        return f"AMP: {ow.dtype} autocast on CUDA with loss scale {ow.loss_scale!r}"
    ow.type = "CPUAmpOptimWrapper"
    ow.pop("loss_scale", None)
    ow.pop("use_fsdp", None)
    ow["dtype"] = "bfloat16"
    return "AMP: bfloat16 autocast on the CPU (no loss scaling needed)"


def _registries():
    from mmengine import registry as R

    from .. import registry as ours
    return dict(
        model=ours.MODELS, dataset=ours.DATASETS, transform=ours.TRANSFORMS, metric=ours.METRICS,
        hook=ours.HOOKS, sampler=R.DATA_SAMPLERS, function=R.FUNCTIONS,
        optimizer=R.OPTIMIZERS, optim_wrapper=R.OPTIM_WRAPPERS,
        param_scheduler=R.PARAM_SCHEDULERS, loop=R.LOOPS, visualizer=R.VISUALIZERS,
        vis_backend=R.VISBACKENDS, log_processor=R.LOG_PROCESSORS, model_wrapper=R.MODEL_WRAPPERS)


def _registry_for(path: list[str]) -> str | None:
    """Which registry a ``type`` at this key path is looked up in (None: not ours to check)."""
    top = path[0]
    if top == "model":
        return "model"
    if top.endswith("_dataloader"):
        if "pipeline" in path:
            return "transform"
        if "sampler" in path or "batch_sampler" in path:
            return "sampler"
        if "collate_fn" in path:
            return "function"
        if path[1:2] == ["dataset"]:
            # pipeline entries are inside lists, the dataset itself sits at [top, dataset]
            return "dataset" if len(path) == 2 else None
        return None
    if top.endswith("_evaluator"):
        return "metric"
    if top in ("default_hooks", "custom_hooks"):
        return "hook"
    if top == "optim_wrapper":
        return "optimizer" if "optimizer" in path else ("optim_wrapper" if len(path) == 1 else None)
    if top == "param_scheduler":
        return "param_scheduler"
    if top in ("train_cfg", "val_cfg", "test_cfg"):
        return "loop"
    if top == "visualizer":
        return "vis_backend" if "vis_backends" in path else "visualizer"
    if top == "log_processor":
        return "log_processor"
    if top == "model_wrapper_cfg":
        return "model_wrapper"
    return None


def _walk(node, path, out):
    if isinstance(node, dict):
        if isinstance(node.get("type"), str):
            out.append((path, node))
        for k, v in node.items():
            _walk(v, path + [str(k)], out)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _walk(v, path + [str(i)], out)


def _key(path: list[str]) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if p.isdigit() else (("." if s else "") + p)
    return s


def import_registering_modules() -> None:
    """Make every project and mmengine module register itself (registry ``locations`` are lazy)."""
    import importlib

    for mod in ("mmengine.runner", "mmengine.optim", "mmengine.hooks", "mmengine.visualization",
                "mmengine.model", "mmengine.dataset", "mmengine.evaluator",
                "detector.models", "detector.datasets.dataset", "detector.datasets.transforms",
                "detector.evaluation.metric", "detector.engine.hooks"):
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise ConfigError(f"cannot import {mod} ({e}); the project is not fully installed") from e


def check_config(cfg: Config, check_data: bool = True, phases=("train", "val", "test")) -> None:
    """Raise :class:`ConfigError` naming the key of an unknown ``type`` or a missing ``data_root``."""
    from mmengine.registry import DefaultScope

    import_registering_modules()
    regs = _registries()
    scope = cfg.get("default_scope", "detector")
    if DefaultScope.get_current_instance() is None and scope:
        DefaultScope.get_instance(f"check_config-{os.getpid()}-{id(cfg)}", scope_name=scope)
    found: list = []
    _walk(cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg), [], found)
    for path, node in found:
        reg_name = _registry_for(path)
        if reg_name is None:
            continue
        reg = regs[reg_name]
        if reg.get(node["type"]) is None:
            names = sorted(set(reg.module_dict) | set(getattr(reg.parent, "module_dict", {}) or {}))
            raise ConfigError(
                f"config key {_key(path + ['type'])!r} = {node['type']!r}: no such {reg_name} is "
                f"registered; expected one of {names}")
    check_class_names(cfg)  # every dataloader, whatever ``phases``
    if check_data:
        for phase in phases:
            dl = cfg.get(f"{phase}_dataloader")
            if not dl or not isinstance(dl.get("dataset"), dict):
                continue
            ds = dl["dataset"]
            root = ds.get("data_root")
            if root is None:
                continue
            split = ds.get("split", "train")
            key = f"{phase}_dataloader.dataset.data_root"
            if not Path(root).is_dir():
                raise ConfigError(
                    f"config key {key!r} = {str(root)!r}: folder does not exist; expected the output "
                    f"folder of tools/convert_waymo.py (with a {split!r} split)")
            if not (Path(root) / split).is_dir():
                raise ConfigError(
                    f"config key {key!r} = {str(root)!r}: has no {split!r} split folder "
                    f"({Path(root) / split} missing); expected tools/convert_waymo.py output "
                    f"converted with --split {split}")


# torch-free, so that tools/*.py --help answers without loading torch
from ..cli import add_common_cli_args, parse_cli_args  # noqa: E402,F401


def init_distributed(launcher: str) -> None:
    """Start torch.distributed ourselves on CPU-only machines.

    mmengine's launchers call ``torch.cuda.set_device``, which a CPU build of torch does not have;
    with CUDA present we leave it all to mmengine.
    """
    import torch.distributed as dist

    if launcher == "none" or torch.cuda.is_available() or dist.is_initialized():
        return
    if launcher == "slurm":
        os.environ.setdefault("RANK", os.environ["SLURM_PROCID"])
        os.environ.setdefault("WORLD_SIZE", os.environ["SLURM_NTASKS"])
        os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
        os.environ.setdefault("MASTER_PORT", "29500")
        if "MASTER_ADDR" not in os.environ:
            import subprocess
            nodes = os.environ["SLURM_NODELIST"]
            os.environ["MASTER_ADDR"] = subprocess.getoutput(
                f"scontrol show hostname {nodes} | head -n1")
    elif launcher != "pytorch":
        raise ConfigError(f"--launcher {launcher!r}: expected none, pytorch or slurm")
    dist.init_process_group(backend="gloo", rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))


def finish_distributed() -> None:
    """End a distributed run cleanly: every rank waits for the others, then the process group is
    destroyed while the interpreter is still whole.

    Left to interpreter shutdown, gloo's worker threads can outlive the objects they hold and the
    process dies with ``terminate called without an active exception`` (SIGABRT) after a run
    that finished - the exit status then reports a failure that did not happen. A no-op when
    torch.distributed was never started.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class TextCachingConfig(Config):
    """A ``Config`` whose ``pretty_text`` is formatted once per content.

    mmengine formats the whole config with yapf (~1 s for the demo config on this CPU) for every
    checkpoint's meta, the config dump, the TensorBoard copy and the log: 30 epochs of the demo
    spent ~36 s on it. The text is cached under the config's ``repr`` (milliseconds), so a
    changed config is formatted again and the text always matches the content."""

    @property
    def pretty_text(self) -> str:
        key = repr(self._cfg_dict.to_dict())
        hit = self.__dict__.get("_pretty_text_cache")
        if hit is None or hit[0] != key:
            hit = (key, super().pretty_text)
            object.__setattr__(self, "_pretty_text_cache", hit)
        return hit[1]


def _wait_for_unused_run_name(cfg: Config) -> None:
    """mmengine names a Runner's logger, message hub and visualizer ``<config stem>_<timestamp>``
    (one-second resolution) and hands back an existing instance of that name: a second run of
    the same config started within the same second would write into the first run's log file
    and console stream (the stdout it was created with). Wait for the next second then."""
    import time

    from mmengine.logging import MMLogger

    stem = cfg.get("experiment_name") or (Path(cfg.filename).stem if cfg.filename else None)
    while True:
        now = time.time()
        stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(now))
        name = f"{stem}_{stamp}" if stem else stamp
        if not MMLogger.check_instance_created(name):
            return
        time.sleep(1.0 - (now % 1.0) + 0.01)


def build_runner(cfg: Config, work_dir: str | None = None, resume: str | bool | None = None,
                 load_from: str | None = None, amp: bool = False, launcher: str = "none",
                 logger=None):
    """An mmengine Runner for ``cfg`` (already merged with --cfg-options), after ``check_config``."""
    from .checkpoint import allow_project_checkpoint_globals
    from .logs import ProjectRunner  # quiet console: no config dump / hook table, tqdm-aware

    allow_project_checkpoint_globals()
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    if cfg.get("work_dir") is None:
        stem = Path(cfg.filename).stem if cfg.filename else "run"
        cfg.work_dir = str(Path("work_dirs") / stem)
    if resume:
        from .resume import resolve_resume  # raises CheckpointError naming the broken file

        ckpt = resolve_resume(cfg.work_dir, resume)
        cfg.resume = True
        cfg.load_from = None if ckpt is None else str(ckpt)
    if load_from is not None:
        cfg.load_from = str(load_from)
    if amp:
        chosen = enable_amp(cfg)
        if logger is not None:
            logger(chosen)
    if launcher != "none":
        init_distributed(launcher)
        if not torch.cuda.is_available():
            # No device_ids on CPU, and gloo (nccl needs GPUs).
            cfg.setdefault("model_wrapper_cfg", dict(type="MMDistributedDataParallel", device_ids=None,
                                                     broadcast_buffers=False,
                                                     find_unused_parameters=False))
            env = cfg.setdefault("env_cfg", {})
            env.setdefault("dist_cfg", {})["backend"] = "gloo"
    if type(cfg) is Config:
        object.__setattr__(cfg, "__class__", TextCachingConfig)  # Config routes setattr to its dict
    _wait_for_unused_run_name(cfg)
    return ProjectRunner.from_cfg(cfg)


def set_data_root(cfg: Config, data_root: str) -> Config:
    """Point every dataloader of ``cfg`` (and GT sampling's database) at ``data_root``, in place."""
    for phase in ("train", "val", "test"):
        dl = cfg.get(f"{phase}_dataloader")
        if not dl or not isinstance(dl.get("dataset"), dict):
            continue
        dl["dataset"]["data_root"] = str(data_root)
        for t in dl["dataset"].get("pipeline", []) or []:
            if t.get("type") == "ObjectSample" and isinstance(t.get("db"), dict):
                t["db"]["data_root"] = str(data_root)
    return cfg


def follow_max_epochs(cfg: Config, old_max_epochs, log=None) -> None:
    """Keep the epoch-based LR schedule as long as training after ``--cfg-options`` changed
    ``train_cfg.max_epochs`` (in place).

    Every by-epoch scheduler whose ``end`` (and ``T_max``) was the config's ``max_epochs`` is
    stretched or shrunk to the new value, so e.g. the cosine decay still reaches its minimum at
    the last epoch instead of training the extra epochs at the minimum rate. A by-epoch scheduler
    that would then end after the last epoch (it was set on its own, or ends past the old
    length) is an error naming it, as is one that disagrees with ``max_epochs`` without
    having been set to it."""
    new_max = (cfg.get("train_cfg") or {}).get("max_epochs")
    scheds = cfg.get("param_scheduler")
    if new_max is None or not scheds:
        return
    scheds = scheds if isinstance(scheds, (list, tuple)) else [scheds]
    for i, sc in enumerate(scheds):
        if not isinstance(sc, dict) or not sc.get("by_epoch", True):
            continue
        if old_max_epochs is not None and new_max != old_max_epochs:
            for key in ("end", "T_max"):
                if sc.get(key) == old_max_epochs:
                    sc[key] = new_max
            if log is not None:
                log(f"param_scheduler[{i}] ({sc.get('type')}) follows train_cfg.max_epochs = "
                    f"{new_max}")
        end = sc.get("end")
        if end is not None and end != float("inf") and end > new_max:
            raise ConfigError(
                f"config key 'param_scheduler[{i}].end' = {end} ({sc.get('type')}, by epoch) is "
                f"after the last epoch (train_cfg.max_epochs = {new_max}): the schedule would "
                f"never finish. Set both, e.g. --cfg-options train_cfg.max_epochs={new_max} "
                f"and the scheduler's end")


def load_config(path: str, cfg_options: dict | None = None, data_root: str | None = None,
                phases=("train", "val", "test")) -> Config:
    """What every command line does first: read the config, apply ``--cfg-options`` and
    ``--data-root``, then ``check_config`` for the phases it will run (raises ConfigError)."""
    from .cfg_options import apply_cfg_options

    cfg = Config.fromfile(path)
    if cfg_options:
        old_max = (cfg.get("train_cfg") or {}).get("max_epochs")
        import_registering_modules()
        apply_cfg_options(cfg, cfg_options)
        follow_max_epochs(cfg, old_max)
    if data_root:
        set_data_root(cfg, data_root)
    check_config(cfg, phases=phases)
    return cfg


def _default_of(cls, arg: str):
    import inspect

    return inspect.signature(cls).parameters[arg].default


def _dataset_class_names(ds: dict, key: str):
    """(key, class list) of a dataloader's dataset config, looking through wrappers that hold
    a ``dataset`` (RepeatDataset, ClassBalancedDataset); None where it names no classes."""
    from ..datasets.dataset import WaymoDetDataset

    if "class_names" in ds:
        return f"{key}.class_names", list(ds["class_names"])
    if ds.get("type") in ("WaymoDetDataset", WaymoDetDataset):
        return f"{key}.class_names", list(_default_of(WaymoDetDataset, "class_names"))
    if isinstance(ds.get("dataset"), dict):
        return _dataset_class_names(ds["dataset"], f"{key}.dataset")
    return None


def check_class_names(cfg: Config) -> None:
    """Raise :class:`ConfigError` unless every dataloader's dataset ``class_names`` and every
    evaluator's ``class_names`` (where given) equal the head's flat class list
    (``model.head.class_groups`` concatenated). Label i of the data is class i of the head and
    the metric maps class i back to a Waymo type: a mismatch would train and evaluate silently
    with swapped labels."""
    from ..models.center_head import CenterHead

    model = cfg.get("model") or {}
    head = model.get("head") if isinstance(model, dict) else None
    if not isinstance(head, dict) or head.get("type", "CenterHead") not in ("CenterHead", CenterHead):
        return
    groups = head.get("class_groups", _default_of(CenterHead, "class_groups"))
    model_classes = [c for g in groups for c in g]
    found = []
    for phase in ("train", "val", "test"):
        dl = cfg.get(f"{phase}_dataloader")
        if isinstance(dl, dict) and isinstance(dl.get("dataset"), dict):
            hit = _dataset_class_names(dl["dataset"], f"{phase}_dataloader.dataset")
            if hit is not None:
                found.append(hit)
        ev = cfg.get(f"{phase}_evaluator")
        for i, m in enumerate(ev if isinstance(ev, (list, tuple)) else [ev]):
            if isinstance(m, dict) and m.get("class_names") is not None:
                key = f"{phase}_evaluator" + (f"[{i}]" if isinstance(ev, (list, tuple)) else "")
                found.append((f"{key}.class_names", list(m["class_names"])))
    for key, names in found:
        if names != model_classes:
            raise ConfigError(
                f"config key {key!r} = {names} does not match the model's classes "
                f"{model_classes} (model.head.class_groups = {[list(g) for g in groups]}, "
                f"concatenated); label i of the data and the metric must be class i of the head")


__all__ += ["CPUAmpOptimWrapper", "check_class_names", "enable_amp"]
