"""`export_tflite(runtime="mediapipe")` run by MediaPipe Tasks' ObjectDetector, compared with ipg-predict.

MediaPipe stretches images to the model input size and ipg-predict letterboxes
them; on images of the input size (64 x 64 here) both feed the model the same
pixels, so their detections must agree. MediaPipe reports integer pixel boxes
(origin and size each truncated), hence the 1 px tolerance on each.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from export_helpers import DATA, IMAGE_SIZE
from PIL import Image

pytest.importorskip("mediapipe", reason="the mobile extra (mediapipe) runs MediaPipe Tasks' ObjectDetector")
pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is needed to run TFLite models")

DETECTORS = ("retinanet", "faster_rcnn")
PRECISIONS = ("float32", "float16", "dynamic_int8", "int8")
NUM_IMAGES = 4


def _synthetic_names():
    from ipg_keras.data import SYNTHETIC_CLASS_NAMES

    return list(SYNTHETIC_CLASS_NAMES)


@pytest.fixture(scope="session")
def mediapipe_path(trained_model, calibration_images, tmp_path_factory):
    """`mediapipe_path(precision)` -> the trained model exported for MediaPipe with the synthetic class names."""
    from ipg_keras.export import export_tflite

    folder = tmp_path_factory.mktemp("mediapipe")
    done = {}

    def get(precision: str):
        if precision not in done:
            done[precision] = export_tflite(
                trained_model, folder / f"model_{precision}.tflite", precision=precision, image_size=IMAGE_SIZE,
                representative_dataset=calibration_images if precision == "int8" else None,
                num_calibration_images=16, runtime="mediapipe", class_names=_synthetic_names(),
            )
        return done[precision]

    return get


@pytest.fixture(scope="session")
def known_objects(tmp_path_factory):
    """`(folder of NUM_IMAGES 64 x 64 PNGs, [(image uint8, gt boxes xyxy, gt class names)])` of synthetic images."""
    from ipg_keras.data.synthetic import synthetic_example

    folder = tmp_path_factory.mktemp("known_objects")
    names, cases = _synthetic_names(), []
    kwargs = {k: v for k, v in DATA.items() if k != "image_size"}
    for i in range(NUM_IMAGES):
        ex = synthetic_example(i, "test", image_size=IMAGE_SIZE, **kwargs)
        Image.fromarray(ex["image"]).save(folder / f"img{i}.png")  # lossless: both runtimes read the same pixels
        cases.append((ex["image"], np.asarray(ex["boxes"], np.float32), [names[int(c)] for c in ex["classes"]]))
    return folder, cases


def mediapipe_detect(path, image: np.ndarray) -> list[tuple]:
    """MediaPipe's detections of one image as `(x, y, w, h, label, score)`; one row per category of a detection."""
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=str(path)))
    with vision.ObjectDetector.create_from_options(options) as detector:
        result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
    rows = []
    for d in result.detections:  # the runtime merges detections with the same box into one, several categories
        b = d.bounding_box
        rows += [(b.origin_x, b.origin_y, b.width, b.height, c.category_name, c.score) for c in d.categories]
    return rows


def ipg_predict(path, folder, output) -> dict[str, list[tuple]]:
    """`ipg-predict` on the folder: `{file name: [(x, y, w, h, label, score)]}` from detections.json."""
    from ipg_keras.cli.predict import main
    from ipg_keras.export.runtime import TFLiteDetector

    assert main([str(path), str(folder), "--output", str(output), "--no-draw"]) == 0
    names = TFLiteDetector(path).class_names  # the labels ipg-predict draws with
    ids = {int(i): f.split("/")[-1] for f, i in json.loads((output / "images.json").read_text()).items()}
    rows = {name: [] for name in ids.values()}
    for det in json.loads((output / "detections.json").read_text()):
        rows[ids[det["image_id"]]].append((*det["bbox"], names[det["category_id"] - 1], det["score"]))
    return rows


