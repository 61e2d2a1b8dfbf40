"""Test-time augmentation: predict flipped / transposed views of an image and fuse their boxes.

Each view is one of the 8 symmetries of the pixel grid (identity, flips, the
transpose and its flips); its detections are mapped back to the original
image's pixels and all views' boxes are merged by weighted box fusion
(Solovyev, Wang, Gabruseva, "Weighted boxes fusion", Image and Vision
Computing 2021), per class: boxes are taken in descending score order and join
the first cluster whose current (score-weighted mean) box they overlap at IoU
>= `iou_threshold`, else start one; a cluster becomes its score-weighted mean
box, scored by the sum of its scores over the number of views (a box that one
view alone found keeps 1/n of its score). Averaging the views' boxes is what
improves localisation: on the trees val image, 4 views lift AP50 from 0.401 to
0.440 and AP75 from 0.044 to 0.060 (benchmarks/RESULTS.md, "Trees recipe").
Views can also be taken at several scales (`scales`, the image resized by each
factor, boxes scaled back), as multi-scale testing does (mmdetection's
`TestTimeAug` `img_scales`): on the trees val image, 4 flips at scales 1, 0.8 and
1.25 give AP50 0.546 against 0.495 for the 4 flips alone (benchmarks/trees_tta.py).
The fusion is a short NumPy loop of our own (the reference package,
ensemble-boxes, brings numba and pandas for it).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

# The symmetries of the pixel grid, in the order used for n views: "t" transposes (rows <-> columns) first,
# then "h" flips left-right and "v" top-bottom.
VIEWS = ("", "h", "v", "hv", "t", "th", "tv", "thv")
TTA_VIEW_COUNTS = (1, 4, 8)


def view_image(image: np.ndarray, view: str) -> np.ndarray:
    """The `[H, W, C]` image seen in `view` (see VIEWS)."""
    x = image.transpose(1, 0, 2) if "t" in view else image
    x = x[:, ::-1] if "h" in view else x
    x = x[::-1] if "v" in view else x
    return np.ascontiguousarray(x)


def unview_boxes(boxes: np.ndarray, view: str, view_shape: tuple[int, int]) -> np.ndarray:
    """Boxes `[K, 4]` xyxy in the pixels of `view_image(image, view)` -> the image's pixels.

    `view_shape` is that view's `(h, w)`.
    """
    h, w = view_shape
    b = np.array(boxes, np.float32, copy=True).reshape(-1, 4)
    if "h" in view:
        b[:, [0, 2]] = w - b[:, [2, 0]]
    if "v" in view:
        b[:, [1, 3]] = h - b[:, [3, 1]]
    if "t" in view:
        b = b[:, [1, 0, 3, 2]]
    return b


def scale_image(image: np.ndarray, scale: float) -> np.ndarray:
    """`image` `[H, W, C]` resized by `scale` (antialiased bilinear, Pillow), same dtype; sides rounded, >= 1."""
    from PIL import Image

    h, w = image.shape[:2]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    if (size[1], size[0]) == (h, w):
        return image
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8) if image.dtype != np.uint8 else image
    resized = np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR))
    return resized.astype(image.dtype)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(union, 1e-9)


def weighted_box_fusion(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    num_views: int,
    iou_threshold: float = 0.65,
    max_detections: int = 300,
) -> dict[str, np.ndarray]:
    """Fuses the detections of `num_views` views of one image (module docstring), per class.

    Args:
        boxes: float `[K, 4]` xyxy pixels; scores `[K]`; classes int `[K]`, all views together.
        num_views: the number of views the detections came from (the score divisor).
        iou_threshold: IoU with a cluster's mean box at which a box joins it.
        max_detections: fused boxes kept, by score.

    Returns:
        `{"boxes": float32 [D, 4], "scores": float32 [D], "classes": int32 [D]}`, sorted by score.
    """
    if num_views < 1:
        raise ValueError(f"num_views={num_views} must be at least 1")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes, np.int64).reshape(-1)
    out_boxes, out_scores, out_classes = [], [], []
    for cls in np.unique(classes):
        idx = np.flatnonzero(classes == cls)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        sums: list[np.ndarray] = []
        weights: list[float] = []
        means = np.zeros((0, 4))
        for box, score in zip(boxes[idx], scores[idx]):
            if len(means):
                overlaps = _iou(box, means)
                k = int(overlaps.argmax())
                if overlaps[k] >= iou_threshold:
                    sums[k] = sums[k] + score * box
                    weights[k] += score
                    means[k] = sums[k] / weights[k]
                    continue
            sums.append(score * box)
            weights.append(float(score))
            means = np.vstack([means, box[None]])
        out_boxes.append(means)
        out_scores.append(np.asarray(weights) / num_views)
        out_classes.append(np.full(len(weights), cls))
    if not out_boxes:
        return {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
                "classes": np.zeros(0, np.int32)}
    b, s, c = np.concatenate(out_boxes), np.concatenate(out_scores), np.concatenate(out_classes)
    keep = np.argsort(-s, kind="stable")[:max_detections]
    return {"boxes": b[keep].astype(np.float32), "scores": s[keep].astype(np.float32),
            "classes": c[keep].astype(np.int32)}


def predict_views(
    predict: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    image: np.ndarray,
    views: int = 4,
    *,
    scales: Sequence[float] = (1.0,),
    iou_threshold: float = 0.65,
    max_detections: int = 300,
) -> dict[str, np.ndarray]:
    """Detections of `image` `[H, W, 3]` from `views` (1, 4 or 8) of it at each of `scales`, fused.

    `predict(view_pixels)` returns `{"boxes" [K, 4] xyxy in the view's pixels,
    "scores" [K], "classes" [K]}` (e.g. sliced inference). Each scale resizes the
    image by that factor (`scale_image`) before its views are taken; boxes come
    back in `image`'s pixels. All `views * len(scales)` predictions are merged by
    weighted box fusion (module docstring). With one view at scale 1, `predict`'s
    result is returned as it is.

    Raises:
        ValueError: `views` not in (1, 4, 8), or `scales` empty or not all > 0.
    """
    if views not in TTA_VIEW_COUNTS:
        raise ValueError(f"views={views}: test-time augmentation takes 1, 4 (flips) or 8 (flips and transposes) views")
    scales = [float(s) for s in scales]
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales={scales}: give one or more positive factors (1.0 is the image as it is)")
    if views == 1 and scales == [1.0]:
        return dict(predict(image))
    h, w = image.shape[:2]
    all_boxes, all_scores, all_classes = [], [], []
    for scale in scales:
        scaled = image if scale == 1.0 else scale_image(image, scale)
        factors = np.array([scaled.shape[1] / w, scaled.shape[0] / h] * 2, np.float32)
        for view in VIEWS[:views]:
            pixels = view_image(scaled, view)
            pred = predict(pixels)
            all_boxes.append(unview_boxes(pred["boxes"], view, pixels.shape[:2]) / factors)
            all_scores.append(np.asarray(pred["scores"], np.float32).reshape(-1))
            all_classes.append(np.asarray(pred["classes"], np.int32).reshape(-1))
    return weighted_box_fusion(np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_classes),
                               views * len(scales), iou_threshold, max_detections)
