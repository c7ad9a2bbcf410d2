# CenterPoint-style sparse-conv vehicle detector with GradDrop, full Waymo grid.
#
# Range [-75.2, 75.2] m in x/y and [-2, 4] m in z, voxels 0.1 x 0.1 x 0.15 m (1504 x 1504 x 40),
# the standard 16-32-64-128 stride-8 sparse encoder, SECOND-FPN (stages of 128 and 256 channels,
# upsampled back to stride 8: a 188 x 188 BEV map of 0.8 m cells), one centre head for VEHICLE with
# GradDrop (batch-separated, 2 tasks: cls = heatmap, box = all regression) on its shared conv.
#
# One key switches the paper's comparisons:
#   model.head.graddrop.mode     = "graddrop" | "random_sign" | "off"   (off = plain sum)
#   model.head.graddrop.grouping = "cls_box" | "per_branch" | "per_group" | "per_group_cls_box"
# Multi-group heads (CenterPoint's vehicle / pedestrian+cyclist split):
#   model.head.class_groups = [["VEHICLE"], ["PEDESTRIAN", "CYCLIST"]]
# (the dataset's gt_labels index the flat list, i.e. the groups concatenated).
class_names = ["VEHICLE"]
point_cloud_range = [-75.2, -75.2, -2.0, 75.2, 75.2, 4.0]
voxel_size = [0.1, 0.1, 0.15]

model = dict(
    type="CenterPointDetector",
    data_preprocessor=dict(
        type="VoxelDataPreprocessor",
        voxel_size=voxel_size,
        point_cloud_range=point_cloud_range,
        max_points_per_voxel=5,
        max_voxels=(150000, 150000),  # (train, test)
        mode="hard"),
    voxel_encoder=dict(type="MeanVFE", num_features=5),
    backbone_3d=dict(
        type="SparseEncoder",
        base_channels=16,
        stage_channels=(16, 32, 64, 128),
        blocks_per_stage=(1, 2, 2, 2),
        out_channels=128,
        residual=False),
    neck=dict(
        type="SECONDFPN",
        layer_nums=(5, 5),
        layer_strides=(1, 2),
        out_channels=(128, 256),
        upsample_strides=(1, 2),
        upsample_channels=(256, 256)),
    head=dict(
        type="CenterHead",
        class_groups=[["VEHICLE"]],
        share_channels=64,
        head_channels=64,
        num_branch_convs=1,
        with_iou=False,
        graddrop=dict(
            mode="graddrop",
            grouping="cls_box",
            leaks=(0.0, 0.0),  # one per task (cls, box); a float applies to all
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