def assert_same_detections(mediapipe_rows, predict_rows, context):
    """Every MediaPipe row matches one ipg-predict row: same label, score within 1e-3, box within 1 px."""
    left = list(predict_rows)
    for x, y, w, h, label, score in sorted(mediapipe_rows, key=lambda r: -r[5]):
        match = [
            i for i, (px, py, pw, ph, plabel, pscore) in enumerate(left)
            if plabel == label and abs(pscore - score) <= 1e-3
            and max(abs(x - px), abs(y - py), abs(w - pw), abs(h - ph)) <= 1.0 + 1e-3
        ]
        assert match, f"{context}: MediaPipe's {(x, y, w, h, label, round(score, 5))} is not among ipg-predict's " \
                      f"{sorted(left, key=lambda r: -r[5])[:5]}"
        left.pop(match[0])
    assert not left, f"{context}: ipg-predict has {len(left)} detections MediaPipe lacks: {left[:5]}"


def _iou(box, boxes):
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    areas = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(areas - inter, 1e-9)


@pytest.mark.parametrize("detector", DETECTORS, indirect=True, scope="session")
@pytest.mark.parametrize("precision", [p if p == "float32" else pytest.param(p, marks=pytest.mark.slow)
                                       for p in PRECISIONS])
def test_mediapipe_object_detector_agrees_with_ipg_predict(precision, detector, mediapipe_path, known_objects,
                                                           tmp_path):
    path = mediapipe_path(precision)
    folder, cases = known_objects
    predicted = ipg_predict(path, folder, tmp_path / "predict")
    found = total = detections = 0
    for i, (image, gt_boxes, gt_labels) in enumerate(cases):
        rows = mediapipe_detect(path, image)
        detections += len(rows)
        assert {r[4] for r in rows} <= set(_synthetic_names())  # the label names came back
        assert_same_detections(rows, predicted[f"img{i}.png"], f"{detector} {precision} img{i}.png")
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _, _ in rows], np.float32)
        labels = np.array([r[4] for r in rows])
        for gt_box, gt_label in zip(gt_boxes, gt_labels):
            same = labels == gt_label
            found += bool(same.any() and _iou(gt_box, boxes[same]).max() >= 0.5)
            total += 1
    # The known objects are found (the briefly trained models localise most of them, at low scores for RetinaNet).
    assert detections and found >= total / 2, f"{detector} {precision}: MediaPipe found {found} of {total} objects"


@pytest.mark.parametrize("detector", DETECTORS, indirect=True, scope="session")
def test_ipg_predict_reads_the_mediapipe_file_like_keras(detector, mediapipe_path, trained_model, val_batches,
                                                         tmp_path):
    from ipg_keras.export import read_metadata
    from ipg_keras.export.runtime import TFLiteDetector

    path = mediapipe_path("float32")
    alone = tmp_path / "alone.tflite"  # without its .json sidecar: labels come from inside the file
    shutil.copy(path, alone)
    reader = TFLiteDetector(alone)
    assert reader.runtime == "mediapipe" and reader.input_size == (64, 64)
    assert reader.class_names == _synthetic_names() and reader.num_classes == len(_synthetic_names())
    meta = read_metadata(path)
    assert meta["runtime"] == "mediapipe" and meta["labels"] == _synthetic_names()
    images = val_batches[0][0][:8]
    got, want = reader(images), trained_model.predict_on_batch(images)
    np.testing.assert_array_equal(got["num_detections"], np.asarray(want["num_detections"]))
    for b in range(len(images)):
        n = int(got["num_detections"][b])
        np.testing.assert_array_equal(got["classes"][b, :n], np.asarray(want["classes"])[b, :n])
        np.testing.assert_allclose(got["scores"][b, :n], np.asarray(want["scores"])[b, :n], atol=1e-4)
        np.testing.assert_allclose(got["boxes"][b, :n], np.asarray(want["boxes"])[b, :n], atol=0.01)
        assert (got["classes"][b, n:] == -1).all() and (got["scores"][b, n:] == 0).all()


