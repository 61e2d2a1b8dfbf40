"""Deterministic synthetic small-object detection dataset (the package's embedded default).

Nothing is downloaded: every image is rendered with numpy from a per-image random
generator seeded by ``(seed, split, index)``, so the same arguments always give the
same pixels and boxes, on any machine, in any order of access.

Design choices (each one deliberate, so a small CNN can learn the task but it is
not trivial, and so small objects dominate as in the IPG-Net setting):

* **Classes** (:data:`CLASS_NAMES`): ``square``, ``disc``, ``triangle``, ``cross``,
  ``ring``: filled shapes with distinct geometry (corners vs. round, a hole, arms).
  Mild aspect jitter (0.85-1.15) and rotation (squares and crosses +-30 degrees so
  they do not turn into diamonds/x's, triangles any angle, discs and rings are
  slightly elliptical at any angle) add variety without blurring the classes.
* **Size**: the larger side of an object's (unoccluded) tight box is drawn
  log-uniformly in ``[min_size, max_size]`` (default 6-64 px), so about half of the
  objects are below 20 px and most are COCO-"small" (< 32 x 32 px area).
* **Colour**: each object has a random colour, rejected until it differs clearly
  from the local background (RGB distance >= 110; best of 20 tries otherwise),
  plus a faint linear shading across the object; colour never identifies a class.
* **Background**: clutter of low contrast: a random base colour, a linear gradient,
  smooth value noise at three scales (the finest a few px per cell), faint Gaussian
  blobs and faint lines; per-pixel sensor noise (sigma 2-6) is added over
  everything at the end.
* **Distractors** (not annotated): 0-4 full-contrast thin lines and very elongated
  ellipses (axis ratio <= 0.35), i.e. shapes of no class, so "high contrast" alone
  does not mean "object". They are painted under the objects, so they never change
  an object's visible extent.
* **Occlusion**: objects are placed so that their boxes overlap little (the
  intersection with any earlier object's box is at most 25 % of the smaller box;
  up to 20 placement tries, else the object is skipped), then painted in order;
  later objects hide earlier ones. An object whose visible coverage is below 40 %
  of its full coverage (more than ~60 % hidden) is dropped from the labels (its
  pixels stay: this is rare by construction). Objects lie fully inside the image
  (no truncation at the border).
* **Boxes**: tight around the *visible* pixels: a pixel belongs to an object when
  the object's visible anti-aliased coverage of it is >= 0.5 (4x4 or 2x2
  supersampling). Boxes are continuous xyxy pixel coordinates where pixel ``(r, c)``
  covers ``[c, c+1) x [r, r+1)``, so ``x2 = last column + 1``.
* **Count**: ``0`` objects with probability 5 % (pure negatives), else uniform in
  ``1..max_objects``.
* **Splits**: ``"train"`` (default 2000 images), ``"val"`` (alias ``"validation"``;
  200) and ``"test"`` (200) use different seed streams, so they never share an image.
  ``image_id`` is the index within the split.
* **Speed / memory**: images are generated lazily by ``tf.numpy_function`` inside a
  parallel, order-preserving ``map`` (a few ms per 256x256 image), so each epoch
  regenerates identical images; add ``.cache()`` if RAM allows (uint8 storage would
  be 0.2 MB per 256x256 image; float32 as yielded, 0.8 MB).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from ipg_keras.data.boxes import to_box_format
from ipg_keras.ops.box_formats import check_box_format

CLASS_NAMES: tuple[str, ...] = ("square", "disc", "triangle", "cross", "ring")

_SPLIT_CODES = {"train": 0, "val": 1, "validation": 1, "test": 2}
_DEFAULT_NUM_IMAGES = {0: 2000, 1: 200, 2: 200}

_VISIBLE_THRESHOLD = 0.5  # coverage for a pixel to count as part of the object
_MIN_VISIBLE_FRACTION = 0.4  # drop labels of objects more than 60 % hidden
_MAX_BOX_OVERLAP = 0.25  # max intersection / smaller box area between objects
_RING_INNER = 0.5  # inner radius of a ring relative to its outer radius
_CROSS_ARM = 1.0 / 3.0  # arm thickness of a cross relative to its span
_MIN_COLOUR_DISTANCE = 110.0  # RGB distance of an object's colour from its local background


# ----------------------------------------------------------------------------- shapes
def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]], dtype=np.float64)


def _box_inside(u: np.ndarray, v: np.ndarray, half_w: float, half_h: float) -> np.ndarray:
    return (np.abs(u) <= half_w) & (np.abs(v) <= half_h)


def _ellipse_inside(u: np.ndarray, v: np.ndarray, rx: float, ry: float) -> np.ndarray:
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _convex_inside(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Inside test for a convex polygon with counter-clockwise (y-down: clockwise) vertices."""
    inside = np.ones(u.shape, dtype=bool)
    n = len(verts)
    # Orientation-agnostic: all edge cross products share the sign of the polygon area.
    area_sign = np.sign(
        sum(verts[i, 0] * verts[(i + 1) % n, 1] - verts[(i + 1) % n, 0] * verts[i, 1] for i in range(n))
    )
    for i in range(n):
        x0, y0 = verts[i]
        x1, y1 = verts[(i + 1) % n]
        cross = (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0)
        inside &= cross * area_sign >= 0
    return inside


