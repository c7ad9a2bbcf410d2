"""The project's mmengine registries: one level, children of mmengine's own.

Modules register themselves with a decorator (``@MODELS.register_module()``); configs name them
with ``type=``. ``locations`` lets mmengine import the defining packages on first use, so a
config can be built without importing every module by hand.

Configs set ``default_scope = "detector"``; mmengine then looks every ``type`` up in the
"detector" child of the registry tree it builds from, and warns ("Failed to search registry with
scope") for each tree without one. The project adds nothing to mmengine's loops, optimizers,
schedulers, log processor, visualizer, ... but gives each of those trees an empty "detector"
child (:data:`SCOPED`), so the lookup resolves (through the child to mmengine's own modules)
without a warning.
"""
from mmengine import registry as _mm
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

# Empty "detector" children of the mmengine trees the Runner builds from (see the docstring).
SCOPED = {name: Registry(getattr(_mm, name).name, parent=getattr(_mm, name), scope="detector")
          for name in ("RUNNERS", "RUNNER_CONSTRUCTORS", "LOOPS", "DATA_SAMPLERS", "FUNCTIONS",
                       "MODEL_WRAPPERS", "WEIGHT_INITIALIZERS", "OPTIMIZERS", "OPTIM_WRAPPERS",
                       "OPTIM_WRAPPER_CONSTRUCTORS", "PARAM_SCHEDULERS", "EVALUATOR",
                       "VISUALIZERS", "VISBACKENDS", "LOG_PROCESSORS", "INFERENCERS",
                       "TASK_UTILS")}
