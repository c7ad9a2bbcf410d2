# Converted Waymo (tools/convert_waymo.py output), VEHICLE only, full range: OpenPCDet's Waymo
# data recipe (tools/cfgs/dataset_configs/waymo_dataset.yaml) restricted to one class.
# - every 5th training frame (SAMPLED_INTERVAL train 5: the "20 % of the training data" of the
#   model zoo), every validation frame;
# - points in no-label zones dropped, train and val (DISABLE_NLZ_FLAG_ON_POINTS);
# - training boxes need at least one point (FILTER_EMPTY_BOXES_FOR_TRAIN);
# - GT sampling up to 15 vehicles per scene (SAMPLE_GROUPS Vehicle:15, LIMIT_WHOLE_SCENE) from
#   database objects with >= 5 points (filter_by_min_points), colliding candidates dropped rather
#   than replaced (collision="drop", the recipe's behaviour);
# - flips about both axes, rotation U(-pi/4, pi/4), scaling U(0.95, 1.05); no translation (the
#   recipe has none; translation_std = 0 draws nothing);
# - 4 frames per GPU (BATCH_SIZE_PER_GPU).
# Departure: our GT database is built from the converted training frames themselves (the recipe
# builds its database from every training frame, sampled_1); with the converter's default
# `--sampled-interval 1` the two agree.
data_root = "data/waymo_converted"
data_class_names = ["VEHICLE"]
data_point_cloud_range = [-75.2, -75.2, -2.0, 75.2, 75.2, 4.0]
data_sample_counts = dict(VEHICLE=15)
data_min_points = dict(VEHICLE=5)

train_pipeline = [
    dict(type="ObjectSample", db=dict(data_root=data_root, split="train"), class_names=data_class_names,
         sample_counts=data_sample_counts, min_points=data_min_points, collision="drop"),
    dict(type="RandomFlip3D", flip_x_axis=True, flip_y_axis=True, prob=0.5),
    dict(type="GlobalRotScaleTrans", rot_range=[-0.78539816, 0.78539816], scale_range=[0.95, 1.05],
         translation_std=[0.0, 0.0, 0.0]),
    dict(type="PointsRangeFilter", point_cloud_range=data_point_cloud_range),
    dict(type="ObjectRangeFilter", point_cloud_range=data_point_cloud_range),
    dict(type="PointShuffle"),
]
test_pipeline = [dict(type="PointsRangeFilter", point_cloud_range=data_point_cloud_range)]

train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=True),
    collate_fn=dict(type="collate_det3d"),
    dataset=dict(type="WaymoDetDataset", data_root=data_root, split="train",
                 class_names=data_class_names, pipeline=train_pipeline, load_interval=5,
                 drop_nlz=True, min_box_points=1))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=False, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="collate_det3d"),
    dataset=dict(type="WaymoDetDataset", data_root=data_root, split="val",
                 class_names=data_class_names, pipeline=test_pipeline, test_mode=True,
                 drop_nlz=True))
test_dataloader = val_dataloader
val_evaluator = dict(type="WaymoMetric")
test_evaluator = val_evaluator
