"""`ipg-predict --annotations` end to end with a stand-in model that detects perfectly:
annotations are read by the data package (same parser and cleaning as the loaders), classes
map to categories by name, duplicate ids stop with a message, and the detection limit
covers dense images. Inputs: `../shared/cases` (read-only; skipped when absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shared_cases import case



class PerfectModel:
    """Returns fixed detections (boxes in input pixels) for every image, padded to 300."""

    def __init__(self, boxes, classes, num_classes=None, class_names=None):
        self.boxes = np.asarray(boxes, "float32").reshape(-1, 4)
        self.classes = np.asarray(classes, "int32")
        self.num_classes = num_classes
        self.class_names = class_names
        self.max_detections = 300

    def predict_on_batch(self, images):
        n, cap = len(self.boxes), 300
        out = {"boxes": np.zeros((1, cap, 4), "float32"), "scores": np.zeros((1, cap), "float32"),
               "classes": np.full((1, cap), -1, "int32"), "num_detections": np.array([n], "int32")}
        out["boxes"][0, :n] = self.boxes
        out["scores"][0, :n] = np.linspace(1.0, 0.5, n)
        out["classes"][0, :n] = self.classes
        return out


def run(monkeypatch, model, image, args, size):
    """ipg-predict on one image with `model` standing in for the model file."""
    import ipg_keras.export.runtime as runtime
    import ipg_keras.inference
    from ipg_keras.cli.predict import main

    monkeypatch.setattr(ipg_keras.inference, "load_detector",
                        lambda *a, **k: runtime.KerasDetector(model, image_size=size))
    return main(["model.keras", str(image), "--no-draw", *[str(a) for a in args]])


def test_class_names_map_to_categories_by_name(monkeypatch, tmp_path):
    folder = case("class-category-mapping")
    model = PerfectModel([[40, 20, 48, 28]], [0], num_classes=2)  # class 0 = car
    code = run(monkeypatch, model, folder / "street.png", ["--output", tmp_path, "--annotations",
               folder / "coco.json", "--class-names", "car,person"], (64, 96))
    assert code == 0
    (det,) = json.loads((tmp_path / "detections.json").read_text())
    assert det["category_id"] == 3 and det["image_id"] == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["AP"] == pytest.approx(1.0)


def test_a_five_class_model_against_two_categories_stops_listing_both(monkeypatch, tmp_path, capsys):
    folder = case("class-category-mapping")
    model = PerfectModel([[40, 20, 48, 28]], [4], num_classes=5)
    code = run(monkeypatch, model, folder / "street.png", ["--output", tmp_path, "--annotations",
               folder / "coco.json"], (64, 96))
    err = capsys.readouterr().err
    assert code == 2 and "5 classes" in err and "['person', 'car']" in err
    assert not (tmp_path / "detections.json").exists()


def test_duplicate_image_ids_stop_naming_both_files(monkeypatch, tmp_path, capsys):
    folder = case("duplicate-image-ids")
    model = PerfectModel([[4, 4, 24, 24]], [0], num_classes=1)
    code = run(monkeypatch, model, folder / "site_a.jpg", ["--output", tmp_path, "--annotations",
               folder / "merged.json"], (64, 96))
    err = capsys.readouterr().err
    assert code == 2 and "site_a.jpg" in err and "site_b.jpg" in err


def test_voc_quirks_perfect_detector_scores_one(monkeypatch, tmp_path):
    folder = case("voc-quirks")
    # dog (difficult) and person, the two objects the loader keeps; class ids of (dog, person).
    model = PerfectModel([[10.5, 5.25, 45.7, 70.9], [60, 50, 90, 75]], [1, 0], num_classes=2)
    code = run(monkeypatch, model, folder / "scene.jpg", ["--output", tmp_path, "--annotations", folder,
               "--class-names", "dog,person"], (80, 100))
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["AP"] == pytest.approx(1.0)  # 0.505 when the inverted box was kept


def test_dense_image_is_scored_with_every_detection(monkeypatch, tmp_path, capsys):
    folder = case("dense-image-maxdets")
    data = json.loads((folder / "ann.json").read_text())
    xywh = np.array([a["bbox"] for a in data["annotations"]], "float32")
    model = PerfectModel(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1), np.zeros(len(xywh)),
                         num_classes=1)
    code = run(monkeypatch, model, folder / "orchard.png", ["--output", tmp_path, "--annotations",
               folder / "ann.json"], (300, 300))
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # The limit covers every detection kept (0.693 at pycocotools' default of 100), and is said.
    assert metrics["AP"] == pytest.approx(1.0) and metrics["max_detections"] >= 144
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["max_detections"] == metrics["max_detections"] and summary["metrics"]["AP"] == 1.0


class SquareFinder:
    """Detects the bright 8x8 squares of a tile by their top-left corners (score = visible fraction)."""

    num_classes, class_names, max_detections = 1, ["square"], 300

    def predict_on_batch(self, images):
        images = np.asarray(images)
        out = {"boxes": np.zeros((len(images), 300, 4), "float32"), "scores": np.zeros((len(images), 300), "float32"),
               "classes": np.full((len(images), 300), -1, "int32"), "num_detections": np.zeros(len(images), "int32")}
        for b, image in enumerate(images):
            bright = np.pad(image[..., 0] > 128, ((1, 0), (1, 0)))
            corner = bright[1:, 1:] & ~bright[:-1, 1:] & ~bright[1:, :-1]
            ys, xs = np.nonzero(corner)
            for i, (y, x) in enumerate(zip(ys[:300], xs[:300])):
                w = int(bright[y + 1, x + 1 : x + 9].sum())
                h = int(bright[y + 1 : y + 9, x + 1].sum())
                out["boxes"][b, i] = [x, y, x + w, y + h]
                out["scores"][b, i] = w * h / 64.0
                out["classes"][b, i] = 0
            out["num_detections"][b] = min(len(ys), 300)
        return out


def test_max_detections_keeps_every_object_of_a_dense_sliced_image(monkeypatch, tmp_path):
    """400 objects in one image predicted tile by tile: the default merge keeps 300 detections (recall
    0.75 at most); --max-detections 1000 keeps and scores them all."""
    from PIL import Image

    image = np.zeros((320, 320, 3), "uint8")
    boxes = [[x, y, x + 8, y + 8] for y in range(4, 320, 16) for x in range(4, 320, 16)]
    for x1, y1, x2, y2 in boxes:
        image[y1:y2, x1:x2] = 255
    Image.fromarray(image).save(tmp_path / "dense.png")
    ann = {"images": [{"id": 1, "file_name": "dense.png", "width": 320, "height": 320}],
           "categories": [{"id": 1, "name": "square"}],
           "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [x1, y1, 8, 8], "area": 64,
                            "iscrowd": 0} for i, (x1, y1, _, _) in enumerate(boxes)]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    results = {}
    for cap in (None, 1000):
        out = tmp_path / f"out{cap}"
        args = ["--output", out, "--annotations", tmp_path / "ann.json", "--mode", "slice"]
        assert run(monkeypatch, SquareFinder(), tmp_path / "dense.png",
                   args + ([] if cap is None else ["--max-detections", cap]), (160, 160)) == 0
        results[cap] = (json.loads((out / "metrics.json").read_text()), json.loads((out / "detections.json").read_text()))
    default, big = results[None], results[1000]
    assert len(default[1]) == 300 and default[0]["max_detections"] == 300 and default[0]["AR100"] <= 0.75
    assert len(big[1]) >= 400 and big[0]["max_detections"] == 1000
    assert big[0]["AP"] == pytest.approx(1.0, abs=0.01)
