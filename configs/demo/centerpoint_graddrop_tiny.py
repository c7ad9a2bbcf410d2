# A tiny variant of the demo config for tests (a few seconds per iteration on a CPU): +-25.6 m,
# 0.4 x 0.4 x 0.5 m voxels, a handful of channels. Not meant to detect anything well.
_base_ = ["./centerpoint_graddrop_demo.py"]
point_cloud_range = [-25.6, -25.6, -2.0, 25.6, 25.6, 4.0]
voxel_size = [0.4, 0.4, 0.5]
model = dict(
    data_preprocessor=dict(voxel_size=voxel_size, point_cloud_range=point_cloud_range,
                           max_voxels=(8000, 8000)),
    backbone_3d=dict(base_channels=4, stage_channels=(4, 8, 8, 16), blocks_per_stage=(1, 1, 1, 1),
                     out_channels=16),
    neck=dict(layer_nums=(1, 1), layer_strides=(1, 2), out_channels=(16, 16),
              upsample_strides=(1, 2), upsample_channels=(16, 16)),
    head=dict(share_channels=8, head_channels=8),
)
_pipeline_range = dict(point_cloud_range=point_cloud_range)
train_dataloader = dict(
    batch_size=1, num_workers=0,
    dataset=dict(pipeline=[
        dict(type="ObjectSample", db=dict(data_root="work_dirs/demo/data/converted", split="train"),
             class_names=["VEHICLE"], sample_counts=dict(VEHICLE=6), min_points=dict(VEHICLE=5)),
        dict(type="RandomFlip3D", flip_x_axis=True, flip_y_axis=True, prob=0.5),
        dict(type="GlobalRotScaleTrans", rot_range=[-0.78539816, 0.78539816],
             scale_range=[0.95, 1.05], translation_std=[0.2, 0.2, 0.1]),
        dict(type="PointsRangeFilter", **_pipeline_range),
        dict(type="ObjectRangeFilter", **_pipeline_range),
        dict(type="PointShuffle"),
    ]))
val_dataloader = dict(dataset=dict(pipeline=[dict(type="PointsRangeFilter", **_pipeline_range)],
                                   eval_range=point_cloud_range))
test_dataloader = val_dataloader
max_epochs = 2
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min=1e-5, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=1))
