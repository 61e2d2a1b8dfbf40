"""Augmentation keeps boxes on their objects: boxes are drawn as filled masks into
the image, image + boxes are augmented, and the mask pixels must still sit inside
the transformed boxes (and fill them)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data_helpers import render_masks
from ipg_keras.data import (
    AugmentConfig,
    augment_element,
    color_jitter,
    copy_paste,
    random_blur,
    random_crop,
    random_flip,
    random_rotate90,
    resize_and_pad,
    rotate90,
    scale_jitter,
)

BOXES = np.asarray([[6, 4, 22, 16], [40, 30, 70, 52], [75, 2, 95, 12], [10, 40, 30, 58]], np.float32)
H, W = 60, 100


def _element():
    return {
        "images": tf.constant(render_masks(BOXES, H, W)),
        "bounding_boxes": {"boxes": tf.constant(BOXES), "classes": tf.range(len(BOXES), dtype=tf.int32),
                           "difficult": tf.constant([False, True, False, True])},
        "image_id": tf.constant(0, tf.int64),
    }


def _seed(i):
    return tf.constant([i, 1234], tf.int64)


def check_masks_follow_boxes(out, tol=1.0, fill=0.95, min_visible=None, scale=1.0):
    """Object k (class k, mask value (200, 40(k+1))): its pure mask pixels lie in its box (+tol px)
    and fill the box's interior; objects whose box was dropped show less than
    min_visible of their (scaled) area."""
    img = out["images"].numpy()
    boxes = out["bounding_boxes"]["boxes"].numpy()
    classes = out["bounding_boxes"]["classes"].numpy()
    flags = out["bounding_boxes"]["difficult"].numpy()
    np.testing.assert_array_equal(flags, np.isin(classes, [1, 3]))  # flags followed their boxes
    ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    whole = np.abs(img[..., 0] - 200.0) < 0.5
    for k in range(len(BOXES)):
        pure = whole & (np.abs(img[..., 1] - 40.0 * (k + 1)) < 0.5)
        if k in classes:
            x1, y1, x2, y2 = boxes[list(classes).index(k)]
            assert pure.any(), f"object {k} has a box but no pixels"
            # Pixel (x, y) covers [x, x+1): its centre x + 0.5 must be inside the box.
            inside = (xs + 0.5 >= x1 - tol) & (xs + 0.5 <= x2 + tol) & (ys + 0.5 >= y1 - tol) & (ys + 0.5 <= y2 + tol)
            assert inside[pure].all(), f"object {k}: mask pixels outside its box {boxes}"
            core = (xs + 0.5 >= x1 + 1.5) & (xs + 0.5 <= x2 - 1.5) & (ys + 0.5 >= y1 + 1.5) & (ys + 0.5 <= y2 - 1.5)
            if core.sum() > 4:
                assert pure[core].mean() >= fill, f"object {k}: box {boxes} not filled by its mask"
        elif min_visible is not None:
            w, h = BOXES[k, 2] - BOXES[k, 0], BOXES[k, 3] - BOXES[k, 1]
            assert pure.sum() < (min_visible + 0.1) * w * h * scale * scale + 4, f"object {k} dropped while visible"


def test_keras_random_flip_moves_boxes_with_the_image():
    el = _element()
    for mode in ("horizontal", "vertical"):
        out = random_flip(el, _seed(0), probability=1.0, mode=mode)
        img = out["images"].numpy()
        expected = np.flip(el["images"].numpy(), axis=1 if mode == "horizontal" else 0)
        np.testing.assert_array_equal(img, expected)
        # Exact: re-drawing the flipped boxes gives the flipped image.
        boxes = out["bounding_boxes"]["boxes"].numpy()
        np.testing.assert_allclose(render_masks(np.round(boxes), H, W), img)
        np.testing.assert_allclose(boxes, np.round(boxes), atol=1e-3)
        check_masks_follow_boxes(out, tol=0.0, fill=1.0)
    same = random_flip(el, _seed(0), probability=0.0)
    np.testing.assert_array_equal(same["images"].numpy(), el["images"].numpy())
    np.testing.assert_array_equal(same["bounding_boxes"]["boxes"].numpy(), BOXES)


def test_random_flip_probability_half_is_consistent_and_seeded():
    el = _element()
    flipped = []
    for i in range(12):
        out = random_flip(el, _seed(i), probability=0.5)
        check_masks_follow_boxes(out, tol=0.0, fill=1.0)
        flipped.append(not np.array_equal(out["images"].numpy(), el["images"].numpy()))
        again = random_flip(el, _seed(i), probability=0.5)
        np.testing.assert_array_equal(again["images"].numpy(), out["images"].numpy())
    assert 0 < sum(flipped) < 12


@pytest.mark.parametrize("seed", range(6))
def test_scale_jitter_keeps_masks_in_boxes(seed):
    out = scale_jitter(_element(), _seed(seed), 64, scale_range=(0.5, 2.0), min_visible=0.3)
    assert out["images"].shape == (64, 64, 3)
    check_masks_follow_boxes(out, tol=1.0, fill=0.9)


@pytest.mark.parametrize("seed", range(6))
def test_random_crop_keeps_masks_in_boxes(seed):
    out = random_crop(_element(), _seed(seed), area_range=(0.2, 0.6), min_visible=0.4)
    check_masks_follow_boxes(out, tol=0.0, fill=1.0, min_visible=0.4)


@pytest.mark.parametrize("seed", range(4))
def test_full_augmentation_geometry(seed):
    config = AugmentConfig(horizontal_flip=0.5, vertical_flip=0.5, rotate90=0.75, scale_range=(0.6, 1.6),
                           crop_probability=0.5,
                           brightness=0, contrast=0, saturation=0, hue=0, min_visible=0.3)
    out = augment_element(_element(), _seed(seed), 96, config)
    assert out["images"].shape == (96, 96, 3)
    check_masks_follow_boxes(out, tol=1.0, fill=0.9)


def test_augmentation_is_deterministic_per_seed():
    el = _element()
    a = augment_element(el, _seed(5), 64)
    b = augment_element(el, _seed(5), 64)
    c = augment_element(el, _seed(6), 64)
    np.testing.assert_array_equal(a["images"].numpy(), b["images"].numpy())
    np.testing.assert_array_equal(a["bounding_boxes"]["boxes"].numpy(), b["bounding_boxes"]["boxes"].numpy())
    assert not np.array_equal(a["images"].numpy(), c["images"].numpy())


def test_color_jitter_changes_colours_only():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.uniform(30, 220, (32, 32, 3)).astype(np.float32))
    out = color_jitter(image, _seed(1), brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02).numpy()
    assert out.shape == (32, 32, 3) and out.min() >= 0 and out.max() <= 255
    diff = np.abs(out - image.numpy())
    assert 0 < diff.mean() < 40  # light jitter, not a different image
    np.testing.assert_array_equal(out, color_jitter(image, _seed(1)).numpy())
    # Boxes are untouched by colour: no scale, no flip, colour only.
    config = AugmentConfig(horizontal_flip=0, scale_range=(1.0, 1.0))
    el = _element()
    out_el = augment_element(el, _seed(2), 100, config)
    resized, s = resize_and_pad(el, 100)
    np.testing.assert_allclose(out_el["bounding_boxes"]["boxes"].numpy(),
                               resized["bounding_boxes"]["boxes"].numpy(), atol=1e-4)


def test_channel_gain_scales_each_channel_by_its_own_factor():
    image = tf.fill([8, 8, 3], 100.0)
    out = color_jitter(image, _seed(4), brightness=0, contrast=0, saturation=0, hue=0, channel_gain=0.2).numpy()
    gains = out[0, 0] / 100.0
    np.testing.assert_allclose(out, np.broadcast_to(gains * 100.0, out.shape), rtol=1e-6)  # uniform per channel
    assert np.all(np.abs(gains - 1) <= 0.2) and len(set(np.round(gains, 4))) == 3
    # Off by default, and switching it on leaves the other draws as they were (its own seed).
    rng = np.random.default_rng(1)
    grey = tf.constant(np.repeat(rng.uniform(30, 220, (16, 16, 1)), 3, axis=-1).astype(np.float32))
    base = color_jitter(grey, _seed(3), saturation=0, hue=0).numpy()
    with_gain = color_jitter(grey, _seed(3), saturation=0, hue=0, channel_gain=1e-6).numpy()
    np.testing.assert_allclose(with_gain, base, atol=1e-2)


def _laplacian_energy(image: np.ndarray) -> float:
    g = image.mean(-1)
    return float(np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]).mean())


def test_random_blur_softens_the_image_only_and_is_seeded():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.uniform(0, 255, (40, 48, 3)).astype(np.float32))
    out = random_blur(image, _seed(1), probability=1.0, sigma_range=(1.0, 1.0)).numpy()
    assert out.shape == (40, 48, 3)
    # A Gaussian of sigma 1 keeps the mean (reflect padding: no dark rim at the border) and removes most of
    # the high-frequency energy of noise; the same seed gives the same image.
    assert abs(out.mean() - image.numpy().mean()) < 1.0 and abs(out[0].mean() - image.numpy()[0].mean()) < 8.0
    assert _laplacian_energy(out) < 0.3 * _laplacian_energy(image.numpy())
    np.testing.assert_array_equal(out, random_blur(image, _seed(1), 1.0, (1.0, 1.0)).numpy())
    # A flat image stays flat, to the border.
    flat = random_blur(tf.fill([20, 20, 3], 77.0), _seed(2), 1.0, (0.5, 1.5)).numpy()
    np.testing.assert_allclose(flat, 77.0, atol=1e-3)
    # Probability 0 is the identity; with 0.5 both outcomes occur over seeds.
    np.testing.assert_array_equal(random_blur(image, _seed(3), 0.0).numpy(), image.numpy())
    blurred = [not np.array_equal(random_blur(image, _seed(s), 0.5).numpy(), image.numpy()) for s in range(16)]
    assert 0 < sum(blurred) < 16
    # In the full augmentation boxes do not move, and the other draws stay as without blur (own seed).
    el = _element()
    plain = augment_element(el, _seed(4), 64, AugmentConfig(rotate90=0.75, vertical_flip=0.5))
    soft = augment_element(el, _seed(4), 64, AugmentConfig(rotate90=0.75, vertical_flip=0.5, blur=1.0,
                                                            blur_sigma=(1.0, 1.5)))
    np.testing.assert_array_equal(soft["bounding_boxes"]["boxes"].numpy(), plain["bounding_boxes"]["boxes"].numpy())
    assert _laplacian_energy(soft["images"].numpy()) < _laplacian_energy(plain["images"].numpy())
    with pytest.raises(ValueError, match="blur_sigma"):
        AugmentConfig(blur=0.5, blur_sigma=(2.0, 1.0))
    with pytest.raises(ValueError, match="blur"):
        AugmentConfig(blur=1.5)


def test_resize_and_pad_scales_boxes_and_pads_bottom_right():
    el = _element()
    out, s = resize_and_pad(el, 50)
    assert float(s) == pytest.approx(0.5)
    img = out["images"].numpy()
    assert img.shape == (50, 50, 3) and np.all(img[30:] == 0)
    np.testing.assert_allclose(out["bounding_boxes"]["boxes"].numpy(), BOXES * 0.5)
    check_masks_follow_boxes(out, tol=1.0, fill=0.8)


def test_augment_config_validation():
    with pytest.raises(ValueError, match="horizontal_flip"):
        AugmentConfig(horizontal_flip=1.5)
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(2.0, 1.0))


@pytest.mark.parametrize("k", range(4))
def test_rotate90_of_a_non_square_image_moves_boxes_exactly(k):
    el = _element()  # 60 high, 100 wide
    out = rotate90(el, k)
    img = out["images"].numpy()
    np.testing.assert_array_equal(img, np.rot90(el["images"].numpy(), k))  # counter-clockwise, as tf/numpy
    assert img.shape == ((H, W, 3) if k % 2 == 0 else (W, H, 3))
    boxes = out["bounding_boxes"]["boxes"].numpy()
    # Exact: drawing the turned boxes on a blank image of the turned size gives the turned image.
    np.testing.assert_allclose(boxes, np.round(boxes), atol=1e-4)
    np.testing.assert_array_equal(render_masks(np.round(boxes), img.shape[0], img.shape[1]), img)
    np.testing.assert_array_equal(out["bounding_boxes"]["classes"].numpy(), np.arange(len(BOXES)))
    check_masks_follow_boxes(out, tol=0.0, fill=1.0)
    if k == 1:  # one quarter turn: (x1, y1, x2, y2) -> (y1, W - x2, y2, W - x1)
        np.testing.assert_allclose(boxes[0], [4, W - 22, 16, W - 6])


def test_random_rotate90_draws_all_turns_and_is_seeded():
    el = _element()
    turns = []
    for i in range(24):
        out = random_rotate90(el, _seed(i), probability=0.75)
        check_masks_follow_boxes(out, tol=0.0, fill=1.0)
        img = out["images"].numpy()
        turn = [k for k in range(4) if img.shape == np.rot90(el["images"].numpy(), k).shape
                and np.array_equal(img, np.rot90(el["images"].numpy(), k))]
        assert len(turn) == 1
        turns.append(turn[0])
        np.testing.assert_array_equal(random_rotate90(el, _seed(i), 0.75)["images"].numpy(), img)
    assert set(turns) == {0, 1, 2, 3}
    for i in range(3):  # probability 0: never turned
        np.testing.assert_array_equal(random_rotate90(el, _seed(i), 0.0)["images"].numpy(), el["images"].numpy())


def test_augmented_batch_matches_the_transformed_ground_truth(tmp_path):
    """One batch of make_batches with every geometric augmentation for overhead imagery on (flips on both
    axes, 90° turns, scale jitter): every box of the batch is drawn as its mask, and each mask lies in
    (and fills) its box. The batch is also drawn to a PNG with the boxes, for a human look."""
    from ipg_keras.data import make_batches
    from ipg_keras.visualization import save_detection_grid

    config = AugmentConfig(horizontal_flip=0.5, vertical_flip=0.5, rotate90=0.75, scale_range=(0.7, 1.4),
                           brightness=0, contrast=0, saturation=0, hue=0, min_visible=0.3)
    el = _element()
    ds = tf.data.Dataset.from_tensors(el).repeat(8)
    images, targets = next(iter(make_batches(ds, 8, 96, augment=config, seed=3)))
    orientations = set()
    for i in range(8):
        keep = targets["classes"][i].numpy() >= 0
        classes = targets["classes"][i].numpy()[keep]
        out = {"images": images[i], "bounding_boxes": {
            "boxes": tf.constant(targets["boxes"][i].numpy()[keep]), "classes": tf.constant(classes),
            "difficult": tf.constant(np.isin(classes, [1, 3]))}}
        check_masks_follow_boxes(out, tol=1.0, fill=0.9)
        if {0, 1} <= set(classes):  # where object 1 lies relative to object 0 tells the orientation
            b = targets["boxes"][i].numpy()
            c0, c1 = b[list(classes).index(0)], b[list(classes).index(1)]
            orientations.add((np.sign(c1[0] - c0[0]), np.sign(c1[1] - c0[1]), (c1[2] - c1[0]) > (c1[3] - c1[1])))
    assert len(orientations) >= 3  # the batch really holds different flips / turns
    path = save_detection_grid(images.numpy(), None, tmp_path / "batch.png", class_names=None,
                               ground_truths={k: v.numpy() for k, v in targets.items()})
    assert path.stat().st_size > 0


def _overlap(a, b):
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def test_copy_paste_copies_objects_onto_background_with_their_boxes():
    """Each copy's pixels are its source object's pixels, its box the source box moved by the same whole-pixel
    offset, its per-box keys the source's; copies hide no object and no other copy; nothing else changes."""
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (H, W, 3)).astype(np.float32)
    boxes = np.asarray([[6.4, 4.5, 22.2, 16.0], [40, 30, 70, 52], [75, 0, 95, 12]], np.float32)  # the last one
    # touches the top border: a cut-off object, never copied
    el = {"images": tf.constant(image),
          "bounding_boxes": {"boxes": tf.constant(boxes), "classes": tf.constant([0, 1, 2], tf.int32),
                             "difficult": tf.constant([False, True, False])}}
    pasted_somewhere = 0
    graph_paste = tf.function(copy_paste)  # as in a tf.data map
    for seed in range(6):
        out = graph_paste(el, _seed(seed), 1.0, 16)
        img = out["images"].numpy()
        b = out["bounding_boxes"]["boxes"].numpy()
        c = out["bounding_boxes"]["classes"].numpy()
        d = out["bounding_boxes"]["difficult"].numpy()
        np.testing.assert_array_equal(b[:3], boxes)  # the objects stay, in order
        np.testing.assert_array_equal(c[:3], [0, 1, 2])
        changed = np.zeros((H, W), bool)
        for k in range(3, len(b)):
            src = boxes[c[k]]
            assert c[k] != 2, "the border object was copied"
            assert d[k] == (c[k] == 1)  # flags follow their source
            shift = b[k, :2] - src[:2]
            np.testing.assert_allclose(shift, np.round(shift), atol=1e-4)  # whole pixels
            np.testing.assert_allclose(b[k, 2:] - src[2:], shift, atol=1e-4)
            sx, sy = int(np.floor(src[0])), int(np.floor(src[1]))
            ex, ey = int(np.ceil(src[2])), int(np.ceil(src[3]))
            tx, ty = sx + int(round(shift[0])), sy + int(round(shift[1]))
            np.testing.assert_array_equal(img[ty:ty + ey - sy, tx:tx + ex - sx], image[sy:ey, sx:ex])
            changed[ty:ty + ey - sy, tx:tx + ex - sx] = True
            rect = [tx, ty, tx + ex - sx, ty + ey - sy]
            assert all(_overlap(rect, o) == 0 for o in boxes), "a copy covers an object"
            assert all(_overlap(b[k], b[j]) == 0 for j in range(3, k)), "two copies stack"
        np.testing.assert_array_equal(img[~changed], image[~changed])  # nothing else moved
        pasted_somewhere += len(b) > 3
    assert pasted_somewhere >= 4  # most windows get copies (the 60 x 100 image has room for a few)
    # Seeded; probability 0 and a window without objects are the identity.
    again = copy_paste(el, _seed(3), 1.0, 16)
    np.testing.assert_array_equal(again["images"].numpy(), graph_paste(el, _seed(3), 1.0, 16)["images"])
    np.testing.assert_array_equal(copy_paste(el, _seed(3), 0.0, 6)["images"].numpy(), image)
    empty = {"images": tf.constant(image), "bounding_boxes": {"boxes": tf.zeros([0, 4]),
                                                              "classes": tf.zeros([0], tf.int32)}}
    out = copy_paste(empty, _seed(1), 1.0, 6)
    assert out["bounding_boxes"]["boxes"].shape[0] == 0
    np.testing.assert_array_equal(out["images"].numpy(), image)


def test_copy_paste_in_the_full_augmentation_adds_boxes_and_keeps_the_other_draws():
    el = _element()
    plain = augment_element(el, _seed(4), 96, AugmentConfig(rotate90=0.75, vertical_flip=0.5))
    paste = augment_element(el, _seed(4), 96, AugmentConfig(rotate90=0.75, vertical_flip=0.5, copy_paste=1.0,
                                                             copy_paste_count=16))
    n = plain["bounding_boxes"]["boxes"].shape[0]
    np.testing.assert_array_equal(paste["bounding_boxes"]["boxes"].numpy()[:n],
                                  plain["bounding_boxes"]["boxes"].numpy())
    assert paste["bounding_boxes"]["boxes"].shape[0] > n
    assert paste["images"].shape == (96, 96, 3)
    with pytest.raises(ValueError, match="copy_paste_count"):
        AugmentConfig(copy_paste=0.5, copy_paste_count=0)
    with pytest.raises(ValueError, match="copy_paste"):
        AugmentConfig(copy_paste=2.0)
