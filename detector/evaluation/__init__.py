"""Evaluation: the official Waymo 3D detection metric (``detector.evaluation.waymo``)."""
