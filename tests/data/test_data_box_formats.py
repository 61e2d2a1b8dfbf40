"""`bounding_box_format=` of the loaders and make_batches: emitted boxes, padding, chaining, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data_helpers import coco_files, voc_folder  # noqa: F401 (pytest fixtures)
from ipg_keras.data import from_coco_json, from_pascal_voc, from_tfds, make_batches, synthetic_dataset


def _elements(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), e) for e in ds]


def _hand_dataset(boxes_by_image):
    """Elements with blank images of the given (height, width) and the given boxes (any format)."""
    def gen():
        for i, ((h, w), boxes) in enumerate(boxes_by_image):
            yield {"images": np.zeros((h, w, 3), np.float32),
                   "bounding_boxes": {"boxes": np.float32(boxes).reshape(-1, 4),
                                      "classes": np.arange(len(boxes), dtype=np.int32)},
                   "image_id": np.int64(i)}

    spec = {"images": tf.TensorSpec([None, None, 3], tf.float32),
            "bounding_boxes": {"boxes": tf.TensorSpec([None, 4], tf.float32),
                               "classes": tf.TensorSpec([None], tf.int32)},
            "image_id": tf.TensorSpec([], tf.int64)}
    return tf.data.Dataset.from_generator(gen, output_signature=spec)


def test_voc_emits_center_xywh(voc_folder):
    a, b = _elements(from_pascal_voc(voc_folder, bounding_box_format="center_xywh"))
    # xyxy (4, 5, 20, 30), (30, 10, 60, 40) and (1, 2, 11, 12), as center x, center y, width, height.
    np.testing.assert_allclose(a["bounding_boxes"]["boxes"], [[12, 17.5, 16, 25], [45, 25, 30, 30]])
    np.testing.assert_allclose(b["bounding_boxes"]["boxes"], [[6, 7, 10, 10]])
    np.testing.assert_array_equal(a["bounding_boxes"]["difficult"], [False, True])  # other keys kept
    np.testing.assert_array_equal(a["bounding_boxes"]["classes"], [0, 1])


def test_coco_emits_rel_xywh_relative_to_each_image(coco_files):
    ann, img_dir = coco_files
    ds = from_coco_json(ann, img_dir, bounding_box_format="rel_xywh")
    assert ds.class_names == ["car", "bus", "truck"]  # loader attributes survive the conversion
    els = {int(e["image_id"]): e for e in _elements(ds)}
    # Image 101 is 50 wide x 40 high: COCO [2, 3, 10, 20] and [20, 5, 25, 30].
    np.testing.assert_allclose(els[101]["bounding_boxes"]["boxes"], [[0.04, 0.075, 0.2, 0.5], [0.4, 0.125, 0.5, 0.75]],
                               rtol=1e-6)
    np.testing.assert_allclose(els[205]["bounding_boxes"]["boxes"], [[0, 0, 1, 1]])  # the whole 30 x 20 image
    assert els[309]["bounding_boxes"]["boxes"].shape == (0, 4)  # no boxes: still none


def test_tfds_rel_yxyx_gives_back_tfds_own_boxes():
    bbox = np.float32([[0.1, 0.25, 0.5, 0.75], [0.0, 0.0, 1.0, 1.0]])
    example = {
        "image": np.full((100, 200, 3), 7, np.uint8), "image/filename": "000005.jpg",
        "labels": np.int64([14, 8]), "labels_no_difficult": np.int64([14, 8]),
        "objects": {"bbox": bbox, "label": np.int64([14, 8]), "is_difficult": np.array([False, True]),
                    "is_truncated": np.zeros(2, bool), "pose": np.zeros(2, np.int64)},
    }

    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_generator(lambda: iter([example]),
                                              output_signature=self.info.features.get_tensor_spec())

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        (rel,) = _elements(from_tfds("voc/2007", download=False, bounding_box_format="rel_yxyx"))
        (xywh,) = _elements(from_tfds("voc/2007", download=False, bounding_box_format="xywh"))
    np.testing.assert_allclose(rel["bounding_boxes"]["boxes"], bbox, rtol=1e-6)
    np.testing.assert_allclose(xywh["bounding_boxes"]["boxes"], [[50, 10, 100, 40], [0, 0, 200, 100]], rtol=1e-6)
    np.testing.assert_array_equal(rel["bounding_boxes"]["difficult"], [False, True])


def test_synthetic_emits_center_xywh():
    xyxy = _elements(synthetic_dataset("val", num_images=2, image_size=64, max_size=32))
    center = _elements(synthetic_dataset("val", num_images=2, image_size=64, max_size=32,
                                        bounding_box_format="center_xywh"))
    for a, b in zip(xyxy, center):
        x1, y1, x2, y2 = a["bounding_boxes"]["boxes"].T
        assert len(x1) > 0
        np.testing.assert_allclose(b["bounding_boxes"]["boxes"],
                                   np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1), rtol=1e-6)
        np.testing.assert_array_equal(b["images"], a["images"])
        np.testing.assert_array_equal(b["bounding_boxes"]["classes"], a["bounding_boxes"]["classes"])


def test_make_batches_rel_yxyx_in_and_out_with_padding():
    """rel_ elements are relative to their own image; rel_ batches to the S x S batch image."""
    ds = _hand_dataset([
        ((40, 80), [[0.1, 0.1, 0.5, 0.5]]),  # xyxy (8, 4, 40, 20); resized by 0.8 to fit 64
        ((64, 32), [[0.0, 0.0, 1.0, 1.0], [0.25, 0.25, 0.5, 0.75]]),  # xyxy (0, 0, 32, 64), (8, 16, 24, 32)
    ])
    (images, targets), = list(make_batches(ds, 2, 64, bounding_box_format="rel_yxyx"))
    assert images.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(targets["boxes"].numpy(), [
        [[0.05, 0.1, 0.25, 0.5], [-1, -1, -1, -1]],  # padding stays -1
        [[0.0, 0.0, 1.0, 0.5], [0.25, 0.125, 0.5, 0.375]],
    ], rtol=1e-6, atol=1e-7)
    assert targets["classes"].numpy().tolist() == [[0, -1], [0, 1]]
    # max_boxes padding too.
    (_, fixed), = list(make_batches(ds, 2, 64, bounding_box_format="rel_yxyx", max_boxes=3))
    np.testing.assert_array_equal(fixed["boxes"].numpy()[0, 1:], -1)
    np.testing.assert_array_equal(fixed["boxes"].numpy()[1, 2], -1)


def test_make_batches_augmented_xywh_matches_xyxy():
    ds = synthetic_dataset("train", num_images=4, image_size=80)
    ds_xywh = synthetic_dataset("train", num_images=4, image_size=80, bounding_box_format="xywh")
    kw = dict(augment=True, shuffle=True, seed=5)
    batches = make_batches(ds_xywh, 2, 64, bounding_box_format="xywh", **kw)
    for (xa, ya), (xb, yb) in zip(make_batches(ds, 2, 64, **kw), batches):
        np.testing.assert_array_equal(xb.numpy(), xa.numpy())
        np.testing.assert_array_equal(yb["classes"].numpy(), ya["classes"].numpy())
        a, b = ya["boxes"].numpy(), yb["boxes"].numpy()
        valid = ya["classes"].numpy() >= 0
        assert valid.any()
        np.testing.assert_allclose(b[valid], np.concatenate([a[valid][:, :2], a[valid][:, 2:] - a[valid][:, :2]], -1),
                                   atol=1e-4)
        np.testing.assert_array_equal(b[~valid], -1)


def test_unknown_format_is_refused_before_any_reading(tmp_path):
    missing = tmp_path / "missing"  # would be a different error if the loader read it first
    for call in (
        lambda: from_pascal_voc(missing, bounding_box_format="ltrb"),
        lambda: from_coco_json(missing / "a.json", missing, bounding_box_format="ltrb"),
        lambda: from_tfds("no_such_dataset", bounding_box_format="ltrb"),
        lambda: synthetic_dataset(num_images=1, bounding_box_format="ltrb"),
        lambda: make_batches(synthetic_dataset(num_images=1), 1, 32, bounding_box_format="ltrb"),
    ):
        with pytest.raises(ValueError, match="Unknown bounding_box_format 'ltrb'; choose one of xyxy, .*rel_yxyx"):
            call()
