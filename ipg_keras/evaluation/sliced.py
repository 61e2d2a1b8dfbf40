"""COCO evaluation of a detector on full-size images through sliced inference."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ipg_keras.evaluation.coco import coco_metrics
from ipg_keras.inference import predict_views, sliced_predict


def evaluate_sliced(
    predict_fn: Callable[[np.ndarray], Mapping[str, Any]],
    elements: Iterable[Mapping[str, Any]],
    *,
    tile_size: int,
    overlap: int,
    input_size: int | None = None,
    batch_size: int = 8,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_detections: int = 300,
    tta: int = 1,
    tta_scales: Sequence[float] = (1.0,),
    verbose: bool = True,
) -> dict[str, float]:
    """COCO metrics over unbatched full images (element format), each predicted tile by tile.

    Large images (aerial, satellite, microscopy) cannot be resized to a detector's
    input without erasing small objects: tiles of `tile_size` with `overlap` are
    predicted in batches by `predict_fn` and merged with class-aware NMS, and the
    boxes are scored in the original image's pixels. With `input_size` (the
    detector's input side, pixels) different from `tile_size`, each tile is resized
    to it first: a model trained on `tile_size` windows resized to its input
    (`data.tile_size` < `data.image_size` zooms in) is evaluated at the scale it
    was trained at. `max_detections` is both what
    the merge keeps per image and the scoring limit (see `coco_metrics`), printed
    when `verbose`. `tta` (1, 4 or 8) predicts that many flipped / transposed
    views of each image, at each of `tta_scales` (resize factors), and fuses them
    (`ipg_keras.inference.predict_views`).
    """
    from tqdm.auto import tqdm

    ground_truths, detections = [], []
    for element in tqdm(elements, desc="sliced eval", unit="image", disable=not verbose):
        image = np.asarray(element["images"])
        bb = element["bounding_boxes"]
        gt = {
            "image_id": int(element["image_id"]),
            "boxes": np.asarray(bb["boxes"]),
            "classes": np.asarray(bb["classes"]),
            "height": image.shape[0],
            "width": image.shape[1],
        }
        for flag in ("difficult", "iscrowd"):
            if flag in bb:
                gt[flag] = np.asarray(bb[flag])
        ground_truths.append(gt)
        pred = predict_views(
            lambda view: sliced_predict(
                predict_fn, view, tile_size=tile_size, overlap=overlap, input_size=input_size, batch_size=batch_size,
                iou_threshold=iou_threshold, score_threshold=score_threshold, max_detections=max_detections,
            ),
            image, tta, scales=tta_scales, max_detections=max_detections,
        )
        detections.append({"image_id": gt["image_id"], **{k: pred[k] for k in ("boxes", "scores", "classes")}})
    metrics = coco_metrics(
        ground_truths, detections, num_classes, class_names=class_names, max_detections=max_detections
    )
    if verbose:
        print(f"sliced eval: AP {metrics['AP']:.4f}, up to {metrics['max_detections']} detections per image")
    return metrics