@pytest.mark.parametrize("detector", ["retinanet"], indirect=True, scope="session")
def test_signature_follows_the_runtime_contract(detector, mediapipe_path):
    from ai_edge_litert.interpreter import Interpreter

    from ipg_keras.export.mediapipe_tasks import OUTPUT_NAMES

    interpreter = Interpreter(model_path=str(mediapipe_path("float32")))
    runner = interpreter.get_signature_runner()
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    assert list(inputs) == ["images"] and inputs["images"]["dtype"] == np.uint8
    assert list(inputs["images"]["shape"]) == [1, 64, 64, 3]
    # Subgraph outputs in the runtime's order (location, category, score, count), ascending tensor indices.
    indices = [outputs[name]["index"] for name in OUTPUT_NAMES]
    assert [d["index"] for d in interpreter.get_output_details()] == indices == sorted(indices)
    shapes = {name: list(outputs[name]["shape"]) for name in OUTPUT_NAMES}
    assert shapes == {"detection_boxes": [1, 100, 4], "detection_classes": [1, 100], "detection_scores": [1, 100],
                      "num_detections": [1]}
    assert all(outputs[name]["dtype"] == np.float32 for name in OUTPUT_NAMES)
    out = runner(images=np.zeros((1, 64, 64, 3), np.uint8))
    assert out["num_detections"].tolist() == [100.0]  # always D; padding rows are inverted boxes
    padding = out["detection_classes"][0] < 0
    np.testing.assert_array_equal(out["detection_boxes"][0][padding], np.tile([0.0, 0.0, -1.0, -1.0],
                                                                              (padding.sum(), 1)))
    assert (out["detection_boxes"][0][~padding] >= 0).all() and (out["detection_boxes"][0][~padding] <= 1).all()


@pytest.mark.parametrize("detector", ["retinanet"], indirect=True, scope="session")
def test_cli_without_class_names_writes_numbered_labels_and_warns(detector, trained_model_path, tmp_path, capsys):
    from ipg_keras.cli.export import main
    from ipg_keras.export.mediapipe_tasks import read_labels

    model = tmp_path / "run" / "model.keras"  # a run folder without config.yaml: no class names anywhere
    model.parent.mkdir()
    shutil.copy(trained_model_path, model)
    out = tmp_path / "numbered.tflite"
    with pytest.warns(UserWarning, match=r"no class names: the MediaPipe model gets numbered labels 0\.\.4"):
        code = main([str(model.parent), "--format", "tflite", "--runtime", "mediapipe", "--image-size", "64",
                     "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    assert read_labels(out) == ["0", "1", "2", "3", "4"]
    printed = json.loads(capsys.readouterr().out)
    assert printed["runtime"] == "mediapipe" and printed["labels"] == ["0", "1", "2", "3", "4"]
    image = np.asarray(Image.new("RGB", (64, 64), (40, 90, 160)))
    assert {r[4] for r in mediapipe_detect(out, image)} <= {"0", "1", "2", "3", "4"}


def test_config_class_names_come_from_the_training_data():
    from ipg_keras.cli.export import config_class_names
    from ipg_keras.training.config import load_config

    assert config_class_names(load_config("synthetic_retinanet_cpu")) == _synthetic_names()
    assert config_class_names(None) is None


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(image_size=60), ValueError, r"image_size \(60, 60\) is not a multiple of the model's size_multiple 32"),
        (dict(image_size=(64, 0)), ValueError, "image_size must be positive"),
        (dict(precision="int4"), ValueError, r"precision must be one of .* \(all run in MediaPipe Tasks\), got 'int4'"),
        (dict(runtime="coreml"), ValueError, r"runtime must be one of \('litert', 'mediapipe'\)"),
        (dict(class_names=["a", "b"]), ValueError, r"2 class names \['a', 'b'\] for a model with 3 classes"),
        (dict(class_names=["a", "", "c"]), ValueError, "non-empty single lines"),
    ],
)
def test_bad_input_fails_at_export_before_converting(kwargs, error, message, tmp_path, monkeypatch):
    from model_helpers import tiny_retinanet

    from ipg_keras.export import tflite

    def no_conversion(*args, **kw):
        raise AssertionError("the export converted the model before checking its input")

    monkeypatch.setattr(tflite, "_TFLiteModule", no_conversion)
    params = dict(precision="float32", image_size=64, runtime="mediapipe", class_names=["a", "b", "c"])
    params.update(kwargs)
    with pytest.raises(error, match=message):
        tflite.export_tflite(tiny_retinanet(num_classes=3, max_level=5), tmp_path / "m.tflite", **params)
    assert not (tmp_path / "m.tflite").exists()


