"""``--cfg-options`` that cannot silently add a misspelled key.

mmengine's ``Config.merge_from_dict`` creates whatever key it is given, so
``optim_wraper.optimizer.lr=1e-4`` trains at the config's learning rate and nobody notices. Here
each override's key path is walked through the config first. A path is accepted when every
component exists, or when the first missing component is a constructor argument of the
registered ``type`` of the dict it would be added to (``model.backbone_3d.conv_impl=ops`` sets an
argument the config leaves at its default). Anything else fails, naming the closest existing
keys; a leading ``+`` (``+my_new_key=1``, as in Hydra) marks a key the user means to add.
"""
from __future__ import annotations

import difflib
import inspect

from mmengine.config import Config

__all__ = ["apply_cfg_options", "check_cfg_option_key"]


def _flat_keys(node, prefix: str = "") -> list[str]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out.append(key)
            out += _flat_keys(v, key)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            key = f"{prefix}.{i}"
            out.append(key)
            out += _flat_keys(v, key)
    return out


def _constructor_args(path: list[str], node: dict):
    """(names, takes **kwargs) of the class a typed config dict builds, or None if unknown."""
    from .runner import _registries, _registry_for

    type_ = node.get("type")
    if type_ is None:
        return None
    if not isinstance(type_, str):
        obj = type_
    else:
        reg_name = _registry_for(path + ["type"]) if path else None
        regs = _registries()
        candidates = [regs[reg_name]] if reg_name else list(regs.values())
        obj = next((r.get(type_) for r in candidates if r.get(type_) is not None), None)
        if obj is None:
            return None
    try:
        sig = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    except (TypeError, ValueError):
        return None
    params = sig.parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return [n for n in params if n != "self"], var_kw


def check_cfg_option_key(cfg: Config, key: str) -> None:
    """Raise ``KeyError`` when ``key`` (dotted, list indices as numbers) would add a new key that
    is neither a constructor argument of its dict's ``type`` nor marked new with ``+``."""
    parts = key.split(".")
    node = cfg._cfg_dict.to_dict() if hasattr(cfg, "_cfg_dict") else dict(cfg)
    for i, part in enumerate(parts):
        if isinstance(node, dict):
            if part in node:
                node = node[part]
                continue
            args = _constructor_args(parts[:i], node)
            if args is not None and (part in args[0] or args[1]):
                return  # a constructor argument the config leaves at its default
            where = ".".join(parts[:i]) or "the config's top level"
            siblings = [str(k) for k in node]
            # siblings first (a typo of a neighbour), then any key of the config that looks alike
            close = [".".join(parts[:i] + [s]) for s in difflib.get_close_matches(part, siblings, n=3)]
            close += [k for k in difflib.get_close_matches(".".join(parts[:i + 1]), _flat_keys(
                cfg._cfg_dict.to_dict()), n=3, cutoff=0.6) if k not in close]
            hint = f"; did you mean {', '.join(repr(c) for c in close[:3])}?" if close else ""
            extra = ""
            if args is not None:
                extra = f" (and {node['type']!r} takes no argument {part!r})"
            raise KeyError(
                f"--cfg-options {key!r}: {where} has no key {part!r}{extra}{hint} Prefix the key "
                f"with '+' to add a new key on purpose.")
        if isinstance(node, (list, tuple)):
            if part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            raise KeyError(f"--cfg-options {key!r}: {'.'.join(parts[:i])} is a list of {len(node)} "
                           f"entries; {part!r} is not an index into it")
        return  # below a scalar: mmengine replaces the value, nothing to misspell further


def apply_cfg_options(cfg: Config, options: dict | None) -> Config:
    """Merge ``--cfg-options`` into ``cfg`` after checking every key (see the module docstring)."""
    if not options:
        return cfg
    clean = {}
    for key, value in options.items():
        if key.startswith("+"):
            clean[key[1:]] = value
            continue
        try:
            check_cfg_option_key(cfg, key)
        except KeyError as e:
            from .runner import ConfigError
            raise ConfigError(e.args[0]) from None
        clean[key] = value
    cfg.merge_from_dict(clean)
    return cfg
