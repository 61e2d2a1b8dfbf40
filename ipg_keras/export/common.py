"""Pieces shared by the SavedModel and TFLite exports.

Export works on any detector that exposes `detect(images)` (float32
`[B, H, W, 3]` RGB 0..255 -> the prediction dict of conventions.md), or on such
a callable itself, so every detector of the package (RetinaNet, Faster R-CNN)
exports the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import tensorflow as tf

DetectFn = Callable[[tf.Tensor], Mapping[str, tf.Tensor]]

#: Resize target used when neither `image_size` nor `model.image_size` is given.
DEFAULT_IMAGE_SIZE = 512
#: Names of the outputs of every exported signature / TFLite model.
OUTPUT_NAMES = ("boxes", "scores", "classes", "num_detections")
#: File (next to `saved_model.pb`, or next to a `.tflite`) that records how the model was exported.
METADATA_FILE = "ipg_export.json"


def detect_callable(model: Any) -> DetectFn:
    """`model.detect` when the model has one, else the model itself if callable."""
    detect = getattr(model, "detect", None)
    if callable(detect):
        return detect
    if callable(model):
        return model
    raise TypeError(
        f"Cannot export {type(model).__name__}: it needs a `detect(images)` method (float32 [B, H, W, 3] -> "
        "{'boxes', 'scores', 'classes', 'num_detections'}) or must itself be such a callable."
    )


def resolve_image_size(model: Any, image_size: int | tuple[int, int] | None) -> tuple[int, int]:
    """`(H, W)` of the network input: `image_size`, else `model.image_size`, else 512 x 512."""
    if image_size is None:
        image_size = getattr(model, "image_size", None) or DEFAULT_IMAGE_SIZE
    if isinstance(image_size, (int, float)):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(s) for s in image_size)
        if len(size) != 2:
            raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}.")
    if min(size) <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}.")
    multiple = getattr(model, "size_multiple", None)
    if multiple and (size[0] % multiple or size[1] % multiple):
        raise ValueError(
            f"image_size {size} is not a multiple of the model's size_multiple {multiple} (2**max_level); "
            f"use e.g. {tuple(-(-s // multiple) * multiple for s in size)}."
        )
    return size  # type: ignore[return-value]


def fit_scale(height, width, target_h: int, target_w: int):
    """Scale that fits an image of `height` x `width` into `target_h` x `target_w`, aspect kept."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    return tf.minimum(float(target_h) / h, float(target_w) / w)


def resize_and_pad_images(images, target_h: int, target_w: int):
    """Aspect-preserving resize of a batch `[B, H, W, 3]` (any dtype) to fit, zero pad bottom/right.

    Same arithmetic as `ipg_keras.data.resize_and_pad` (bilinear, antialias, rounded
    size), so exported models see what the Keras pipeline feeds the model.
    Returns `(float32 [B, target_h, target_w, 3], scale)`; original pixels = boxes / scale.
    """
    shape = tf.shape(images)
    scale = fit_scale(shape[1], shape[2], target_h, target_w)
    new_h = tf.clip_by_value(tf.cast(tf.round(tf.cast(shape[1], tf.float32) * scale), tf.int32), 1, target_h)
    new_w = tf.clip_by_value(tf.cast(tf.round(tf.cast(shape[2], tf.float32) * scale), tf.int32), 1, target_w)
    resized = tf.image.resize(tf.cast(images, tf.float32), tf.stack([new_h, new_w]), "bilinear", antialias=True)
    padded = tf.image.pad_to_bounding_box(resized, 0, 0, target_h, target_w)
    return tf.ensure_shape(padded, [None, target_h, target_w, 3]), scale


def to_original_pixels(boxes, scale, height, width):
    """Boxes `[B, K, 4]` in the network frame -> original pixels (divide by `scale` `[B]` or scalar), clipped."""
    scale = tf.cast(scale, tf.float32)
    if scale.shape.rank == 1:
        scale = scale[:, None, None]
    out = boxes / scale
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    if h.shape.rank == 1:
        h, w = h[:, None], w[:, None]
    return tf.stack(
        [
            tf.clip_by_value(out[..., 0], 0.0, w),
            tf.clip_by_value(out[..., 1], 0.0, h),
            tf.clip_by_value(out[..., 2], 0.0, w),
            tf.clip_by_value(out[..., 3], 0.0, h),
        ],
        axis=-1,
    )


def standardize_detections(detections: Mapping[str, Any]) -> dict[str, tf.Tensor]:
    """The four outputs with fixed dtypes (boxes/scores float32, classes/num_detections int32)."""
    missing = [k for k in OUTPUT_NAMES if k not in detections]
    if missing:
        raise ValueError(f"The detector's detect() output lacks {missing}; got keys {sorted(detections)}.")
    return {
        "boxes": tf.cast(detections["boxes"], tf.float32),
        "scores": tf.cast(detections["scores"], tf.float32),
        "classes": tf.cast(detections["classes"], tf.int32),
        "num_detections": tf.cast(detections["num_detections"], tf.int32),
    }


def model_metadata(model: Any) -> dict[str, Any]:
    """Facts about the model worth keeping next to an export (class count and names, type)."""
    meta: dict[str, Any] = {"model_class": type(model).__name__}
    for key in ("num_classes", "class_names", "size_multiple"):
        value = getattr(model, key, None)
        if value is not None:
            meta[key] = list(value) if isinstance(value, (list, tuple)) else value
    return meta


def write_metadata(path: str | Path, metadata: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(metadata), indent=2, default=str))
    return path


def tflite_metadata_path(path: str | Path) -> Path:
    """Sidecar metadata of a TFLite file: `model.tflite` -> `model.tflite.json`."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def tracked_variables(model: Any) -> list:
    """The model's variables as plain `tf.Variable`s, for tracking by a `tf.Module`.

    Keras 3 variables wrap a `tf.Variable` (`.value`); tracking the wrapper saves a
    SavedModel that TF loads fine but from which the TFLite converter reads
    garbage weights, so exports track the underlying variables.
    """
    out = []
    for v in getattr(model, "variables", []):
        inner = getattr(v, "value", v)
        out.append(inner if isinstance(inner, tf.Variable) else v)
    return out


def ensure_built(model: Any, detect: DetectFn, image_size: tuple[int, int]) -> None:
    """Runs `detect` once on a blank image so every variable exists before tracing for export."""
    if getattr(model, "built", True) and getattr(model, "variables", None):
        return
    detect(tf.zeros([1, image_size[0], image_size[1], 3], tf.float32))


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """Metadata of an export (a SavedModel folder or a `.tflite` file), None if it has none."""
    path = Path(path)
    candidates = [path / "assets.extra" / METADATA_FILE] if path.is_dir() else [tflite_metadata_path(path)]
    for c in candidates:
        if c.is_file():
            try:
                return json.loads(c.read_text())
            except (OSError, ValueError):
                return None
    return None