def test_missing_mediapipe_package_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    from ipg_keras.export import mediapipe_tasks

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mediapipe" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'ipg-keras\[mobile\]'"):
        mediapipe_tasks.metadata_writers()


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    """An untrained 3-class IPG-RetinaNet (P3-P5) saved as .keras."""
    from model_helpers import tiny_retinanet

    path = tmp_path_factory.mktemp("tiny") / "model.keras"
    model = tiny_retinanet(num_classes=3, max_level=5)
    model(np.zeros((1, 64, 64, 3), np.float32))
    model.save(path)
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "saved_model", "--runtime", "mediapipe"], "--runtime applies to --format tflite only"),
        (["--format", "tflite", "--runtime", "mediapipe", "--image-size", "60"], "not a multiple"),
        (["--format", "tflite", "--runtime", "mediapipe", "--class-names", "a,b"], "2 class names"),
    ],
)
def test_export_cli_bad_input(args, message, tiny_model_file, tmp_path, capsys):
    from ipg_keras.cli.export import main

    try:
        code = main([str(tiny_model_file), "--output", str(tmp_path / "out.tflite"), *args])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out.tflite").exists()


# ------------------------------------------- the contract on a hand-made model
def _contract_model(classes_dtype: str = "float32") -> bytes:
    """A converted 32 x 32 model with fixed runtime outputs: one detection, class 1 "b", score 0.9, one padding row."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.uint8, name="images")])
    def serve(images):
        zero = tf.reduce_mean(tf.cast(images, tf.float32)) * 0.0  # keeps the outputs computed, not constant
        return {
            "detection_boxes": tf.constant([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, -1.0, -1.0]]]) + zero,
            "detection_classes": tf.cast(tf.constant([[1.0, -1.0]]) + zero, classes_dtype),
            "detection_scores": tf.constant([[0.9, 0.0]]) + zero,
            "num_detections": tf.constant([2.0]) + zero,
        }

    import tempfile

    module = tf.Module()
    module.serve = serve
    with tempfile.TemporaryDirectory() as folder:  # through a SavedModel: the signature keeps the output names
        tf.saved_model.save(module, folder, signatures={"serving_default": serve.get_concrete_function()})
        return tf.lite.TFLiteConverter.from_saved_model(folder).convert()


def _signature_outputs(flatbuffer: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=flatbuffer).get_signature_runner()(images=np.full((1, 32, 32, 3), 7, np.uint8))


def test_contract_model_runs_in_mediapipe_with_known_values(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from ipg_keras.export import mediapipe_tasks as mpt

    raw = _contract_model()
    ordered = mpt.order_output_tensors(raw)
    details = Interpreter(model_content=ordered).get_output_details()
    runner_outputs = Interpreter(model_content=ordered).get_signature_runner().get_output_details()
    assert [d["index"] for d in details] == [runner_outputs[n]["index"] for n in mpt.OUTPUT_NAMES]
    assert [d["index"] for d in details] == sorted(d["index"] for d in details)
    before, after = _signature_outputs(raw), _signature_outputs(ordered)
    for name in mpt.OUTPUT_NAMES:  # renumbering tensors changes nothing computed
        np.testing.assert_array_equal(before[name], after[name])
    path = tmp_path / "contract.tflite"
    path.write_bytes(mpt.write_metadata(ordered, ["a", "b"]))
    mpt.check_object_detector(path.read_bytes(), (32, 32))
    # 0.2 * 32 = 6.4 -> 6, 0.1 * 32 = 3.2 -> 3, 0.4 * 32 = 12.8 -> 12 (truncated); the padding row is dropped.
    rows = mediapipe_detect(path, np.zeros((32, 32, 3), np.uint8))
    assert [r[:5] for r in rows] == [(6, 3, 12, 12, "b")] and rows[0][5] == pytest.approx(0.9)
    assert mpt.read_labels(path) == ["a", "b"]
    from ipg_keras.export.runtime import TFLiteDetector

    read = TFLiteDetector(path)(np.zeros((1, 32, 32, 3), np.uint8))
    assert read["num_detections"].tolist() == [1] and read["classes"][0, :2].tolist() == [1, -1]
    np.testing.assert_allclose(read["boxes"][0, 0], [6.4, 3.2, 19.2, 16.0], atol=1e-4)


def test_outputs_out_of_the_runtime_order_are_refused():
    from ipg_keras.export import mediapipe_tasks as mpt

    raw = _contract_model()
    reversed_order = mpt.order_output_tensors(raw, names=mpt.OUTPUT_NAMES[::-1])
    assert mpt.signature_output_order(reversed_order) == list(mpt.OUTPUT_NAMES[::-1])
    with pytest.raises(ValueError, match=r"outputs are \['num_detections', .* in the runtime's order"):
        mpt.write_metadata(reversed_order, ["a", "b"])
    # Outputs listed in order but with tensor indices the writer would pair differently.
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(reversed_order))
    model.subgraphs[0].outputs = list(model.subgraphs[0].outputs)[::-1]
    shuffled = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    assert mpt.signature_output_order(shuffled) == list(mpt.OUTPUT_NAMES)
    with pytest.raises(ValueError, match=r"writer described the outputs as \['number of detections'"):
        mpt.write_metadata(shuffled, ["a", "b"])


def test_a_model_the_runtime_cannot_run_fails_at_export():
    from ipg_keras.export import mediapipe_tasks as mpt

    int_classes = mpt.write_metadata(mpt.order_output_tensors(_contract_model("int32")), ["a", "b"])
    with pytest.raises(ValueError, match="MediaPipe Tasks' ObjectDetector cannot run the exported model"):
        mpt.check_object_detector(int_classes, (32, 32))


def test_minimum_metadata_parser_version_follows_mediapipe_rules():
    import flatbuffers

    from ipg_keras.export import mediapipe_tasks as mpt

    mpt.metadata_writers()  # the generated schema classes come with the package
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    def version(build) -> str:
        metadata = fb.ModelMetadataT()
        subgraph = fb.SubGraphMetadataT()
        metadata.subgraphMetadata = [subgraph]
        build(metadata, subgraph)
        builder = flatbuffers.Builder(0)
        builder.Finish(metadata.Pack(builder), b"M001")
        return mpt.minimum_metadata_parser_version(bytes(builder.Output()))

    def vocabulary(m, s):
        file = fb.AssociatedFileT()
        file.type = fb.AssociatedFileType.VOCABULARY
        m.associatedFiles = [file]

    def groups_and_units(m, s):
        s.outputTensorGroups, s.inputProcessUnits = [], []

    assert version(lambda m, s: None) == "1.0.0"
    assert version(vocabulary) == "1.0.1"
    assert version(groups_and_units) == "1.2.0"  # present even if empty, as in the C++
    assert version(lambda m, s: setattr(s, "customMetadata", [fb.CustomMetadataT()])) == "1.5.0"


@pytest.mark.parametrize("detector", ["faster_rcnn"], indirect=True, scope="session")
def test_readme_mediapipe_example_runs(detector, mediapipe_path, known_objects, tmp_path, monkeypatch, capsys):
    """The README's app-developer lines, run on the exported file and a photo with known objects."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"### Deploy on phones \(MediaPipe Tasks\).*?```python\n(.*?)```", readme, re.S).group(1)
    path = mediapipe_path("float32")
    _, cases = known_objects
    image = max((case[0] for case in cases), key=lambda im: max([r[5] for r in mediapipe_detect(path, im)] + [0]))
    expected = sorted((r for r in mediapipe_detect(path, image) if r[5] >= 0.3), key=lambda r: -r[5])[:20]
    assert expected, "the photo should hold an object detected with a score of 0.3 or more"
    shutil.copy(path, tmp_path / "ipg_mediapipe.tflite")
    Image.fromarray(image).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = [line.split() for line in capsys.readouterr().out.splitlines()]
    # One line per detection (label, score, x, y, w, h); a merged detection prints its best category only.
    assert {(p[0], *map(int, p[2:])) for p in printed} <= {(r[4], *r[:4]) for r in expected}
    assert sorted(tuple(map(int, p[2:])) for p in printed) == sorted({r[:4] for r in expected})
