"""Single-frame inference: the one place that loads a trained detector and runs it on points.

    from detector.engine.inference import init_detector, inference_detector
    model = init_detector("configs/demo/centerpoint_graddrop_demo.py", "epoch_30.pth", "cpu")
    det = inference_detector(model, points)      # points: (N, 4) or (N, >= 5) float array
    det.boxes, det.scores, det.labels            # labels index model.class_names

The model is built as training builds it (``Config.fromfile`` -> ``MODELS.build(cfg.model)``)
and its weights are loaded strictly (:func:`load_weights`): a checkpoint of another config
(missing or unexpected parameters, shape mismatches) or one without weights is an error that
names the first offending keys, never a model that silently keeps random weights. Checkpoints
are read with ``torch.load(weights_only=True)`` under the project's allow-list
(``detector.engine.checkpoint``), so a checkpoint cannot run code.

Points enter the model as the dataset hands them to it: x, y, z, tanh(intensity), elongation
(``detector.structures.MODEL_POINT_FEATURES``). Input columns are x, y, z, intensity[,
elongation, ...]: raw intensity (the tanh is applied here), like Waymo's range images and the
converted data. A point cloud without an elongation column (KITTI-style x, y, z, intensity)
gets :data:`DEFAULT_ELONGATION` there, with a one-line warning. Points with a non-finite
coordinate or feature are dropped (counted in the warning).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

__all__ = ["CheckpointMismatchError", "DEFAULT_ELONGATION", "MissingFeatureWarning",
           "init_detector", "inference_detector", "load_weights", "model_points",
           "read_state_dict"]

#: Elongation given to points whose source has no such column (KITTI .bin, .pcd, .ply).
#: Waymo's elongation is >= 0 and 0 for most points of a clean return.
DEFAULT_ELONGATION = 0.0


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's weights do not fit the model; the message names the first keys."""


class MissingFeatureWarning(UserWarning):
    """An input point cloud lacks a feature column the model consumes; a default is used."""


def model_points(points, *, source: str = "points") -> np.ndarray:
    """(N, C >= 4) points (x, y, z, intensity[, elongation, ...]) -> (N, 5) float32 model features.

    Only finite rows are kept. ``source`` names the input in warnings and errors.
    """
    from ..conventions import model_points as features_of_full_columns

    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] < 4:
        raise ValueError(f"{source}: expected an (N, >= 4) array with columns x, y, z, intensity"
                         f"[, elongation], got shape {pts.shape}")
    if pts.shape[1] < 5:
        pts = np.concatenate([pts[:, :4], np.full((len(pts), 1), DEFAULT_ELONGATION, np.float32)], 1)
        warnings.warn(f"{source}: no elongation column (x, y, z, intensity only); using "
                      f"elongation = {DEFAULT_ELONGATION} for every point",
                      MissingFeatureWarning, stacklevel=2)
    out = features_of_full_columns(pts)  # the dataset's features: tanh(intensity), same order
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        warnings.warn(f"{source}: dropped {int((~finite).sum())} of {len(out)} points with a "
                      f"non-finite coordinate or feature", RuntimeWarning, stacklevel=2)
        out = out[finite]
    return out


