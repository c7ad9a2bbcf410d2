"""Synthetic Waymo segments: the public entry points.

``generate_segment(out_dir, seed, num_frames=20, config=None, split="train")`` draws one street
scene (``scene.py``), ray-casts its five lidars at 10 Hz (``lidar.py``, ``raycast.py``), labels it
(``labels.py``) and writes the ``Frame`` protos (``frame_proto.py``) to
``out_dir/segment-<19 digits>_<4>_<3>_<4>_<3>_with_camera_labels.tfrecord`` through the project's
atomic ``write_tfrecord``. The scene, the file name and every byte of the file are a function of
``(seed, split, num_frames, config)`` alone: same inputs, byte-identical files.

``generate_dataset(out_dir, num_segments, num_frames, seed, split, workers=1)`` writes
``num_segments`` such files, segment ``i`` seeded from ``(seed, i)``; ``workers > 1`` runs segments
in separate processes.
"""
from __future__ import annotations

import math
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..waymo.tfrecord import write_tfrecord
from .config import SceneConfig
from .frame_proto import build_frame
from .labels import make_labels
from .lidar import GlobalFrame, render_frame
from .scene import Scene, generate_scene

__all__ = ["generate_segment", "generate_dataset", "segment_name", "segment_seed",
           "SegmentPlan", "plan_segment", "render_segment_frames"]


def _split_code(split: str) -> int:
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string, got {split!r}")
    return zlib.crc32(split.encode("utf-8"))


def _seed_sequence(seed: int, split: str, *extra: int) -> np.random.SeedSequence:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence([int(seed), _split_code(split), *extra])


def segment_seed(seed: int, index: int) -> int:
    """Seed of segment ``index`` of a dataset generated with ``seed``."""
    state = np.random.SeedSequence([int(seed), int(index), 0x5E6]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) | (int(state[1]) >> 1)


def segment_name(rng: np.random.Generator) -> str:
    """A Waymo-style context name: ``<19 digits>_<4>_<3>_<4>_<3>`` (start and end of a 20 s run)."""
    digits = str(int(rng.integers(1, 10))) + "".join(str(d) for d in rng.integers(0, 10, 18))
    start = int(rng.integers(0, 9900))
    ms = int(rng.integers(0, 1000))
    return f"{digits}_{start:04d}_{ms:03d}_{start + 20:04d}_{ms:03d}"


class SegmentPlan:
    """Everything drawn up front for one segment: name, scene, global frame, clock."""

    def __init__(self, seed: int, num_frames: int, config: SceneConfig, split: str):
        if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
        self.seed, self.split, self.num_frames, self.config = int(seed), split, int(num_frames), config
        rng = np.random.default_rng(_seed_sequence(seed, split))
        self.context_name = segment_name(rng)
        self.start_micros = int(rng.integers(1_500_000_000, 1_600_000_000)) * 1_000_000 + \
            int(rng.integers(0, 1_000_000))
        s = config.global_offset_scale
        self.global_frame = GlobalFrame(float(rng.uniform(-math.pi, math.pi)),
                                        (float(rng.uniform(-s, s)), float(rng.uniform(-s, s)),
                                         float(rng.uniform(-200.0, 200.0))))
        duration = (self.num_frames - 1) * config.frame_dt
        self.scene: Scene = generate_scene(rng, config, duration)

    @property
    def file_name(self) -> str:
        return f"segment-{self.context_name}_with_camera_labels.tfrecord"

    def frame_rng(self, k: int) -> np.random.Generator:
        # Each frame has its own stream: frames do not depend on one another's draws.
        return np.random.default_rng(_seed_sequence(self.seed, self.split, 1 + k))


def plan_segment(seed: int, num_frames: int = 20, config: SceneConfig | None = None,
                 split: str = "train") -> SegmentPlan:
    return SegmentPlan(seed, num_frames, config or SceneConfig(), split)


def render_segment_frames(plan: SegmentPlan, physics: bool = True, with_debug: bool = False):
    """Yield each frame's serialized ``Frame`` (or ``(bytes, rendered, labels)`` with_debug)."""
    cfg = plan.config
    for k in range(plan.num_frames):
        t = k * cfg.frame_dt
        rendered = render_frame(plan.scene, t, plan.global_frame, plan.frame_rng(k), physics)
        pts_all = np.concatenate([li.points for li in rendered.lidars.values()])
        labels = make_labels(plan.scene, t, rendered.pose_local, pts_all, rendered.lidars[1].points)
        ts = plan.start_micros + int(round(t * 1e6))
        data = build_frame(rendered, labels, plan.context_name, ts, cfg.zlib_level)
        yield (data, rendered, labels) if with_debug else data


def generate_segment(out_dir, seed: int, num_frames: int = 20, config: SceneConfig | None = None,
                     split: str = "train") -> Path:
    """Write one synthetic segment into ``out_dir`` and return its path (see module docstring)."""
    plan = plan_segment(seed, num_frames, config, split)
    path = Path(out_dir) / plan.file_name
    write_tfrecord(path, render_segment_frames(plan))
    return path


def _worker_init(threads: int) -> None:
    import numba
    numba.set_num_threads(max(1, threads))


def _segment_job(args):
    out_dir, seed, num_frames, config, split = args
    t0 = time.perf_counter()
    path = generate_segment(out_dir, seed, num_frames, config, split)
    return str(path), time.perf_counter() - t0


def generate_dataset(out_dir, num_segments: int, num_frames: int, seed: int, split: str,
                     workers: int = 1, config: SceneConfig | None = None,
                     progress=None) -> list[Path]:
    """Write ``num_segments`` segments (segment i seeded by ``segment_seed(seed, i)``).

    ``progress(path, seconds)`` is called as each segment finishes. Returns the paths in segment
    order. With ``workers > 1`` segments run in ``spawn``-ed processes, each with
    ``cpu_count // workers`` Numba threads.
    """
    if not isinstance(num_segments, (int, np.integer)) or num_segments < 0:
        raise ValueError(f"num_segments must be a non-negative integer, got {num_segments!r}")
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    config = config or SceneConfig()
    jobs = [(str(out_dir), segment_seed(seed, i), num_frames, config, split)
            for i in range(num_segments)]
    paths: list[Path] = []
    if workers == 1 or num_segments <= 1:
        for job in jobs:
            p, dt = _segment_job(job)
            paths.append(Path(p))
            if progress:
                progress(Path(p), dt)
        return paths
    import multiprocessing as mp
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init, initargs=(threads,)) as ex:
        for p, dt in ex.map(_segment_job, jobs):
            paths.append(Path(p))
            if progress:
                progress(Path(p), dt)
    return paths
