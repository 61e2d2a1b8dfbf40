"""One parser and one cleaning rule per annotation format, for the loaders and for scoring
(`load_ground_truth`, used by `ipg-predict --annotations`); duplicate ids, class names,
normalized and out-of-image boxes reported or refused at every data boundary.

The `../shared/cases` inputs (duplicate-image-ids, voc-quirks, class-category-mapping)
are used read-only; those tests skip when the folder is absent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from data_helpers import write_image, write_voc_xml
from ipg_keras.data import (
    DataError,
    from_coco_json,
    load_coco_json,
    load_ground_truth,
    load_pascal_voc,
    make_batches,
)
from ipg_keras.evaluation import evaluate_detections
from shared_cases import case



def perfect(gt: dict) -> dict:
    """Detections equal to the ground truth boxes, score 1."""
    return {"boxes": gt["boxes"], "scores": np.ones(len(gt["boxes"])), "classes": gt["classes"]}


# ------------------------------------------------------------- shared cases
def test_duplicate_image_ids_are_an_error_naming_both_files():
    folder = case("duplicate-image-ids")
    ann = folder / "merged.json"
    for load in (lambda: from_coco_json(ann, folder),
                 lambda: load_ground_truth(ann, [folder / "site_a.jpg", folder / "site_b.jpg"])):
        with pytest.raises(DataError, match="duplicate image id") as info:
            load()
        assert "site_a.jpg" in str(info.value) and "site_b.jpg" in str(info.value)


def test_voc_quirks_same_cleaning_in_loader_and_scoring():
    folder = case("voc-quirks")
    image = folder / "scene.jpg"
    parsed = load_pascal_voc(folder)
    (record,) = parsed.records
    gt = load_ground_truth(folder, [image])
    want = [[10.5, 5.25, 45.7, 70.9], [60, 50, 90, 75]]  # float coordinates kept; no <part> boxes
    for boxes, classes, difficult, counts in (
        (record.boxes, record.classes, record.flags["difficult"], parsed.report.counts),
        (gt.gts[image]["boxes"], gt.gts[image]["classes"], gt.gts[image]["difficult"], gt.report.counts),
    ):
        np.testing.assert_allclose(boxes, want, atol=1e-5)
        assert [parsed.class_names[c] for c in classes] == ["person", "dog"]
        assert difficult.tolist() == [False, True]
        # The object without <bndbox> and the inverted box (xmin > xmax) are dropped and counted.
        assert counts == {"invalid_box": 1, "degenerate_box": 1}
    assert gt.class_names == parsed.class_names == ["dog", "person"]
    # A perfect detector: AP 1.0 (keeping the inverted box as a zero-size object gave 0.505).
    metrics = evaluate_detections(gt, {image: perfect(gt.gts[image])})
    assert metrics["AP"] == pytest.approx(1.0) and metrics["num_images"] == 1


def test_classes_map_to_categories_by_name():
    folder = case("class-category-mapping")
    image = folder / "street.png"
    car = {"boxes": np.array([[40.0, 20, 48, 28]]), "scores": np.ones(1), "classes": np.array([0])}
    gt = load_ground_truth(folder / "coco.json", [image], ["car", "person"])
    assert gt.category_ids == [3, 1] and gt.category_id(0) == 3  # car -> category 3, not 1 (person)
    assert gt.ids == {image: 1}
    assert evaluate_detections(gt, {image: car})["AP"] == pytest.approx(1.0)
    # The loader follows the same rule when given class names.
    ds = from_coco_json(folder / "coco.json", folder, class_names=["car", "person"])
    assert ds.label_map.category_ids == (3, 1)
    assert next(iter(ds))["bounding_boxes"]["classes"].numpy().tolist() == [0]


@pytest.mark.parametrize("class_names, num_classes", [(None, 5), (["a", "car", "b", "c", "d"], 5)])
def test_class_and_category_disagreement_stops_listing_both(class_names, num_classes):
    folder = case("class-category-mapping")
    with pytest.raises(DataError) as info:
        load_ground_truth(folder / "coco.json", [folder / "street.png"], class_names, num_classes=num_classes)
    text = str(info.value)
    assert "person" in text and "car" in text and "coco.json" in text
    if class_names:
        assert str(class_names) in text
    else:
        assert "5 classes" in text and "2 categories" in text


def test_roboflow_supercategory_without_boxes_is_tolerated():
    folder = case("class-category-mapping")
    image = folder / "street.png"
    for names, num_classes in ((["car", "person"], 2), (None, 2), (None, None)):
        gt = load_ground_truth(folder / "roboflow.json", [image], names, num_classes=num_classes)
        assert gt.class_names == ["car", "person"] and gt.category_ids == [1, 2]
        assert gt.gts[image]["classes"].tolist() == [0]
    ds = from_coco_json(folder / "roboflow.json", folder)
    assert ds.class_names == ["car", "person"] and ds.report.counts == {}


# ------------------------------------------------------------ COCO quirks
def _coco(tmp_path: Path, annotations, categories=None, images=None, size=(96, 64)) -> tuple[Path, Path]:
    img_dir = tmp_path / "img"
    images = images or [{"id": 1, "file_name": "a.jpg", "width": size[0], "height": size[1]}]
    for im in images:
        write_image(img_dir / im["file_name"], *size)
    data = {"images": images, "annotations": annotations,
            "categories": categories if categories is not None else [{"id": 1, "name": "car"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path, img_dir


def _both(path: Path, img_dir: Path, class_names=None):
    """(ImageRecord of the loader, GroundTruth record) of the first image."""
    parsed = load_coco_json(path, img_dir, class_names=class_names)
    gt = load_ground_truth(path, [img_dir / "a.jpg"], class_names)
    return parsed, gt


def test_duplicate_annotation_ids_are_an_error(tmp_path):
    path, img_dir = _coco(tmp_path, [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9]},
                                     {"id": 4, "image_id": 1, "category_id": 1, "bbox": [20, 20, 9, 9]}])
    for load in (lambda: from_coco_json(path, img_dir), lambda: load_ground_truth(path, [img_dir / "a.jpg"])):
        with pytest.raises(DataError, match="annotation id 4 appears 2 times"):
            load()


def test_one_file_under_two_image_ids_is_an_error(tmp_path):
    path, img_dir = _coco(tmp_path, [], images=[{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "a.jpg"}])
    with pytest.raises(DataError, match=r"a.jpg has image ids \[1, 2\]"):
        from_coco_json(path, img_dir)


def test_negative_width_height_is_dropped_the_same_way_everywhere(tmp_path):
    path, img_dir = _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 30, -10, 12]},
                                     {"id": 2, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 12]}])
    parsed, gt = _both(path, img_dir)
    for boxes, counts in ((parsed.records[0].boxes, parsed.report.counts),
                          (gt.records[img_dir / "a.jpg"].boxes, gt.report.counts)):
        np.testing.assert_array_equal(boxes, [[2, 3, 12, 15]])
        assert counts == {"degenerate_box": 1}


def test_missing_categories_says_what_to_add(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]}]}))
    (tmp_path / "img").mkdir()
    for load in (lambda: from_coco_json(path, tmp_path / "img"), lambda: load_ground_truth(path, [])):
        with pytest.raises(DataError, match=r"needs top-level 'images' and 'categories'.*category ids \[3\]"):
            load()


def test_category_names_match_ignoring_case_and_spaces(tmp_path):
    path, img_dir = _coco(
        tmp_path, [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 2, 10, 10]},
                   {"id": 2, "image_id": 1, "category_id": 5, "bbox": [30, 30, 10, 10]}],
        categories=[{"id": 5, "name": " Car"}, {"id": 7, "name": "PERSON "}],
    )
    parsed, gt = _both(path, img_dir, ["person", "car"])
    assert parsed.label_map.category_ids == (7, 5) and gt.category_ids == [7, 5]
    assert parsed.records[0].classes.tolist() == gt.records[img_dir / "a.jpg"].classes.tolist() == [0, 1]
    with pytest.raises(ValueError, match="duplicates"):
        load_ground_truth(path, [img_dir / "a.jpg"], ["car", "Car "])


def test_segmentation_only_annotations_get_their_box(tmp_path):
    from pycocotools import mask as mask_utils

    m = np.zeros((64, 96), np.uint8, order="F")
    m[40:50, 60:80] = 1
    rle = mask_utils.encode(m)
    rle["counts"] = rle["counts"].decode("ascii")
    path, img_dir = _coco(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[10, 5, 30, 5, 30, 25, 10, 25]]},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": rle, "iscrowd": 1},
        {"id": 3, "image_id": 1, "category_id": 1},  # neither: reported
    ])
    parsed, gt = _both(path, img_dir)
    for record, counts in ((parsed.records[0], parsed.report.counts),
                           (gt.records[img_dir / "a.jpg"], gt.report.counts)):
        np.testing.assert_allclose(record.boxes, [[10, 5, 30, 25], [60, 40, 80, 50]])
        assert record.flags["iscrowd"].tolist() == [False, True]
        assert counts == {"invalid_box": 1}


def test_iscrowd_flags_and_crowd_regions_are_ignored_in_scoring(tmp_path):
    path, img_dir = _coco(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 20], "iscrowd": "0"},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [40, 20, 40, 30], "iscrowd": True},
    ])
    parsed, gt = _both(path, img_dir)
    assert parsed.records[0].flags["iscrowd"].tolist() == [False, True]
    image = img_dir / "a.jpg"
    assert gt.gts[image]["iscrowd"].tolist() == [False, True]
    # A detection on the crowd region is neither a hit nor a false positive.
    dets = {"boxes": np.array([[2.0, 2, 22, 22], [40, 20, 80, 50]]), "scores": np.array([0.9, 0.95]),
            "classes": np.array([0, 0])}
    assert evaluate_detections(gt, {image: dets})["AP"] == pytest.approx(1.0)


# ------------------------------------------------------------- VOC quirks
def test_voc_size_zero_uses_the_real_image_size(tmp_path):
    write_image(tmp_path / "a.jpg", 80, 60)
    write_voc_xml(tmp_path / "a.xml", "a.jpg", (0, 0), [("cat", (70, 10, 90, 30), False)])  # half outside
    parsed = load_pascal_voc(tmp_path)
    gt = load_ground_truth(tmp_path, [tmp_path / "a.jpg"])
    for boxes, counts in ((parsed.records[0].boxes, parsed.report.counts),
                          (gt.records[tmp_path / "a.jpg"].boxes, gt.report.counts)):
        np.testing.assert_array_equal(boxes, [[70, 10, 80, 30]])
        assert counts == {"box_clipped": 1}  # no size_mismatch for an unset <size>


def test_voc_names_differing_in_case_or_spaces_are_one_class(tmp_path, caplog):
    write_image(tmp_path / "a.jpg", 40, 40)
    write_voc_xml(tmp_path / "a.xml", "a.jpg", (40, 40), [("Dog", (1, 1, 9, 9), False),
                                                          ("dog ", (10, 10, 19, 19), False),
                                                          ("cat", (20, 20, 29, 29), False)])
    with caplog.at_level(logging.WARNING, logger="ipg_keras.data"):
        parsed = load_pascal_voc(tmp_path)
    assert parsed.class_names == ["Dog", "cat"] and parsed.records[0].classes.tolist() == [0, 0, 1]
    assert any("differ only in case" in r.getMessage() for r in caplog.records)
    assert load_pascal_voc(tmp_path, ["CAT", "dog"]).records[0].classes.tolist() == [1, 1, 0]


def test_two_voc_files_for_one_image_are_an_error(tmp_path):
    write_image(tmp_path / "a.jpg", 40, 40)
    write_voc_xml(tmp_path / "a.xml", "a.jpg", (40, 40), [("cat", (1, 1, 9, 9), False)])
    write_voc_xml(tmp_path / "b.xml", "a.jpg", (40, 40), [("cat", (20, 20, 29, 29), False)])  # copied, stale
    with pytest.raises(DataError, match=r"a.jpg is annotated by .*a.xml, .*b.xml"):
        load_pascal_voc(tmp_path)
    # For scoring, the image fits both files: it is left unscored, not guessed.
    gt = load_ground_truth(tmp_path, [tmp_path / "a.jpg"])
    assert gt.unmatched == [tmp_path / "a.jpg"] and gt.records == {}


# --------------------------------------------- normalized and outside boxes
def test_normalized_boxes_are_reported_in_loaders_and_refused_when_all(tmp_path):
    write_image(tmp_path / "a.jpg", 128, 96)
    write_image(tmp_path / "b.jpg", 128, 96)
    write_voc_xml(tmp_path / "a.xml", "a.jpg", (128, 96), [("cat", (0.1, 0.2, 0.3, 0.5), False),
                                                          ("cat", (0.5, 0.5, 0.9, 0.8), False)])
    write_voc_xml(tmp_path / "b.xml", "b.jpg", (128, 96), [("cat", (10, 20, 40, 50), False)])
    parsed = load_pascal_voc(tmp_path)
    assert parsed.report.counts == {"normalized_box": 2}
    (issue,) = parsed.report.issues
    assert "a.xml" in issue.file and "all 2 box(es)" in issue.message and "[0.1, 0.2, 0.3, 0.5]" in issue.message
    assert [len(r.boxes) for r in parsed.records] == [0, 1]
    # Only normalized boxes: training or scoring on them would be wrong, so it stops.
    (tmp_path / "b.xml").unlink()
    with pytest.raises(DataError, match="normalized"):
        load_pascal_voc(tmp_path)
    with pytest.raises(DataError, match="normalized"):
        load_ground_truth(tmp_path, [tmp_path / "a.jpg"])
    path, img_dir = _coco(tmp_path / "c", [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.1, 0.1, 0.2, 0.3]}],
                          size=(128, 96))
    with pytest.raises(DataError, match="normalized"):
        from_coco_json(path, img_dir)


def test_small_images_are_not_called_normalized(tmp_path):
    write_image(tmp_path / "a.jpg", 24, 24)  # below 32 px a 1-px box is plausible pixels
    write_voc_xml(tmp_path / "a.xml", "a.jpg", (24, 24), [("cat", (0, 0, 1, 1), False)])
    assert load_pascal_voc(tmp_path).report.counts == {}


def test_box_mostly_outside_is_dropped_not_kept_as_a_sliver(tmp_path):
    # The recipe: a 78x81 box at (120, 80) on a 128x96 image would become a 8x16 sliver.
    path, img_dir = _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [120, 80, 78, 81]},
                                     {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 10, 40, 30]}],
                          size=(128, 96))
    parsed, gt = _both(path, img_dir)
    for record, report in ((parsed.records[0], parsed.report), (gt.records[img_dir / "a.jpg"], gt.report)):
        np.testing.assert_array_equal(record.boxes, [[100, 10, 128, 40]])  # 70 % inside: clipped, kept
        assert report.counts == {"box_outside": 1, "box_clipped": 1}
        assert any("[120.0, 80.0, 198.0, 161.0]" in i.message for i in report.issues if i.reason == "box_outside")
    # min_visible is the loaders' knob (the rule of crop_boxes / tile_dataset).
    strict = load_coco_json(path, img_dir, min_visible=0.8)
    assert strict.records[0].boxes.shape == (0, 4) and strict.report.counts == {"box_outside": 2}


def _elements(boxes, size=(96, 128)):
    h, w = size
    el = {"images": np.zeros((h, w, 3), np.float32), "image_id": np.int64(7),
          "bounding_boxes": {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                             "classes": np.zeros(len(boxes), np.int32)}}
    return tf.data.Dataset.from_tensors(el)


def test_make_batches_counts_outside_boxes_with_the_same_rule(capfd):
    ds = make_batches(_elements([[10, 10, 30, 30], [120, 80, 198, 161], [100, 10, 140, 40]]), 1, 128)
    _, targets = next(iter(ds))
    np.testing.assert_array_equal(targets["boxes"][0].numpy(), [[10, 10, 30, 30], [100, 10, 128, 40]])
    assert ds.report.counts == {"box_clipped": 1, "box_outside": 1}
    assert "[120 80 198 161] extends outside the 128 x 96 image" in capfd.readouterr().err


def test_make_batches_refuses_normalized_boxes():
    ds = make_batches(_elements([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.7, 0.9]]), 1, 128)
    message = r"(?s)all\] \[2\] \[boxes of image_id\] \[7\].*normalized"
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        next(iter(ds))
    # Pixel boxes on the same images, and tiny images, pass.
    next(iter(make_batches(_elements([[1, 1, 30, 30]]), 1, 128)))
    next(iter(make_batches(_elements([[0, 0, 1, 1]], size=(16, 16)), 1, 32)))


def test_voc_loader_and_scoring_match_files_by_relative_path(tmp_path):
    for cam, box in (("cam1", (2, 2, 12, 12)), ("cam2", (20, 20, 30, 30))):
        write_image(tmp_path / "imgs" / cam / "0001.jpg", 40, 40)
        write_voc_xml(tmp_path / "ann" / cam / "0001.xml", "0001.jpg", (40, 40), [("cat", box, False)])
    files = [tmp_path / "imgs" / c / "0001.jpg" for c in ("cam1", "cam2")]
    gt = load_ground_truth(tmp_path / "ann", files)
    assert gt.unmatched == []
    np.testing.assert_array_equal(gt.gts[files[0]]["boxes"], [[2, 2, 12, 12]])
    np.testing.assert_array_equal(gt.gts[files[1]]["boxes"], [[20, 20, 30, 30]])


def test_same_name_folders_match_by_relative_path():
    folder = case("same-name-folders")
    files = sorted((folder / "imgs").rglob("*.*"))
    gt = load_ground_truth(folder / "ann.json", files)
    cam1, cam2 = folder / "imgs/cam1/000001.jpg", folder / "imgs/cam2/000001.jpg"
    assert gt.ids == {cam1: 1, cam2: 2}
    np.testing.assert_array_equal(gt.gts[cam1]["boxes"], [[4, 4, 24, 24]])
    np.testing.assert_array_equal(gt.gts[cam2]["boxes"], [[60, 30, 90, 60]])
    assert sorted(f.name for f in gt.unmatched) == ["frame.jpg", "frame.png"]
