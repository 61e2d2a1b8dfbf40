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
