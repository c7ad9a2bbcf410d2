# Runtime shared by every config: mmengine hooks, logging (text + TensorBoard), seeding.
default_scope = "detector"  # project registries (detector/registry.py) first, mmengine's after

default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", interval=1, by_epoch=True, max_keep_ckpts=3,
                    save_last=True),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
custom_hooks = [
    dict(type="NaNGuardHook"),        # stop at the first non-finite loss, before it is saved
    dict(type="EpochSeedHook"),       # (seed, epoch, rank)-seeded RNGs: exact --resume
    dict(type="RNGStateHook"),        # RNG states travel in checkpoints
    dict(type="RankSyncCheckHook", interval=200),  # DDP ranks must hold identical weights
    dict(type="GradientStatsHook", interval=50),   # grad/* diagnostics of the shared activation
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),  # tools/train.py switches to gloo on CPU-only machines
)
vis_backends = [dict(type="LocalVisBackend"), dict(type="TensorboardVisBackend")]
# No fixed name: mmengine then names the visualizer after the run (unique), so a second Runner in
# the same process (tests, the demo's train-then-test) gets its own instead of reusing the first
# one's, whose backends write into the first run's directory.
visualizer = dict(type="Visualizer", vis_backends=vis_backends)
log_processor = dict(type="LogProcessor", window_size=20, by_epoch=True)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
# The terminal shows progress, losses and metrics; the system environment, the full config and
# the hook table go to the log file only (WORK_DIR/<timestamp>/<timestamp>.log). True: print them too.
console_verbose = False
# tools/train.py --auto-scale-lr scales the learning rate by (processes x batch_size) /
# base_batch_size (mmengine's auto_scale_lr): the project's configs tuned their learning rates for
# 2 frames per step on one process. A config tuned at another batch overrides base_batch_size.
auto_scale_lr = dict(enable=False, base_batch_size=2)
