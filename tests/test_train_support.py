"""Shared helpers of the training tests (no tests here): tiny synthetic data, tiny configs, a
free TCP port for two-process (gloo) runs."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "demo" / "centerpoint_graddrop_tiny.py"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

_GEN = r'''
import sys
from pathlib import Path
from detector.datasets.synthetic import SceneConfig, generate_dataset
from detector.datasets.waymo.conversion import convert
out = Path(sys.argv[1])
cfg = SceneConfig(half_length=25.0)
for split, nseg, nfr, seed in (("train", 1, 2, 0), ("val", 1, 1, 1000)):
    paths = generate_dataset(out / "raw" / split, nseg, nfr, seed, split, workers=1, config=cfg)
    convert(paths, out / "converted", split, workers=1, lidars=[1], returns=[1], progress=False,
            log=None)
'''


def make_tiny_data(root: Path) -> Path:
    """Generate + convert 2 train frames and 1 val frame of a small synthetic scene (subprocess,
    so Numba's threads do not linger in the test process). Returns the converted root."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", _GEN, str(root)], check=True, cwd=REPO,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    return root / "converted"


def tiny_cfg(data_root: Path, work_dir: Path, validate: bool = True, **overrides):
    from mmengine.config import Config

    from detector.engine.runner import set_data_root

    cfg = Config.fromfile(str(TINY_CONFIG))
    set_data_root(cfg, data_root)
    cfg.work_dir = str(work_dir)
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h["type"] != "ProgressBarHook"]
    if not validate:
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    if overrides:
        cfg.merge_from_dict(overrides)
    return cfg


def tiny_data_root(tmp_path_factory) -> Path:
    """Session-wide tiny converted data (generated once per pytest session, shared by modules)."""
    base = tmp_path_factory.getbasetemp() / "tiny_synthetic"
    done = base / "DONE"
    if not done.exists():
        make_tiny_data(base)
        done.write_text("ok")
    return base / "converted"


def load_tool(name: str):
    """A fresh module object of ``tools/<name>.py`` (its ``main(argv)`` runs the tool in-process)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def clear_scope() -> None:
    """Forget mmengine's default scopes, so that the next in-process tool run starts clean."""
    from mmengine.registry import DefaultScope
    DefaultScope._instance_dict.clear()

