# Converted Waymo, the benchmark's three classes VEHICLE, PEDESTRIAN, CYCLIST (labels 0, 1, 2 in
# this order: the head's flat class list must be the same), full range. Everything else as in
# waymo_vehicle.py (OpenPCDet's waymo_dataset.yaml, all of it: 20 % of the training frames, NLZ
# points dropped, empty boxes dropped, flips / rotation / scaling, no translation, 4 frames per
# GPU): GT sampling up to Vehicle 15 / Pedestrian 10 / Cyclist 10 objects per scene
# (SAMPLE_GROUPS, LIMIT_WHOLE_SCENE) from database objects with >= 5 points each
# (filter_by_min_points), colliders dropped (collision="drop"). Self-contained rather than
# inheriting: mmengine does not re-evaluate a base file's pipeline with a child's variables.
data_root = "data/waymo_converted"
data_class_names = ["VEHICLE", "PEDESTRIAN", "CYCLIST"]
data_point_cloud_range = [-75.2, -75.2, -2.0, 75.2, 75.2, 4.0]
data_sample_counts = dict(VEHICLE=15, PEDESTRIAN=10, CYCLIST=10)
data_min_points = dict(VEHICLE=5, PEDESTRIAN=5, CYCLIST=5)

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
