"""Detect objects in image files with any model form: `load_detector` and `predict_image`.

What `ipg-predict` does, as library functions (the model people know is SAHI's
`get_sliced_prediction`):

```python
from ipg_keras.inference import load_detector, predict_image

detector = load_detector("runs/main")          # .keras, run folder, SavedModel folder or .tflite
result = predict_image(detector, "photo.jpg")  # letterbox, or tiles when larger than the input
result["boxes"]   # float32 [K, 4] xyxy in photo.jpg's pixels (after its EXIF orientation)
```

The image is read by `ipg_keras.data.image_io.read_image` (the package's one
reader: every format and mode, EXIF orientation, 16-bit by full scale), then

* `mode="resize"`: letterboxed to the detector's input size (resize keeping the
  aspect ratio, zero padding bottom/right, as in training); boxes scaled back;
* `mode="slice"`: cut into overlapping tiles of the input size, tiles predicted in
  batches and their detections merged by class-aware NMS (`sliced_predict`);
* `mode="auto"` (default): "slice" for images larger than the input in either
  side, else "resize" (small objects in large images survive; small images are
  not tiled);
* `mode="direct"`: the image as it is (a TFLite model then needs exactly its
  input size; a SavedModel resizes inside its signature).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ipg_keras.data.image_io import read_image
from ipg_keras.export.runtime import KerasDetector, letterbox, load_detector
from ipg_keras.inference.sliced import sliced_predict
from ipg_keras.inference.tta import TTA_VIEW_COUNTS, predict_views

MODES = ("auto", "resize", "slice", "direct")


def as_detector(model: Any, image_size: int | tuple[int, int] | None = None):
    """A detector callable for `predict_image` from what a user holds.

    `model`: a path (`.keras` file, ipg-train run folder, SavedModel folder,
    `.tflite` file; see `load_detector`), a Keras detector object (e.g. a trained
    `IPGRetinaNet`), or an object that already has `input_size` and is called
    with images `[B, H, W, 3]` (what `load_detector` returns). `image_size` sets
    the input size of a Keras model (default: its `image_size`, else 512).
    Raises `ModelLoadError` (a ValueError) for paths that are not a model.
    """
    if isinstance(model, (str, os.PathLike)):
        return load_detector(Path(model), image_size=image_size)
    if hasattr(model, "input_size") and callable(model):
        return model
    if hasattr(model, "predict_on_batch") or hasattr(model, "detect"):
        return KerasDetector(model, image_size=image_size)
    raise TypeError(
        f"Cannot predict with {type(model).__name__}: pass a model path, a Keras detector or what "
        "ipg_keras.inference.load_detector returns."
    )


def _pad_to(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Zero-pad `[B, h, w, 3]` bottom/right to `size` (tiles of images smaller than the input)."""
    h, w = size
    if batch.shape[1:3] == (h, w):
        return batch
    out = np.zeros((batch.shape[0], h, w, 3), batch.dtype)
    out[:, : batch.shape[1], : batch.shape[2]] = batch
    return out


def _as_image(image: Any) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    array = np.asarray(image.numpy() if hasattr(image, "numpy") else image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            f"predict_image takes an image file or one RGB image [H, W, 3] (0..255), got an array of shape "
            f"{array.shape}; read files with ipg_keras.data.image_io.read_image (gray, RGBA, 16-bit, ...)."
        )
    if min(array.shape[:2]) == 0:
        raise ValueError(f"predict_image got an empty image of shape {array.shape}.")
    return array


