"""Helpers of the export tests (importable: tests/export is put on sys.path by conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
IMAGE_SIZE = 64  # input size of the test detector
DATA = dict(image_size=IMAGE_SIZE, min_size=10, max_size=28, max_objects=4)  # its synthetic data
SAVED_MODEL_MAX_PIXELS = 100 * 100  # small on purpose: serving_bytes' limit is tested with small images


def coco_ap(predict, batches, num_classes: int) -> float:
    """COCO AP of `predict(images) -> prediction dict` over `(images, targets)` batches."""
    from ipg_keras.evaluation import COCOEvaluator

    evaluator = COCOEvaluator(num_classes=num_classes)
    for images, targets in batches:
        evaluator.update(targets, predict(images))
    return evaluator.result()["AP"]


def run_subprocess(args, timeout: int = 120, **kwargs) -> subprocess.CompletedProcess:
    """Runs a command with quiet TensorFlow logs; returns the completed process (output captured)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1", PYTHONPATH=str(REPO))
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO, **kwargs
    )


def valid(pred: dict, b: int) -> dict:
    """The `num_detections` valid entries of image `b` of a prediction dict (numpy)."""
    n = int(np.asarray(pred["num_detections"])[b])
    return {k: np.asarray(pred[k])[b, :n] for k in ("boxes", "scores", "classes")}
