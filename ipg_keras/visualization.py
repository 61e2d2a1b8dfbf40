"""Drawing detections and training curves (PIL for boxes, matplotlib Agg for plots).

Inputs follow the package conventions: images float 0..255 (or uint8) [H, W, 3],
boxes xyxy pixels, classes int (-1 = padding, skipped), predictions in the detector
prediction format ``{"boxes" [B, K, 4], "scores" [B, K], "classes" [B, K],
"num_detections" [B]}`` and ground truth in the padded batched form
``{"boxes" [B, M, 4], "classes" [B, M]}`` (or lists of per-image dicts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Distinct, saturated colours for predicted classes; ground truth is always GT_COLOUR.
_PALETTE = [
    (255, 64, 64), (64, 160, 255), (255, 200, 0), (200, 64, 255), (255, 128, 0),
    (0, 220, 220), (255, 64, 200), (160, 255, 64), (128, 128, 255), (255, 160, 160),
]
GT_COLOUR = (0, 255, 0)


def _to_numpy(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _to_uint8_image(image: Any) -> np.ndarray:
    arr = _to_numpy(image)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"draw_detections: image must be [H, W, 3], got shape {arr.shape}.")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float32)), 0, 255).astype(np.uint8)
    return arr


def _class_label(cls: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= cls < len(class_names):
        return str(class_names[cls])
    return str(cls)


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def _split_gt(ground_truth: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """GT given as a {"boxes", "classes"} mapping or a bare [M, 4] box array."""
    if ground_truth is None:
        return np.zeros((0, 4), np.float32), None
    if isinstance(ground_truth, Mapping):
        gt = ground_truth.get("bounding_boxes", ground_truth)
        classes = gt.get("classes")
        return (_to_numpy(gt["boxes"]).reshape(-1, 4),
                None if classes is None else _to_numpy(classes).reshape(-1))
    return _to_numpy(ground_truth).reshape(-1, 4), None


def draw_detections(image: Any, boxes: Any, classes: Any, scores: Any | None = None,
                    class_names: Sequence[str] | None = None, ground_truth: Any | None = None,
                    score_threshold: float = 0.0, scale: int = 1,
                    show_labels: bool = True) -> np.ndarray:
    """Draw labelled predicted boxes (class colours) and ground truth (green) on an image.

    image: [H, W, 3] float 0..255 or uint8. boxes: [K, 4] xyxy pixels; classes: [K]
    (entries < 0 are padding and skipped); scores: optional [K] (boxes below
    `score_threshold` skipped). ground_truth: optional {"boxes" [M, 4], "classes" [M]}
    or a [M, 4] array. `scale` upsamples the image (nearest) first so that tiny
    objects and labels stay legible. Returns uint8 [H*scale, W*scale, 3].
    """
    arr = _to_uint8_image(image)
    if scale != 1:
        arr = np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1)
    canvas = Image.fromarray(arr)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    width = max(1, scale // 2 + (1 if scale > 1 else 0))

    gt_boxes, gt_classes = _split_gt(ground_truth)
    for i, box in enumerate(gt_boxes):
        if gt_classes is not None and gt_classes[i] < 0:
            continue
        if np.all(box < 0):
            continue
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        # Box edges are pixel boundaries; PIL's rectangle includes its end pixel.
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=GT_COLOUR, width=width)

    boxes = _to_numpy(boxes).reshape(-1, 4)
    classes = _to_numpy(classes).reshape(-1).astype(np.int64)
    scores_arr = None if scores is None else _to_numpy(scores).reshape(-1)
    if len(classes) != len(boxes) or (scores_arr is not None and len(scores_arr) != len(boxes)):
        raise ValueError(
            f"draw_detections: boxes ({len(boxes)}), classes ({len(classes)}) and scores "
            f"({None if scores_arr is None else len(scores_arr)}) must have the same length."
        )
    for i, box in enumerate(boxes):
        cls = int(classes[i])
        if cls < 0 or (scores_arr is not None and scores_arr[i] < score_threshold):
            continue
        colour = _PALETTE[cls % len(_PALETTE)]
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=width)
        if show_labels:
            label = _class_label(cls, class_names)
            if scores_arr is not None:
                label += f" {scores_arr[i]:.2f}"
            tx, ty = x1, y1
            left, top, right, bottom = draw.textbbox((tx, ty), label, font=font)
            ty = ty - (bottom - top) - 2 if ty - (bottom - top) - 2 >= 0 else y2
            left, top, right, bottom = draw.textbbox((tx, ty), label, font=font)
            draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=colour)
            draw.text((tx, ty), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _per_image(batch: Any, index: int, kind: str) -> dict[str, np.ndarray]:
    """Pick image `index` out of a batched dict or a list of per-image dicts."""
    if isinstance(batch, Mapping):
        batch = batch.get("bounding_boxes", batch)
        out = {k: _to_numpy(v)[index] for k, v in batch.items() if k != "num_detections"}
        if kind == "pred" and "num_detections" in batch:
            n = int(_to_numpy(batch["num_detections"])[index])
            out = {k: v[:n] for k, v in out.items()}
        return out
    item = batch[index]
    item = item.get("bounding_boxes", item) if isinstance(item, Mapping) else item
    return {k: _to_numpy(v) for k, v in item.items()}


def save_detection_grid(images: Any, predictions: Any, path: str | Path,
                        class_names: Sequence[str] | None, ground_truths: Any | None = None,
                        max_images: int = 8, score_threshold: float = 0.3, scale: int = 1,
                        columns: int = 4) -> Path:
    """Write a PNG grid of images with predicted (and optional GT) boxes; return its path.

    images: [B, H, W, 3]; predictions: prediction-format dict (batched, with
    num_detections) or a list of per-image {"boxes", "classes", "scores"}; ground_truths:
    padded batched {"boxes", "classes"} or a list of per-image dicts, or None.
    predictions may be None to draw ground truth only.
    """
    images = _to_numpy(images)
    if images.ndim != 4:
        raise ValueError(f"save_detection_grid: images must be [B, H, W, 3], got {images.shape}.")
    n = min(len(images), max_images)
    if n == 0:
        raise ValueError("save_detection_grid: no images to draw (empty batch or max_images=0).")
    tiles = []
    for i in range(n):
        if predictions is not None:
            pred = _per_image(predictions, i, "pred")
            boxes, classes, scores = pred["boxes"], pred["classes"], pred.get("scores")
        else:
            boxes, classes, scores = np.zeros((0, 4)), np.zeros((0,), np.int64), None
        gt = _per_image(ground_truths, i, "gt") if ground_truths is not None else None
        tiles.append(draw_detections(images[i], boxes, classes, scores, class_names, gt,
                                     score_threshold=score_threshold, scale=scale))
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    pad = 4
    grid = np.full((rows * th + (rows + 1) * pad, cols * tw + (cols + 1) * pad, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y0, x0 = pad + r * (th + pad), pad + c * (tw + pad)
        grid[y0:y0 + tile.shape[0], x0:x0 + tile.shape[1]] = tile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


def plot_history(history_dict: Any, path: str | Path, title: str | None = None,
                 x_values: Mapping[str, Sequence[float]] | None = None, x_label: str = "epoch") -> Path:
    """Plot loss curves (left) and other metrics (right) of a keras History; return the path.

    history_dict: a ``keras.callbacks.History`` or its ``.history`` dict {name: [values]}.
    x_values: optional {name: [x]} (e.g. training steps at which each value was
    logged, labelled ``x_label``); a series without it that is shorter than the
    longest (metrics computed every n epochs) is spread over the run's epochs
    assuming evenly spaced evaluations ending at the last epoch.
    """
    # An explicit Agg canvas (no pyplot): works headless and leaves the user's backend alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    history = getattr(history_dict, "history", history_dict)
    if not isinstance(history, Mapping) or not history:
        raise ValueError("plot_history: expected a non-empty {metric: [values]} dict or History.")
    series = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in history.items()}
    n_epochs = max(len(v) for v in series.values())
    losses = {k: v for k, v in series.items() if "loss" in k.lower()}
    metrics = {k: v for k, v in series.items() if k not in losses}
    panels = [(name, group) for name, group in (("loss", losses), ("metrics", metrics)) if group]
    fig = Figure(figsize=(6 * len(panels), 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, group) in zip(axes[0], panels):
        for key, values in sorted(group.items()):
            if len(values) == 0:
                continue
            if x_values is not None and key in x_values and len(x_values[key]) == len(values):
                x = np.asarray(x_values[key], np.float64)
            else:
                x = n_epochs / len(values) * np.arange(1, len(values) + 1)
            ax.plot(x, values, marker="o" if len(values) < 30 else None, markersize=3, label=key)
        ax.set_xlabel(x_label if x_values is not None else "epoch")
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
