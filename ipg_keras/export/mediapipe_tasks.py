"""TFLite for MediaPipe Tasks' `ObjectDetector` (Android, iOS, web and Python apps): contract and metadata.

MediaPipe Tasks runs a detector with the post-processing inside when the model
has one uint8 (or normalised float) image input and the four outputs of TFLite's
``TFLite_Detection_PostProcess`` op, described by TFLite Model Metadata
(`ObjectDetectorGraph` and `TensorsToDetectionsCalculator` in the MediaPipe
sources). `ipg_keras.export.tflite.export_tflite(..., runtime="mediapipe")`
builds such a model:

* input ``images``: uint8 ``[1, H, W, 3]`` RGB 0..255 (the network normalises
  inside; the metadata says mean 0, std 1).
* outputs, in this order (signature names / metadata names):
  ``detection_boxes`` / "location": float32 ``[1, D, 4]`` ``[ymin, xmin, ymax, xmax]``
  as fractions of the input height/width; ``detection_classes`` / "category":
  float32 ``[1, D]`` class index; ``detection_scores`` / "score": float32 ``[1, D]``;
  ``num_detections`` / "number of detections": float32 ``[1]``, always ``D``.
  Rows past the detections are padding: category -1, score 0 and the inverted box
  ``[0, 0, -1, -1]``, which the runtime drops (it skips boxes of negative width or
  height). ``num_detections`` stays ``D`` because some runtime versions require
  it to divide ``D`` (and divide by it).
* metadata written by MediaPipe's own writer
  (`mediapipe.tasks.python.metadata.metadata_writers.object_detector`): image
  input, the four outputs grouped, and the label map ``labels.txt`` packed into
  the file (the metadata format appends associated files as a zip archive).

The writer pairs metadata with outputs by ascending tensor index (the port order
of ``TFLite_Detection_PostProcess``), so `order_output_tensors` renumbers the
converted model's tensors to put the four outputs last, in that order.

MediaPipe resizes every image to ``H x W`` by stretching (no letterbox) and maps
the boxes back to the image's pixels, truncated to integers; `ipg-predict`
letterboxes (the training convention). Both see the same pixels for images of
the input size, or of its aspect ratio; export at your camera's aspect ratio
(e.g. ``image_size=(480, 640)``) so that stretching is a plain resize.

The `mediapipe` pip wheels 0.10.30 to 1.2.3 ship the metadata writers without
their compiled helper ``_pywrap_metadata_version``; `metadata_writers` then
provides `minimum_metadata_parser_version`, a port of MediaPipe's
``mediapipe/tasks/cc/metadata/metadata_version.cc``, under that module name.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: Signature output names, in the runtime's order (TFLite_Detection_PostProcess ports).
OUTPUT_NAMES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
#: Names the runtime looks for in the output tensor metadata (MediaPipe's ObjectDetectorGraph).
METADATA_OUTPUT_NAMES = ("location", "category", "score", "number of detections")
#: Box of a padding row: negative width and height, which the runtime skips.
PADDING_LOCATION = (0.0, 0.0, -1.0, -1.0)
#: Name of the label map packed into the model file.
LABELS_FILE = "labels.txt"
INSTALL_HINT = "pip install 'ipg-keras[mobile]' (the mediapipe package)"
_VERSION_MODULE = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"


# ------------------------------------------------------------- the graph side
def runtime_outputs(detections: dict, image_size: tuple[int, int]) -> dict:
    """The four runtime outputs from the standard detections of a batch of one.

    `detections`: ``boxes`` float32 ``[1, D, 4]`` xyxy input pixels, ``scores``
    ``[1, D]``, ``classes`` int32 ``[1, D]`` (-1 = padding). Returns the
    `OUTPUT_NAMES` tensors described in the module docstring.
    """
    import tensorflow as tf

    h, w = float(image_size[0]), float(image_size[1])
    valid = detections["classes"] >= 0
    x1, y1, x2, y2 = tf.unstack(tf.cast(detections["boxes"], tf.float32), axis=-1)
    location = tf.stack([y1 / h, x1 / w, y2 / h, x2 / w], axis=-1)
    location = tf.where(valid[..., None], location, tf.constant(PADDING_LOCATION, tf.float32))
    scores = tf.cast(detections["scores"], tf.float32)
    count = tf.reduce_sum(tf.ones_like(scores), axis=1)  # D, shaped [1]
    return {
        "detection_boxes": location,
        "detection_classes": tf.where(valid, tf.cast(detections["classes"], tf.float32), -1.0),
        "detection_scores": tf.where(valid, scores, 0.0),
        "num_detections": count,
    }


def from_runtime_outputs(outputs: dict, image_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """The standard detections (`ipg_keras.export.OUTPUT_NAMES`) from the runtime outputs of a batch.

    Keeps the rows the runtime keeps (boxes of non-negative width and height,
    category >= 0), first, in their order; boxes become xyxy input pixels.
    """
    h, w = float(image_size[0]), float(image_size[1])
    location = np.asarray(outputs["detection_boxes"], np.float32)
    categories = np.asarray(outputs["detection_classes"], np.float32)
    scores = np.asarray(outputs["detection_scores"], np.float32)
    ymin, xmin, ymax, xmax = (location[..., i] for i in range(4))
    keep = (xmax >= xmin) & (ymax >= ymin) & (categories >= 0)
    boxes = np.stack([xmin * w, ymin * h, xmax * w, ymax * h], axis=-1).astype(np.float32)
    out = {
        "boxes": np.zeros_like(boxes),
        "scores": np.zeros_like(scores),
        "classes": np.full(categories.shape, -1, np.int32),
        "num_detections": keep.sum(axis=1).astype(np.int32),
    }
    for b in range(len(keep)):
        rows = np.flatnonzero(keep[b])
        n = len(rows)
        out["boxes"][b, :n] = boxes[b, rows]
        out["scores"][b, :n] = scores[b, rows]
        out["classes"][b, :n] = np.round(categories[b, rows]).astype(np.int32)
    return out


# ----------------------------------------------------------- the file side
def order_output_tensors(flatbuffer: bytes, names: Sequence[str] = OUTPUT_NAMES) -> bytes:
    """Renumbers tensors so that the signature outputs `names` are the last tensors, in that order.

    They also become the subgraph outputs in that order. Every tensor index of the
    model (operator inputs/outputs/intermediates, subgraph inputs/outputs,
    signature maps) is remapped; the computation does not change.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    if len(model.subgraphs) != 1 or not model.signatureDefs:
        raise ValueError(f"Expected one subgraph with a signature, got {len(model.subgraphs)} subgraphs.")
    subgraph = model.subgraphs[0]
    outputs = {_text(t.name): int(t.tensorIndex) for t in model.signatureDefs[0].outputs}
    missing = [n for n in names if n not in outputs]
    if missing:
        raise ValueError(f"The converted model lacks the outputs {missing}; it has {sorted(outputs)}.")
    wanted = [outputs[n] for n in names]
    order = [i for i in range(len(subgraph.tensors)) if i not in set(wanted)] + wanted  # new -> old
    new_index = {old: new for new, old in enumerate(order)}

    def remap(indices):
        return None if indices is None else [new_index[int(i)] if i >= 0 else int(i) for i in indices]

    subgraph.tensors = [subgraph.tensors[i] for i in order]
    for op in subgraph.operators or []:
        op.inputs, op.outputs, op.intermediates = remap(op.inputs), remap(op.outputs), remap(op.intermediates)
    subgraph.inputs = remap(subgraph.inputs)
    subgraph.outputs = [new_index[i] for i in wanted]
    for signature in model.signatureDefs:
        for tensor_map in list(signature.inputs or []) + list(signature.outputs or []):
            tensor_map.tensorIndex = new_index[int(tensor_map.tensorIndex)]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def signature_output_order(flatbuffer: bytes) -> list[str]:
    """Signature names of the subgraph outputs, in subgraph output order (the order metadata describes)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    names = {int(t.tensorIndex): _text(t.name) for t in (model.signatureDefs[0].outputs if model.signatureDefs else [])}
    return [names.get(int(i), f"tensor {int(i)}") for i in model.subgraphs[0].outputs]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def minimum_metadata_parser_version(metadata_buffer: bytes) -> str:
    """Oldest metadata parser version that reads `metadata_buffer` (a ``ModelMetadata`` flatbuffer).

    Port of ``GetMinimumMetadataParserVersion`` of MediaPipe's
    ``mediapipe/tasks/cc/metadata/metadata_version.cc``: "1.0.0", raised to the
    version that introduced each schema member present.
    """
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    root = fb.ModelMetadata.GetRootAsModelMetadata(bytearray(metadata_buffer), 0)
    metadata = fb.ModelMetadataT.InitFromObj(root)
    versions = [(1, 0, 0)]

    def files(items):
        for f in items or []:
            if f.type == fb.AssociatedFileType.VOCABULARY:
                versions.append((1, 0, 1))
            if f.type == fb.AssociatedFileType.SCANN_INDEX_FILE:
                versions.append((1, 4, 0))
            if f.version is not None:
                versions.append((1, 4, 1))

    def units(items):
        tokenizers = {fb.ProcessUnitOptions.BertTokenizerOptions: (1, 1, 0),
                      fb.ProcessUnitOptions.SentencePieceTokenizerOptions: (1, 1, 0),
                      fb.ProcessUnitOptions.RegexTokenizerOptions: (1, 2, 1)}
        versions.extend(tokenizers[u.optionsType] for u in items or [] if u.optionsType in tokenizers)

    def tensors(items):
        for t in items or []:
            files(t.associatedFiles)
            units(t.processUnits)
            if t.content is not None and t.content.contentPropertiesType == fb.ContentProperties.AudioProperties:
                versions.append((1, 3, 0))

    for subgraph in metadata.subgraphMetadata or []:
        tensors(subgraph.inputTensorMetadata)
        tensors(subgraph.outputTensorMetadata)
        files(subgraph.associatedFiles)
        for present, version in (
            (subgraph.inputProcessUnits, (1, 1, 0)), (subgraph.outputProcessUnits, (1, 1, 0)),
            (subgraph.inputTensorGroups, (1, 2, 0)), (subgraph.outputTensorGroups, (1, 2, 0)),
            (subgraph.customMetadata, (1, 5, 0)),
        ):
            if present is not None:  # an empty vector counts, as in the C++ (non-null)
                versions.append(version)
        units(subgraph.inputProcessUnits)
        units(subgraph.outputProcessUnits)
    files(metadata.associatedFiles)
    return ".".join(str(v) for v in max(versions))


def _provide_metadata_version_module() -> None:
    """Registers `minimum_metadata_parser_version` under the module name the wheel lacks."""
    for name in ("mediapipe.tasks.cc", "mediapipe.tasks.cc.metadata", "mediapipe.tasks.cc.metadata.python"):
        if name in sys.modules:
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            package = types.ModuleType(name)
            package.__path__ = []  # an empty package: it holds only the module registered below
            sys.modules[name] = package
    module = types.ModuleType(_VERSION_MODULE)
    module.GetMinimumMetadataParserVersion = minimum_metadata_parser_version
    sys.modules[_VERSION_MODULE] = module


def metadata_writers():
    """MediaPipe's `(metadata_writer, object_detector)` writer modules; ImportError says what to install."""
    if importlib.util.find_spec("mediapipe") is None:
        raise ImportError(f"runtime='mediapipe' writes TFLite metadata with MediaPipe's own writer: {INSTALL_HINT}.")
    try:
        from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, object_detector
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("mediapipe.tasks.cc"):
            raise
        _provide_metadata_version_module()
        from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, object_detector
    return metadata_writer, object_detector


