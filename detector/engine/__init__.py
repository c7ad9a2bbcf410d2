"""Engine glue around mmengine: config checks and Runner construction (``runner``), safe
checkpoint loading under torch's ``weights_only`` default (``checkpoint``), training hooks
(``hooks``: NaN guard, per-epoch seeding, RNG state, DDP sync check, progress bars), and the
``make demo`` pipeline (``demo``). Submodules are imported on use (mmengine registry locations).
"""
