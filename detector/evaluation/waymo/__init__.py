"""The official Waymo 3D detection metric (AP / APH) and its file format (metrics_pb2.Objects).

    from detector.evaluation.waymo import compute_detection_metrics, prepare_ground_truth
    gt = prepare_ground_truth(boxes, types, frame_ids, difficulty, num_points)
    result = compute_detection_metrics(pred_boxes, pred_types, pred_scores, pred_frame_ids,
                                       gt["boxes"], gt["types"], gt["frame_ids"], gt["difficulty"])
    print(format_metrics_table(result))
"""
from .metrics import (BREAKDOWNS, DEFAULT_IOU_THRESHOLDS, DEFAULT_SCORE_CUTOFFS,
                      average_precision, breakdown_names, compute_detection_metrics,
                      prepare_ground_truth)
from .objects_io import ObjectArrays, evaluate_objects, frame_id_from, read_objects, write_objects
from .table import format_metrics_table

__all__ = ["BREAKDOWNS", "DEFAULT_IOU_THRESHOLDS", "DEFAULT_SCORE_CUTOFFS", "ObjectArrays",
           "average_precision", "breakdown_names", "compute_detection_metrics",
           "evaluate_objects", "format_metrics_table", "frame_id_from", "prepare_ground_truth",
           "read_objects", "write_objects"]