def label_names(num_classes: int, class_names: Sequence[str] | None, source: str = "the model") -> list[str]:
    """The label map: `class_names` (checked), else numbered labels "0".."N-1" with a warning."""
    if class_names is None:
        warnings.warn(
            f"{source} has no class names: the MediaPipe model gets numbered labels 0..{num_classes - 1}. "
            "Pass class_names= (ipg-export: --class-names a,b,c or a run folder/--config with the training "
            "data) to name them.", UserWarning, stacklevel=3,
        )
        return [str(i) for i in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names {names} for a model with {num_classes} classes; pass one "
                         "name per class, in class-index order.")
    bad = [n for n in names if not n.strip() or "\n" in n or "\r" in n]
    if bad:
        raise ValueError(f"Class names must be non-empty single lines (one label per line of {LABELS_FILE}), "
                         f"got {bad!r}.")
    return names


def write_metadata(flatbuffer: bytes, labels: Sequence[str]) -> bytes:
    """`flatbuffer` (outputs already in `OUTPUT_NAMES` order) with ObjectDetector metadata and `labels`.

    Written by MediaPipe's `object_detector.MetadataWriter.create_for_models_with_nms`
    (image input with mean 0 / std 1, the four outputs, label map `LABELS_FILE`).
    Raises ValueError unless the i-th subgraph output is `OUTPUT_NAMES[i]` and the
    writer described it as `METADATA_OUTPUT_NAMES[i]` (the writer pairs by tensor index).
    """
    metadata_writer, object_detector = metadata_writers()
    order = signature_output_order(flatbuffer)
    if order != list(OUTPUT_NAMES):
        raise ValueError(f"The model's outputs are {order}, expected {list(OUTPUT_NAMES)} in the runtime's order "
                         "(order_output_tensors puts them so).")
    label_map = metadata_writer.Labels().add(list(labels), exported_filename=LABELS_FILE)
    writer = object_detector.MetadataWriter.create_for_models_with_nms(
        bytearray(flatbuffer), input_norm_mean=[0.0], input_norm_std=[1.0], labels=label_map
    )
    model, metadata_json = writer.populate()
    del writer  # its temporary folder goes now, not at interpreter exit (where its __del__ fails noisily)
    described = [t.get("name") for t in json.loads(metadata_json)["subgraph_metadata"][0]["output_tensor_metadata"]]
    if described != list(METADATA_OUTPUT_NAMES):
        raise ValueError(f"MediaPipe's writer described the outputs as {described}, expected "
                         f"{list(METADATA_OUTPUT_NAMES)}; the output tensors are not in the runtime's order.")
    return bytes(model)


def check_object_detector(model_content: bytes, image_size: tuple[int, int]) -> None:
    """Loads `model_content` in MediaPipe's `ObjectDetector` and detects on one blank image.

    Raises ValueError with the runtime's message if it refuses the model: what a
    phone would report at load time is reported at export instead.
    """
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_buffer=bytes(model_content)))
    try:
        with vision.ObjectDetector.create_from_options(options) as detector:
            blank = np.zeros((int(image_size[0]), int(image_size[1]), 3), np.uint8)
            detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=blank))
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"MediaPipe Tasks' ObjectDetector cannot run the exported model: {error}") from error


def read_labels(path: str | Path) -> list[str] | None:
    """The label map packed into a model file by `write_metadata`, None if it has none.

    TFLite metadata packs associated files as a zip archive appended to the
    flatbuffer, so the standard library reads them without the `mediapipe` package.
    """
    try:
        data = Path(path).read_bytes()
        if not zipfile.is_zipfile(io.BytesIO(data)):
            return None
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if LABELS_FILE not in archive.namelist():
                return None
            text = archive.read(LABELS_FILE).decode("utf-8")
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
    return [line for line in text.split("\n") if line] or None
