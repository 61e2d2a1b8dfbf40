"""COCO JSON and TFDS loaders: box conversion, class mapping, flags, image ids."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data_helpers import coco_files  # noqa: F401 (pytest fixture)
from ipg_keras.data import CocoLabelMap, from_coco_json, from_tfds, make_batches


def test_coco_json_mapping_boxes_and_crowd_flag(coco_files):
    ann, img_dir = coco_files
    ds = from_coco_json(ann, img_dir)
    lm = ds.label_map
    # Categories sorted by COCO id -> contiguous classes.
    assert lm.category_ids == (3, 7, 11) and ds.class_names == ["car", "bus", "truck"]
    assert lm.to_class(11) == 2 and lm.to_category_id(1) == 7
    np.testing.assert_array_equal(lm.classes_to_category_ids([[0, 2, -1]]), [[3, 11, -1]])
    assert ds.report.counts == {}

    els = {int(e["image_id"]): e for e in ds}
    assert sorted(els) == [101, 205, 309]  # COCO ids kept; the image without boxes too
    x = els[101]["bounding_boxes"]
    np.testing.assert_array_equal(x["boxes"].numpy(), [[2, 3, 12, 23], [20, 5, 45, 35]])  # xywh -> xyxy
    np.testing.assert_array_equal(x["classes"].numpy(), [0, 2])
    np.testing.assert_array_equal(x["iscrowd"].numpy(), [False, True])
    assert els[309]["bounding_boxes"]["boxes"].shape == (0, 4)
    assert els[101]["images"].shape == (40, 50, 3)


def test_crowd_boxes_are_not_training_targets(coco_files):
    ann, img_dir = coco_files
    ds = from_coco_json(ann, img_dir)
    _, targets = next(iter(make_batches(ds, 3, 64)))
    # Image 101 lost its crowd truck (class 2); image 309 has no boxes: -1 padding.
    assert targets["classes"].numpy().tolist() == [[0], [1], [-1]]
    _, kept = next(iter(make_batches(ds, 3, 64, drop_crowd=False)))
    assert kept["classes"].numpy().tolist() == [[0, 2], [1, -1], [-1, -1]]


def test_label_map_round_trip():
    lm = CocoLabelMap.from_categories([{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}])
    assert lm.class_names == ("person", "toothbrush")
    for c in range(lm.num_classes):
        assert lm.to_class(lm.to_category_id(c)) == c
    with pytest.raises(ValueError, match="duplicate"):
        CocoLabelMap.from_categories([{"id": 1}, {"id": 1}])


def _fake_tfds(examples):
    """as_dataset_fn for tfds.testing.mock_data yielding exactly `examples`."""

    def as_dataset(self, *args, **kwargs):
        spec = self.info.features.get_tensor_spec()

        def gen():
            for ex in examples:
                yield ex

        return tf.data.Dataset.from_generator(gen, output_signature=spec)

    return as_dataset


def _voc_example(filename, h, w, bbox, labels, difficult):
    n = len(labels)
    return {
        "image": np.full((h, w, 3), 7, np.uint8),
        "image/filename": filename,
        "labels": np.asarray(labels, np.int64),
        "labels_no_difficult": np.asarray(labels, np.int64),
        "objects": {
            "bbox": np.asarray(bbox, np.float32).reshape(-1, 4),
            "label": np.asarray(labels, np.int64),
            "is_difficult": np.asarray(difficult, bool),
            "is_truncated": np.zeros(n, bool),
            "pose": np.zeros(n, np.int64),
        },
    }


def test_from_tfds_voc_converts_normalised_yxyx_to_pixels():
    examples = [
        _voc_example("000005.jpg", 100, 200, [[0.1, 0.25, 0.5, 0.75], [0.0, 0.0, 1.0, 1.0]], [14, 8], [False, True]),
        _voc_example("000007.jpg", 50, 40, [[0.5, 0.5, 0.5, 0.9]], [3], [False]),  # zero height: dropped
    ]
    with tfds.testing.mock_data(as_dataset_fn=_fake_tfds(examples)):
        ds = from_tfds("voc/2007", split="train", download=False)
        els = list(ds)
    assert ds.class_names[:3] == ["aeroplane", "bicycle", "bird"] and len(ds.class_names) == 20
    a, b = els
    assert a["images"].dtype == tf.float32 and a["images"].shape == (100, 200, 3)
    np.testing.assert_allclose(a["bounding_boxes"]["boxes"].numpy(), [[50, 10, 150, 50], [0, 0, 200, 100]])
    np.testing.assert_array_equal(a["bounding_boxes"]["classes"].numpy(), [14, 8])
    assert a["bounding_boxes"]["classes"].dtype == tf.int32
    np.testing.assert_array_equal(a["bounding_boxes"]["difficult"].numpy(), [False, True])
    assert [int(a["image_id"]), int(b["image_id"])] == [0, 1]  # position in the split
    assert b["bounding_boxes"]["boxes"].shape == (0, 4)
    assert ds.report.counts == {"degenerate_box": 1}  # counted while iterating


def test_from_tfds_coco_uses_image_id_and_crowd_flag():
    ex = {
        "image": np.zeros((20, 10, 3), np.uint8),
        "image/filename": "a.jpg",
        "image/id": np.int64(397133),
        "objects": {
            "area": np.asarray([1, 2], np.int64),
            "bbox": np.asarray([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32),
            "id": np.asarray([1, 2], np.int64),
            "is_crowd": np.asarray([True, False]),
            "label": np.asarray([0, 79], np.int64),
        },
    }
    with tfds.testing.mock_data(as_dataset_fn=_fake_tfds([ex])):
        ds = from_tfds("coco/2017", split="validation", download=False)
        (el,) = list(ds)
    assert len(ds.class_names) == 80
    assert int(el["image_id"]) == 397133
    np.testing.assert_allclose(el["bounding_boxes"]["boxes"].numpy(), [[0, 0, 5, 10], [5, 10, 10, 20]])
    np.testing.assert_array_equal(el["bounding_boxes"]["iscrowd"].numpy(), [True, False])
    np.testing.assert_array_equal(el["bounding_boxes"]["classes"].numpy(), [0, 79])


def test_from_tfds_rejects_non_detection_dataset():
    with tfds.testing.mock_data(num_examples=1):
        with pytest.raises(ValueError, match="not a detection dataset"):
            from_tfds("mnist", split="train", download=False)


def test_from_tfds_decodes_encoded_images_as_read_image_does(tmp_path):
    """TFDS images are decoded by the package's reader rules (not TFDS's inexact JPEG IDCT)."""
    from image_helpers import jpeg_bytes

    from ipg_keras.data.image_io import read_image

    pixels = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    data = jpeg_bytes(pixels, quality=85)
    (tmp_path / "x.jpg").write_bytes(data)
    example = _voc_example("x.jpg", 40, 56, [[0.1, 0.1, 0.5, 0.5]], [3], [False])
    example["image"] = data

    def as_dataset(self, *args, decoders=None, **kwargs):
        assert decoders is not None and "image" in decoders  # from_tfds asks for the encoded bytes
        spec = dict(self.info.features.get_tensor_spec())
        spec["image"] = tf.TensorSpec([], tf.string)
        return tf.data.Dataset.from_generator(lambda: iter([example]), output_signature=spec)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        (element,) = list(from_tfds("voc/2007", split="train", download=False))
    np.testing.assert_array_equal(element["images"].numpy(), read_image(tmp_path / "x.jpg").astype(np.float32))
