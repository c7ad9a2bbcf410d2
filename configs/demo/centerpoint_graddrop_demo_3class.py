# The demo detector for Waymo's three benchmark classes VEHICLE / PEDESTRIAN / CYCLIST
# (`make demo CLASSES=3`): CenterPoint's multi-group head - one head for vehicles, one for
# pedestrians and cyclists - on the shared conv, and GradDrop over four tasks, the heatmap and
# the regression of each group (grouping "per_group_cls_box"), so the two groups' gradients meet
# at the shared activation as separate tasks. Everything else is the vehicle demo's
# (centerpoint_graddrop_demo.py), on the same converted synthetic data.
# GT sampling pastes up to 20 vehicles, 10 pedestrians and 10 cyclists per training scene: the
# synthetic scenes hold ~1.2 cyclists per frame (about 4x Waymo's 0.3, docs/synthetic.md),
# still too few to learn from in the demo's 42 frames alone.
_base_ = ["./centerpoint_graddrop_demo.py"]
class_names = ["VEHICLE", "PEDESTRIAN", "CYCLIST"]
point_cloud_range = [-38.4, -38.4, -2.0, 38.4, 38.4, 4.0]
data_root = "work_dirs/demo/data/converted"
model = dict(head=dict(
    class_groups=[["VEHICLE"], ["PEDESTRIAN", "CYCLIST"]],
    graddrop=dict(mode="graddrop", grouping="per_group_cls_box", leaks=0.0)))
train_dataloader = dict(dataset=dict(class_names=class_names, pipeline=[
    dict(type="ObjectSample", db=dict(data_root=data_root, split="train"), class_names=class_names,
         sample_counts=dict(VEHICLE=20, PEDESTRIAN=10, CYCLIST=10),
         min_points=dict(VEHICLE=10, PEDESTRIAN=5, CYCLIST=5)),
    dict(type="RandomFlip3D", flip_x_axis=True, flip_y_axis=True, prob=0.5),
    dict(type="GlobalRotScaleTrans", rot_range=[-0.78539816, 0.78539816], scale_range=[0.95, 1.05],
         translation_std=[0.2, 0.2, 0.1]),
    dict(type="PointsRangeFilter", point_cloud_range=point_cloud_range),
    dict(type="ObjectRangeFilter", point_cloud_range=point_cloud_range),
    dict(type="PointShuffle"),
]))
val_dataloader = dict(dataset=dict(class_names=class_names))
test_dataloader = val_dataloader
