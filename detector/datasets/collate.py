"""Batching dataset items into the model's input contract (``detector/structures.py``).

Point clouds have different sizes, so they stay a list; ``VoxelDataPreprocessor`` voxelizes each
and assigns the batch index. Registered in mmengine's FUNCTIONS registry so that configs can say
``collate_fn=dict(type="collate_det3d")``.
"""
from __future__ import annotations

from typing import Sequence

from mmengine.registry import FUNCTIONS

__all__ = ["collate_det3d"]


def collate_det3d(batch: Sequence[dict]) -> dict:
    """[dict(points=(N_i, 5) tensor, data_sample=Det3DSample)] -> model input dict."""
    return dict(inputs=dict(points=[item["points"] for item in batch]),
                data_samples=[item["data_sample"] for item in batch])


if "collate_det3d" not in FUNCTIONS.module_dict:
    FUNCTIONS.register_module(name="collate_det3d", module=collate_det3d)
