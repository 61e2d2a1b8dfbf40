"""TFLite (LiteRT) export with decoding and NMS inside the model, builtin ops only.

The exported model has one signature, ``serving_default``:

* input ``images``: uint8 ``[1, H, W, 3]`` RGB at the fixed export size ``(H, W)``.
  Resize keeping the aspect ratio and zero-pad bottom/right to ``(H, W)`` first
  (`ipg_keras.export.runtime.letterbox` does it; divide boxes by its scale).
* outputs ``boxes`` float32 ``[1, D, 4]`` xyxy in input pixels, ``scores``
  float32 ``[1, D]``, ``classes`` int32 ``[1, D]`` (-1 = padding),
  ``num_detections`` int32 ``[1]``; ``D`` = the model's ``max_detections``.

Use it through the signature runner (output tensor order is not meaningful)::

    from ai_edge_litert.interpreter import Interpreter
    runner = Interpreter(model_path="model.tflite").get_signature_runner()
    out = runner(images=image_uint8[None])   # out["boxes"], out["scores"], ...

Precisions: ``float32``; ``float16`` (float16 weights); ``dynamic_int8`` (int8
weights, float activations); ``int8`` (full integer: weights and activations of
the network, calibrated on a representative dataset). In ``int8`` the ops of
``ipg_keras.ops.POSTPROCESS_SCOPE`` stay float (``float_postprocess=True``): box
decoding, proposals, RoI sample positions, score ranking, NMS (TFLite has it
only in float) and the concatenation of per-level head outputs. All use
``TFLITE_BUILTINS`` only: no Flex / select TF ops, so the model runs in the
stock LiteRT runtime. Faster R-CNN is traced with its gather-based RoIAlign
(`builtin_ops_variant`). A ``<file>.json`` sidecar records the export size,
precision and outputs.

int8 activation ranges: TFLite calibrates with the min/max over the calibration
images, which a few outlier activations stretch. By default the ranges are
narrowed to the ``calibration_percentile`` (99.99) of each activation's values
over the calibration images before quantizing (int8 COCO AP vs Keras: Faster
R-CNN -0.0015 vs -0.0076 with min/max, RetinaNet -0.0014 vs -0.0007; 99.9 cut
too much: -0.011 on RetinaNet); ``calibration_percentile=None`` keeps TFLite's
min/max.

Float post-processing in int8 needs more than denylisting its ops: the
quantizer still rounds a denylisted op's output through int8 when the tensor
has a calibrated range, and quantizes the range-preserving ops (slice, gather,
concat, TopK) that follow a quantized tensor. So the post-processing tensors
lose their calibrated ranges first (`drop_activation_ranges`) and TopK and
slices are kept float (`FLOAT_OPS`); on Faster R-CNN that took int8 AP from 0.42 to 0.63 (Keras 0.63).

``runtime="mediapipe"`` exports for MediaPipe Tasks' ``ObjectDetector`` instead
(Android, iOS, web): the same network and post-processing with the runtime's
output contract (normalised ``[ymin, xmin, ymax, xmax]``, float classes) and
TFLite Model Metadata with the label map, written by MediaPipe's own writer; see
`ipg_keras.export.mediapipe_tasks`. Every precision works there; the export loads
the result in MediaPipe's ``ObjectDetector`` before writing it.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from ipg_keras.export.common import (
    OUTPUT_NAMES,
    detect_callable,
    ensure_built,
    float32_model,
    model_metadata,
    resize_and_pad_images,
    resolve_image_size,
    standardize_detections,
    tflite_metadata_path,
    tracked_variables,
    write_metadata,
)
from ipg_keras.export import mediapipe_tasks
from ipg_keras.ops import POSTPROCESS_SCOPE

PRECISIONS = ("float32", "float16", "dynamic_int8", "int8")
#: Who runs the file: "litert" (the LiteRT interpreter, our signature) or "mediapipe" (MediaPipe Tasks).
RUNTIMES = ("litert", "mediapipe")
DEFAULT_CALIBRATION_IMAGES = 100
DEFAULT_CALIBRATION_PERCENTILE = 99.99
_HISTOGRAM_BINS = 2048
# Op types kept float wherever they are (with float_postprocess). The quantizer
# hands int8 ranges on through these range-preserving ops even without
# calibration statistics: TopK would rank rounded logits (ties reorder the
# proposals), and the slice that makes the `scores` output would round it to
# Softmax's 1/256 steps. The networks use neither.
FLOAT_OPS = ("TOPK_V2", "STRIDED_SLICE")


def _images_of(item: Any) -> np.ndarray:
    """`[N, H, W, 3]` images from one item of a representative dataset."""
    if isinstance(item, dict):
        if "images" not in item:
            raise ValueError(f"Representative dataset dicts need an 'images' key, got keys {sorted(item)}.")
        item = item["images"]
    elif isinstance(item, (tuple, list)):
        if not item:
            raise ValueError("Representative dataset yielded an empty tuple/list.")
        item = item[0]  # (images, targets) batches or TFLite's [input] lists
    array = item.numpy() if hasattr(item, "numpy") else np.asarray(item)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(
            f"Representative dataset images must be [H, W, 3] or [B, H, W, 3] RGB 0..255, got shape {array.shape}."
        )
    return array


def representative_images(
    source: Any, image_size: tuple[int, int], num_images: int = DEFAULT_CALIBRATION_IMAGES
) -> Callable[[], Iterator[list[np.ndarray]]]:
    """A TFLite `representative_dataset` callable yielding `[uint8 [1, H, W, 3]]` from `source`.

    `source`: a `tf.data.Dataset` or iterable of element dicts (`{"images": ...}`),
    `(images, targets)` batches, or images `[H, W, 3]` / `[B, H, W, 3]` (0..255), or a
    callable returning such an iterable. Images are letterboxed to `image_size`
    exactly as at inference; at most `num_images` are used.
    """
    h, w = image_size

    def generate() -> Iterator[list[np.ndarray]]:
        items: Iterable[Any] = source() if callable(source) else source
        count = 0
        for item in items:
            for image in _images_of(item):
                padded, _ = resize_and_pad_images(image[None], h, w)
                yield [np.clip(np.round(padded.numpy()), 0, 255).astype(np.uint8)]
                count += 1
                if count >= num_images:
                    return
        if count == 0:
            raise ValueError("The representative dataset yielded no images.")

    return generate


def _interpreter(model_content: bytes, **kwargs):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # TF bundles an interpreter too
        Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    return Interpreter(
        model_content=model_content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        **kwargs,
    )


def narrow_activation_ranges(calibrated: bytes, images: Iterable[list[np.ndarray]], percentile: float) -> bytes:
    """Sets each calibrated activation range to its `percentile` (both tails) over `images`.

    `calibrated` is a float TFLite model carrying min/max statistics (the converter's
    calibrate-only output). Values are histogrammed inside the calibrated min/max
    (`_HISTOGRAM_BINS` bins, in float64), so memory does not grow with the number of images.
    Ranges only ever shrink, and always keep 0 inside (TFLite's quantized zero point).
    Constant and near-constant tensors (a range too narrow for the bins, see
    `histogram_resolvable`; e.g. anchor-derived values at a tiny anchor size)
    keep their min/max: there is no tail to cut.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    tensors = model.subgraphs[0].tensors
    ranges = {}
    for index, tensor in enumerate(tensors):
        q = tensor.quantization
        if q is not None and q.min is not None and q.max is not None and len(q.min) == 1:
            lo, hi = float(q.min[0]), float(q.max[0])
            if histogram_resolvable(lo, hi):
                ranges[index] = (lo, hi)
    interpreter = _interpreter(calibrated, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    histograms = {i: np.zeros(_HISTOGRAM_BINS, np.float64) for i in ranges}
    for (image,) in images:
        interpreter.set_tensor(input_index, image)
        interpreter.invoke()
        for i, (lo, hi) in ranges.items():
            try:
                values = interpreter.get_tensor(i)
            except ValueError:  # not materialised (e.g. a folded constant)
                continue
            if values.dtype == np.float32:
                values = values.astype(np.float64)
                histograms[i] += np.histogram(values, bins=_HISTOGRAM_BINS, range=(lo, hi))[0]
    tail = 1.0 - percentile / 100.0
    for i, (lo, hi) in ranges.items():
        total = histograms[i].sum()
        if total == 0:
            continue
        cumulative = np.cumsum(histograms[i]) / total
        edges = np.linspace(lo, hi, _HISTOGRAM_BINS + 1)
        new_lo = min(edges[np.searchsorted(cumulative, tail)], 0.0) if lo < 0 else lo
        new_hi = max(edges[min(_HISTOGRAM_BINS, np.searchsorted(cumulative, 1.0 - tail) + 1)], 0.0)
        new_lo, new_hi = max(new_lo, lo), min(new_hi, hi)
        if new_hi > new_lo:
            tensors[i].quantization.min = [np.float32(new_lo)]
            tensors[i].quantization.max = [np.float32(new_hi)]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def histogram_resolvable(lo: float, hi: float, bins: int = _HISTOGRAM_BINS) -> bool:
    """Whether `[lo, hi]` splits into `bins` bins at least one float32 step wide each.

    False for empty, inverted, non-finite, constant and near-constant ranges
    (e.g. `[0.5, 0.5 + 1e-7]`), on which a histogram is meaningless (and
    `np.histogram` raises "Too many bins for data range").
    """
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return False
    step = float(np.spacing(np.float32(max(abs(lo), abs(hi)))))
    return (hi - lo) >= bins * step


def postprocess_tensors(model_content: bytes) -> list[str]:
    """Names of the tensors made by the detector's post-processing (`POSTPROCESS_SCOPE`) ops."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_content))
    # TF makes a reused scope name unique ("postprocess_1/").
    marker = re.compile(rf"(^|/){POSTPROCESS_SCOPE}(_\d+)?/")
    names = []
    for tensor in model.subgraphs[0].tensors:
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name or "")
        if marker.search(name):
            names.append(name)
    return names


def drop_activation_ranges(calibrated: bytes, names: Iterable[str]) -> bytes:
    """Removes the calibrated min/max of the tensors `names` and of the graph outputs.

    Denylisting an op keeps that op float, but the quantizer still rounds its
    output through int8 (a quantize/dequantize pair) when the tensor has a
    calibrated range, and it quantizes range-preserving ops (slice, gather,
    concat, reshape) that follow a quantized tensor. Without a range the tensor
    can only stay float.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    subgraph = model.subgraphs[0]
    names = set(names)
    outputs = set(int(i) for i in subgraph.outputs)
    for index, tensor in enumerate(subgraph.tensors):
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name or "")
        if (index in outputs or name in names) and tensor.quantization is not None:
            tensor.quantization = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _convert_int8(converter, representative: Callable[[], Iterator[list[np.ndarray]]], percentile: float | None,
                  float_postprocess: bool) -> bytes:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    if (percentile is None or percentile >= 100) and not float_postprocess:
        return converter.convert()
    # Calibrate only (float model + min/max), adjust, then quantize: the steps
    # TFLite's own QuantizationDebugger takes for selective quantization.
    from tensorflow.lite.python import convert as tflite_convert

    converter._experimental_calibrate_only = True  # noqa: SLF001 - no public hook between the two steps
    calibrated = converter.convert()
    if percentile is not None and percentile < 100:
        calibrated = narrow_activation_ranges(calibrated, representative(), percentile)
    if not float_postprocess:
        return tflite_convert.mlir_quantize(calibrated, fully_quantize=False)
    denylisted = postprocess_tensors(calibrated)
    calibrated = drop_activation_ranges(calibrated, denylisted)
    return tflite_convert.mlir_quantize(
        calibrated, fully_quantize=False, denylisted_nodes=denylisted or None, denylisted_ops=list(FLOAT_OPS)
    )


def builtin_ops_variant(model: Any) -> contextlib.AbstractContextManager:
    """The model's builtin-ops-only variant while tracing for TFLite (`Detector.builtin_ops_variant`).

    Faster R-CNN's RoIAlign switches from `CropAndResize` + `DynamicPartition`
    (no LiteRT kernels) to gathers (same values); other models need nothing.
    """
    variant = getattr(model, "builtin_ops_variant", None)
    return variant() if callable(variant) else contextlib.nullcontext(model)


class _TFLiteModule(tf.Module):
    def __init__(self, model: Any, image_size: tuple[int, int], runtime: str = "litert"):
        super().__init__(name="ipg_detector_tflite")
        detect = detect_callable(model)
        ensure_built(model, detect, image_size)
        self.model_variables = tracked_variables(model)
        h, w = image_size

        # Batch 1 and a fixed size: static shapes let anchors fold to constants
        # and NMS run without a loop, so every op is a TFLite builtin.
        @tf.function(input_signature=[tf.TensorSpec([1, h, w, 3], tf.uint8, name="images")])
        def serve(images):
            detections = detect(tf.cast(images, tf.float32))
            with tf.name_scope(POSTPROCESS_SCOPE):
                if runtime == "mediapipe":
                    return mediapipe_tasks.runtime_outputs(standardize_detections(detections), (h, w))
                return standardize_detections(detections)

        self.serve = serve


def export_tflite(
    model: Any,
    path: str | Path,
    precision: str = "float32",
    image_size: int | tuple[int, int] | None = None,
    representative_dataset: Any = None,
    num_calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    calibration_percentile: float | None = DEFAULT_CALIBRATION_PERCENTILE,
    float_postprocess: bool = True,
    runtime: str = "litert",
    class_names: Sequence[str] | None = None,
) -> Path:
    """Converts a detector to a TFLite flatbuffer at `path` (e.g. `model.tflite`); returns the path.

    Args:
        model: a detector with `detect(images)` (float32 `[B, H, W, 3]` 0..255 ->
            `{"boxes", "scores", "classes", "num_detections"}`).
        path: output `.tflite` file (a `<path>.json` metadata sidecar is written too).
        precision: `"float32" | "float16" | "dynamic_int8" | "int8"`.
        image_size: fixed input `(H, W)` or `S`; default `model.image_size`, else 512
            (with an `InputSizeWarning`: pass the training size).
        representative_dataset: calibration images for `int8` (required there):
            see `representative_images` for what is accepted; draw it from the
            training data.
        num_calibration_images: how many images calibrate `int8`.
        calibration_percentile: `int8` activation ranges cover this percentile of
            the calibration values (see the module docstring); None: TFLite's min/max.
        float_postprocess: `int8` keeps box decoding, score sigmoid/softmax and
            NMS (and Faster R-CNN's proposal generation) in float; the network
            itself (backbone, FPN, heads) runs in int8. With 8 bits, box
            coordinates over a 512-px image would have 2-px steps.
        runtime: `"litert"` (the signature below) or `"mediapipe"`: MediaPipe
            Tasks' ObjectDetector contract and metadata (`mediapipe_tasks`; needs
            the `mediapipe` package, `pip install "ipg-keras[mobile]"`).
        class_names: one name per class for the label map (`"mediapipe"`) and the
            sidecar; default `model.class_names`. None with `"mediapipe"`: numbered
            labels "0".."N-1" and a UserWarning.

    Raises:
        ValueError: unknown precision or runtime, an image size the model cannot
            take, `int8` without calibration images, class names that do not
            match the classes, or a model MediaPipe's ObjectDetector refuses.
        ImportError: `runtime="mediapipe"` without the `mediapipe` package.

    The model takes uint8 `images` `[1, H, W, 3]` and returns `boxes` `[1, D, 4]`
    (xyxy input pixels), `scores`, `classes`, `num_detections`; see the module docstring.
    A model trained with mixed precision (`mixed_float16`, `mixed_bfloat16`) is
    converted through a float32 copy with the same weights (`float32_model`).

    Raises:
        ValueError: bad precision, percentile or image size, int8 without
            calibration data, or a 16-bit model that cannot be copied to float32,
            all before converting.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}.")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}"
                         f"{' (all run in MediaPipe Tasks)' if runtime == 'mediapipe' else ''}, got {precision!r}.")
    if calibration_percentile is not None and not 50.0 < float(calibration_percentile) <= 100.0:
        raise ValueError(f"calibration_percentile must be in (50, 100] or None, got {calibration_percentile}.")
    if precision == "int8" and representative_dataset is None:
        raise ValueError(
            "precision='int8' needs representative_dataset= (e.g. 100 training images) to calibrate "
            "activation ranges; use 'dynamic_int8' to quantize weights only."
        )
    size = resolve_image_size(model, image_size)
    # Mixed-precision models export through a float32 copy (same weights), or fail here, before converting.
    model = float32_model(model, size)
    if class_names is None and getattr(model, "class_names", None) is not None:
        class_names = list(model.class_names)
    labels = None
    if runtime == "mediapipe":  # everything that can fail does so before the conversion
        mediapipe_tasks.metadata_writers()
        num_classes = getattr(model, "num_classes", None)
        if num_classes is None:
            raise ValueError(f"runtime='mediapipe' needs model.num_classes for the label map; "
                             f"{type(model).__name__} has none.")
        labels = mediapipe_tasks.label_names(int(num_classes), class_names, source=type(model).__name__)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="ipg_tflite_") as tmp, builtin_ops_variant(model):
        module = _TFLiteModule(model, size, runtime)
        # Converting from a SavedModel keeps the signature (named inputs/outputs).
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if precision in ("float16", "dynamic_int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if precision == "int8":
            representative = representative_images(representative_dataset, size, num_calibration_images)
            flatbuffer = _convert_int8(converter, representative, calibration_percentile, float_postprocess)
        else:
            flatbuffer = converter.convert()
    if runtime == "mediapipe":
        flatbuffer = mediapipe_tasks.order_output_tensors(flatbuffer)
        flatbuffer = mediapipe_tasks.write_metadata(flatbuffer, labels)
        mediapipe_tasks.check_object_detector(flatbuffer, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    write_metadata(
        tflite_metadata_path(path),
        {
            "format": "tflite",
            "precision": precision,
            **({"calibration_percentile": calibration_percentile, "float_postprocess": bool(float_postprocess)}
               if precision == "int8" else {}),
            "image_size": list(size),
            "runtime": runtime,
            **(_mediapipe_description(size) if runtime == "mediapipe" else _litert_description(size)),
            "size_bytes": len(flatbuffer),
            **model_metadata(model),
            **({"class_names": list(class_names)} if class_names is not None else {}),
            **({"labels": labels} if labels is not None else {}),
        },
    )
    return path


def _litert_description(size: tuple[int, int]) -> dict[str, Any]:
    return {
        "input": {"images": f"uint8 [1, {size[0]}, {size[1]}, 3] RGB, letterboxed (pad bottom/right)"},
        "outputs": {
            "boxes": "float32 [1, D, 4] xyxy, input pixels",
            "scores": "float32 [1, D]",
            "classes": "int32 [1, D], -1 = padding",
            "num_detections": "int32 [1]",
        },
        "output_names": list(OUTPUT_NAMES),
    }


def _mediapipe_description(size: tuple[int, int]) -> dict[str, Any]:
    return {
        "input": {"images": f"uint8 [1, {size[0]}, {size[1]}, 3] RGB (MediaPipe stretches images to this size)"},
        "outputs": {
            "detection_boxes": "float32 [1, D, 4] [ymin, xmin, ymax, xmax] fractions of the input size; "
                               "padding [0, 0, -1, -1]",
            "detection_classes": "float32 [1, D], -1 = padding",
            "detection_scores": "float32 [1, D], 0 = padding",
            "num_detections": "float32 [1], always D",
        },
        "output_names": list(mediapipe_tasks.OUTPUT_NAMES),
        "metadata": "TFLite Model Metadata for MediaPipe Tasks ObjectDetector, labels in "
                    f"{mediapipe_tasks.LABELS_FILE}",
    }
