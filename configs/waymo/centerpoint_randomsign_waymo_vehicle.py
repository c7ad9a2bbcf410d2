# Waymo vehicle detector with random-sign GradDrop (the paper's ablation: keep probability 0.5).
# Full Waymo range and 0.1 x 0.1 x 0.15 m voxel grid, 20% of the training frames, 20 epochs.
_base_ = [
    "../_base_/models/centerpoint_graddrop_waymo.py",
    "../_base_/datasets/waymo_vehicle.py",
    "../_base_/schedules/adamw_cosine_20e.py",
    "../_base_/default_runtime.py",
]
model = dict(head=dict(graddrop=dict(mode="random_sign")))
