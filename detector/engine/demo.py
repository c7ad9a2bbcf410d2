"""``make demo``: the whole pipeline on synthetic Waymo segments, on the CPU, in minutes.

Steps (each skipped when its output already exists, unless ``fresh``):

1. generate synthetic Waymo TFRecord segments (train and val) ``work_dirs/demo/data/raw/<split>``;
2. convert them (``tools/convert_waymo.py``'s library function) into ``work_dirs/demo/data/converted``;
3. train the demo config with GradDrop (``configs/demo/centerpoint_graddrop_demo.py``) into
   ``work_dirs/demo/train``;
4. evaluate the final checkpoint on the val split with our Waymo metrics: print the official
   table, write ``work_dirs/demo/metrics.json`` (``{breakdown: {"AP": .., "APH": ..}}``);
5. render detections vs ground truth for a few val frames into ``work_dirs/demo/vis/``;
6. print where everything went.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "configs" / "demo" / "centerpoint_graddrop_demo.py"
DEMO_CONFIG_3CLASS = REPO / "configs" / "demo" / "centerpoint_graddrop_demo_3class.py"

__all__ = ["DemoSettings", "run_demo", "demo_settings"]


@dataclass
class DemoSettings:
    work_dir: Path = REPO / "work_dirs" / "demo"
    config: Path = DEMO_CONFIG
    # synthetic + converted data; None = work_dir / "data". The 3-class demo shares the vehicle
    # demo's (same seeds, same files).
    data_dir: Path | None = None
    # 7 x 6 = 42 training frames: against 6 segments, +0.10 vehicle L1 AP on a 24-scene split,
    # better at each of 3 seeds, for 79 s more training (docs/benchmarks/training.md, section 3e)
    train_segments: int = 7
    val_segments: int = 2
    frames_per_segment: int = 6
    scene_half_length: float = 60.0   # metres of road generated; the model sees +-38.4 m
    seed: int = 0
    workers: int = 2
    num_vis: int = 3
    cfg_options: dict = field(default_factory=dict)


def demo_settings(classes: int = 1) -> DemoSettings:
    """The vehicle demo (``classes=1``, the paper's experiment) or the 3-class one
    (VEHICLE / PEDESTRIAN / CYCLIST, into work_dirs/demo_3class, on the vehicle demo's data)."""
    if classes == 1:
        return DemoSettings()
    if classes == 3:
        return DemoSettings(work_dir=REPO / "work_dirs" / "demo_3class", config=DEMO_CONFIG_3CLASS,
                            data_dir=DemoSettings().work_dir / "data")
    raise ValueError(f"demo: classes must be 1 (VEHICLE) or 3 (VEHICLE, PEDESTRIAN, CYCLIST), "
                     f"got {classes!r}")


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _segments_present(raw: Path, expected: int) -> bool:
    return raw.is_dir() and len(sorted(raw.glob("*.tfrecord"))) >= expected


def _converted_present(root: Path, split: str, expected: int) -> bool:
    from ..datasets.converted import completed_segments
    try:
        return len(completed_segments(root, split)) >= expected
    except (FileNotFoundError, OSError, ValueError):
        return False


def prepare_data(s: DemoSettings, fresh: bool = False) -> Path:
    """Generate + convert the synthetic segments; returns the converted root."""
    from tqdm import tqdm

    from ..datasets.synthetic import generate_dataset
    from ..datasets.waymo.conversion import convert

    data = s.data_dir or s.work_dir / "data"
    converted = data / "converted"
    for split, n in (("train", s.train_segments), ("val", s.val_segments)):
        raw = data / "raw" / split
        regenerated = fresh or not _segments_present(raw, n)
        if regenerated:
            t = time.time()
            _say(f"generating {n} synthetic {split} segment(s) x {s.frames_per_segment} frames "
                 f"-> {raw}")
            if raw.exists():
                shutil.rmtree(raw)
            raw.mkdir(parents=True, exist_ok=True)
            seed = s.seed if split == "train" else s.seed + 1000
            from ..datasets.synthetic import SceneConfig
            with tqdm(total=n, desc=f"generate {split}", unit="segment") as bar:
                generate_dataset(raw, num_segments=n, num_frames=s.frames_per_segment, seed=seed,
                                 split=split, workers=s.workers,
                                 config=SceneConfig(half_length=s.scene_half_length),
                                 progress=lambda path, dt: bar.update(1))
            _say(f"  done in {time.time() - t:.0f} s")
        else:
            _say(f"reusing synthetic {split} segments in {raw}")
        if regenerated or not _converted_present(converted, split, n):
            t = time.time()
            _say(f"converting {split} -> {converted / split}")
            if (converted / split).exists():  # made from other segments (an older demo's)
                shutil.rmtree(converted / split)
            inputs = sorted(raw.glob("*.tfrecord"))
            # the demo model uses the TOP lidar's first return only
            convert(inputs, converted, split, workers=s.workers, lidars=[1], returns=[1])
            _say(f"  done in {time.time() - t:.0f} s")
        else:
            _say(f"reusing converted {split} data in {converted / split}")
    return converted


def _load_cfg(s: DemoSettings, converted: Path, sub_dir: str):
    from mmengine.config import Config

    from .runner import set_data_root

    cfg = Config.fromfile(str(s.config))
    if s.cfg_options:
        cfg.merge_from_dict(s.cfg_options)
    set_data_root(cfg, converted)
    cfg.work_dir = str(s.work_dir / sub_dir)
    return cfg


def _final_checkpoint(train_dir: Path, max_epochs: int) -> Path | None:
    ckpt = train_dir / f"epoch_{max_epochs}.pth"
    return ckpt if ckpt.is_file() else None


def train(s: DemoSettings, converted: Path, fresh: bool = False) -> Path:
    from .runner import build_runner, check_config

    cfg = _load_cfg(s, converted, "train")
    train_dir = Path(cfg.work_dir)
    max_epochs = int(cfg.train_cfg.max_epochs)
    ckpt = None if fresh else _final_checkpoint(train_dir, max_epochs)
    if ckpt is not None:
        _say(f"reusing trained checkpoint {ckpt} (make demo FRESH=1 retrains)")
        return ckpt
    if fresh and train_dir.exists():
        shutil.rmtree(train_dir)
    # The demo evaluates once, in its own test step (evaluate()); the config's validation loop
    # (which mmengine always runs after the last epoch) would print the same table again.
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    check_config(cfg, phases=("train",))
    resume = (train_dir / "last_checkpoint").is_file()
    _say(f"training {s.config.name} ({max_epochs} epochs, GradDrop mode "
         f"{cfg.model.head.get('graddrop', {}).get('mode', 'graddrop')}) -> {train_dir}"
         + (" (resuming an interrupted run)" if resume else ""))
    t = time.time()
    runner = build_runner(cfg, resume=True if resume else None)
    runner.train()
    _say(f"  trained in {time.time() - t:.0f} s")
    ckpt = _final_checkpoint(train_dir, max_epochs)
    if ckpt is None:
        raise RuntimeError(f"training finished but {train_dir}/epoch_{max_epochs}.pth is missing")
    return ckpt


def evaluate(s: DemoSettings, converted: Path, ckpt: Path):
    """Run the test loop; returns (metrics dict, runner)."""
    from .runner import build_runner, check_config

    cfg = _load_cfg(s, converted, "eval")
    metrics_json = s.work_dir / "metrics.json"
    cfg.test_evaluator.update(metrics_json=str(metrics_json), print_table=True,
                              submission_path=str(s.work_dir / "detections.bin"))
    check_config(cfg, phases=("test",))
    _say(f"evaluating {ckpt.name} on the synthetic val split with the Waymo metrics")
    runner = build_runner(cfg, load_from=str(ckpt))
    runner.test()
    return json.loads(metrics_json.read_text()), runner


def render(s: DemoSettings, runner, converted: Path) -> list[Path]:
    """Pictures of detections vs ground truth for ``num_vis`` val frames
    (``visualization.pictures.write_demo_pictures``; the detections are the evaluation's
    submission file, so the pictures show exactly what was scored)."""
    from ..visualization.pictures import write_demo_pictures

    vis_dir = s.work_dir / "vis"
    vis_dir.mkdir(parents=True, exist_ok=True)
    return write_demo_pictures(converted, vis_dir, split="val", num_frames=s.num_vis,
                               predictions=s.work_dir / "detections.bin", score_thr=0.3)


def run_demo(fresh: bool = False, settings: DemoSettings | None = None) -> dict:
    """Run the demo end to end; returns the metrics dict."""
    s = settings or DemoSettings()
    t0 = time.time()
    if fresh and s.work_dir.exists():
        _say(f"FRESH: removing {s.work_dir}")
        shutil.rmtree(s.work_dir)
    s.work_dir.mkdir(parents=True, exist_ok=True)
    converted = prepare_data(s, fresh=fresh)
    ckpt = train(s, converted, fresh=fresh)
    metrics, runner = evaluate(s, converted, ckpt)
    pictures = render(s, runner, converted)
    scores = ", ".join(
        f"{name[len('OBJECT_TYPE_TYPE_'):-len('_LEVEL_1')]} "
        f"{metrics[name]['AP']:.3f} / {metrics[name]['APH']:.3f}"
        for name in metrics if name.startswith("OBJECT_TYPE_TYPE_") and name.endswith("_LEVEL_1"))
    _say(f"done in {time.time() - t0:.0f} s; LEVEL_1 AP / APH: {scores}")
    _say("outputs:")
    _say(f"  synthetic segments   {converted.parent / 'raw'}")
    _say(f"  converted data       {converted}")
    _say(f"  checkpoint           {ckpt}")
    _say(f"  training logs        {s.work_dir / 'train'} (text logs; TensorBoard: "
         f"tensorboard --logdir {s.work_dir / 'train'})")
    _say(f"  metrics              {s.work_dir / 'metrics.json'}")
    _say(f"  submission file      {s.work_dir / 'detections.bin'}")
    for p in pictures:
        _say(f"  picture              {p}")
    sys.stdout.flush()
    return metrics
