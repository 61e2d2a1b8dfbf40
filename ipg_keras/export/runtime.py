"""Running exported detectors: one calling convention for `.keras`, SavedModel and TFLite.

Every detector here is a callable taking images `[B, H, W, 3]` (uint8 or float
0..255 RGB) at its `input_size` and returning numpy
`{"boxes" [B, D, 4] xyxy pixels of that input, "scores" [B, D],
"classes" [B, D] int32, "num_detections" [B]}`. `letterbox` prepares an image of
any size the way the models were trained (resize to fit, pad bottom/right).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ipg_keras.export import mediapipe_tasks
from ipg_keras.export.common import (
    DEFAULT_IMAGE_SIZE,
    METADATA_FILE,
    OUTPUT_NAMES,
    InputSizeWarning,
    input_size_or_default,
    read_metadata,
)


class ModelLoadError(ValueError):
    """A model file or folder that cannot be loaded (message says which and why)."""


def letterbox(image: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize `[H, W, 3]` to fit `input_size` keeping the aspect ratio, zero-pad bottom/right.

    Same arithmetic as the training pipeline and the SavedModel signatures. Returns
    `(float32 [h, w, 3], scale)`: original pixels = boxes / scale.
    """
    from ipg_keras.export.common import resize_and_pad_images

    padded, scale = resize_and_pad_images(np.asarray(image)[None], int(input_size[0]), int(input_size[1]))
    return padded[0].numpy(), float(scale.numpy())


def _to_numpy(out: Any) -> dict[str, np.ndarray]:
    return {k: (out[k].numpy() if hasattr(out[k], "numpy") else np.asarray(out[k])) for k in OUTPUT_NAMES}


def _as_batch(images: Any) -> np.ndarray:
    array = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"Expected RGB images [B, H, W, 3] (or one [H, W, 3]), got shape {array.shape}.")
    return array


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    return np.clip(np.round(array), 0, 255).astype(np.uint8)


class KerasDetector:
    """A Keras detector (object or `.keras` file).

    `input_size`: the `image_size` argument, else the model's `image_size`, else 512
    with an `InputSizeWarning` (`load_detector` passes the training size of an
    ipg-train run folder).
    """

    format = "keras"

    def __init__(self, model: Any, image_size: int | tuple[int, int] | None = None):
        if isinstance(model, (str, Path)):
            model = load_keras_model(model)
        self.model = model
        size = input_size_or_default(model, image_size)
        self.input_size = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
        self.num_classes = getattr(model, "num_classes", None)
        self.class_names = getattr(model, "class_names", None)

    def __call__(self, images: Any) -> dict[str, np.ndarray]:
        batch = _as_batch(images).astype(np.float32)
        if hasattr(self.model, "predict_on_batch"):
            out = _to_numpy(self.model.predict_on_batch(batch))
            box_format = getattr(self.model, "bounding_box_format", "xyxy")
            if box_format != "xyxy":  # predict gives the model's format; this runtime gives xyxy pixels
                from ipg_keras.ops.box_formats import convert_boxes

                out["boxes"] = convert_boxes(out["boxes"], box_format, "xyxy", batch.shape[1], batch.shape[2],
                                             valid=out["classes"] >= 0).numpy()
            return out
        return _to_numpy(self.model.detect(batch))


class SavedModelDetector:
    """An `export_saved_model` folder, run through its `serving_default` signature.

    Inputs of `input_size` come back in their own pixels (scale 1); other sizes
    are resized inside the signature and boxes still come back in input pixels.
    """

    format = "saved_model"

    def __init__(self, path: str | Path):
        import tensorflow as tf

        path = Path(path)
        if not (path / "saved_model.pb").is_file():
            raise ModelLoadError(f"{path} is not a SavedModel folder (no saved_model.pb in it).")
        try:
            self.loaded = tf.saved_model.load(str(path))
        except Exception as error:  # noqa: BLE001 - TF raises many types here
            raise ModelLoadError(f"Cannot load the SavedModel at {path}: {error}") from error
        if "serving_default" not in self.loaded.signatures:
            raise ModelLoadError(f"SavedModel {path} has no 'serving_default' signature.")
        self.signature = self.loaded.signatures["serving_default"]
        meta = read_metadata(path) or {}
        size = meta.get("image_size")
        if not size:
            warnings.warn(
                f"SavedModel {path} records no input size (no assets.extra/{METADATA_FILE}; not written by "
                f"export_saved_model): tiling and batching use {DEFAULT_IMAGE_SIZE}x{DEFAULT_IMAGE_SIZE} pixels. "
                "Re-export it with export_saved_model(image_size=...) or ipg-export --image-size.",
                InputSizeWarning,
                stacklevel=2,
            )
            size = [DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE]
        self.input_size = (int(size[0]), int(size[1]))
        self.num_classes = meta.get("num_classes")
        self.class_names = meta.get("class_names")

    def __call__(self, images: Any) -> dict[str, np.ndarray]:
        import tensorflow as tf

        batch = _to_uint8(_as_batch(images))
        return _to_numpy(self.signature(images=tf.constant(batch)))


