"""Synthetic Waymo segments: ray-cast lidar data in the real Waymo ``Frame`` format.

The embedded default dataset: every stage of the pipeline runs on a machine
without Waymo data. Public API: :func:`generate_segment`, :func:`generate_dataset`,
:class:`SceneConfig`.
"""
from .config import SceneConfig  # noqa: F401
from .generator import generate_dataset, generate_segment, segment_seed  # noqa: F401

__all__ = ["SceneConfig", "generate_segment", "generate_dataset", "segment_seed"]
