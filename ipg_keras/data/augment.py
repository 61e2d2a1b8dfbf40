"""Box-aware augmentation of single elements, deterministic from a per-element seed.

Every op takes an element (conventions.md format) and a stateless seed
(int [2] tensor) and returns an element; all per-box keys (classes, difficult,
iscrowd, ...) follow their boxes. `make_batches` draws one seed per element
from `tf.data.Dataset.random(seed)`, so a pipeline is reproducible from its
seed even with parallel map, and differs between epochs.

Which implementation and why:
- Flips: keras core `keras.layers.RandomFlip(bounding_box_format="xyxy")`
  (keras 3.15 moves boxes correctly). We call its `transform_images` /
  `transform_bounding_boxes` with a flip decision drawn from our stateless
  seed, because the layer's own `SeedGenerator` is a stateful variable: under a
  parallel `tf.data` map the order of draws (hence the flips) would not be
  reproducible. Keras calls the class key "labels"; we convert from/to "classes".
- Scale jitter and random crop: tf-only ops. keras 3.15 `RandomCrop` moves
  boxes wrongly (it subtracts the crop's y offset from x and its x offset from
  y: a box at x=60, y=30 cropped at (x=52, y=13) comes out at x=47, y=0), and
  `RandomZoom` zooms inside a canvas of the same size, which is not
  RetinaNet's resize-to-random-scale-then-crop/pad; neither drops boxes by
  visible fraction. keras-cv's `JitteredResize` does the right thing but is
  unmaintained (keras-cv is superseded by keras-hub) and has the same stateful
  seed problem.
- Blur: keras core `keras.ops.image.gaussian_blur` with a sigma drawn from our
  stateless seed (keras' `RandomGaussianBlur` layer has the stateful-seed
  problem), on a reflect-padded image so that the border does not darken.
- Copy-paste: tf-only (Keras and keras-hub have no box-level copy-paste); the
  window's own objects pasted onto its background, as Kisantal et al. 2019
  ("Augmentation for small object detection") do for small objects.
- Colour jitter: a tf-only colour matrix with stateless seeds (keras'
  `RandomColorJitter` has the stateful-seed problem, and both it and
  `tf.image.random_hue/saturation` go through HSV, ~10x slower on CPU).
"""

from __future__ import annotations

import dataclasses
import functools

import keras
import numpy as np
import tensorflow as tf

