"""Tiling large images for training: grid, box clipping / visibility, and the tree data."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data_helpers import trees  # noqa: F401 (pytest fixture)
from ipg_keras.data import (
    TILE_ID_STRIDE, cut_tile, from_pascal_voc, random_tile, random_tiles, tile_dataset, tile_grid, tile_starts,
)


def _element(h, w, boxes, classes=None, flags=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    bb = {"boxes": tf.constant(boxes),
          "classes": tf.constant(classes if classes is not None else np.arange(len(boxes)), tf.int32)}
    if flags is not None:
        bb["difficult"] = tf.constant(flags, tf.bool)
    image = tf.reshape(tf.range(h * w * 3, dtype=tf.float32) % 251.0, [h, w, 3])
    return {"images": image, "bounding_boxes": bb, "image_id": tf.constant(3, tf.int64)}


def test_tile_starts_cover_axis_and_end_at_border():
    assert tile_starts(100, 100, 10) == [0]
    assert tile_starts(50, 100, 10) == [0]
    assert tile_starts(1000, 400, 100) == [0, 300, 600]
    starts = tile_starts(1001, 400, 100)
    assert starts == [0, 300, 600, 601]  # last tile moved back to end at the border
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 50, 50)


@pytest.mark.parametrize("h,w,tile,overlap", [(2472, 2299, 400, 128), (1035, 1249, 512, 64), (30, 700, 256, 0)])
def test_tile_grid_covers_every_pixel_with_the_overlap(h, w, tile, overlap):
    grid = tile_grid(h, w, tile, overlap)
    covered = np.zeros((h, w), np.int32)
    for x1, y1, x2, y2 in grid:
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert x2 - x1 == min(tile, w) and y2 - y1 == min(tile, h)
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1
    if w > tile:  # neighbours along x share at least `overlap` columns
        xs = sorted({int(g[0]) for g in grid})
        assert all(b - a <= tile - overlap for a, b in zip(xs, xs[1:]))


def test_tile_dataset_clips_boxes_and_applies_min_visible():
    # 100x100 image, tiles of 60 with overlap 20 -> starts 0 and 40 on each axis, 4 tiles.
    boxes = [[10, 10, 20, 20],   # only in tile (0, 0)
             [50, 5, 70, 15],    # straddles x=60: tile 0 sees x 50..60 (50%), tile 1 sees all
             [30, 30, 48, 48],   # in tile 0 fully; tile x=40 sees 8/18 of width (44%)
             ]
    el = _element(100, 100, boxes, flags=[False, True, False])
    tiles = list(tile_dataset(tf.data.Dataset.from_tensors(el), 60, 20, min_visible=0.5))
    assert len(tiles) == 4
    ids = [int(t["image_id"]) for t in tiles]
    assert ids == [3 * TILE_ID_STRIDE + i for i in range(4)]
    grid = tile_grid(100, 100, 60, 20)
    got = {}
    for t, (x1, y1, _, _) in zip(tiles, grid):
        assert t["images"].shape == (60, 60, 3)
        np.testing.assert_array_equal(t["images"].numpy(), el["images"].numpy()[y1:y1 + 60, x1:x1 + 60])
        got[(int(x1), int(y1))] = (t["bounding_boxes"]["boxes"].numpy().tolist(),
                                   t["bounding_boxes"]["classes"].numpy().tolist(),
                                   t["bounding_boxes"]["difficult"].numpy().tolist())
    assert got[(0, 0)] == ([[10, 10, 20, 20], [50, 5, 60, 15], [30, 30, 48, 48]], [0, 1, 2], [False, True, False])
    assert got[(40, 0)] == ([[10, 5, 30, 15]], [1], [True])  # box 2 is 44% visible: dropped
    assert got[(0, 40)] == ([], [], [])
    assert got[(40, 40)] == ([], [], [])


def test_cut_tile_gives_the_window_pixels_and_zero_pads_short_windows():
    image = np.arange(30 * 50 * 3, dtype=np.float32).reshape(30, 50, 3)
    grid = tile_grid(30, 50, 40, 10)  # 50 wide: two windows along x; 30 high: one window shorter than a tile
    assert grid.tolist() == [[0, 0, 40, 30], [10, 0, 50, 30]]
    for window in grid:
        x1, y1, x2, y2 = (int(v) for v in window)
        tile = cut_tile(image, window, 40)
        assert tile.shape == (40, 40, 3) and tile.dtype == np.float32
        np.testing.assert_array_equal(tile[:30], image[y1:y2, x1:x2])
        assert not tile[30:].any()  # bottom rows beyond the image are zeros
    # The same pixels as the training tiler's padded tiles.
    el = _element(30, 50, [[1, 1, 5, 5]])
    tiles = list(tile_dataset(tf.data.Dataset.from_tensors({**el, "images": tf.constant(image)}), 40, 10))
    np.testing.assert_array_equal(tiles[1]["images"].numpy(), cut_tile(image, grid[1], 40))


def test_tile_dataset_pads_small_images_and_drops_empty():
    el = _element(30, 50, [[1, 1, 5, 5]])
    (tile,) = list(tile_dataset(tf.data.Dataset.from_tensors(el), 64, 8))
    assert tile["images"].shape == (64, 64, 3)
    assert float(tf.reduce_sum(tile["images"][30:])) == 0.0 and float(tf.reduce_sum(tile["images"][:, 50:])) == 0.0
    (unpadded,) = list(tile_dataset(tf.data.Dataset.from_tensors(el), 64, 8, pad=False))
    assert unpadded["images"].shape == (30, 50, 3)
    el2 = _element(100, 100, [[1, 1, 5, 5]])
    assert len(list(tile_dataset(tf.data.Dataset.from_tensors(el2), 60, 20, drop_empty=True))) == 1


def test_trees_400px_tiles_with_overlap_cover_all_boxes(trees):
    tile, overlap = 400, 128  # overlap > largest tree crown (108 px)
    for split, expected in (("train", 574), ("val", 279)):
        ds = from_pascal_voc(trees / split, validate="header")
        (rec,) = ds.records
        assert len(rec.boxes) == expected
        grid = tile_grid(rec.height, rec.width, tile, overlap)
        inside = ((rec.boxes[:, None, 0] >= grid[None, :, 0]) & (rec.boxes[:, None, 1] >= grid[None, :, 1])
                  & (rec.boxes[:, None, 2] <= grid[None, :, 2]) & (rec.boxes[:, None, 3] <= grid[None, :, 3]))
        assert inside.any(axis=1).all(), f"{split}: some box is in no tile whole"

    # And the tf tiling really yields each val box whole in some tile (mapped back to the image).
    ds = from_pascal_voc(trees / "val", validate="header")
    (rec,) = ds.records
    grid = tile_grid(rec.height, rec.width, tile, overlap)
    found = set()
    n_tiles = 0
    for t in tile_dataset(ds, tile, overlap, min_visible=0.5):
        assert t["images"].shape == (tile, tile, 3)
        x1, y1 = grid[int(t["image_id"]) % TILE_ID_STRIDE][:2]
        back = t["bounding_boxes"]["boxes"].numpy() + np.asarray([x1, y1, x1, y1], np.float32)
        found.update(map(tuple, back.round(3).tolist()))
        n_tiles += 1
    assert n_tiles == len(grid) == 20
    assert {tuple(b) for b in rec.boxes.round(3).tolist()} <= found


# Random windows: a 100 x 150 image whose pixel (x, y) holds (x, y, 7), so a tile tells where it was cut.
RANDOM_BOXES = np.asarray([[10, 10, 30, 24], [60, 40, 90, 70], [120, 5, 148, 35], [20, 60, 50, 98],
                           [70, 80, 110, 100]], np.float32)


def _coordinate_element():
    ys, xs = np.mgrid[0:100, 0:150].astype(np.float32)
    image = np.stack([xs, ys, np.full_like(xs, 7.0)], axis=-1)
    bb = {"boxes": tf.constant(RANDOM_BOXES), "classes": tf.range(5, dtype=tf.int32),
          "difficult": tf.constant([False, True, False, True, False])}
    return {"images": tf.constant(image), "bounding_boxes": bb, "image_id": tf.constant(9, tf.int64)}


def _expected_boxes(ox, oy, side, min_visible, scale):
    """The min_visible rule of tile_dataset, in numpy: shift, clip to the window, keep >= min_visible."""
    shifted = RANDOM_BOXES - np.asarray([ox, oy, ox, oy], np.float32)
    clipped = np.clip(shifted, 0, side)
    area = lambda b: np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)  # noqa: E731
    keep = (area(clipped) > 0) & (area(clipped) >= min_visible * area(shifted))
    return clipped[keep] * scale, np.flatnonzero(keep)


@pytest.mark.parametrize("seed", range(5))
def test_random_tile_at_scale_one_is_a_window_with_the_min_visible_rule(seed):
    el = _coordinate_element()
    tile = random_tile(el, tf.constant([seed, 11], tf.int64), 40, (1.0, 1.0), min_visible=0.5)
    img = tile["images"].numpy()
    ox, oy = int(img[0, 0, 0]), int(img[0, 0, 1])
    np.testing.assert_array_equal(img, el["images"].numpy()[oy:oy + 40, ox:ox + 40])
    boxes, kept = _expected_boxes(ox, oy, 40, 0.5, 1.0)
    np.testing.assert_allclose(tile["bounding_boxes"]["boxes"].numpy(), boxes.reshape(-1, 4), atol=1e-5)
    np.testing.assert_array_equal(tile["bounding_boxes"]["classes"].numpy(), kept)
    np.testing.assert_array_equal(tile["bounding_boxes"]["difficult"].numpy(), np.isin(kept, [1, 3]))
    assert int(tile["image_id"]) == 9


@pytest.mark.parametrize("seed", range(5))
def test_random_tile_scale_jitter_scales_window_and_boxes_together(seed):
    el = _coordinate_element()
    tile = random_tile(el, tf.constant([seed, 5], tf.int64), 40, (0.5, 0.5), min_visible=0.3)
    img = tile["images"].numpy()
    assert img.shape == (40, 40, 3)
    # Output pixel j shows image pixel ox + 2 j + 0.5 (a linear ramp survives the anti-aliased resize).
    ox, oy = img[20, 20, 0] - 40.5, img[20, 20, 1] - 40.5
    assert abs(ox - round(ox)) < 1e-3 and abs(oy - round(oy)) < 1e-3
    boxes, kept = _expected_boxes(round(ox), round(oy), 80, 0.3, 0.5)
    np.testing.assert_allclose(tile["bounding_boxes"]["boxes"].numpy(), boxes.reshape(-1, 4), atol=1e-4)
    np.testing.assert_array_equal(tile["bounding_boxes"]["classes"].numpy(), kept)


def test_random_tiles_cut_new_windows_every_pass_and_as_many_as_the_grid():
    el = _coordinate_element()
    passes = random_tiles(tf.data.Dataset.from_tensors(el), 40, overlap=10, seed=1).repeat(2)
    corners = [(int(t["images"][0, 0, 0]), int(t["images"][0, 0, 1])) for t in passes]
    assert len(corners) == 2 * len(tile_grid(100, 150, 40, 10)) == 30
    assert corners[:15] != corners[15:]  # a new set of windows on the second pass
    assert len(set(corners)) > 20
    again = random_tiles(tf.data.Dataset.from_tensors(el), 40, overlap=10, seed=1).repeat(2)
    assert [(int(t["images"][0, 0, 0]), int(t["images"][0, 0, 1])) for t in again] == corners  # seeded
    fixed = random_tiles(tf.data.Dataset.from_tensors(el), 40, tiles_per_image=4, seed=1)
    assert len(list(fixed)) == 4
    # An image smaller than the window: the whole image, zero-padded bottom/right.
    small = {**el, "images": el["images"][:30, :35]}
    tile = next(iter(random_tiles(tf.data.Dataset.from_tensors(small), 40, tiles_per_image=1)))
    np.testing.assert_array_equal(tile["images"].numpy()[:30, :35], small["images"].numpy())
    assert not tile["images"].numpy()[30:].any() and not tile["images"].numpy()[:, 35:].any()
    np.testing.assert_allclose(tile["bounding_boxes"]["boxes"].numpy(), [[10, 10, 30, 24]])
    with pytest.raises(ValueError, match="scale_range"):
        random_tiles(tf.data.Dataset.from_tensors(el), 40, scale_range=(0.0, 1.0))
