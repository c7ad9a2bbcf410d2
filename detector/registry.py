"""The project's mmengine registries: one level, children of mmengine's own.

Modules register themselves with a decorator (``@MODELS.register_module()``); configs name them
with ``type=``. ``locations`` lets mmengine import the defining packages on first use, so a
config can be built without importing every module by hand.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry("model", parent=MMENGINE_MODELS, locations=["detector.models"])
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, locations=["detector.datasets.dataset"])
TRANSFORMS = Registry("transform", parent=MMENGINE_TRANSFORMS,
                      locations=["detector.datasets.transforms"])
METRICS = Registry("metric", parent=MMENGINE_METRICS, locations=["detector.evaluation.metric"])
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, locations=["detector.engine.hooks"])
