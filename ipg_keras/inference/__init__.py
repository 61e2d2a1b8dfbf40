"""Detection on image files and images of any size, with any model form.

* `load_detector(path)`: a `.keras` file, an ipg-train run folder, a SavedModel
  folder or a `.tflite` file as one callable (`ipg_keras.export.runtime`).
* `read_image(path)`: the package's one image reader (`ipg_keras.data.image_io`).
* `predict_image(detector, image_or_path, mode="auto")`: letterbox or tile by
  rule, merge tiles with the package's NMS, boxes in the image's own pixels.
* `sliced_predict(predictor, image, ...)`: tiling for any predictor callable.
* `predict_views(predict, image, views=4)`: test-time augmentation (flips,
  transposes) fused by weighted box fusion (`predict_image(..., tta=4)`).
"""

from ipg_keras.data.image_io import ImageReadError, read_image
from ipg_keras.export.runtime import ModelLoadError, load_detector
from ipg_keras.inference.predict import MODES, as_detector, predict_image
from ipg_keras.inference.sliced import merge_detections, sliced_predict
from ipg_keras.inference.tta import predict_views, weighted_box_fusion

__all__ = [
    "ImageReadError",
    "MODES",
    "ModelLoadError",
    "as_detector",
    "load_detector",
    "merge_detections",
    "predict_image",
    "predict_views",
    "read_image",
    "sliced_predict",
    "weighted_box_fusion",
]
