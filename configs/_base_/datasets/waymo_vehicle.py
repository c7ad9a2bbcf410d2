# Converted Waymo (tools/convert_waymo.py output), VEHICLE only, full range, 20% of the training
# frames (every 5th, the customary Waymo setting), GT sampling + global augmentation.
data_root = "data/waymo_converted"
data_class_names = ["VEHICLE"]
data_point_cloud_range = [-75.2, -75.2, -2.0, 75.2, 75.2, 4.0]

train_pipeline = [
    dict(type="ObjectSample", db=dict(data_root=data_root, split="train"), class_names=data_class_names,
         sample_counts=dict(VEHICLE=15), min_points=dict(VEHICLE=5)),
    dict(type="RandomFlip3D", flip_x_axis=True, flip_y_axis=True, prob=0.5),
    dict(type="GlobalRotScaleTrans", rot_range=[-0.78539816, 0.78539816], scale_range=[0.95, 1.05],
         translation_std=[0.5, 0.5, 0.5]),
    dict(type="PointsRangeFilter", point_cloud_range=data_point_cloud_range),
    dict(type="ObjectRangeFilter", point_cloud_range=data_point_cloud_range),
    dict(type="PointShuffle"),
]
test_pipeline = [dict(type="PointsRangeFilter", point_cloud_range=data_point_cloud_range)]

train_dataloader = dict(
    batch_size=2, num_workers=4, persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=True),
    collate_fn=dict(type="collate_det3d"),
    dataset=dict(type="WaymoDetDataset", data_root=data_root, split="train",
                 class_names=data_class_names, pipeline=train_pipeline, load_interval=5,
                 min_box_points=1))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=False, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="collate_det3d"),
    dataset=dict(type="WaymoDetDataset", data_root=data_root, split="val",
                 class_names=data_class_names, pipeline=test_pipeline, test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type="WaymoMetric")
test_evaluator = val_evaluator
