"""Where a detector finds objects: COCO metrics per object-size bucket, and true positives per FPN level.

COCO's own size split (small < 32², medium < 96²) puts every object of a
small-object set into one or two buckets. These functions score finer
buckets of `sqrt(area)` in pixels with the same pycocotools matching
(`COCOeval` with custom `areaRng`), and count which FPN level's anchors the
true positives came from (detections carry `levels`, from
`IPGRetinaNet.decode_predictions(..., return_levels=True)`).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ipg_keras.evaluation.coco import _build, _make_coco, _np, detection_limit

# sqrt(area) bucket edges in pixels: fine below 32 px (COCO "small"), where small-object work happens.
DEFAULT_SIZE_BUCKETS: tuple[tuple[float, float], ...] = (
    (0, 12), (12, 16), (16, 24), (24, 32), (32, 48), (48, 96), (96, 1e5),
)


def bucket_name(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}" if hi < 1e5 else f">={lo:g}"


def _evaluate(ground_truths, detections, buckets, num_classes, max_detections):
    from pycocotools.cocoeval import COCOeval

    ground_truths, detections = list(ground_truths), list(detections)
    gt_data, dt_data, cat_ids = _build(ground_truths, detections, num_classes)
    per_image: dict[int, int] = {}
    for ann in dt_data["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    limit = detection_limit(max_detections, max(per_image.values(), default=0))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(_make_coco(gt_data), _make_coco(dt_data), iouType="bbox")
        evaluator.params.catIds = cat_ids
        evaluator.params.maxDets = [limit]
        evaluator.params.areaRng = [[0, 1e10]] + [[lo**2, hi**2] for lo, hi in buckets]
        evaluator.params.areaRngLbl = ["all"] + [bucket_name(lo, hi) for lo, hi in buckets]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator, gt_data, dt_data


def size_bucket_metrics(ground_truths: Iterable[Mapping[str, Any]], detections: Iterable[Mapping[str, Any]],
                        buckets: Sequence[tuple[float, float]] = DEFAULT_SIZE_BUCKETS, *,
                        num_classes: int | None = None, max_detections: int | None = None) -> list[dict[str, Any]]:
    """COCO AP and recall per object-size bucket (`sqrt(area)` of the ground truth, pixels).

    Inputs as `ipg_keras.evaluation.coco_metrics` (per image dicts, boxes xyxy
    pixels). Detections are matched over all sizes, then scored per bucket as
    COCOeval does for its small/medium/large split (a detection matched to an
    object of another bucket is ignored there).

    Returns one dict per bucket: `bucket` (name, e.g. "12-16"), `lo`, `hi`,
    `num_gt`, `AP` (IoU .5:.95), `AP50`, `AR` (recall averaged over IoU .5:.95)
    and `recall50` (recall at IoU 0.5), at up to `max_detections` per image;
    -1.0 where the bucket has no objects.
    """
    evaluator, gt_data, _ = _evaluate(ground_truths, detections, buckets, num_classes, max_detections)
    precision, recall = evaluator.eval["precision"], evaluator.eval["recall"]  # [T, R, K, A, M], [T, K, A, M]

    def mean(x):
        x = x[x > -1]
        return float(x.mean()) if x.size else -1.0

    sizes = np.sqrt([a["area"] for a in gt_data["annotations"]]) if gt_data["annotations"] else np.zeros(0)
    out = []
    for a, (lo, hi) in enumerate(buckets, start=1):
        out.append({
            "bucket": bucket_name(lo, hi), "lo": float(lo), "hi": float(hi),
            "num_gt": int(((sizes >= lo) & (sizes < hi)).sum()),
            "AP": mean(precision[:, :, :, a, -1]), "AP50": mean(precision[0, :, :, a, -1]),
            "AR": mean(recall[:, :, a, -1]), "recall50": mean(recall[0, :, a, -1]),
        })
    return out


def true_positives_by_level(ground_truths: Iterable[Mapping[str, Any]], detections: Iterable[Mapping[str, Any]],
                            buckets: Sequence[tuple[float, float]] = DEFAULT_SIZE_BUCKETS, *,
                            num_classes: int | None = None,
                            max_detections: int | None = None) -> dict[str, dict[str, int]]:
    """Counts true positives at IoU 0.5 by the FPN level that produced them, overall and per size bucket.

    `detections` are per image dicts with `boxes`, `scores`, `classes` and
    `levels` [K] int (the FPN level of each detection; -1 / class -1 = padding).
    A true positive is a detection that COCOeval (IoU 0.5, up to
    `max_detections` per image) matches to a ground truth.

    Returns `{"all": {"P3": n, ...}, "<bucket>": {"P3": n, ...}, ...}`, buckets
    by the matched ground truth's `sqrt(area)` in pixels.
    """
    detections = list(detections)
    levels: dict[int, int] = {}  # COCO detection id -> level (ids are 1.. in the order _build adds them)
    next_id = 1
    for det in detections:
        keep = _np(det["classes"]).reshape(-1) >= 0
        for level in _np(det["levels"]).reshape(-1)[keep]:
            levels[next_id] = int(level)
            next_id += 1
    evaluator, _, _ = _evaluate(ground_truths, detections, buckets, num_classes, max_detections)
    names = ["all"] + [bucket_name(lo, hi) for lo, hi in buckets]
    counts: dict[str, dict[str, int]] = {name: {} for name in names}
    for entry in evaluator.evalImgs:
        if entry is None:
            continue
        name = names[evaluator.params.areaRng.index(entry["aRng"])]
        matched = entry["dtMatches"][0] > 0  # IoU 0.5
        ignored = entry["dtIgnore"][0].astype(bool)
        for dt_id, tp, ig in zip(entry["dtIds"], matched, ignored):
            if tp and not ig:
                key = f"P{levels[dt_id]}"
                counts[name][key] = counts[name].get(key, 0) + 1
    return {name: dict(sorted(c.items())) for name, c in counts.items()}
