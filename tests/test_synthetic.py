"""The synthetic dataset: deterministic, split-separated, in spec, with tight boxes."""

import numpy as np
import pytest
import tensorflow as tf

from ipg_keras.data.synthetic import CLASS_NAMES, synthetic_dataset, synthetic_example

SMALL = dict(image_size=96, max_size=40.0, min_size=6.0)


def _elements(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), el) for el in ds]


def test_element_spec_matches_conventions():
    ds = synthetic_dataset("val", num_images=2, **SMALL)
    spec = ds.element_spec
    assert spec["images"] == tf.TensorSpec([96, 96, 3], tf.float32)
    assert spec["bounding_boxes"]["boxes"] == tf.TensorSpec([None, 4], tf.float32)
    assert spec["bounding_boxes"]["classes"] == tf.TensorSpec([None], tf.int32)
    assert spec["image_id"] == tf.TensorSpec([], tf.int64)
    els = _elements(ds)
    assert [int(e["image_id"]) for e in els] == [0, 1]
    for e in els:
        assert 0.0 <= e["images"].min() and e["images"].max() <= 255.0
        assert len(e["bounding_boxes"]["boxes"]) == len(e["bounding_boxes"]["classes"])


def test_default_sizes_and_class_names():
    assert synthetic_dataset("train").cardinality().numpy() == 2000
    assert synthetic_dataset("val").cardinality().numpy() == 200
    assert len(CLASS_NAMES) == len(set(CLASS_NAMES)) >= 4


def test_deterministic_and_random_access_matches_dataset():
    a = _elements(synthetic_dataset("train", num_images=4, seed=3, **SMALL))
    b = _elements(synthetic_dataset("train", num_images=4, seed=3, **SMALL))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["images"], y["images"])
        np.testing.assert_array_equal(x["bounding_boxes"]["boxes"], y["bounding_boxes"]["boxes"])
        np.testing.assert_array_equal(x["bounding_boxes"]["classes"], y["bounding_boxes"]["classes"])
    # The parallel map keeps order: element i is exactly image i.
    ex = synthetic_example(2, "train", seed=3, **SMALL)
    np.testing.assert_array_equal(a[2]["images"], ex["image"].astype(np.float32))
    np.testing.assert_array_equal(a[2]["bounding_boxes"]["boxes"], ex["boxes"])


def test_splits_and_seeds_differ():
    train = synthetic_example(0, "train", **SMALL)["image"]
    val = synthetic_example(0, "val", **SMALL)["image"]
    other_seed = synthetic_example(0, "train", seed=1, **SMALL)["image"]
    assert np.abs(train.astype(int) - val.astype(int)).mean() > 5
    assert np.abs(train.astype(int) - other_seed.astype(int)).mean() > 5
    with pytest.raises(ValueError, match="split"):
        synthetic_dataset("training")


def test_boxes_inside_image_sizes_in_range_classes_valid():
    size, lo, hi = 128, 6.0, 48.0
    sides, counts = [], []
    for i in range(40):
        ex = synthetic_example(i, "train", image_size=size, min_size=lo, max_size=hi)
        boxes, classes = ex["boxes"], ex["classes"]
        counts.append(len(boxes))
        assert boxes.dtype == np.float32 and classes.dtype == np.int32
        assert ((classes >= 0) & (classes < len(CLASS_NAMES))).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= size).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        sides.extend(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
    sides = np.array(sides)
    assert sides.max() <= hi + 1  # pixel rounding of the tight box adds at most 1 px
    assert (sides >= lo - 1).mean() > 0.95  # only occluded objects may be smaller
    # Log-uniform sizes: about half below the geometric mean of the range.
    assert 0.3 < (sides < np.sqrt(lo * hi)).mean() < 0.7
    assert np.mean(counts) > 3 and max(counts) <= 12


def _edge_strength(diff, box):
    x1, y1, x2, y2 = box.astype(int)
    return (diff[y1, x1:x2].max(), diff[y2 - 1, x1:x2].max(),
            diff[y1:y2, x1].max(), diff[y1:y2, x2 - 1].max())


def test_boxes_are_tight_around_the_object_pixels():
    """Single objects: every pixel the object changed lies in the box (plus a 1-px
    anti-aliasing fringe), and each of the four box edges runs through object pixels."""
    checked = 0
    for i in range(30):
        ex = synthetic_example(i, "val", image_size=96, max_size=40.0, max_objects=1,
                               return_background=True)
        if len(ex["boxes"]) == 0:
            continue
        diff = np.abs(ex["image"].astype(int) - ex["background"].astype(int)).sum(axis=-1)
        x1, y1, x2, y2 = ex["boxes"][0].astype(int)
        fringe = np.zeros_like(diff, dtype=bool)
        fringe[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1] = True
        assert diff[~fringe].max(initial=0) == 0, f"image {i}: object pixels outside its box"
        assert min(_edge_strength(diff, ex["boxes"][0])) > 30, f"image {i}: loose box edge"
        checked += 1
    assert checked >= 25


def test_boxes_are_tight_with_occlusion_and_many_objects():
    edges = []
    for i in range(10):
        ex = synthetic_example(i, "train", image_size=128, max_size=48.0, return_background=True)
        diff = np.abs(ex["image"].astype(int) - ex["background"].astype(int)).sum(axis=-1)
        edges.extend(min(_edge_strength(diff, box)) for box in ex["boxes"])
    assert len(edges) > 30
    assert (np.array(edges) > 30).mean() > 0.97
