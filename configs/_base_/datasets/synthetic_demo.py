# Synthetic Waymo segments converted by the demo (TOP lidar, first return), VEHICLE only, a
# +-38.4 m square: small enough for CPU training, and the evaluation ground truth is limited to
# the same square (eval_range) so that the metric scores what the model can see.
data_root = "work_dirs/demo/data/converted"
data_class_names = ["VEHICLE"]
data_point_cloud_range = [-38.4, -38.4, -2.0, 38.4, 38.4, 4.0]

train_pipeline = [
    dict(type="ObjectSample", db=dict(data_root=data_root, split="train"), class_names=data_class_names,
         sample_counts=dict(VEHICLE=20), min_points=dict(VEHICLE=10)),
    dict(type="RandomFlip3D", flip_x_axis=True, flip_y_axis=True, prob=0.5),
    dict(type="GlobalRotScaleTrans", rot_range=[-0.78539816, 0.78539816], scale_range=[0.95, 1.05],
         translation_std=[0.2, 0.2, 0.1]),
    dict(type="PointsRangeFilter", point_cloud_range=data_point_cloud_range),
    dict(type="ObjectRangeFilter", point_cloud_range=data_point_cloud_range),
    dict(type="PointShuffle"),
]
test_pipeline = [dict(type="PointsRangeFilter", point_cloud_range=data_point_cloud_range)]

train_dataloader = dict(
    batch_size=2, num_workers=1, persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=True),
    collate_fn=dict(type="collate_det3d"),
    dataset=dict(type="WaymoDetDataset", data_root=data_root, split="train",
                 class_names=data_class_names, pipeline=train_pipeline, min_box_points=1))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="collate_det3d"),
    dataset=dict(type="WaymoDetDataset", data_root=data_root, split="val",
                 class_names=data_class_names, pipeline=test_pipeline, test_mode=True,
                 eval_range=data_point_cloud_range))
test_dataloader = val_dataloader
val_evaluator = dict(type="WaymoMetric")
test_evaluator = val_evaluator