def predict_image(
    detector: Any,
    image: Any,
    mode: str = "auto",
    *,
    overlap: float = 0.25,
    batch_size: int = 4,
    iou_threshold: float = 0.5,
    max_detections: int = 300,
    tile_size: int | None = None,
    tta: int = 1,
    tta_scales: Sequence[float] = (1.0,),
) -> dict[str, np.ndarray]:
    """Detections of one image in its own pixels.

    Args:
        detector: what `load_detector` returns, a model path, or a Keras detector
            (see `as_detector`).
        image: an image file (read by `read_image`) or an RGB array `[H, W, 3]`
            (uint8, or float 0..255).
        mode: "auto" (default), "resize", "slice" or "direct" (module docstring).
        overlap: tile overlap as a fraction of the tile side, in [0, 1).
        batch_size: tiles per model call (a TFLite model takes 1).
        iou_threshold, max_detections: of the NMS that merges tiles.
        tile_size: side of the tiles in image pixels when slicing (default: the
            model's input side). Each tile is resized to the input, so a smaller
            tile zooms in, as for a model trained with `data.tile_size` below
            `data.image_size` (use the same tile size it was trained with).
        tta: test-time augmentation: 1 (off), 4 (the image and its flips) or 8
            (also transposed) views, each predicted as above and fused by
            weighted box fusion (`ipg_keras.inference.tta`); n times the cost.
        tta_scales: test-time scales: the views are also taken of the image
            resized by each factor (e.g. `(1.0, 0.8, 1.25)`), all fused;
            `len(tta_scales)` times the cost again.

    Returns:
        `{"boxes": float32 [K, 4] xyxy in the image's pixels (clipped to it),
        "scores": float32 [K], "classes": int32 [K] (0-based)}`, K >= 0. Sliced
        results are sorted by score; others keep the model's order.

    Raises:
        FileNotFoundError / ImageReadError (ValueError): unreadable image file.
        ValueError: unknown mode, bad overlap, tile_size < 1, tta not 1/4/8, a scale <= 0, an
            array that is not `[H, W, 3]`, or an image whose size a TFLite model
            cannot take in mode "direct".
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; use one of {MODES}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap={overlap} must be in [0, 1) (a fraction of the tile side)")
    if tile_size is not None and int(tile_size) < 1:
        raise ValueError(f"tile_size={tile_size} must be a positive number of pixels (or None: the model's input side)")
    if tta not in TTA_VIEW_COUNTS:
        raise ValueError(f"tta={tta}: use 1 (off), 4 (flips) or 8 (flips and transposes) views")
    if not tta_scales or min(float(s) for s in tta_scales) <= 0:
        raise ValueError(f"tta_scales={list(tta_scales)}: give one or more positive factors (1.0: the image as it is)")
    detector = as_detector(detector)
    pixels = _as_image(image)
    if tta != 1 or [float(s) for s in tta_scales] != [1.0]:
        one_view = dict(mode=mode, overlap=overlap, batch_size=batch_size, iou_threshold=iou_threshold,
                        max_detections=max_detections, tile_size=tile_size)
        return predict_views(lambda view: predict_image(detector, view, **one_view), pixels, tta,
                             scales=tta_scales, max_detections=max_detections)
    in_h, in_w = detector.input_size
    h, w = pixels.shape[:2]
    kind = getattr(detector, "format", "")
    limit_h, limit_w = (int(tile_size),) * 2 if tile_size else (in_h, in_w)
    if mode == "slice" or (mode == "auto" and (h > limit_h or w > limit_w)):
        side = min(in_h, in_w)
        tile = int(tile_size) if tile_size else side
        one_at_a_time = kind == "tflite"  # fixed batch of 1
        out = sliced_predict(
            lambda tiles: detector(_pad_to(tiles, (in_h, in_w))), pixels.astype(np.float32),
            tile_size=tile, overlap=int(round(tile * overlap)), input_size=None if tile == side else side,
            batch_size=1 if one_at_a_time else batch_size,
            score_threshold=0.0, pad_batch=not one_at_a_time, iou_threshold=iou_threshold,
            max_detections=max_detections,
        )
        return {k: out[k] for k in ("boxes", "scores", "classes")}
    if mode == "direct" or kind == "saved_model":
        # As is; a SavedModel letterboxes inside and returns original pixels itself.
        out = detector(pixels[None])
        scale = 1.0
    else:
        padded, scale = letterbox(pixels, (in_h, in_w))
        out = detector(padded[None])
    n = int(out["num_detections"][0])
    boxes = np.asarray(out["boxes"][0, :n], np.float32) / scale
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    return {"boxes": boxes, "scores": np.asarray(out["scores"][0, :n], np.float32),
            "classes": np.asarray(out["classes"][0, :n], np.int32)}
