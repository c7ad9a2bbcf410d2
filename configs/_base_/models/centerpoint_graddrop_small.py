# Small, fast CPU variant of centerpoint_graddrop_waymo.py for the demo (synthetic data, 2 cores).
#
# Range [-51.2, 51.2] m in x/y, [-2, 4] m in z; voxels 0.32 x 0.32 x 0.375 m (320 x 320 x 16,
# about 28k voxels for a Waymo-sized frame against 102k for the full config); the same
# 16-32-64 sparse encoder with one block per stage and 64 channels at the end; SECOND-FPN
# upsampling to stride 4 (80 x 80 BEV map of 1.28 m cells); a narrower head. The regression is
# sub-cell (offsets, z, log size, sin/cos heading), so box precision does not depend on the
# cell size. Same GradDrop set-up (batch-separated, 2 tasks cls/box).
# Timings: docs/benchmarks/model.md.

_base_ = ["./centerpoint_graddrop_waymo.py"]

point_cloud_range = [-51.2, -51.2, -2.0, 51.2, 51.2, 4.0]
voxel_size = [0.32, 0.32, 0.375]

model = dict(
    data_preprocessor=dict(voxel_size=voxel_size, point_cloud_range=point_cloud_range,
                           max_voxels=(80000, 80000)),  # (train, test)
    backbone_3d=dict(stage_channels=(16, 32, 64, 64), blocks_per_stage=(1, 1, 1, 1), out_channels=64),
    neck=dict(layer_nums=(2, 2), out_channels=(64, 128), upsample_strides=(2, 4),
              upsample_channels=(64, 64)),
    head=dict(share_channels=32, head_channels=32))
