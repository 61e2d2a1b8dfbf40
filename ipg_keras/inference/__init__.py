"""Inference helpers that work with any detector callable (no model imports here)."""

from ipg_keras.inference.sliced import class_aware_nms, sliced_predict

__all__ = ["class_aware_nms", "sliced_predict"]
