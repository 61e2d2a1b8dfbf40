"""Pieces shared by the SavedModel and TFLite exports.

Export works on any detector that exposes `detect(images)` (float32
`[B, H, W, 3]` RGB 0..255 -> the prediction dict of conventions.md), or on such
a callable itself, so every detector of the package (RetinaNet, Faster R-CNN)
exports the same way.
"""

from __future__ import annotations

import json
import warnings
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


class InputSizeWarning(UserWarning):
    """A model without a recorded input size is exported or run at `DEFAULT_IMAGE_SIZE`."""


def input_size_or_default(model: Any, image_size: int | tuple[int, int] | None = None):
    """`image_size` if given, else `model.image_size`, else `DEFAULT_IMAGE_SIZE` with an `InputSizeWarning`.

    A model trained through the Python API records no input size (ipg-train run
    folders do, in `config.yaml`); running it at another size than it was
    trained at silently changes which objects it finds, so the fallback warns,
    naming the size used and how to set it.
    """
    if image_size:
        return image_size
    recorded = getattr(model, "image_size", None)
    if recorded:
        return recorded
    warnings.warn(
        f"{type(model).__name__} has no recorded input size (no image_size given, no model.image_size): using "
        f"the default {DEFAULT_IMAGE_SIZE}x{DEFAULT_IMAGE_SIZE} pixels. Pass the training image size: the "
        "image_size argument (export_saved_model, export_tflite, KerasDetector, load_detector) or --image-size "
        "(ipg-export, ipg-predict).",
        InputSizeWarning,
        stacklevel=3,
    )
    return DEFAULT_IMAGE_SIZE


def resolve_image_size(model: Any, image_size: int | tuple[int, int] | None) -> tuple[int, int]:
    """`(H, W)` of the network input: `image_size`, else `model.image_size`, else 512 x 512 (with a warning)."""
    image_size = input_size_or_default(model, image_size)
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


# Compute dtypes that TFLite's builtin kernels lack for most ops (a mixed-precision model's layers).
_LOW_PRECISION = ("float16", "bfloat16")


def low_precision_layers(model: Any) -> list[str]:
    """Names of the layers of a Keras `model` that compute in float16 or bfloat16 (mixed precision)."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        return []
    return [layer.name for layer in flatten(include_self=True, recursive=True)
            if getattr(layer, "compute_dtype", "float32") in _LOW_PRECISION]


def _float32_dtypes(config: Any) -> Any:
    """A copy of a Keras config with every layer's dtype policy replaced by "float32"."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if key == "dtype" and (
                (isinstance(value, dict) and "DTypePolicy" in str(value.get("class_name", "")))
                or (isinstance(value, str) and value.startswith("mixed_"))
            ):
                out[key] = "float32"
            else:
                out[key] = _float32_dtypes(value)
        return out
    if isinstance(config, list):
        return [_float32_dtypes(v) for v in config]
    return config


def float32_model(model: Any, image_size: tuple[int, int]) -> Any:
    """`model` itself when it computes in float32, else a float32 copy with the same weights.

    Models trained under `mixed_float16` / `mixed_bfloat16` compute in 16 bits
    but keep float32 variables (Keras mixed precision), so the copy -- rebuilt
    from `get_config()` under the float32 policy, weights copied -- computes the
    same detections in float32. TFLite needs it: its builtin kernels (and the
    float16 / int8 quantizers, which start from a float32 graph) have no
    float16/bfloat16 arithmetic. Attributes `image_size` and `class_names` are
    carried over.

    Raises:
        ValueError: the model computes in 16 bits and no float32 copy can be made
            (no `get_config`/`from_config`, or the weights do not fit), with the fix.
    """
    low = low_precision_layers(model)
    if not low:
        return model
    import keras

    policy = getattr(getattr(model, "dtype_policy", None), "name", "mixed precision")
    try:
        config = _float32_dtypes(model.get_config())
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("float32")
        try:
            twin = type(model).from_config(config)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        ensure_built(twin, detect_callable(twin), image_size)
        twin.set_weights(model.get_weights())
    except Exception as error:  # noqa: BLE001 - any failure means the same fix
        raise ValueError(
            f"Cannot export {type(model).__name__}: {len(low)} of its layers compute in 16 bits ({policy}; e.g. "
            f"{low[0]!r}), which TFLite's builtin ops do not support, and a float32 copy could not be built "
            f"({type(error).__name__}: {error}). Rebuild the model under "
            "keras.mixed_precision.set_global_policy('float32'), load the trained weights into it (mixed "
            "precision keeps float32 variables) and export that."
        ) from error
    still_low = low_precision_layers(twin)
    if still_low:
        raise ValueError(
            f"Cannot export {type(model).__name__} to TFLite: its float32 copy still computes in 16 bits in "
            f"{still_low[:3]}. Rebuild it under keras.mixed_precision.set_global_policy('float32') and load the "
            "weights."
        )
    for attr in ("image_size", "class_names"):
        if getattr(model, attr, None) is not None:
            setattr(twin, attr, getattr(model, attr))
    return twin
