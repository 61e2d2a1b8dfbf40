"""`ipg-predict` and `ipg-export` on real files: COCO results, metrics, sliced inference, bad input."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from export_helpers import DATA
from PIL import Image
from shared_cases import CASES, case as _case

SIX = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """5 synthetic images (one 160 x 112, larger than the 64 px input; one JPEG), one corrupt
    file, a COCO JSON with ids 100.. and a Pascal VOC folder for them."""
    from ipg_keras.data import SYNTHETIC_CLASS_NAMES
    from ipg_keras.data.synthetic import synthetic_example

    root = tmp_path_factory.mktemp("predict")
    images, voc = root / "images", root / "voc"
    images.mkdir()
    voc.mkdir()
    kwargs = {k: v for k, v in DATA.items() if k != "image_size"}
    coco = {"images": [], "annotations": [],
            "categories": [{"id": 10 + i, "name": n} for i, n in enumerate(SYNTHETIC_CLASS_NAMES)]}
    for i in range(5):
        ex = synthetic_example(i, "test", image_size=160 if i == 3 else 64, **kwargs)
        image = ex["image"][:112] if i == 3 else ex["image"]
        keep = (ex["boxes"][:, 3] <= image.shape[0])
        boxes, classes = ex["boxes"][keep], ex["classes"][keep]
        name = f"img{i}.jpg" if i == 4 else f"img{i}.png"
        Image.fromarray(image).save(images / name, quality=95)
        coco["images"].append({"id": 100 + i, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
        root_el = ET.Element("annotation")
        ET.SubElement(root_el, "filename").text = name
        for box, cls in zip(boxes, classes):
            x1, y1, x2, y2 = (float(v) for v in box)
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": 100 + i, "category_id": 10 + int(cls),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            })
            obj = ET.SubElement(root_el, "object")
            ET.SubElement(obj, "name").text = SYNTHETIC_CLASS_NAMES[int(cls)]
            bb = ET.SubElement(obj, "bndbox")
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (x1, y1, x2, y2)):
                ET.SubElement(bb, key).text = str(value)
        ET.ElementTree(root_el).write(voc / f"img{i}.xml")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / "coco.json").write_text(json.dumps(coco))
    return root


def _run_predict(args) -> int:
    from ipg_keras.cli.predict import main

    return main([str(a) for a in args])


def _load(path: Path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def keras_predict_run(trained_model_path, image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("keras_run")
    code = _run_predict([trained_model_path, image_folder / "images", "--output", out,
                         "--annotations", image_folder / "coco.json", "--image-size", "64"])
    return code, out


def test_predict_keras_writes_coco_results_metrics_and_pngs(keras_predict_run, image_folder):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    code, out = keras_predict_run
    assert code == 1  # one bad file: reported, the others written
    errors = _load(out / "errors.json")
    assert [Path(e["file"]).name for e in errors] == ["broken.png"]
    assert "cannot read image" in errors[0]["error"]
    # Drawings keep the input's name and extension: img4.jpg -> img4.jpg.png (beside a possible img4.png).
    assert sorted(p.name for p in (out / "visualizations").glob("*.png")) == (
        [f"img{i}.png.png" for i in range(4)] + ["img4.jpg.png"])

    results = _load(out / "detections.json")
    assert results and {r["image_id"] for r in results} <= {100, 101, 102, 103, 104}
    assert {r["category_id"] for r in results} <= set(range(10, 15))  # the annotation file's categories
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} and len(r["bbox"]) == 4 for r in results)
    ids = {Path(k).name: v for k, v in _load(out / "images.json").items()}
    assert ids["img0.png"] == 100 and ids["img4.jpg"] == 104

    # The 160 x 112 image went through sliced inference: boxes in its own pixels, past the 64 px input.
    big = [r["bbox"] for r in results if r["image_id"] == 103]
    assert max(b[0] + b[2] for b in big) > 64 and max(b[0] + b[2] for b in big) <= 160
    assert max(b[1] + b[3] for b in big) <= 112

    # metrics.json = pycocotools' own evaluation of detections.json against the COCO file.
    metrics = _load(out / "metrics.json")
    assert set(SIX) <= set(metrics) and metrics["num_images"] == 5
    gt = COCO(str(image_folder / "coco.json"))
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    np.testing.assert_allclose([metrics[k] for k in SIX], evaluator.stats[:6], atol=2e-3)
    assert metrics["AP50"] > 0


def test_predict_voc_annotations_and_sorted_ids(trained_model_path, image_folder, keras_predict_run, tmp_path):
    # Files given out of order and without a COCO file: ids are the index in sorted file order.
    folder = image_folder / "images"
    files = [folder / "img2.png", folder / "img0.png", folder / "img1.png"]
    code = _run_predict([trained_model_path, *files, "--output", tmp_path, "--annotations",
                         image_folder / "voc", "--image-size", "64", "--no-draw"])
    assert code == 0
    ids = {Path(k).name: v for k, v in _load(tmp_path / "images.json").items()}
    assert ids == {"img0.png": 0, "img1.png": 1, "img2.png": 2}
    results = _load(tmp_path / "detections.json")
    assert {r["category_id"] for r in results} <= set(range(1, 6))  # class + 1 without a COCO file
    metrics = _load(tmp_path / "metrics.json")
    assert set(SIX) <= set(metrics) and metrics["num_images"] == 3
    assert not (tmp_path / "visualizations").exists()

    # Same detections as the COCO-annotated run for the same images (ids and categories differ).
    coco_results = _load(keras_predict_run[1] / "detections.json")
    for i in range(3):
        ours = sorted(r["score"] for r in results if r["image_id"] == i)
        theirs = sorted(r["score"] for r in coco_results if r["image_id"] == 100 + i)
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_predict_saved_model_and_tflite_agree_with_keras(saved_model_dir, tflite_path, image_folder,
                                                        keras_predict_run, tmp_path):
    files = [image_folder / "images" / f"img{i}.png" for i in range(3)]
    keras_results = [r for r in _load(keras_predict_run[1] / "detections.json") if r["image_id"] < 103]
    for name, model in (("saved_model", saved_model_dir), ("tflite", tflite_path("float32"))):
        out = tmp_path / name
        code = _run_predict([model, *files, "--output", out, "--annotations", image_folder / "coco.json",
                             "--no-draw"])
        assert code == 0, name
        results = _load(out / "detections.json")
        assert len(results) == len(keras_results), name
        key = lambda r: (r["image_id"], -r["score"], r["category_id"])  # noqa: E731
        for got, want in zip(sorted(results, key=key), sorted(keras_results, key=key)):
            assert got["image_id"] == want["image_id"] and got["category_id"] == want["category_id"]
            assert abs(got["score"] - want["score"]) < 1e-3
            np.testing.assert_allclose(got["bbox"], want["bbox"], atol=0.5)


def test_predict_tflite_wrong_size_in_direct_mode_is_reported(tflite_path, image_folder, tmp_path, capsys):
    folder = image_folder / "images"
    code = _run_predict([tflite_path("float32"), folder / "img0.png", folder / "img3.png", "--output", tmp_path,
                         "--mode", "direct", "--no-draw"])
    assert code == 1
    errors = _load(tmp_path / "errors.json")
    assert [Path(e["file"]).name for e in errors] == ["img3.png"]
    assert "takes 64x64 images" in errors[0]["error"] and "got 112x160" in errors[0]["error"]
    assert "img3.png" in capsys.readouterr().err
    assert {r["image_id"] for r in _load(tmp_path / "detections.json")} == {0}


@pytest.mark.parametrize(
    "model, message",
    [("missing.keras", "does not exist"), ("missing_dir/", "does not exist"), ("model.txt", "Cannot tell the format"),
     ("bad.tflite", "not a valid TFLite model"), ("bad.keras", "Cannot load the Keras model")],
)
def test_predict_bad_model_path_has_a_clear_message(model, message, image_folder, tmp_path, capsys):
    (tmp_path / "model.txt").write_text("x")
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer at all")
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    code = _run_predict([tmp_path / model, image_folder / "images" / "img0.png", "--output", tmp_path / "out"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_load_detector_on_a_run_folder_uses_its_training_size(trained_model_path, tmp_path):
    from ipg_keras.export import KerasDetector, load_detector

    shutil.copy(trained_model_path, tmp_path / "model.keras")
    (tmp_path / "config.yaml").write_text("name: tiny\ndata:\n  image_size: 64\n")
    detector = load_detector(tmp_path)
    assert isinstance(detector, KerasDetector) and detector.input_size == (64, 64)


def test_predict_no_images(trained_model_path, tmp_path, capsys):
    code = _run_predict([trained_model_path, tmp_path / "nothing_here", "--output", tmp_path / "out"])
    assert code == 2 and "no such file or folder" in capsys.readouterr().err


def test_predict_bad_tile_size_or_tta_is_refused(trained_model_path, image_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run_predict([trained_model_path, image_folder, "--output", tmp_path / "out", "--tile-size", "0"])
    assert exit_info.value.code == 2 and "--tile-size must be a positive number of pixels" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        _run_predict([trained_model_path, image_folder, "--output", tmp_path / "out", "--tta", "3"])
    assert exit_info.value.code == 2 and "--tta" in capsys.readouterr().err
    for bad in ("1,0", "big", ""):
        with pytest.raises(SystemExit) as exit_info:
            _run_predict([trained_model_path, image_folder, "--output", tmp_path / "out", "--tta-scales", bad])
        assert exit_info.value.code == 2 and "--tta-scales" in capsys.readouterr().err


def test_export_cli_int8_calibrates_on_a_folder(trained_model_path, image_folder, tmp_path, capsys, monkeypatch):
    """The CLI wiring for int8: run folder -> model, --calibration-dir -> readable images
    (the broken file skipped with a message). The conversion itself is tested in test_tflite."""
    import ipg_keras.export.tflite as tflite_module
    from ipg_keras.cli.export import main

    calls = {}

    def fake_export(model, path, **kwargs):
        calls.update(kwargs, model=model, images=list(kwargs["representative_dataset"]()))
        Path(path).write_bytes(b"")
        return Path(path)

    monkeypatch.setattr(tflite_module, "export_tflite", fake_export)
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    shutil.copy(trained_model_path, model_dir / "model.keras")  # an ipg-train run folder
    code = main([str(model_dir), "--format", "tflite", "--precision", "int8", "--image-size", "64",
                 "--calibration-dir", str(image_folder / "images"), "--output", str(tmp_path / "m.tflite"),
                 "--calibration-percentile", "99.5", "--num-calibration", "7"])
    assert code == 0
    assert "skipping calibration image" in capsys.readouterr().err
    assert calls["precision"] == "int8" and calls["image_size"] == (64, 64)
    assert calls["calibration_percentile"] == 99.5 and calls["num_calibration_images"] == 7
    assert type(calls["model"]).__name__ == "IPGRetinaNet"
    assert [im.shape for im in calls["images"]] == [(64, 64, 3)] * 3 + [(112, 160, 3), (64, 64, 3)]


@pytest.mark.parametrize(
    "args, message",
    [(["missing.keras", "--output", "x"], "does not exist"),
     (["{model}", "--format", "tflite", "--precision", "int8", "--output", "x.tflite", "--image-size", "64"],
      "needs calibration images"),
     (["{model}", "--output", "x", "--image-size", "100"], "multiple of the model's size_multiple")],
)
def test_export_cli_errors(args, message, trained_model_path, tmp_path, capsys, monkeypatch):
    from ipg_keras.cli.export import main

    monkeypatch.chdir(tmp_path)
    assert main([a.format(model=trained_model_path) for a in args]) == 2
    assert message in capsys.readouterr().err


def test_console_scripts_are_declared():
    import tomllib

    from export_helpers import REPO

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ipg-export"] == "ipg_keras.cli.export:main"
    assert scripts["ipg-predict"] == "ipg_keras.cli.predict:main"


# ------------------------------------------------------------- robustness cases (../shared/cases)


@pytest.fixture(scope="module")
def one_class_model_path(tmp_path_factory) -> Path:
    """An untrained 1-class tiny detector (the case's COCO file has one category), saved as .keras."""
    from model_helpers import tiny_retinanet

    model = tiny_retinanet(num_classes=1, max_level=5, score_threshold=0.0, max_detections=10)
    model(np.zeros((1, 64, 64, 3), np.float32))
    path = tmp_path_factory.mktemp("one_class") / "model.keras"
    model.save(path)
    return path


def test_same_name_folders_keep_relative_paths_and_match_annotations_by_them(one_class_model_path, tmp_path,
                                                                             capsys):
    from ipg_keras.data import load_ground_truth
    from ipg_keras.data.image_files import find_image_files

    folder = _case("same-name-folders")
    code = _run_predict([one_class_model_path, folder / "imgs", "--recursive", "--output", tmp_path,
                         "--annotations", folder / "ann.json", "--image-size", "64"])
    assert code == 0
    drawn = sorted(p.relative_to(tmp_path / "visualizations").as_posix()
                   for p in (tmp_path / "visualizations").rglob("*.png"))
    assert drawn == ["cam1/000001.jpg.png", "cam2/000001.jpg.png", "cam3/frame.jpg.png", "cam3/frame.png.png"]
    # images.json: relative paths; the annotated ids, fresh ids past them for the others.
    assert _load(tmp_path / "images.json") == {"cam1/000001.jpg": 1, "cam2/000001.jpg": 2, "cam3/frame.jpg": 3,
                                               "cam3/frame.png": 4}
    assert _load(tmp_path / "metrics.json")["num_images"] == 2
    assert "frame.jpg has no annotation" in capsys.readouterr().err
    # Each camera's image gets its own ground truth (file_name with folders), not the other's.
    files, _ = find_image_files([folder / "imgs"], recursive=True)
    ann = load_ground_truth(folder / "ann.json", files, None)
    by_name = {f.relative_to(folder / "imgs").as_posix(): g["boxes"].tolist() for f, g in ann.gts.items()}
    assert by_name == {"cam1/000001.jpg": [[4, 4, 24, 24]], "cam2/000001.jpg": [[60, 30, 90, 60]]}


def test_16bit_case_through_ipg_predict_identical_and_not_white(trained_model_path, tmp_path):
    folder = _case("16bit-images")
    code = _run_predict([trained_model_path, folder / "cells.tif", folder / "cells.png", "--output", tmp_path,
                         "--image-size", "64", "--draw-threshold", "2"])  # nothing drawn: the pixels as read
    assert code == 0
    tif = np.asarray(Image.open(tmp_path / "visualizations" / "cells.tif.png"))
    png = np.asarray(Image.open(tmp_path / "visualizations" / "cells.png.png"))
    np.testing.assert_array_equal(tif, png)
    assert set(np.unique(tif).tolist()) == {3, 15}  # full scale: 1000 >> 8, 4000 >> 8; never white
    assert tif[28, 32, 0] == 15 and tif[2, 2, 0] == 3  # the object (box 20..44 x 16..40) brighter
    results = _load(tmp_path / "detections.json")
    for key in ("category_id", "bbox", "score"):  # same pixels, same detections for both files
        assert [r[key] for r in results if r["image_id"] == 0] == [r[key] for r in results if r["image_id"] == 1]


def test_voc_annotations_match_by_relative_path(tmp_path):
    from ipg_keras.data import load_ground_truth

    for cam, box in (("cam1", (2, 2, 10, 10)), ("cam2", (20, 20, 30, 30))):
        (tmp_path / "imgs" / cam).mkdir(parents=True)
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "imgs" / cam / "000001.jpg")
        (tmp_path / "voc" / cam).mkdir(parents=True)
        (tmp_path / "voc" / cam / "000001.xml").write_text(
            f"<annotation><filename>000001.jpg</filename><object><name>a</name><bndbox><xmin>{box[0]}</xmin>"
            f"<ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object></annotation>")
    files = sorted((tmp_path / "imgs").rglob("*.jpg"))
    ann = load_ground_truth(tmp_path / "voc", files, None)
    assert {f.parent.name: g["boxes"].tolist() for f, g in ann.gts.items()} == {
        "cam1": [[2, 2, 10, 10]], "cam2": [[20, 20, 30, 30]]}
    # A bare-name fallback that would be ambiguous is refused, not guessed.
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "one.xml").write_text((tmp_path / "voc" / "cam1" / "000001.xml").read_text())
    ann = load_ground_truth(flat, files, None)
    assert ann.gts == {} and sorted(ann.unmatched) == files
    assert sorted(ann.ambiguous) == files and all("ambiguous" in r for r in ann.ambiguous.values())


