"""Cutting large images into overlapping tiles, for training (`tile_dataset`, or
`random_tiles`: new random windows every pass) and for sliced inference
(`tile_grid` and `cut_tile`, used by `ipg_keras.inference.sliced`).

Tiles are laid on a regular grid with stride `tile_size - overlap`; the last
tile of a row/column is moved back so that it ends at the image border
instead of hanging over it, so every tile lies inside the image (only images
smaller than a tile give a smaller tile, padded if asked). With
`overlap >= the largest object`, every object lies wholly inside some tile.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from ipg_keras.data.boxes import crop_boxes, scale_boxes

# Map functions use explicit tf.cond, so AutoGraph is off: converting them (and the
# keras code they call) would cost time of tracing per pipeline.
_no_autograph = tf.autograph.experimental.do_not_convert

# A tile's image_id is image_id * TILE_ID_STRIDE + tile index (row-major in the grid).
TILE_ID_STRIDE = 100_000


def _check(tile_size: int, overlap: int) -> None:
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size={tile_size}), got {overlap}")


def tile_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis of `length` pixels."""
    _check(tile_size, overlap)
    if length <= tile_size:
        return [0]
    stride = tile_size - overlap
    n = math.ceil((length - tile_size) / stride) + 1
    return [min(i * stride, length - tile_size) for i in range(n)]


def tile_grid(height: int, width: int, tile_size: int, overlap: int) -> np.ndarray:
    """Tile windows of an image: int64 [T, 4] as (x1, y1, x2, y2), row-major order.

    x2 - x1 == tile_size except along an axis shorter than a tile.
    """
    ys = tile_starts(int(height), tile_size, overlap)
    xs = tile_starts(int(width), tile_size, overlap)
    out = [
        (x, y, min(x + tile_size, width), min(y + tile_size, height)) for y in ys for x in xs
    ]
    return np.asarray(out, np.int64).reshape(-1, 4)


def cut_tile(image: np.ndarray, window, tile_size: int) -> np.ndarray:
    """The pixels of one `tile_grid` window: float32 `[tile_size, tile_size, C]`.

    `image` is `[H, W, C]`, `window` (x1, y1, x2, y2) in its pixels. A window
    shorter than `tile_size` (an image smaller than a tile) is zero-padded at
    the bottom/right, so every tile has one shape and boxes keep their pixels.
    """
    x1, y1, x2, y2 = (int(v) for v in window)
    tile = np.zeros([tile_size, tile_size, image.shape[-1]], np.float32)
    tile[: y2 - y1, : x2 - x1] = image[y1:y2, x1:x2]
    return tile


def _tile_starts_tf(length, tile_size: int, stride: int):
    length = tf.cast(length, tf.int64)
    n = tf.maximum(tf.cast(tf.math.ceil(tf.cast(length - tile_size, tf.float64) / stride), tf.int64), 0) + 1
    return tf.maximum(tf.minimum(tf.range(n, dtype=tf.int64) * stride, length - tile_size), 0)


