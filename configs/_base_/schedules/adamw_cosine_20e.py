# AdamW, linear warm-up then cosine decay (per iteration), 20 epochs, gradient clipping at
# norm 1.0 (the GradDrop paper's setting). Cosine rather than one-cycle: mmengine's one-cycle
# scheduler pickles a bound method into its state, which a weights_only checkpoint load rejects.
lr = 3e-3
max_epochs = 20
warmup_iters = 500

optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=lr, betas=(0.9, 0.99), weight_decay=0.01),
    clip_grad=dict(max_norm=1.0, norm_type=2),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=warmup_iters),
    dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min=lr * 1e-2, convert_to_iter_based=True),
]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