class _Shape:
    """A shape in local coordinates (u, v) (centre at 0), rotated by `angle` into the image.

    `kind` is a class name or a distractor kind ("line", "ellipse"); `params` are the
    local-frame sizes. `extent()` gives the rotated half-extent (hx, hy) in pixels.
    """

    def __init__(self, kind: str, params: dict[str, float], angle: float) -> None:
        self.kind = kind
        self.p = params
        self.angle = angle
        self.rot = _rotation(angle)

    # Outline points of the unrotated shape, used to measure the rotated extent.
    def _outline(self) -> np.ndarray:
        p = self.p
        if self.kind in ("square", "line"):
            hw, hh = p["hw"], p["hh"]
            return np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        if self.kind == "triangle":
            return p["verts"]
        if self.kind == "cross":
            hl, ht = p["hl"], p["ht"]
            return np.array([[-hl, -ht], [hl, -ht], [hl, ht], [-hl, ht],
                             [-ht, -hl], [ht, -hl], [ht, hl], [-ht, hl]])
        raise AssertionError(self.kind)

    def extent(self) -> tuple[float, float]:
        if self.kind in ("disc", "ring", "ellipse"):
            rx, ry = self.p["rx"], self.p["ry"]
            c, s = math.cos(self.angle), math.sin(self.angle)
            return math.hypot(rx * c, ry * s), math.hypot(rx * s, ry * c)
        pts = self._outline() @ self.rot.T
        return float(np.abs(pts[:, 0]).max()), float(np.abs(pts[:, 1]).max())

    def scale(self, factor: float) -> None:
        for key in ("hw", "hh", "hl", "ht", "rx", "ry"):
            if key in self.p:
                self.p[key] *= factor
        if "verts" in self.p:
            self.p["verts"] = self.p["verts"] * factor

    def inside(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Boolean inside test at offsets (dx, dy) from the centre, image frame."""
        # Inverse rotation into the local frame.
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = c * dx + s * dy
        v = -s * dx + c * dy
        p = self.p
        if self.kind in ("square", "line"):
            return _box_inside(u, v, p["hw"], p["hh"])
        if self.kind in ("disc", "ellipse"):
            return _ellipse_inside(u, v, p["rx"], p["ry"])
        if self.kind == "ring":
            return _ellipse_inside(u, v, p["rx"], p["ry"]) & ~_ellipse_inside(
                u, v, p["rx"] * _RING_INNER, p["ry"] * _RING_INNER
            )
        if self.kind == "triangle":
            return _convex_inside(u, v, p["verts"])
        if self.kind == "cross":
            hl, ht = p["hl"], p["ht"]
            return _box_inside(u, v, hl, ht) | _box_inside(u, v, ht, hl)
        raise AssertionError(self.kind)


def _make_object(rng: np.random.Generator, cls: int, size: float) -> _Shape:
    """A class shape whose rotated extent has larger side exactly `size` px."""
    name = CLASS_NAMES[cls]
    aspect = float(rng.uniform(0.85, 1.15))
    small_angle = float(np.deg2rad(rng.uniform(-30.0, 30.0)))
    any_angle = float(rng.uniform(0.0, 2.0 * math.pi))
    if name == "square":
        shape = _Shape("square", {"hw": 0.5 * aspect, "hh": 0.5 / aspect}, small_angle)
    elif name == "disc":
        shape = _Shape("disc", {"rx": 0.5 * aspect, "ry": 0.5 / aspect}, any_angle)
    elif name == "ring":
        shape = _Shape("ring", {"rx": 0.5 * aspect, "ry": 0.5 / aspect}, any_angle)
    elif name == "triangle":
        h = math.sqrt(3.0) / 2.0  # equilateral, unit side, centroid at the origin
        verts = np.array([[0.0, -2.0 * h / 3.0], [0.5, h / 3.0], [-0.5, h / 3.0]])
        verts[:, 0] *= aspect
        shape = _Shape("triangle", {"verts": verts}, any_angle)
    elif name == "cross":
        shape = _Shape("cross", {"hl": 0.5, "ht": 0.5 * _CROSS_ARM}, small_angle)
    else:  # pragma: no cover - CLASS_NAMES and this function are kept in sync
        raise AssertionError(name)
    hx, hy = shape.extent()
    shape.scale(size / (2.0 * max(hx, hy)))
    return shape


def _make_distractor(rng: np.random.Generator, image_size: int) -> _Shape:
    angle = float(rng.uniform(0.0, math.pi))
    if rng.random() < 0.5:
        length = float(rng.uniform(15.0, min(150.0, 0.6 * image_size)))
        width = float(rng.uniform(1.0, 2.5))
        return _Shape("line", {"hw": 0.5 * length, "hh": 0.5 * width}, angle)
    major = float(rng.uniform(10.0, min(60.0, 0.4 * image_size)))
    ratio = float(rng.uniform(0.15, 0.35))
    return _Shape("ellipse", {"rx": 0.5 * major, "ry": 0.5 * major * ratio}, angle)


def _coverage(shape: _Shape, cx: float, cy: float, x0: int, y0: int, w: int, h: int,
              ss: int) -> np.ndarray:
    """Anti-aliased coverage [h, w] in 0..1 of the patch with top-left pixel (x0, y0)."""
    offs = (np.arange(ss) + 0.5) / ss
    xs = (x0 + np.arange(w)[:, None] + offs[None, :]).reshape(-1) - cx
    ys = (y0 + np.arange(h)[:, None] + offs[None, :]).reshape(-1) - cy
    inside = shape.inside(xs[None, :], ys[:, None])
    return inside.reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float32)


def _patch(cx: float, cy: float, hx: float, hy: float, image_size: int) -> tuple[int, int, int, int]:
    x0 = max(int(math.floor(cx - hx)) - 1, 0)
    y0 = max(int(math.floor(cy - hy)) - 1, 0)
    x1 = min(int(math.ceil(cx + hx)) + 1, image_size)
    y1 = min(int(math.ceil(cy + hy)) + 1, image_size)
    return x0, y0, x1 - x0, y1 - y0


# ------------------------------------------------------------------------- background
def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a [k, k, C] grid to channel-first [C, size, size].

    Plain gathers, no BLAS: a threaded matmul here slows to a crawl when several
    tf.data workers run at once on a busy CPU.
    """
    k = grid.shape[0]
    g = np.ascontiguousarray(grid.transpose(2, 0, 1))
    t = np.linspace(0.0, k - 1.0, size)
    i0 = np.minimum(t.astype(np.int64), k - 2)
    w = (t - i0).astype(np.float32)
    rows = g[:, i0, :] * (1.0 - w)[None, :, None] + g[:, i0 + 1, :] * w[None, :, None]
    return rows[:, :, i0] * (1.0 - w) + rows[:, :, i0 + 1] * w


def _paint(img: np.ndarray, shape: _Shape, cx: float, cy: float, colour: np.ndarray,
           ss: int) -> None:
    """Alpha-composite a flat-coloured shape into channel-first `img` [3, S, S] in place."""
    size = img.shape[1]
    hx, hy = shape.extent()
    x0, y0, w, h = _patch(cx, cy, hx, hy, size)
    if w <= 0 or h <= 0:
        return
    cov = _coverage(shape, cx, cy, x0, y0, w, h, ss)
    region = img[:, y0:y0 + h, x0:x0 + w]
    region *= 1.0 - cov
    region += cov * colour[:, None, None]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cluttered low-contrast background, float32 channel-first [3, size, size].

    Channel-first internally: numpy broadcasts over a trailing axis of 3 slowly.
    """
    base = rng.uniform(40.0, 215.0, size=3).astype(np.float32)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    gradient = rng.uniform(-60.0, 60.0, size=3).astype(np.float32)
    coarse = int(rng.integers(3, 9))
    grid = rng.normal(0.0, 14.0, (coarse, coarse, 3)).astype(np.float32)
    # Base colour and a linear gradient go into the coarse grid: bilinear upsampling
    # reproduces a linear function exactly, and it saves full-size passes. Node l sits
    # at pixel centre l * (size - 1) / (coarse - 1), i.e. normalised coordinate `pos`.
    pos = ((np.arange(coarse) * (size - 1) / (coarse - 1) + 0.5) / size - 0.5).astype(np.float32)
    ramp = math.cos(theta) * pos[None, :] + math.sin(theta) * pos[:, None]
    grid += base + ramp[..., None] * gradient
    # Smooth value noise at a coarse (above) and a finer scale.
    fine = int(rng.integers(16, 33))
    img = _upsample(grid, size)
    img += _upsample(rng.normal(0.0, 5.0, (fine, fine, 3)).astype(np.float32), size)
    # Object-scale texture (a few px per cell), so that small objects sit on clutter.
    texture = max(size // int(rng.integers(3, 7)), 2)
    img += _upsample(rng.normal(0.0, 3.0, (texture, texture, 3)).astype(np.float32), size)
    # Faint Gaussian blobs, evaluated in a local window for speed.
    for _ in range(int(rng.integers(3, 11))):
        sigma = rng.uniform(4.0, 30.0)
        cx, cy = rng.uniform(0.0, size, size=2)
        amp = rng.uniform(-22.0, 22.0, size=3).astype(np.float32)
        x0, x1 = max(int(cx - 3 * sigma), 0), min(int(cx + 3 * sigma) + 1, size)
        y0, y1 = max(int(cy - 3 * sigma), 0), min(int(cy + 3 * sigma) + 1, size)
        if x1 <= x0 or y1 <= y0:
            continue
        gx = np.exp(-0.5 * ((np.arange(x0, x1) + 0.5 - cx) / sigma) ** 2).astype(np.float32)
        gy = np.exp(-0.5 * ((np.arange(y0, y1) + 0.5 - cy) / sigma) ** 2).astype(np.float32)
        img[:, y0:y1, x0:x1] += (gy[:, None] * gx[None, :]) * amp[:, None, None]
    # Faint lines (low contrast, unlike the distractors).
    for _ in range(int(rng.integers(2, 7))):
        line = _Shape("line", {"hw": 0.5 * rng.uniform(30.0, 1.5 * size),
                               "hh": 0.5 * rng.uniform(1.0, 3.0)}, float(rng.uniform(0, math.pi)))
        cx, cy = rng.uniform(0.0, size, size=2)
        colour_shift = rng.uniform(-18.0, 18.0, size=3).astype(np.float32)
        hx, hy = line.extent()
        x0, y0, w, h = _patch(cx, cy, hx, hy, size)
        if w <= 0 or h <= 0:
            continue
        cov = _coverage(line, cx, cy, x0, y0, w, h, 1)
        img[:, y0:y0 + h, x0:x0 + w] += cov * colour_shift[:, None, None]
    return img


def _contrasting_colour(rng: np.random.Generator, local_mean: np.ndarray) -> np.ndarray:
    best, best_dist = None, -1.0
    for _ in range(20):
        colour = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
        dist = float(np.linalg.norm(colour - local_mean))
        if dist >= _MIN_COLOUR_DISTANCE:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best


# ----------------------------------------------------------------------------- public
def _split_code(split: str) -> int:
    if split not in _SPLIT_CODES:
        raise ValueError(
            f"synthetic_dataset: unknown split {split!r}; use one of 'train', 'val' "
            "('validation'), 'test'."
        )
    return _SPLIT_CODES[split]


def _check_args(image_size: int, seed: int, min_size: float, max_size: float,
                max_objects: int) -> None:
    if image_size < 16:
        raise ValueError(f"synthetic_dataset: image_size={image_size} must be >= 16.")
    if seed < 0:
        raise ValueError(f"synthetic_dataset: seed={seed} must be >= 0.")
    if not 2.0 <= min_size <= max_size:
        raise ValueError(
            f"synthetic_dataset: need 2 <= min_size <= max_size, got min_size={min_size}, "
            f"max_size={max_size}."
        )
    if max_size > image_size - 2:
        raise ValueError(
            f"synthetic_dataset: max_size={max_size} must be <= image_size - 2 "
            f"(= {image_size - 2}); lower max_size or raise image_size."
        )
    if max_objects < 0:
        raise ValueError(f"synthetic_dataset: max_objects={max_objects} must be >= 0.")


def synthetic_example(index: int, split: str = "train", image_size: int = 256, seed: int = 0,
                      min_size: float = 6, max_size: float = 64, max_objects: int = 12,
                      return_background: bool = False) -> dict[str, Any]:
    """Render image `index` of a split with numpy (what :func:`synthetic_dataset` yields).

    Returns ``{"image": uint8 [S, S, 3], "boxes": float32 [N, 4] xyxy pixels,
    "classes": int32 [N]}``; with ``return_background=True`` also ``"background"``:
    uint8 [S, S, 3], the same image (same sensor noise) without the objects, for tests.
    """
    code = _split_code(split)
    _check_args(image_size, seed, min_size, max_size, max_objects)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), code, int(index)]))
    size = int(image_size)

    img = _background(rng, size)
    for _ in range(int(rng.integers(0, 5))):
        shape = _make_distractor(rng, size)
        cx, cy = rng.uniform(0.0, size, size=2)
        _paint(img, shape, float(cx), float(cy),
               _contrasting_colour(rng, img[:, int(cy), int(cx)]), ss=2)
    background = img.copy() if return_background else None

    if max_objects == 0 or rng.random() < 0.05:
        n_objects = 0
    else:
        n_objects = int(rng.integers(1, max_objects + 1))
    log_lo, log_hi = math.log(min_size), math.log(max_size)

    placed: list[tuple[float, float, float, float]] = []  # nominal boxes
    objects: list[tuple[int, int, int, int, int, np.ndarray]] = []  # cls, patch, coverage
    for _ in range(n_objects):
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        obj_size = math.exp(rng.uniform(log_lo, log_hi))
        shape = _make_object(rng, cls, obj_size)
        hx, hy = shape.extent()
        position = None
        for _try in range(20):
            cx = float(rng.uniform(hx + 0.5, size - hx - 0.5))
            cy = float(rng.uniform(hy + 0.5, size - hy - 0.5))
            box = (cx - hx, cy - hy, cx + hx, cy + hy)
            area = 4.0 * hx * hy
            ok = True
            for other in placed:
                iw = min(box[2], other[2]) - max(box[0], other[0])
                ih = min(box[3], other[3]) - max(box[1], other[1])
                if iw > 0 and ih > 0:
                    other_area = (other[2] - other[0]) * (other[3] - other[1])
                    if iw * ih > _MAX_BOX_OVERLAP * min(area, other_area):
                        ok = False
                        break
            if ok:
                position = (cx, cy, box)
                break
        if position is None:
            continue  # too crowded: skip rather than overlap heavily
        cx, cy, box = position
        placed.append(box)
        x0, y0, w, h = _patch(cx, cy, hx, hy, size)
        ss = 4 if obj_size < 24 else 2
        cov = _coverage(shape, cx, cy, x0, y0, w, h, ss)
        local_mean = img[:, y0:y0 + h, x0:x0 + w].reshape(3, -1).mean(axis=1)
        colour = _contrasting_colour(rng, local_mean)
        # Faint linear shading across the object so its colour is not perfectly flat.
        theta = rng.uniform(0.0, 2.0 * math.pi)
        gx = (np.arange(w, dtype=np.float32) + x0 + 0.5 - cx) / max(hx, 1.0)
        gy = (np.arange(h, dtype=np.float32) + y0 + 0.5 - cy) / max(hy, 1.0)
        shade = (math.cos(theta) * gx[None, :] + math.sin(theta) * gy[:, None]) * rng.uniform(0, 12)
        region = img[:, y0:y0 + h, x0:x0 + w]
        region *= 1.0 - cov
        region += cov * (colour[:, None, None] + shade)
        objects.append((cls, x0, y0, w, h, cov))

    # Visibility: walk from the top-most object down, tracking remaining transparency.
    transparency = np.ones((size, size), dtype=np.float32)
    boxes, classes = [], []
    for cls, x0, y0, w, h, cov in reversed(objects):
        t = transparency[y0:y0 + h, x0:x0 + w]
        visible = cov * t
        t *= 1.0 - cov
        total = float(cov.sum())
        mask = visible >= _VISIBLE_THRESHOLD
        if total <= 0 or float(visible.sum()) < _MIN_VISIBLE_FRACTION * total or not mask.any():
            continue
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        boxes.append((x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1))
        classes.append(cls)
    boxes.reverse()
    classes.reverse()

    # Sensor noise over everything (identical for the background copy).
    noise = rng.standard_normal(size=img.shape, dtype=np.float32)
    noise *= rng.uniform(2.0, 6.0)

    def _to_uint8(chw: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(chw + noise), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()

    out = {
        "image": _to_uint8(img),
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "classes": np.asarray(classes, dtype=np.int32).reshape(-1),
    }
    if background is not None:
        out["background"] = _to_uint8(background)
    return out


def synthetic_dataset(split: str = "train", num_images: int | None = None, image_size: int = 256,
                      seed: int = 0, min_size: float = 6, max_size: float = 64,
                      max_objects: int = 12, bounding_box_format: str = "xyxy") -> tf.data.Dataset:
    """Synthetic small-object detection dataset in the package's element format.

    Yields unbatched ``{"images": float32 [S, S, 3] 0..255, "bounding_boxes":
    {"boxes": float32 [N, 4], "classes": int32 [N]}, "image_id": int64}``
    with ``S = image_size`` and class ids indexing :data:`CLASS_NAMES`. Boxes are
    in ``bounding_box_format`` (keras-cv / keras-hub names,
    ``ipg_keras.ops.box_formats.BOX_FORMATS``; ``rel_`` formats are relative to S;
    default "xyxy" pixels; ValueError for an unknown name). Deterministic
    in (split, seed, index); ``num_images`` defaults to 2000 (train) / 200 (val, test).
    See the module docstring for what the images contain.
    """
    check_box_format(bounding_box_format)
    code = _split_code(split)
    _check_args(image_size, seed, min_size, max_size, max_objects)
    if num_images is None:
        num_images = _DEFAULT_NUM_IMAGES[code]
    if num_images < 0:
        raise ValueError(f"synthetic_dataset: num_images={num_images} must be >= 0.")
    kwargs = dict(split=split, image_size=int(image_size), seed=int(seed),
                  min_size=float(min_size), max_size=float(max_size),
                  max_objects=int(max_objects))

    def _generate(index: np.int64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        example = synthetic_example(int(index), **kwargs)
        return example["image"], example["boxes"], example["classes"]

    def _to_element(index: tf.Tensor) -> dict[str, Any]:
        image, boxes, classes = tf.numpy_function(
            _generate, [index], [tf.uint8, tf.float32, tf.int32], stateful=False
        )
        image.set_shape([image_size, image_size, 3])
        boxes.set_shape([None, 4])
        classes.set_shape([None])
        return {
            "images": tf.cast(image, tf.float32),
            "bounding_boxes": {"boxes": boxes, "classes": classes},
            "image_id": index,
        }

    ds = tf.data.Dataset.range(int(num_images)).map(
        _to_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return to_box_format(ds, bounding_box_format)
