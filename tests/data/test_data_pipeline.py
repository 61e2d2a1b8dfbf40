"""make_batches / make_eval_batches: shapes, -1 padding, scaling, determinism, caching."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data_helpers import voc_folder  # noqa: F401 (pytest fixture)
from ipg_keras.data import AugmentConfig, from_pascal_voc, make_batches, make_eval_batches, to_original_frame


def _dataset(sizes=((40, 80), (64, 32), (50, 50), (30, 60), (70, 70))):
    """Element dataset: image i has i+1 boxes; image i is h x w, pixel values vary."""
    els = []
    for i, (h, w) in enumerate(sizes):
        boxes = np.asarray([[2 + j, 3, 12 + j, 15] for j in range(i + 1)], np.float32)
        els.append({
            "images": np.full((h, w, 3), 10.0 * (i + 1), np.float32),
            "bounding_boxes": {"boxes": boxes, "classes": np.full(i + 1, i % 3, np.int32)},
            "image_id": np.int64(100 + i),
        })

    def gen():
        yield from els

    spec = {"images": tf.TensorSpec([None, None, 3], tf.float32),
            "bounding_boxes": {"boxes": tf.TensorSpec([None, 4], tf.float32),
                               "classes": tf.TensorSpec([None], tf.int32)},
            "image_id": tf.TensorSpec([], tf.int64)}
    return tf.data.Dataset.from_generator(gen, output_signature=spec), els


def _numpy(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds]


def test_make_batches_shapes_padding_and_scaling():
    ds, els = _dataset()
    batches = _numpy(make_batches(ds, 2, 64))
    assert len(batches) == 3
    (img0, t0), (img1, t1), (img2, t2) = batches
    assert img0.shape == (2, 64, 64, 3) and img2.shape == (1, 64, 64, 3)
    assert t0["boxes"].shape == (2, 2, 4) and t1["boxes"].shape == (2, 4, 4)  # padded per batch
    assert t0["boxes"].dtype == np.float32 and t0["classes"].dtype == np.int32
    # Image 0 is 40x80 -> scale 0.8; its 2nd box slot is padding (-1).
    np.testing.assert_allclose(t0["boxes"][0, 0], np.asarray([2, 3, 12, 15]) * 0.8, rtol=1e-6)
    np.testing.assert_array_equal(t0["boxes"][0, 1], [-1, -1, -1, -1])
    assert t0["classes"][0].tolist() == [0, -1]
    # Image 1 is 64x32: scale 1, resized to 64x32 and padded right with zeros.
    np.testing.assert_allclose(img0[1, :, :32], 20, rtol=1e-5)
    assert np.all(img0[1, :, 32:] == 0)
    # Image 0 (40x80 -> 32x64) padded at the bottom.
    np.testing.assert_allclose(img0[0, :32], 10, rtol=1e-5)
    assert np.all(img0[0, 32:] == 0)


def test_make_batches_static_shapes_for_max_boxes_and_drop_remainder():
    ds, _ = _dataset()
    out = make_batches(ds, 2, 32, max_boxes=3, drop_remainder=True)
    spec = out.element_spec
    assert spec[0].shape.as_list() == [2, 32, 32, 3]
    assert spec[1]["boxes"].shape.as_list() == [2, 3, 4] and spec[1]["classes"].shape.as_list() == [2, 3]
    batches = _numpy(out)
    assert len(batches) == 2
    assert batches[1][1]["classes"][1].tolist() == [0, 0, 0]  # 4 boxes truncated to 3
    # Images 3 and 4 had 4 and 5 boxes (image 4 is cut before drop_remainder drops it).
    assert int(out.truncated_boxes) == 1 + 2


def test_make_batches_augmented_is_deterministic_and_varies_per_epoch():
    ds, _ = _dataset()
    kw = dict(augment=AugmentConfig(scale_range=(0.5, 1.5)), shuffle=True, seed=7)
    a = make_batches(ds, 2, 48, **kw)
    b = make_batches(ds, 2, 48, **kw)
    epoch1, epoch1_again = _numpy(a), _numpy(b)
    for (ia, ta), (ib, tb) in zip(epoch1, epoch1_again):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ta["boxes"], tb["boxes"])
    epoch2 = _numpy(a)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(epoch1, epoch2))
    other = _numpy(make_batches(ds, 2, 48, augment=True, shuffle=True, seed=8))
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(epoch1, other))
    for images, targets in epoch1:
        assert images.shape[1:] == (48, 48, 3)
        valid = targets["classes"] >= 0
        boxes = targets["boxes"][valid]
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        assert boxes.min() >= 0 and boxes.max() <= 48
        np.testing.assert_array_equal(targets["boxes"][~valid], -1)


@pytest.mark.parametrize("cache", [False, True, "file"])
def test_make_batches_cache_reads_upstream_once(tmp_path, cache):
    ds, _ = _dataset()
    calls = []

    def touch(x):
        calls.append(1)
        return np.float32(0)

    def count(e):
        e = dict(e)
        e["images"] = e["images"] + tf.py_function(touch, [e["image_id"]], tf.float32)
        return e

    arg = str(tmp_path / "cache") if cache == "file" else cache
    out = make_batches(ds.map(count), 5, 32, cache=arg)
    first, second = _numpy(out), _numpy(out)
    np.testing.assert_array_equal(first[0][0], second[0][0])
    assert len(calls) == (10 if cache is False else 5)


def test_eval_batches_map_predictions_back_to_original_pixels():
    ds, els = _dataset()
    batches = _numpy(make_eval_batches(ds, 2, 64))
    b0 = batches[0]
    assert b0["images"].shape == (2, 64, 64, 3)
    assert b0["image_id"].tolist() == [100, 101]
    np.testing.assert_allclose(b0["scale"], [0.8, 1.0])
    assert b0["original_size"].tolist() == [[40, 80], [64, 32]]
    # Ground truth stays in original pixels, padded with -1.
    np.testing.assert_array_equal(b0["bounding_boxes"]["boxes"][0, 0], [2, 3, 12, 15])
    np.testing.assert_array_equal(b0["bounding_boxes"]["boxes"][0, 1], [-1, -1, -1, -1])
    # A "prediction" in the network frame (= GT scaled) maps back onto the GT.
    pred = b0["bounding_boxes"]["boxes"] * b0["scale"][:, None, None]
    back = to_original_frame(pred, b0["scale"], b0["original_size"])
    np.testing.assert_allclose(back[0, 0], [2, 3, 12, 15], rtol=1e-6)
    np.testing.assert_allclose(to_original_frame([[80, 0, 200, 64]], 0.8, [40, 80]), [[80, 0, 80, 40]])


def test_eval_batches_keep_flags(voc_folder):
    ds = from_pascal_voc(voc_folder)
    (batch,) = _numpy(make_eval_batches(ds, 2, 32))
    assert batch["bounding_boxes"]["difficult"].tolist() == [[False, True], [False, False]]
    assert batch["bounding_boxes"]["classes"].tolist() == [[0, 1], [1, -1]]


def test_make_batches_argument_errors():
    ds, _ = _dataset()
    with pytest.raises(ValueError, match="positive"):
        make_batches(ds, 0, 32)
    with pytest.raises(TypeError, match="AugmentConfig"):
        make_batches(ds, 2, 32, augment="yes")
    with pytest.raises(ValueError, match="cache"):
        make_batches(ds, 2, 32, cache=3)
