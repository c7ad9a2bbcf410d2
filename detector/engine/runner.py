"""Config checking and Runner construction shared by ``tools/train.py``, ``tools/test.py`` and the demo.

``check_config`` fails at start-up - before any data is loaded or a model built - with a message
naming the config key and what was expected, for the two mistakes people make most: a ``type``
that no registry knows (typo, missing import) and a ``data_root`` that does not exist.
``build_runner`` turns a Config plus command-line choices into an mmengine ``Runner``: work dir,
resume, AMP (only where CUDA exists), CPU-friendly DDP (gloo backend, no ``device_ids``).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from mmengine.config import Config

__all__ = ["ConfigError", "check_config", "build_runner", "init_distributed", "set_data_root",
           "load_config", "add_common_cli_args", "parse_cli_args"]


class ConfigError(ValueError):
    """A config names something that does not exist; the message names the key."""


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


def check_config(cfg: Config, check_data: bool = True, phases=("train", "val", "test")) -> None:
    """Raise :class:`ConfigError` naming the key of an unknown ``type`` or a missing ``data_root``."""
    import importlib

    from mmengine.registry import DefaultScope

    # Make every project module register itself (registry ``locations`` are lazy).
    for mod in ("mmengine.runner", "mmengine.optim", "mmengine.hooks", "mmengine.visualization",
                "mmengine.model", "mmengine.dataset", "mmengine.evaluator",
                "detector.models", "detector.datasets.dataset", "detector.datasets.transforms",
                "detector.evaluation.metric", "detector.engine.hooks"):
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise ConfigError(f"cannot import {mod} ({e}); the project is not fully installed") from e
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


def add_common_cli_args(parser, work_dir_help: str = "where logs and outputs go "
                        "(default work_dirs/<config name>)") -> None:
    """The options tools/train.py and tools/test.py share: --work-dir, --data-root,
    --cfg-options, --launcher and the launcher's --local-rank."""
    import argparse

    from mmengine.config import DictAction

    parser.add_argument("--work-dir", help=work_dir_help)
    parser.add_argument("--data-root", help="override every dataset's data_root (and GT sampling's)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config keys, e.g. train_cfg.max_epochs=2")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)


def parse_cli_args(parser, argv=None):
    """Parse, and pass a launcher's --local-rank on as LOCAL_RANK (torch.distributed.launch)."""
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


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
    from mmengine.runner import Runner

    from .checkpoint import allow_project_checkpoint_globals

    allow_project_checkpoint_globals()
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    if cfg.get("work_dir") is None:
        stem = Path(cfg.filename).stem if cfg.filename else "run"
        cfg.work_dir = str(Path("work_dirs") / stem)
    if resume:
        cfg.resume = True
        cfg.load_from = None if resume is True or resume == "auto" else str(resume)
    if load_from is not None:
        cfg.load_from = str(load_from)
    if amp:
        if torch.cuda.is_available():
            ow = cfg.optim_wrapper
            if ow.get("type", "OptimWrapper") == "AmpOptimWrapper":
                pass
            else:
                ow.type = "AmpOptimWrapper"
                ow.setdefault("loss_scale", "dynamic")
        elif logger is not None:
            logger("--amp ignored: AMP needs a CUDA device; training in float32 on the CPU")
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
    return Runner.from_cfg(cfg)


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


def load_config(path: str, cfg_options: dict | None = None, data_root: str | None = None,
                phases=("train", "val", "test")) -> Config:
    """What every command line does first: read the config, apply ``--cfg-options`` and
    ``--data-root``, then ``check_config`` for the phases it will run (raises ConfigError)."""
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if data_root:
        set_data_root(cfg, data_root)
    check_config(cfg, phases=phases)
    return cfg
