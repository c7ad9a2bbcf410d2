# OpenPCDet's CenterPoint Waymo schedule (tools/cfgs/waymo_models/centerpoint.yaml, OPTIMIZATION):
# adam_onecycle, 30 epochs, peak lr 3e-3, weight decay 0.01 (decoupled: AdamW), one cycle with
# 40 % warm-up from lr / 10 (DIV_FACTOR) to lr and cosine decay to lr / 10 / 1e4, Adam's beta1
# cycled 0.95 -> 0.85 -> 0.95 (MOMS), beta2 0.99, gradient clipping at norm 10 (GRAD_NORM_CLIP).
#
# The one-cycle is composed of mmengine's cosine schedulers (two for the lr, two for beta1)
# instead of mmengine's OneCycleLR: that one keeps a bound method (its annealing function) in its
# state, which pickles the whole scheduler and optimizer into the checkpoint and does not load
# with torch's weights_only=True. These four hold only numbers, so --resume stays safe and exact.
# The optimizer's own lr is the cycle's start (lr / div_factor); the first cosine rises to the
# peak over the warm-up, the second falls to start / 1e4 (the recipe's low_lr / 1e4). mmengine
# applies a scheduler's last value one iteration before its `end`, so the peak comes one
# iteration early (relative lr difference at most (1 - cos(pi / W)) / 2, W = warm-up iterations:
# ~1e-8 on Waymo); tests/test_configs.py checks the curve against the recipe's formula.
#
# Batch: 4 frames per GPU (the recipe's BATCH_SIZE_PER_GPU; train_dataloader.batch_size); the
# model zoo's lr 3e-3 is for 8 GPUs x 4 = 32 frames. With another total batch either keep lr
# (OpenPCDet does not rescale) or pass `tools/train.py --auto-scale-lr` (mmengine then
# multiplies lr by total batch / 32).
lr = 3e-3           # peak of the cycle (OpenPCDet LR)
div_factor = 10.0   # start = lr / div_factor (DIV_FACTOR)
final_div = 1e4     # end = start / final_div
pct_start = 0.4     # warm-up fraction (PCT_START)
moms = (0.95, 0.85)  # beta1 at the start/end and at the peak of the cycle (MOMS)
max_epochs = 30
warmup_epochs = max_epochs * pct_start  # 12

optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=lr / div_factor, betas=(moms[0], 0.99), weight_decay=0.01),
    clip_grad=dict(max_norm=10.0, norm_type=2),
)
param_scheduler = [
    dict(type="CosineAnnealingLR", eta_min_ratio=div_factor, begin=0, end=warmup_epochs,
         by_epoch=True, convert_to_iter_based=True),
    dict(type="CosineAnnealingLR", eta_min_ratio=1.0 / final_div, begin=warmup_epochs,
         end=max_epochs, by_epoch=True, convert_to_iter_based=True),
    dict(type="CosineAnnealingMomentum", eta_min=moms[1], begin=0, end=warmup_epochs,
         by_epoch=True, convert_to_iter_based=True),
    dict(type="CosineAnnealingMomentum", eta_min=moms[0], begin=warmup_epochs, end=max_epochs,
         by_epoch=True, convert_to_iter_based=True),
]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
