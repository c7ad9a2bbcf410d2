"""Run a trained detector on one frame, for drawing its detections (``--config --checkpoint``).

The model is built exactly as training builds it (mmengine ``Config.fromfile`` ->
``detector.registry.MODELS.build(cfg.model)``) and its weights loaded with mmengine's
``load_checkpoint`` under the project's allow-list for ``torch.load(weights_only=True)``
(``detector.engine.checkpoint``), so a checkpoint cannot run code. A frame's points enter the
model as the dataset hands them to it (``detector.structures.MODEL_POINT_FEATURES``):
x, y, z, tanh(intensity), elongation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.conventions import model_points  # noqa: F401  (its home)


def load_detector(config, checkpoint=None, device: str = "cpu"):
    """Build the model of ``config`` (a path or an mmengine ``Config``) and load ``checkpoint``.

    Returns the model in eval mode; ``model.class_names`` names its label indices.
    """
    import torch
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint

    from detector.engine.checkpoint import allow_project_checkpoint_globals
    from detector.registry import MODELS

    cfg = config if isinstance(config, Config) else Config.fromfile(str(config))
    if "model" not in cfg:
        raise ValueError(f"{config}: the config has no 'model' entry")
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file")
        allow_project_checkpoint_globals()
        load_checkpoint(model, str(checkpoint), map_location="cpu", strict=True,
                        logger="silent")
    model.to(torch.device(device))
    model.eval()
    return model


def detect_frame(model, points, device: str | None = None):
    """Detections (``detector.structures.Detections``, on the CPU) of one frame's points."""
    import torch

    from detector.structures import Det3DSample

    if device is None:
        device = next(model.parameters()).device
    feats = torch.from_numpy(model_points(points)).to(device)
    sample = Det3DSample(gt_boxes=torch.zeros((0, 7)),
                         gt_labels=torch.zeros((0,), dtype=torch.long))
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=dict(points=[feats]), data_samples=[sample]),
                                       False)
        results = model(data["inputs"], data["data_samples"], mode="predict")
    return results[0].cpu()
