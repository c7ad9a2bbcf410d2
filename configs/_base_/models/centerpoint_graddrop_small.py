# Small, fast CPU variant of centerpoint_graddrop_waymo.py for the demo (synthetic data, 2 cores).
#
# Range [-51.2, 51.2] m in x/y, [-2, 4] m in z; voxels 0.32 x 0.32 x 0.375 m (320 x 320 x 16,
# about 28k voxels for a Waymo-sized frame against 102k for the full config); the same
# 16-32-64 sparse encoder with one block per stage and 64 channels at the end; SECOND-FPN
# upsampling to stride 4 (80 x 80 BEV map of 1.28 m cells); a narrower head. The regression is
# sub-cell (offsets, z, log size, sin/cos heading), so box precision does not depend on the
# cell size. Same GradDrop set-up (batch-separated, 2 tasks cls/box).
# Timings: docs/benchmarks/model.md.
class_names = ["VEHICLE"]
point_cloud_range = [-51.2, -51.2, -2.0, 51.2, 51.2, 4.0]
voxel_size = [0.32, 0.32, 0.375]

model = dict(
    type="CenterPointDetector",
    data_preprocessor=dict(
        type="VoxelDataPreprocessor",
        voxel_size=voxel_size,
        point_cloud_range=point_cloud_range,
        max_points_per_voxel=5,
        max_voxels=(80000, 80000),  # (train, test)
        mode="hard"),
    voxel_encoder=dict(type="MeanVFE", num_features=5),
    backbone_3d=dict(
        type="SparseEncoder",
        base_channels=16,
        stage_channels=(16, 32, 64, 64),
        blocks_per_stage=(1, 1, 1, 1),
        out_channels=64,
        residual=False),
    neck=dict(
        type="SECONDFPN",
        layer_nums=(2, 2),
        layer_strides=(1, 2),
        out_channels=(64, 128),
        upsample_strides=(2, 4),
        upsample_channels=(64, 64)),
    head=dict(
        type="CenterHead",
        class_groups=[["VEHICLE"]],
        share_channels=32,
        head_channels=32,
        num_branch_convs=1,
        with_iou=False,
        graddrop=dict(
            mode="graddrop",
            grouping="cls_box",
            leaks=(0.0, 0.0),
            batch_separated=True,
            keep_prob="linear",
            scale=1.0,
            renormalize=False,
            use_input_sign=True),
        loss_weights=dict(heatmap=1.0, offset=0.25, z=0.25, size=0.25, heading=0.25)),
    train_cfg=dict(gaussian_overlap=0.1, min_radius=2, max_objs=500, range_filter="center_bev",
                   min_points_in_box=0),
    test_cfg=dict(top_k=500, score_threshold=0.1, pool_kernel=3, nms=True, nms_iou_threshold=0.7,
                  nms_pre_max_size=4096, nms_post_max_size=500, max_per_frame=500))
