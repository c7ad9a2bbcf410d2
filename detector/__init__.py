"""Waymo LiDAR 3D detection with GradDrop: data, models, evaluation, visualization, engine glue."""
