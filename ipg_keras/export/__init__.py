"""Export of detectors for deployment: SavedModel (TF Serving), TFLite (LiteRT, MediaPipe Tasks).

Both work on any detector exposing `detect(images)` (float32 `[B, H, W, 3]`
0..255 -> `{"boxes", "scores", "classes", "num_detections"}`), not on one
model's internals. See `saved_model` and `tflite` for signatures and outputs,
`mediapipe_tasks` for the MediaPipe Tasks ObjectDetector contract, and
`runtime` for running `.keras`, SavedModel and TFLite files alike.
"""

from ipg_keras.export.common import DEFAULT_IMAGE_SIZE, OUTPUT_NAMES, InputSizeWarning, float32_model, read_metadata
from ipg_keras.export.runtime import (
    KerasDetector,
    ModelLoadError,
    SavedModelDetector,
    TFLiteDetector,
    letterbox,
    load_detector,
)
from ipg_keras.export.saved_model import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_PIXELS,
    decode_image_checked,
    export_saved_model,
)
from ipg_keras.export.tflite import PRECISIONS, RUNTIMES, export_tflite, representative_images

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_PIXELS",
    "InputSizeWarning",
    "KerasDetector",
    "ModelLoadError",
    "OUTPUT_NAMES",
    "PRECISIONS",
    "RUNTIMES",
    "SavedModelDetector",
    "TFLiteDetector",
    "decode_image_checked",
    "export_saved_model",
    "export_tflite",
    "float32_model",
    "letterbox",
    "load_detector",
    "read_metadata",
    "representative_images",
]
