"""Pascal VOC loader: element format, class discovery, layouts, and the real tree data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from data_helpers import trees, voc_folder, write_image, write_voc_xml  # noqa: F401 (fixtures)
from ipg_keras.data import from_pascal_voc, load_pascal_voc


def _elements(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), e) for e in ds]


def test_voc_folder_element_format_and_values(voc_folder):
    ds = from_pascal_voc(voc_folder)
    assert ds.class_names == ["cat", "dog"]  # discovered, sorted
    assert ds.report.counts == {}
    assert (ds.report.images_loaded, ds.report.boxes_loaded) == (2, 3)
    spec = ds.element_spec
    assert spec["images"].dtype == tf.float32 and spec["images"].shape.as_list() == [None, None, 3]
    assert spec["bounding_boxes"]["boxes"].shape.as_list() == [None, 4]
    assert spec["bounding_boxes"]["classes"].dtype == tf.int32
    assert spec["bounding_boxes"]["difficult"].dtype == tf.bool
    assert spec["image_id"].dtype == tf.int64

    a, b = _elements(ds)
    assert a["images"].shape == (48, 64, 3) and b["images"].shape == (30, 40, 3)
    # Pixel content is the file's (solid red JPEG / solid blue PNG), 0..255 RGB.
    assert abs(a["images"][..., 0].mean() - 200) < 3 and a["images"][..., 2].mean() < 5
    np.testing.assert_array_equal(b["images"][0, 0], [0, 0, 250])
    np.testing.assert_array_equal(a["bounding_boxes"]["boxes"], [[4, 5, 20, 30], [30, 10, 60, 40]])
    np.testing.assert_array_equal(a["bounding_boxes"]["classes"], [0, 1])
    np.testing.assert_array_equal(a["bounding_boxes"]["difficult"], [False, True])
    np.testing.assert_array_equal(b["bounding_boxes"]["classes"], [1])
    assert (a["image_id"], b["image_id"]) == (0, 1)


def test_voc_given_class_names_fix_the_ids(voc_folder):
    ds = from_pascal_voc(voc_folder, class_names=["dog", "cat", "bird"])
    assert ds.class_names == ["dog", "cat", "bird"]
    first = next(iter(ds))
    np.testing.assert_array_equal(first["bounding_boxes"]["classes"].numpy(), [1, 0])


def test_voc_list_of_files_and_single_file(voc_folder):
    ds = from_pascal_voc([voc_folder / "b.xml"])
    assert ds.report.boxes_loaded == 1 and ds.class_names == ["dog"]
    assert len(list(from_pascal_voc(voc_folder / "a.xml"))) == 1


def test_vocdevkit_layout_with_split(tmp_path):
    root = tmp_path / "VOC2007"
    for stem, name in (("000001", "cat"), ("000002", "dog"), ("000003", "bird")):
        write_image(root / "JPEGImages" / f"{stem}.jpg", 32, 32)
        write_voc_xml(root / "Annotations" / f"{stem}.xml", f"{stem}.jpg", (32, 32), [(name, (1, 1, 9, 9), False)])
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("000001\n000003\n")
    parsed = load_pascal_voc(root, split="train")
    assert [Path(r.image_path).name for r in parsed.records] == ["000001.jpg", "000003.jpg"]
    assert parsed.class_names == ["bird", "cat"]
    assert len(load_pascal_voc(root).records) == 3  # no split: every file in Annotations/


def test_voc_image_found_by_stem_when_filename_is_wrong(tmp_path):
    write_image(tmp_path / "pic.png", 20, 20)
    write_voc_xml(tmp_path / "pic.xml", "pic.jpg", (20, 20), [("a", (1, 1, 5, 5), False)])
    parsed = load_pascal_voc(tmp_path)
    assert parsed.records[0].image_path.endswith("pic.png") and not parsed.report


def test_voc_tiff_decoded_through_pil(tmp_path):
    write_image(tmp_path / "t.tif", 24, 16, fill=(1, 2, 3))
    write_voc_xml(tmp_path / "t.xml", "t.tif", (24, 16), [("a", (2, 2, 10, 10), False)])
    (el,) = list(from_pascal_voc(tmp_path))
    assert el["images"].shape == (16, 24, 3)
    np.testing.assert_array_equal(el["images"][3, 3].numpy(), [1, 2, 3])


def test_voc_missing_source_raises_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_pascal_voc(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no .xml annotation files"):
        from_pascal_voc(tmp_path)


def test_trees_real_data_box_counts(trees):
    train = from_pascal_voc(trees / "train")
    val = from_pascal_voc(trees / "val")
    assert train.class_names == ["Tree"] and val.class_names == ["Tree"]
    assert train.report.counts == {} and val.report.counts == {}
    assert train.report.boxes_loaded == 574 and val.report.boxes_loaded == 279
    (rec,) = train.records
    assert (rec.width, rec.height) == (2299, 2472)
    (vrec,) = val.records
    assert (vrec.width, vrec.height) == (1249, 1035)
    (el,) = list(val)
    assert el["images"].shape == (1035, 1249, 3)
    assert el["bounding_boxes"]["boxes"].shape == (279, 4)
    boxes = el["bounding_boxes"]["boxes"].numpy()
    assert boxes[:, 0].min() >= 0 and boxes[:, 2].max() <= 1249 and boxes[:, 3].max() <= 1035
    assert np.all(el["bounding_boxes"]["classes"].numpy() == 0)


def test_voc_rejects_unknown_validate_mode(voc_folder):
    with pytest.raises(ValueError, match="validate='fast'"):
        from_pascal_voc(voc_folder, validate="fast")