def tile_element(element: dict, tile_size: int, overlap: int, min_visible: float = 0.5,
                 pad: bool = True, drop_empty: bool = False) -> tf.data.Dataset:
    """Dataset of the tiles of one element (see `tile_dataset`)."""
    _check(tile_size, overlap)
    image = element["images"]
    shape = tf.shape(image, out_type=tf.int64)
    h, w = shape[0], shape[1]
    ys = _tile_starts_tf(h, tile_size, tile_size - overlap)
    xs = _tile_starts_tf(w, tile_size, tile_size - overlap)
    nx = tf.size(xs, out_type=tf.int64)
    num = tf.size(ys, out_type=tf.int64) * nx

    def make(t):
        y0, x0 = ys[t // nx], xs[t % nx]
        th, tw = tf.minimum(h - y0, tile_size), tf.minimum(w - x0, tile_size)
        crop = image[y0:y0 + th, x0:x0 + tw]
        if pad:
            crop = tf.image.pad_to_bounding_box(crop, 0, 0, tile_size, tile_size)
            crop = tf.ensure_shape(crop, [tile_size, tile_size, 3])
        bb = crop_boxes(element["bounding_boxes"], x0, y0, tw, th, min_visible)
        return {"images": crop, "bounding_boxes": bb,
                "image_id": tf.cast(element["image_id"], tf.int64) * TILE_ID_STRIDE + t}

    tiles = tf.data.Dataset.range(num).map(_no_autograph(make))
    if drop_empty:
        tiles = tiles.filter(_no_autograph(lambda e: tf.shape(e["bounding_boxes"]["boxes"])[0] > 0))
    return tiles


def tile_dataset(
    dataset: tf.data.Dataset,
    tile_size: int = 512,
    overlap: int = 64,
    min_visible: float = 0.5,
    *,
    pad: bool = True,
    drop_empty: bool = False,
) -> tf.data.Dataset:
    """Cut every image of an element dataset into overlapping tiles (training on large images).

    Args:
        dataset: elements in the format of conventions.md.
        tile_size: tile side in pixels.
        overlap: pixels shared by neighbouring tiles (< tile_size); use at least
            the largest object size so that each object is whole in some tile.
        min_visible: a box cut by a tile border is kept (clipped) in that tile
            when at least this fraction of its area is inside the tile.
        pad: zero-pad tiles of images smaller than a tile to tile_size x tile_size
            (bottom/right), so every tile has the same shape.
        drop_empty: leave out tiles without boxes.

    Returns:
        Element dataset of tiles [tile_size, tile_size, 3] (when pad), boxes in
        the tile's frame, image_id = parent image_id * TILE_ID_STRIDE + tile index.
        Per-box flags (difficult, iscrowd) follow their boxes.
    """
    _check(tile_size, overlap)
    if not 0.0 <= min_visible <= 1.0:
        raise ValueError(f"min_visible must be in [0, 1], got {min_visible}")
    return dataset.flat_map(_no_autograph(lambda e: tile_element(e, tile_size, overlap, min_visible, pad, drop_empty)))



def random_tile(element: dict, seed, tile_size: int, scale_range=(1.0, 1.0), min_visible: float = 0.5) -> dict:
    """One random window of a large image, resized to `tile_size` x `tile_size` (scale jitter in one step).

    A scale s ~ U(scale_range) (output pixels per image pixel) is drawn; a
    square window of side `tile_size / s` image pixels (capped by the image
    size) is placed uniformly at random inside the image and resized by s, so
    it fills the tile; an image smaller than the window gives a smaller tile,
    zero-padded bottom/right. Boxes are moved into the window's frame,
    clipped, dropped when less than `min_visible` of their area stays inside
    (the rule of `tile_dataset`), and scaled by the resize. `image_id` is
    kept. `seed`: a stateless seed (int [2]).
    """
    s1, s2, s3 = tf.unstack(tf.random.experimental.stateless_split(tf.cast(tf.reshape(seed, [2]), tf.int64), 3))
    image = element["images"]
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    scale = tf.random.stateless_uniform([], s1, float(scale_range[0]), float(scale_range[1]))
    side = tf.cast(tf.round(tile_size / scale), tf.int32)
    ch, cw = tf.minimum(side, h), tf.minimum(side, w)
    oy = tf.random.stateless_uniform([], s2, 0, h - ch + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform([], s3, 0, w - cw + 1, dtype=tf.int32)
    crop = tf.cast(image[oy:oy + ch, ox:ox + cw], tf.float32)
    new_h = tf.clip_by_value(tf.cast(tf.round(tf.cast(ch, tf.float32) * scale), tf.int32), 1, tile_size)
    new_w = tf.clip_by_value(tf.cast(tf.round(tf.cast(cw, tf.float32) * scale), tf.int32), 1, tile_size)
    resized = tf.cond(
        tf.logical_and(new_h == ch, new_w == cw),
        lambda: crop,
        lambda: tf.image.resize(crop, tf.stack([new_h, new_w]), method="bilinear", antialias=True),
    )
    tile = tf.ensure_shape(tf.image.pad_to_bounding_box(resized, 0, 0, tile_size, tile_size),
                           [tile_size, tile_size, 3])
    bb = crop_boxes(element["bounding_boxes"], ox, oy, cw, ch, min_visible)
    bb = scale_boxes(bb, tf.cast(new_w, tf.float32) / tf.cast(cw, tf.float32),
                     tf.cast(new_h, tf.float32) / tf.cast(ch, tf.float32))
    out = {k: v for k, v in element.items() if k not in ("images", "bounding_boxes")}
    out["images"] = tile
    out["bounding_boxes"] = bb
    return out


def random_tiles(
    dataset: tf.data.Dataset,
    tile_size: int = 512,
    *,
    tiles_per_image: int | None = None,
    overlap: int = 0,
    scale_range=(1.0, 1.0),
    min_visible: float = 0.5,
    seed: int = 0,
) -> tf.data.Dataset:
    """Random windows of every image (training on large images), new ones on every pass.

    Unlike the fixed grid of `tile_dataset`, each pass over the data (each
    repetition, e.g. by `make_batches(repeat=True)`) cuts different windows,
    so objects appear at every position and cut, and, with `scale_range`,
    at every scale. See `random_tile` for one window.

    Args:
        dataset: elements (conventions.md format); cache it first when decoding is slow.
        tile_size: output side in pixels.
        tiles_per_image: windows per image and pass; None: as many as `tile_dataset`
            cuts from that image with `overlap` (the same amount of training per pass).
        overlap: only for the default `tiles_per_image`.
        scale_range: (low, high) of the scale s (output / image pixels).
        min_visible: a box cut by the window border is kept (clipped) when at
            least this fraction of its area is inside.
        seed: the windows are a function of (seed, pass, image, window index).

    Returns:
        Element dataset of [tile_size, tile_size, 3] tiles with boxes in the tile's frame.
    """
    _check(tile_size, overlap)
    if not 0.0 <= min_visible <= 1.0:
        raise ValueError(f"min_visible must be in [0, 1], got {min_visible}")
    lo, hi = float(scale_range[0]), float(scale_range[1])
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
    if tiles_per_image is not None and tiles_per_image < 1:
        raise ValueError(f"tiles_per_image must be >= 1 or None, got {tiles_per_image}")
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def windows(element, r):
        if tiles_per_image is None:
            shape = tf.shape(element["images"], out_type=tf.int64)
            stride = tile_size - overlap
            count = (tf.size(_tile_starts_tf(shape[0], tile_size, stride), out_type=tf.int64)
                     * tf.size(_tile_starts_tf(shape[1], tile_size, stride), out_type=tf.int64))
        else:
            count = tf.constant(tiles_per_image, tf.int64)
        return tf.data.Dataset.range(count).map(_no_autograph(
            lambda i: random_tile(element, tf.stack([r, i]), tile_size, (lo, hi), min_visible)))

    return tf.data.Dataset.zip(dataset, randoms).flat_map(_no_autograph(windows))