def read_state_dict(checkpoint) -> dict:
    """The weights of a checkpoint file (``state_dict`` entry or a bare dict), ``module.`` prefixes
    of a DDP-wrapped model removed. Raises naming the file when it holds no weights."""
    import torch

    from .checkpoint import allow_project_checkpoint_globals

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r}: no such file")
    allow_project_checkpoint_globals()
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointMismatchError(f"checkpoint {str(path)!r}: cannot be read as a torch "
                                      f"checkpoint ({type(e).__name__}: {e})") from e
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"checkpoint {str(path)!r}: holds no state_dict "
                                      f"(got {type(ckpt).__name__})")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointMismatchError(f"checkpoint {str(path)!r}: the state_dict is empty (no "
                                      f"weights)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _first(names, n: int = 5) -> str:
    names = list(names)
    more = f" ... (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def load_weights(model, checkpoint, strict: bool = True, log=None) -> dict:
    """Load ``checkpoint``'s weights into ``model`` (unwrapped from DDP if needed).

    strict: missing or unexpected keys and shape mismatches raise
    :class:`CheckpointMismatchError` naming the first few; non-strict (fine-tuning) loads what
    fits and reports what was skipped through ``log`` (default: a warning). An empty state_dict
    is an error either way. Returns ``dict(missing=[..], unexpected=[..], mismatched=[..])``.
    """
    model = getattr(model, "module", model)
    state = read_state_dict(checkpoint)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    report = dict(missing=missing, unexpected=unexpected, mismatched=mismatched)
    problems = [f"{len(v)} {name}: {_first(v)}" for name, v in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("shape mismatches", mismatched)) if v]
    if problems and strict:
        raise CheckpointMismatchError(
            f"checkpoint {str(checkpoint)!r} does not fit the model ({type(model).__name__}): "
            + "; ".join(problems) + ". Was it trained with another config?")
    if len(missing) + len(mismatched) == len(own):
        raise CheckpointMismatchError(f"checkpoint {str(checkpoint)!r}: none of its weights fit "
                                      f"the model; " + "; ".join(problems))
    if problems:
        msg = f"checkpoint {checkpoint}: loaded non-strictly, skipped " + "; ".join(problems)
        (log or (lambda m: warnings.warn(m, stacklevel=3)))(msg)
    bad = {m.split(" ", 1)[0] for m in mismatched}
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in bad},
                          strict=False)
    return report


def init_detector(config, checkpoint=None, device: str = "cpu", cfg_options: dict | None = None):
    """Build the model of ``config`` (a path or an mmengine ``Config``), load ``checkpoint``
    strictly, move it to ``device``; returns it in eval mode (``model.class_names`` names its
    labels, ``model.cfg`` is the config)."""
    import torch
    from mmengine.config import Config

    from ..registry import MODELS
    from .logs import quiet_third_party_warnings

    quiet_third_party_warnings()  # spconv / torch.fx notes about their own code
    cfg = config if isinstance(config, Config) else Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if "model" not in cfg:
        raise ValueError(f"{config}: the config has no 'model' entry")
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_weights(model, checkpoint, strict=True)
    model.cfg = cfg
    model.to(torch.device(device))
    model.eval()
    return model


def _point_cloud_range(model):
    pre = getattr(model, "data_preprocessor", None)
    r = getattr(pre, "point_cloud_range", None)
    return None if r is None else np.asarray(r, np.float32).reshape(-1)[:6]


def inference_detector(model, points, *, source: str = "points"):
    """Detections (``detector.structures.Detections``, on the CPU) of one frame's points.

    points: (N, 4) x, y, z, intensity or (N, >= 5) with elongation in column 4 (raw intensity;
    :func:`model_points`). Points outside the model's ``point_cloud_range`` are dropped, as the
    test pipeline does; a frame with no points left gets zero detections.
    """
    import torch

    from ..structures import Det3DSample, Detections

    feats = model_points(points, source=source)
    r = _point_cloud_range(model)
    if r is not None and len(feats):
        xyz = feats[:, :3]
        feats = feats[((xyz >= r[:3]) & (xyz < r[3:])).all(axis=1)]
    if len(feats) == 0:
        return Detections(torch.zeros((0, 7)), torch.zeros((0,)), torch.zeros((0,), dtype=torch.long))
    device = next(model.parameters()).device
    sample = Det3DSample(gt_boxes=torch.zeros((0, 7)),
                         gt_labels=torch.zeros((0,), dtype=torch.long))
    with torch.no_grad():
        data = model.data_preprocessor(
            dict(inputs=dict(points=[torch.from_numpy(feats).to(device)]), data_samples=[sample]),
            False)
        results = model(data["inputs"], data["data_samples"], mode="predict")
    return results[0].cpu()