from ipg_keras.data.boxes import crop_boxes, filter_boxes, scale_boxes


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings (probabilities in 0..1).

    horizontal_flip / vertical_flip: probability of each flip (vertical flips
        suit aerial imagery, off by default).
    rotate90: probability of a rotation by 90, 180 or 270 degrees (equally
        likely); with both flips at 0.5 and rotate90 = 0.75 every one of the
        8 orientations of the square (dihedral group) is equally likely.
        Overhead imagery has no "up"; off by default.
    scale_range: RetinaNet-style scale jitter: the image is resized so that its
        long side is `r * image_size`, r ~ U(scale_range), then randomly
        cropped / zero-padded to image_size x image_size. (1, 1) = no jitter.
    crop_probability / crop_area_range / crop_aspect_range: random crop of the
        input before scaling, covering a fraction of its area in crop_area_range
        with aspect ratio (w/h, log-uniform) in crop_aspect_range.
    brightness (max delta, fraction of 255), contrast, saturation (factor in
        [1 - v, 1 + v]), hue (max delta, fraction of the hue circle),
        channel_gain (per-channel factor in [1 - v, 1 + v], white balance):
        colour jitter; 0 disables each.
    blur / blur_sigma: probability of a Gaussian blur, with sigma (pixels of the
        augmented image) ~ U(blur_sigma). Imagery from another flight, sensor or
        orthorectification is often softer than the training image (the trees
        val plot's crowns carry a third of the train plot's high-frequency
        energy, as after a blur of sigma ~0.6 px); 0 disables it.
    copy_paste / copy_paste_count: probability that a window gets pasted copies
        of its own objects, and how many paste attempts it gets (`copy_paste`);
        0 disables it.
    min_visible: a box cut by a crop is kept when at least this fraction of its
        area stays in view.
    """

    horizontal_flip: float = 0.5
    vertical_flip: float = 0.0
    rotate90: float = 0.0
    scale_range: tuple[float, float] = (0.8, 1.25)
    crop_probability: float = 0.0
    crop_area_range: tuple[float, float] = (0.3, 1.0)
    crop_aspect_range: tuple[float, float] = (0.5, 2.0)
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02
    channel_gain: float = 0.0
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    copy_paste: float = 0.0
    copy_paste_count: int = 8
    min_visible: float = 0.3

    def __post_init__(self):
        for name in ("horizontal_flip", "vertical_flip", "rotate90", "crop_probability", "blur", "copy_paste",
                     "min_visible"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be in [0, 1], got {v}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"AugmentConfig.scale_range must be 0 < low <= high, got {self.scale_range}")
        lo, hi = self.crop_area_range
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"AugmentConfig.crop_area_range must be 0 < low <= high <= 1, got {self.crop_area_range}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"AugmentConfig.hue must be in [0, 0.5], got {self.hue}")
        if not 1 <= self.copy_paste_count <= 64:
            raise ValueError(f"AugmentConfig.copy_paste_count must be in [1, 64], got {self.copy_paste_count}")
        lo, hi = self.blur_sigma
        if not 0 < lo <= hi <= 5:
            raise ValueError(f"AugmentConfig.blur_sigma must be 0 < low <= high <= 5 (pixels), got {self.blur_sigma}")


@functools.lru_cache(maxsize=None)
def _flip_layer(mode: str) -> keras.layers.RandomFlip:
    # Built eagerly even when first needed inside a tf.data trace (it owns a variable).
    with tf.init_scope():
        return keras.layers.RandomFlip(mode, bounding_box_format="xyxy")


def _resize(image: tf.Tensor, size: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """Bilinear resize; anti-aliased only when shrinking (the anti-aliased kernel is
    several times slower on CPU and changes nothing when enlarging)."""
    return tf.cond(
        scale < 1.0,
        lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
        lambda: tf.image.resize(image, size, method="bilinear"),
    )


def _seed(seed) -> tf.Tensor:
    return tf.cast(tf.reshape(seed, [2]), tf.int64)


def random_flip(element: dict, seed, probability: float = 0.5, mode: str = "horizontal") -> dict:
    """Flip image and boxes with `probability`, via keras `RandomFlip` (mode "horizontal"/"vertical")."""
    if mode not in ("horizontal", "vertical"):
        raise ValueError(f"mode must be 'horizontal' or 'vertical', got {mode!r}")
    layer = _flip_layer(mode)
    image = tf.cast(element["images"], tf.float32)
    do_flip = tf.random.stateless_uniform([], _seed(seed)) < probability
    bb = dict(element["bounding_boxes"])
    bb["boxes"] = tf.cast(bb["boxes"], tf.float32)

    def flip():
        # The layer's transformation for an unbatched image: flips [1, 1, 1] + input shape.
        transformation = {"flips": tf.ones([1, 1, 1], tf.bool), "input_shape": tf.shape(image)}
        kbb = dict(bb)
        kbb["labels"] = kbb.pop("classes")
        out_bb = dict(layer.transform_bounding_boxes(kbb, transformation, training=True))
        out_bb["classes"] = tf.cast(out_bb.pop("labels"), tf.int32)
        out_bb = {k: tf.cast(v, bb[k].dtype) for k, v in out_bb.items()}
        return tf.cast(layer.transform_images(image, transformation, training=True), tf.float32), out_bb

    # No flip: skip the layer (its relative-coordinate round trip would perturb boxes by ~1e-6).
    new_image, new_bb = tf.cond(do_flip, flip, lambda: (image, bb))
    # keras marks boxes clipped to zero area with label -1; drop them (none expected for valid input).
    new_bb = filter_boxes(new_bb, new_bb["classes"] >= 0)
    out = dict(element)
    out["images"] = new_image
    out["bounding_boxes"] = new_bb
    return out


def rotate90(element: dict, k: int | tf.Tensor) -> dict:
    """Rotate image and boxes by `k` quarter turns counter-clockwise (`tf.image.rot90`'s direction).

    One quarter turn maps the pixel at (x, y) of an image of width W to
    (y, W - x), and the image becomes W high and H wide; a box
    (x1, y1, x2, y2) becomes (y1, W - x2, y2, W - x1). Works for any H, W
    (non-square images swap their sides); `k` may be a tensor.
    """
    image = tf.cast(element["images"], tf.float32)
    boxes = tf.cast(element["bounding_boxes"]["boxes"], tf.float32)
    k = tf.math.floormod(tf.cast(k, tf.int32), 4)

    def turn(image, boxes):
        w = tf.cast(tf.shape(image)[1], tf.float32)
        x1, y1, x2, y2 = tf.unstack(boxes, 4, axis=-1)
        return tf.image.rot90(image), tf.stack([y1, w - x2, y2, w - x1], axis=-1)

    def branch(n):
        def fn():
            img, bx = image, boxes
            for _ in range(n):
                img, bx = turn(img, bx)
            return tf.ensure_shape(img, [None, None, 3]), bx
        return fn

    new_image, new_boxes = tf.switch_case(k, [branch(n) for n in range(4)])
    out = dict(element)
    out["images"] = new_image
    bb = dict(element["bounding_boxes"])
    bb["boxes"] = tf.ensure_shape(new_boxes, [None, 4])
    out["bounding_boxes"] = bb
    return out


def random_rotate90(element: dict, seed, probability: float = 0.75) -> dict:
    """With `probability`, rotate by 1, 2 or 3 quarter turns (equally likely); see `rotate90`."""
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(_seed(seed), 2))
    do_turn = tf.random.stateless_uniform([], s1) < probability
    k = tf.random.stateless_uniform([], s2, 1, 4, dtype=tf.int32)
    return rotate90(element, tf.where(do_turn, k, 0))


def resize_and_pad(element: dict, image_size: int) -> tuple[dict, tf.Tensor]:
    """Aspect-preserving resize to fit image_size, then zero-pad bottom/right to a square.

    The image is resized by s = image_size / max(h, w) to [image_size,
    image_size, 3]; boxes are scaled by s. Returns (element, s): original pixel
    coordinates = coordinates / s (padding is bottom/right, so no offset).
    """
    image = element["images"]
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    s = tf.cast(image_size, tf.float32) / tf.reduce_max(shape)
    new = tf.maximum(tf.cast(tf.round(shape * s), tf.int32), 1)
    new = tf.minimum(new, image_size)
    unchanged = tf.reduce_all(new == tf.shape(image)[:2])
    resized = tf.cond(unchanged, lambda: tf.cast(image, tf.float32),
                      lambda: tf.cast(_resize(image, new, s), tf.float32))
    padded = tf.image.pad_to_bounding_box(resized, 0, 0, image_size, image_size)
    out = dict(element)
    out["images"] = tf.ensure_shape(padded, [image_size, image_size, 3])
    bb = scale_boxes(element["bounding_boxes"], s, s)
    out["bounding_boxes"] = crop_boxes(bb, 0, 0, new[1], new[0], 0.0)  # clip rounding spill-over
    return out, s


def scale_jitter(element: dict, seed, image_size: int, scale_range=(0.8, 1.25), min_visible: float = 0.3) -> dict:
    """RetinaNet scale jitter: resize to a random scale, then random-crop / pad to image_size.

    The long side becomes r * image_size, r ~ U(scale_range); a random
    image_size x image_size window is cut when larger, zero padding (bottom /
    right) fills it when smaller. Boxes are scaled, shifted, clipped, and
    dropped when less than `min_visible` of them stays in view.
    """
    s1, s2, s3 = tf.unstack(tf.random.experimental.stateless_split(_seed(seed), 3))
    image = element["images"]
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    r = tf.random.stateless_uniform([], s1, scale_range[0], scale_range[1])
    s = r * image_size / tf.reduce_max(shape)
    new = tf.maximum(tf.cast(tf.round(shape * s), tf.int32), 1)
    resized = _resize(image, new, s)
    sy = tf.cast(new[0], tf.float32) / shape[0]
    sx = tf.cast(new[1], tf.float32) / shape[1]
    max_off = tf.maximum(new - image_size, 0)
    oy = tf.random.stateless_uniform([], s2, 0, max_off[0] + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform([], s3, 0, max_off[1] + 1, dtype=tf.int32)
    ch, cw = tf.minimum(new[0] - oy, image_size), tf.minimum(new[1] - ox, image_size)
    crop = resized[oy:oy + ch, ox:ox + cw]
    out = dict(element)
    out["images"] = tf.ensure_shape(tf.image.pad_to_bounding_box(crop, 0, 0, image_size, image_size),
                                    [image_size, image_size, 3])
    bb = scale_boxes(element["bounding_boxes"], sx, sy)
    out["bounding_boxes"] = crop_boxes(bb, ox, oy, cw, ch, min_visible)
    return out


def random_crop(element: dict, seed, area_range=(0.3, 1.0), aspect_range=(0.5, 2.0), min_visible: float = 0.3) -> dict:
    """Cut a random window (area fraction in area_range, aspect w/h in aspect_range) out of the image.

    Boxes are moved into the window's frame, clipped, and dropped when less
    than `min_visible` of their area stays inside. Output size varies.
    """
    s1, s2, s3, s4 = tf.unstack(tf.random.experimental.stateless_split(_seed(seed), 4))
    image = element["images"]
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    h, w = shape[0], shape[1]
    area = tf.random.stateless_uniform([], s1, area_range[0], area_range[1])
    log_ar = tf.random.stateless_uniform([], s2, tf.math.log(float(aspect_range[0])), tf.math.log(float(aspect_range[1])))
    ar = tf.exp(log_ar)
    # window w/h with cw*ch = area*w*h and cw/ch = ar * (w/h), capped by the image.
    cw = tf.clip_by_value(tf.round(w * tf.sqrt(area * ar)), 1.0, w)
    ch = tf.clip_by_value(tf.round(h * tf.sqrt(area / ar)), 1.0, h)
    cw_i, ch_i = tf.cast(cw, tf.int32), tf.cast(ch, tf.int32)
    ox = tf.random.stateless_uniform([], s3, 0, tf.cast(w, tf.int32) - cw_i + 1, dtype=tf.int32)
    oy = tf.random.stateless_uniform([], s4, 0, tf.cast(h, tf.int32) - ch_i + 1, dtype=tf.int32)
    out = dict(element)
    out["images"] = image[oy:oy + ch_i, ox:ox + cw_i]
    out["bounding_boxes"] = crop_boxes(element["bounding_boxes"], ox, oy, cw_i, ch_i, min_visible)
    return out


# RGB <-> YIQ: a hue shift is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
_LUMA = _RGB_TO_YIQ[0]


def color_jitter(image: tf.Tensor, seed, brightness: float = 0.1, contrast: float = 0.1,
                 saturation: float = 0.1, hue: float = 0.02, channel_gain: float = 0.0) -> tf.Tensor:
    """Light colour jitter of a float32 [H, W, 3] 0..255 image; boxes are unaffected.

    brightness: add U(-b, b) * 255; contrast: scale around the mean by U(1-c, 1+c);
    saturation: blend with the grey image by U(1-s, 1+s); hue: rotate the chroma
    by U(-h, h) turns (in YIQ space); channel_gain: multiply each of R, G, B by
    its own U(1-g, 1+g) (a white-balance shift, as between two flights or
    sites of aerial imagery). Saturation and hue are done as one 3x3
    colour matrix instead of tf.image's HSV round trip, which costs ~10x more
    on CPU for the same light jitter.
    """
    seeds = tf.unstack(tf.random.experimental.stateless_split(_seed(seed), 4))
    x = tf.cast(image, tf.float32)
    if saturation > 0 or hue > 0:
        f = tf.random.stateless_uniform([], seeds[2], 1.0 - saturation, 1.0 + saturation)
        theta = tf.random.stateless_uniform([], seeds[3], -hue, hue) * (2.0 * np.pi)
        c, s = tf.cos(theta) * f, tf.sin(theta) * f
        # In YIQ: keep Y, rotate (I, Q) by theta and scale it by f (f scales chroma = saturation).
        yiq = tf.stack([tf.constant([1.0, 0.0, 0.0]), tf.stack([0.0, c, -s]), tf.stack([0.0, s, c])])
        m = tf.constant(_YIQ_TO_RGB) @ yiq @ tf.constant(_RGB_TO_YIQ)
        x = tf.reshape(tf.reshape(x, [-1, 3]) @ tf.transpose(m), tf.shape(x))
    if channel_gain > 0:  # its own seed, so that the other draws stay as without it
        gain_seed = tf.random.experimental.stateless_fold_in(_seed(seed), 5)
        x = x * tf.random.stateless_uniform([3], gain_seed, 1.0 - channel_gain, 1.0 + channel_gain)
    if contrast > 0:
        f = tf.random.stateless_uniform([], seeds[1], 1.0 - contrast, 1.0 + contrast)
        mean = tf.reduce_mean(tf.tensordot(x, tf.constant(_LUMA), axes=1))
        x = (x - mean) * f + mean
    if brightness > 0:
        x = x + tf.random.stateless_uniform([], seeds[0], -brightness, brightness) * 255.0
    return tf.clip_by_value(x, 0.0, 255.0)


def random_blur(image: tf.Tensor, seed, probability: float = 0.5, sigma_range=(0.5, 1.5)) -> tf.Tensor:
    """Gaussian blur of a float32 [H, W, 3] image with probability `probability`; boxes are unaffected.

    sigma ~ U(sigma_range) pixels, the same along both axes; kernel 2 * ceil(3 * max sigma) + 1
    pixels wide, the image reflect-padded by its radius (no dark rim). Uses
    `keras.ops.image.gaussian_blur`.
    """
    lo, hi = float(sigma_range[0]), float(sigma_range[1])
    radius = int(np.ceil(3.0 * hi))
    seeds = tf.unstack(tf.random.experimental.stateless_split(_seed(seed), 2))
    x = tf.cast(image, tf.float32)

    def blur():
        sigma = tf.random.stateless_uniform([], seeds[1], lo, hi)
        padded = tf.pad(x[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
        out = keras.ops.image.gaussian_blur(padded, kernel_size=(2 * radius + 1,) * 2, sigma=(sigma, sigma))
        return tf.reshape(out[0, radius:-radius, radius:-radius, :], tf.shape(x))

    return tf.cond(tf.random.stateless_uniform([], seeds[0]) < probability, blur, lambda: x)


def copy_paste(element: dict, seed, probability: float = 0.5, count: int = 8) -> dict:
    """Paste copies of the window's own objects onto its background (box-level copy-paste).

    With `probability`, `count` paste attempts are drawn: each copies the pixels
    of a random object (its box rounded out to whole pixels; only objects that
    do not touch the image border, so no cut-off object is copied) to a random
    place in the image, and is kept only where it overlaps no object box and no
    earlier attempt, so no object is hidden and pasted copies never stack. Each
    kept copy adds its box (the source box moved by the same whole-pixel
    offset) with all per-box keys of its source. Kisantal et al. 2019
    ("Augmentation for small object detection", arXiv 1902.07296) paste small
    objects so, within the same image; Ghiasi et al. 2021 ("Simple Copy-Paste")
    between images. Dense scenes with crowns next to shadow and canopy are what
    one sparse training plot lacks.

    Args:
        element: image `[H, W, 3]`, boxes xyxy pixels `[N, 4]`.
        seed: stateless seed, int `[2]`.
        probability: chance that the window gets pastes at all.
        count: paste attempts (at most `count` copies; fewer in crowded windows).

    Returns:
        The element with the pasted pixels and `N + kept` boxes (float32 image).
    """
    image = tf.cast(element["images"], tf.float32)
    bb = element["bounding_boxes"]
    boxes = tf.cast(bb["boxes"], tf.float32)
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    s = tf.unstack(tf.random.experimental.stateless_split(_seed(seed), 4))
    # Whole-pixel source rectangles of the objects; sources must lie inside the image, off its border.
    src = tf.concat([tf.floor(boxes[:, :2]), tf.math.ceil(boxes[:, 2:])], axis=-1)
    size = src[:, 2:] - src[:, :2]
    usable = ((boxes[:, 0] > 0) & (boxes[:, 1] > 0) & (boxes[:, 2] < wf) & (boxes[:, 3] < hf)
              & (size[:, 0] >= 2) & (size[:, 1] >= 2) & (size[:, 0] < wf) & (size[:, 1] < hf))
    go = (tf.random.stateless_uniform([], s[0]) < probability) & tf.reduce_any(usable)
    logits = tf.where(usable, 0.0, -1e9)[None, :]
    logits = tf.cond(tf.reduce_any(usable), lambda: logits, lambda: tf.zeros([1, tf.maximum(tf.shape(boxes)[0], 1)]))
    pick = tf.random.stateless_categorical(logits, count, s[1], dtype=tf.int32)[0]  # [count]
    pick = tf.minimum(pick, tf.maximum(tf.shape(boxes)[0] - 1, 0))
    pick_src = tf.gather(tf.concat([src, tf.zeros([1, 4])], 0), pick)  # a zero row when there are no boxes
    pick_size = pick_src[:, 2:] - pick_src[:, :2]
    room = tf.maximum(tf.stack([wf, hf]) - pick_size + 1.0, 1.0)
    corner = tf.floor(tf.random.stateless_uniform([count, 2], s[2]) * room)  # x, y of the copy's top-left
    target = tf.concat([corner, corner + pick_size], axis=-1)

    def overlap(a, b):  # [K, 4] x [M, 4] -> [K, M] intersection area
        lt = tf.maximum(a[:, None, :2], b[None, :, :2])
        rb = tf.minimum(a[:, None, 2:], b[None, :, 2:])
        return tf.reduce_prod(tf.maximum(rb - lt, 0.0), axis=-1)

    hits_objects = tf.reduce_any(overlap(target, boxes) > 0, axis=1)
    earlier = tf.linalg.band_part(tf.ones([count, count]), -1, 0) - tf.eye(count)  # [k, j] = 1 where j < k
    hits_earlier = tf.reduce_any((overlap(target, target) > 0) & (earlier > 0), axis=1)
    # (the padded False: with no objects, `pick` points at the zero row)
    keep = go & tf.gather(tf.concat([usable, [False]], 0), pick) & ~hits_objects & ~hits_earlier
    # Each pixel inside a kept copy reads from its source, offset by (source - target); copies are disjoint.
    ys = tf.range(hf)[None, :, None]
    xs = tf.range(wf)[None, None, :]
    t = target[:, :, None, None]
    inside = (keep[:, None, None] & (xs >= t[:, 0]) & (xs < t[:, 2]) & (ys >= t[:, 1]) & (ys < t[:, 3]))
    offset = pick_src[:, :2] - corner  # [count, 2] (dx, dy)
    inside_f = tf.cast(inside, tf.float32)
    dx = tf.einsum("khw,k->hw", inside_f, offset[:, 0])
    dy = tf.einsum("khw,k->hw", inside_f, offset[:, 1])
    covered = tf.reduce_any(inside, axis=0)
    grid_y = tf.cast(tf.broadcast_to(ys[0], [h, w]) + dy, tf.int32)
    grid_x = tf.cast(tf.broadcast_to(xs[0], [h, w]) + dx, tf.int32)
    pasted = tf.gather_nd(image, tf.stack([grid_y, grid_x], axis=-1))
    out = dict(element)
    out["images"] = tf.where(covered[:, :, None], pasted, image)
    kept = tf.boolean_mask(pick, keep)
    shift = tf.boolean_mask(corner - pick_src[:, :2], keep)
    new_bb = {}
    for key, value in bb.items():
        copies = tf.gather(value, kept)
        if key == "boxes":
            copies = tf.cast(copies, tf.float32) + tf.concat([shift, shift], axis=-1)
            value = tf.cast(value, tf.float32)
        new_bb[key] = tf.concat([value, tf.cast(copies, value.dtype)], axis=0)
    out["bounding_boxes"] = new_bb
    return out


def augment_element(element: dict, seed, image_size: int, config: AugmentConfig = AugmentConfig()) -> dict:
    """Full training augmentation: [random crop] -> scale jitter to image_size -> flips -> 90° turns
    -> [copy-paste] -> [blur] -> colour.

    Output image is [image_size, image_size, 3]; boxes follow every step.
    With `scale_range` (1, 1) the image is only resized to fit and padded
    (`resize_and_pad`), e.g. for windows that `random_tiles` already scaled.
    """
    seeds = tf.unstack(tf.random.experimental.stateless_split(_seed(seed), 7))
    el = element
    if config.crop_probability > 0:
        do_crop = tf.random.stateless_uniform([], seeds[0]) < config.crop_probability
        cropped = random_crop(el, seeds[1], config.crop_area_range, config.crop_aspect_range, config.min_visible)
        el = _cond_element(do_crop, cropped, el)
    if tuple(config.scale_range) == (1.0, 1.0):
        el, _ = resize_and_pad(el, image_size)
    else:
        el = scale_jitter(el, seeds[2], image_size, config.scale_range, config.min_visible)
    if config.horizontal_flip > 0:
        el = random_flip(el, seeds[3], config.horizontal_flip, "horizontal")
    if config.vertical_flip > 0:
        el = random_flip(el, seeds[4], config.vertical_flip, "vertical")
    if config.rotate90 > 0:
        el = random_rotate90(el, seeds[6], config.rotate90)
        el["images"] = tf.ensure_shape(el["images"], [image_size, image_size, 3])
    if config.copy_paste > 0:  # its own seed, so that the other draws stay as without it
        el = copy_paste(el, tf.random.experimental.stateless_fold_in(_seed(seed), 8), config.copy_paste,
                        config.copy_paste_count)
    if config.blur > 0:  # its own seed, so that the other draws stay as without it
        el = dict(el)
        el["images"] = random_blur(el["images"], tf.random.experimental.stateless_fold_in(_seed(seed), 7),
                                   config.blur, config.blur_sigma)
    if max(config.brightness, config.contrast, config.saturation, config.hue, config.channel_gain) > 0:
        el = dict(el)
        el["images"] = color_jitter(el["images"], seeds[5], config.brightness, config.contrast,
                                    config.saturation, config.hue, config.channel_gain)
    return el


def _cond_element(pred, a: dict, b: dict) -> dict:
    """Select element a or b (same structure, any shapes) by a scalar bool."""
    return tf.cond(pred, lambda: a, lambda: b)