def test_no_cli_module_imports_another():
    import ast

    from export_helpers import REPO

    for path in sorted((REPO / "ipg_keras" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not [n for n in names if n.startswith("ipg_keras.cli")], f"{path.name} imports {names}"


def test_every_case_image_reads_the_same_on_every_path(one_class_model_path, tmp_path):
    """Each image file of ../shared/cases through the reader, the tf.data loaders, ipg_keras.inference,
    ipg-predict's drawings, the int8 calibration folder and serving_bytes' decoder: the same pixels;
    the truncated JPEG refused on every path, naming it."""
    import warnings

    import tensorflow as tf

    from ipg_keras.cli.export import calibration_source
    from ipg_keras.data.image_bytes import decode_image_bytes
    from ipg_keras.data.image_io import ImageReadError, ImageReadWarning, read_image
    from ipg_keras.data.records import ImageRecord, records_to_dataset
    from ipg_keras.export.runtime import letterbox
    from ipg_keras.inference import predict_image

    if not CASES.is_dir():
        pytest.skip(f"shared cases not found at {CASES} (../shared is absent in this checkout)")
    files = sorted(p for p in CASES.rglob("*") if p.suffix in (".jpg", ".png", ".tif"))
    broken = [f for f in files if f.name == "cut.jpg"]
    good = [f for f in files if f not in broken]
    assert len(good) >= 12 and len(broken) == 1
    warnings.simplefilter("ignore", ImageReadWarning)
    pixels = {f: read_image(f) for f in good}

    records = [ImageRecord(str(f), i, 0, 0, np.zeros((0, 4), np.float32), np.zeros(0, np.int32))
               for i, f in enumerate(good)]
    for element in records_to_dataset(records):  # the loaders' decoding
        f = good[int(element["image_id"])]
        np.testing.assert_array_equal(element["images"].numpy(), pixels[f].astype(np.float32), err_msg=str(f))

    class Recorder:
        format, input_size, seen = "keras", (128, 128), []

        def __call__(self, batch):
            self.seen.append(np.asarray(batch)[0])
            return {"boxes": np.zeros((1, 1, 4)), "scores": np.zeros((1, 1)), "classes": np.full((1, 1), -1),
                    "num_detections": np.zeros(1, np.int32)}

    for f in good:  # the inference API: what reaches the model is the reader's pixels, letterboxed
        if max(pixels[f].shape[:2]) <= 128:
            Recorder.seen.clear()
            predict_image(Recorder(), f, mode="resize")
            np.testing.assert_array_equal(Recorder.seen[0], letterbox(pixels[f], (128, 128))[0])

    code = _run_predict([one_class_model_path, *files, "--output", tmp_path, "--image-size", "64",
                         "--draw-threshold", "2"])  # nothing drawn: the drawings are the pixels read
    assert code == 1 and [e["file"] for e in _load(tmp_path / "errors.json")] == [str(broken[0])]
    for f in good:
        drawn = np.asarray(Image.open(tmp_path / "visualizations" / f"{f.relative_to(CASES).as_posix()}.png"))
        np.testing.assert_array_equal(drawn, pixels[f], err_msg=str(f))

    for folder in sorted({f.parent for f in files}):  # int8 calibration images from a folder
        listed = sorted(f for f in good if f.parent == folder)
        calibration = list(calibration_source(None, str(folder))())
        assert len(calibration) == len(listed)
        for f, image in zip(listed, calibration):
            np.testing.assert_array_equal(image, pixels[f], err_msg=str(f))

    decode = tf.function(lambda d: decode_image_bytes(d, 10**7), input_signature=[tf.TensorSpec([], tf.string)])
    for f in good:  # serving_bytes' in-graph decoder (TIFF is refused there: no TF decoder)
        if f.suffix == ".tif":
            with pytest.raises(tf.errors.InvalidArgumentError, match="TIFF"):
                decode(tf.constant(f.read_bytes()))
        else:
            np.testing.assert_array_equal(decode(tf.constant(f.read_bytes())).numpy(), pixels[f], err_msg=str(f))

    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(broken[0])
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode(tf.constant(broken[0].read_bytes()))
