"""Shared fixtures of the export tests: a tiny detector briefly trained on synthetic data.

The `detector` fixture picks which: `"retinanet"` (the default) or
`"faster_rcnn"`; `test_saved_model.py` and `test_tflite.py` run every check for
both (`pytestmark` parametrizes `detector` indirectly). Training (~1-2 minutes
each on 2 CPU cores) makes COCO AP meaningful, so that exported models can be
compared with Keras on accuracy, not only on raw numbers. The trained weights
are kept in pytest's cache (keyed by the recipe and the TF/Keras versions), so
later runs on the same machine skip the training.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # export_helpers

from export_helpers import DATA, IMAGE_SIZE, SAVED_MODEL_MAX_PIXELS  # noqa: E402

DETECTORS = ("retinanet", "faster_rcnn")
BACKBONE = dict(backbone="resnet18", backbone_kwargs={"width_multiplier": 0.25, "ipg_width": 8}, fpn_channels=16)
MODELS = {
    "retinanet": dict(**BACKBONE, head_width=16, head_depth=1, max_level=5, anchor_size=2.0),
    "faster_rcnn": dict(**BACKBONE, anchor_size=4.0, rpn_head_width=16, roi_head_width=64, rpn_batch_size=64,
                        num_rois=64, pre_nms_topk_train=200, post_nms_topk_train=100, pre_nms_topk_test=100,
                        post_nms_topk_test=50),
}
TRAINING = {
    "retinanet": dict(steps=200, batch_size=16, learning_rate=3e-3, num_train_images=512, seed=0),
    "faster_rcnn": dict(steps=200, batch_size=16, learning_rate=2e-3, num_train_images=512, seed=0),
}
NUM_VAL_IMAGES = 48


def _recipe_key(detector: str) -> str:
    import keras
    import tensorflow as tf

    text = json.dumps([DATA, MODELS[detector], TRAINING[detector], tf.__version__, keras.__version__],
                      sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _train(path: Path, detector: str = "retinanet"):
    import keras

    from ipg_keras.data import SYNTHETIC_CLASS_NAMES, make_batches, synthetic_dataset
    from ipg_keras.models import IPGFasterRCNN, IPGRetinaNet

    train_cfg = TRAINING[detector]
    keras.utils.set_random_seed(train_cfg["seed"])
    train = make_batches(
        synthetic_dataset("train", num_images=train_cfg["num_train_images"], **DATA), train_cfg["batch_size"],
        IMAGE_SIZE, cache=True, shuffle=True, repeat=True, seed=train_cfg["seed"],
    )
    cls = IPGFasterRCNN if detector == "faster_rcnn" else IPGRetinaNet
    model = cls(num_classes=len(SYNTHETIC_CLASS_NAMES), **MODELS[detector])
    model.compile(optimizer=keras.optimizers.Adam(train_cfg["learning_rate"]))
    model.fit(train, epochs=1, steps_per_epoch=train_cfg["steps"], verbose=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model


@pytest.fixture(scope="session")
def detector(request) -> str:
    """Which tiny detector the export fixtures build: `"retinanet"` unless parametrized."""
    return getattr(request, "param", "retinanet")


@pytest.fixture(scope="session")
def trained_model_path(request, detector) -> Path:
    """`.keras` file of the briefly trained tiny detector (trained once, then cached)."""
    from ipg_keras.export.runtime import ModelLoadError, load_keras_model

    path = Path(request.config.cache.mkdir("ipg_export_tiny_model")) / f"{detector}_{_recipe_key(detector)}.keras"
    if path.is_file():
        try:
            load_keras_model(path)
            return path
        except ModelLoadError:  # model code changed since: retrain
            path.unlink()
    _train(path, detector)
    return path


@pytest.fixture(scope="session")
def trained_model(trained_model_path):
    from ipg_keras.export.runtime import load_keras_model

    return load_keras_model(trained_model_path)


@pytest.fixture(scope="session")
def val_batches():
    """Validation set as a list of `(images [B, 64, 64, 3] float32, targets)` numpy batches."""
    from ipg_keras.data import make_batches, synthetic_dataset

    ds = make_batches(synthetic_dataset("val", num_images=NUM_VAL_IMAGES, **DATA), 16, IMAGE_SIZE)
    return [(x.numpy(), {k: v.numpy() for k, v in y.items()}) for x, y in ds]


@pytest.fixture(scope="session")
def keras_val_ap(trained_model, val_batches) -> float:
    from export_helpers import coco_ap

    ap = coco_ap(lambda x: trained_model.predict_on_batch(x), val_batches, trained_model.num_classes)
    # The comparisons below only mean something if the model detects objects.
    assert ap > 0.03, f"the briefly trained test model should reach AP > 0.03, got {ap:.4f}"
    return ap


@pytest.fixture(scope="session")
def calibration_images():
    """Training images (a different split from validation) for int8 calibration."""
    from ipg_keras.data import synthetic_dataset

    return synthetic_dataset("train", num_images=64, **DATA)


@pytest.fixture(scope="session")
def uint8_val_images(val_batches) -> np.ndarray:
    return np.clip(np.round(val_batches[0][0]), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def saved_model_dir(trained_model, tmp_path_factory) -> Path:
    """The trained model exported with `export_saved_model` (64 x 64, pixel limit 100 x 100)."""
    from ipg_keras.export import export_saved_model

    path = tmp_path_factory.mktemp("sm") / "ipg" / "1"
    out = export_saved_model(trained_model, path, image_size=IMAGE_SIZE, max_pixels=SAVED_MODEL_MAX_PIXELS)
    assert out == path and (path / "saved_model.pb").is_file()
    return path


@pytest.fixture(scope="session")
def tflite_path(trained_model, calibration_images, tmp_path_factory):
    """`tflite_path(precision)` -> the trained model exported with `export_tflite` (converted once each)."""
    from ipg_keras.export import export_tflite

    folder = tmp_path_factory.mktemp("tflite")
    done: dict[str, Path] = {}

    def get(precision: str) -> Path:
        if precision not in done:
            done[precision] = export_tflite(
                trained_model, folder / f"model_{precision}.tflite", precision=precision, image_size=IMAGE_SIZE,
                representative_dataset=calibration_images if precision == "int8" else None,
                num_calibration_images=32,
            )
        return done[precision]

    return get
