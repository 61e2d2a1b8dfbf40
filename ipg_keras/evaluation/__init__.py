"""Evaluation of detectors: COCO metrics (pycocotools) on prediction dicts, and a callback."""

from ipg_keras.evaluation.callback import COCOMetricsCallback
from ipg_keras.evaluation.coco import (
    METRIC_NAMES,
    COCOEvaluator,
    coco_metrics,
    detection_limit,
    evaluate_detections,
    evaluate_model,
)
from ipg_keras.evaluation.sliced import evaluate_sliced

__all__ = ["METRIC_NAMES", "COCOEvaluator", "COCOMetricsCallback", "coco_metrics", "detection_limit",
           "evaluate_detections", "evaluate_model", "evaluate_sliced"]