def _litert_interpreter(path: Path, num_threads: int | None):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the LiteRT package is optional; TF bundles an interpreter
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path), num_threads=num_threads)


class TFLiteDetector:
    """An `export_tflite` file run with the LiteRT interpreter (fixed input size, batch 1 per invoke).

    Reads both output contracts: ours (`runtime="litert"`) and MediaPipe Tasks'
    (`runtime="mediapipe"`, told apart by its output names), whose normalised
    `[ymin, xmin, ymax, xmax]` boxes and float classes it converts back, keeping
    the rows MediaPipe keeps. `class_names`: the label map packed into the file
    (MediaPipe export), else the sidecar's.
    """

    format = "tflite"

    def __init__(self, path: str | Path, num_threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"TFLite model {path} does not exist.")
        try:
            self.interpreter = _litert_interpreter(path, num_threads)
            self.runner = self.interpreter.get_signature_runner("serving_default")
        except (ValueError, RuntimeError) as error:
            raise ModelLoadError(f"{path} is not a valid TFLite model exported by ipg_keras: {error}") from error
        inputs = self.runner.get_input_details()
        if "images" not in inputs:
            raise ModelLoadError(f"TFLite model {path} has no 'images' input (inputs: {sorted(inputs)}).")
        outputs = set(self.runner.get_output_details())
        if set(mediapipe_tasks.OUTPUT_NAMES) <= outputs:
            self.runtime = "mediapipe"
        elif set(OUTPUT_NAMES) <= outputs:
            self.runtime = "litert"
        else:
            raise ModelLoadError(f"TFLite model {path} has outputs {sorted(outputs)}; expected {list(OUTPUT_NAMES)} "
                                 f"or MediaPipe's {list(mediapipe_tasks.OUTPUT_NAMES)}.")
        detail = inputs["images"]
        shape = [int(s) for s in detail["shape"]]
        self.input_shape = shape
        self.input_size = (shape[1], shape[2])
        self.input_dtype = np.dtype(detail["dtype"])
        self.path = path
        meta = read_metadata(path) or {}
        self.num_classes = meta.get("num_classes")
        self.class_names = (mediapipe_tasks.read_labels(path) if self.runtime == "mediapipe" else None) or meta.get(
            "class_names")
        if self.num_classes is None and self.runtime == "mediapipe" and self.class_names:
            self.num_classes = len(self.class_names)
        self.precision = meta.get("precision")

    def __call__(self, images: Any) -> dict[str, np.ndarray]:
        batch = _as_batch(images)
        h, w = self.input_size
        if batch.shape[1:3] != (h, w):
            raise ValueError(
                f"TFLite model {self.path.name} takes {h}x{w} images (fixed size), got "
                f"{batch.shape[1]}x{batch.shape[2]}. Letterbox the image to {h}x{w} "
                "(ipg_keras.export.runtime.letterbox) or tile it (ipg-predict does both)."
            )
        batch = _to_uint8(batch) if self.input_dtype == np.uint8 else batch.astype(self.input_dtype)
        outs = [self.runner(images=batch[i : i + 1]) for i in range(len(batch))]
        if self.runtime == "mediapipe":
            outs = [mediapipe_tasks.from_runtime_outputs(o, self.input_size) for o in outs]
        return {k: np.concatenate([o[k] for o in outs], axis=0) for k in OUTPUT_NAMES}


def training_image_size(model_path: str | Path) -> int | None:
    """`data.image_size` of the `config.yaml` that ipg-train writes next to its `model.keras`, if any."""
    config = Path(model_path).parent / "config.yaml"
    if not config.is_file():
        return None
    try:
        import yaml

        size = (yaml.safe_load(config.read_text()) or {}).get("data", {}).get("image_size")
        return int(size) if size else None
    except (OSError, ValueError, TypeError, AttributeError, ImportError):
        return None


def load_keras_model(path: str | Path):
    """`keras.saving.load_model` with the package's layers registered and clear errors."""
    import keras

    import ipg_keras.models  # noqa: F401 - registers the detectors for deserialization

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"Keras model file {path} does not exist.")
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for bad files
        raise ModelLoadError(f"Cannot load the Keras model {path}: {error}") from error


def load_detector(path: str | Path, image_size: int | tuple[int, int] | None = None, num_threads: int | None = None):
    """A detector for a `.keras` file, a SavedModel folder or a `.tflite` file (by what `path` is)."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(
            f"Model {path} does not exist; pass a .keras file, a SavedModel folder or a .tflite file."
        )
    if path.is_dir() and not (path / "saved_model.pb").is_file() and (path / "model.keras").is_file():
        path = path / "model.keras"  # an ipg-train run folder
    if path.is_dir():
        return SavedModelDetector(path)
    if path.suffix == ".tflite":
        return TFLiteDetector(path, num_threads=num_threads)
    if path.suffix in (".keras", ".h5", ".zip"):
        return KerasDetector(path, image_size=image_size or training_image_size(path))
    raise ModelLoadError(
        f"Cannot tell the format of {path}: use a .keras file, a SavedModel folder or a .tflite file."
    )
