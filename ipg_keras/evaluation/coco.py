"""COCO box evaluation (pycocotools' COCOeval) on in-memory ground truth and detections.

Works on plain per-image dicts or on batches in the package conventions; it never
imports the models (dependency order: data -> models -> evaluation).

* Boxes come in xyxy pixels and are converted to COCO's xywh; box area ``w * h`` is
  the annotation area, so the small / medium / large buckets (< 32^2, 32^2-96^2,
  > 96^2 px^2) apply to the boxes in the frame they are given in (see ``scales`` of
  :class:`COCOEvaluator` to evaluate in original-image pixels).
* Class ``c`` becomes COCO category ``c + 1`` (COCO ids start at 1); class ``-1`` is
  padding and dropped.
* ``difficult`` (Pascal VOC) is treated as ``iscrowd=1``: COCOeval then neither
  rewards nor penalises detections of such objects, the usual VOC practice.
* Metrics are COCO's: AP (IoU .50:.05:.95), AP50, AP75, APs, APm, APl, plus AR1,
  AR10, AR100, ARs, ARm, ARl; -1.0 where undefined (no ground truth in that bucket).
* One detection limit per image for every scoring path (`coco_metrics`,
  `COCOEvaluator`, `evaluate_model`, the callback, `evaluate_sliced`,
  `evaluate_detections` for `ipg-predict`): pycocotools' ``params.maxDets`` is
  ``[1, 10, L]`` with L = the limit asked for (the model's ``max_detections``
  where the path knows the model; COCO's 100 otherwise), raised to the most
  detections any image has, so every detection the model keeps is scored (a
  dense image with 144 objects scored at 100 detections loses a third of its
  recall). L is logged, printed in the summary and returned as
  ``metrics["max_detections"]``; AP* and "AR100" are computed at L.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable

import numpy as np

METRIC_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
COCO_MAX_DETECTIONS = 100  # pycocotools' default maxDets[-1]
logger = logging.getLogger("ipg_keras.evaluation")


def detection_limit(max_detections: int | None, most_per_image: int) -> int:
    """The detection limit per image that every scoring path uses (pycocotools' maxDets[-1]).

    max_detections: what the model keeps per image (its ``max_detections``), or
    None when unknown (then COCO's 100). Raised to ``most_per_image`` (the most
    detections any scored image has), so that no detection given is cut.
    """
    base = COCO_MAX_DETECTIONS if max_detections is None else int(max_detections)
    if base < 1:
        raise ValueError(f"max_detections must be >= 1, got {max_detections}")
    return max(base, int(most_per_image))


def model_max_detections(model: Any) -> int | None:
    """A detector's ``max_detections`` (attribute or config entry), or None when it has none."""
    value = getattr(model, "max_detections", None)
    if value is None and hasattr(model, "get_config"):
        try:
            value = model.get_config().get("max_detections")
        except Exception:  # noqa: BLE001 - models without a usable config simply have no limit
            value = None
    return int(value) if value is not None else None


def _np(x: Any) -> np.ndarray:
    """Tensor / ragged tensor / list -> numpy (ragged padded with -1)."""
    if hasattr(x, "to_tensor"):  # tf.RaggedTensor (keras-cv ragged bounding boxes)
        x = x.to_tensor(default_value=-1)
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x)


def _undefined_metrics() -> dict[str, float]:
    return {name: -1.0 for name in METRIC_NAMES}


def _flag(gt: Mapping[str, Any], key: str, n: int, where: str) -> np.ndarray:
    if key not in gt or gt[key] is None:
        return np.zeros(n, dtype=bool)
    flag = _np(gt[key]).reshape(-1).astype(bool)
    if flag.shape[0] != n:
        raise ValueError(f"coco_metrics: {where} '{key}' has {flag.shape[0]} entries, boxes have {n}.")
    return flag


def _check_boxes(boxes: np.ndarray, where: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"coco_metrics: {where} boxes must be [N, 4] xyxy, got shape {boxes.shape}.")
    return boxes


def _to_xywh(boxes: np.ndarray) -> np.ndarray:
    xywh = boxes.copy()
    xywh[:, 2:] = np.maximum(boxes[:, 2:] - boxes[:, :2], 0.0)
    return xywh


def _make_coco(dataset: dict[str, Any]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def _build(ground_truths: Iterable[Mapping[str, Any]], detections: Iterable[Mapping[str, Any]],
           num_classes: int | None) -> tuple[dict[str, Any], dict[str, Any], list[int]]:
    """COCO json structures (gt dataset, dt dataset, category ids) from per-image dicts."""
    images, gt_anns, seen_ids = [], [], set()
    classes_seen: set[int] = set()
    for gt in ground_truths:
        image_id = int(_np(gt["image_id"]))
        if image_id in seen_ids:
            raise ValueError(f"coco_metrics: duplicate ground-truth image_id {image_id}; ids must be unique.")
        seen_ids.add(image_id)
        bb = gt.get("bounding_boxes", gt)
        where = f"ground truth of image {image_id}:"
        boxes = _check_boxes(_np(bb["boxes"]), where)
        classes = _np(bb["classes"]).reshape(-1).astype(np.int64)
        if classes.shape[0] != boxes.shape[0]:
            raise ValueError(f"coco_metrics: {where} {boxes.shape[0]} boxes but {classes.shape[0]} classes.")
        crowd = _flag(bb, "iscrowd", len(classes), where) | _flag(bb, "difficult", len(classes), where)
        keep = classes >= 0  # class -1 = padding
        boxes, classes, crowd = boxes[keep], classes[keep], crowd[keep]
        height = int(_np(gt.get("height", 0)))
        width = int(_np(gt.get("width", 0)))
        images.append({"id": image_id, "height": height, "width": width})
        for box, cls, is_crowd in zip(_to_xywh(boxes), classes, crowd):
            gt_anns.append({
                "id": len(gt_anns) + 1,  # COCOeval treats id 0 as "unmatched"
                "image_id": image_id, "category_id": int(cls) + 1,
                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]),
                "iscrowd": int(is_crowd),
            })
            classes_seen.add(int(cls))

    dt_anns = []
    for det in detections:
        image_id = int(_np(det["image_id"]))
        if image_id not in seen_ids:
            raise ValueError(
                f"coco_metrics: detections for image_id {image_id} have no ground-truth entry; "
                "pass a ground-truth dict (boxes may be empty) for every evaluated image."
            )
        where = f"detections of image {image_id}:"
        boxes = _check_boxes(_np(det["boxes"]), where)
        classes = _np(det["classes"]).reshape(-1).astype(np.int64)
        scores = _np(det["scores"]).reshape(-1).astype(np.float64)
        if not len(boxes) == len(classes) == len(scores):
            raise ValueError(
                f"coco_metrics: {where} boxes ({len(boxes)}), classes ({len(classes)}) and scores "
                f"({len(scores)}) differ in length."
            )
        keep = classes >= 0
        for box, cls, score in zip(_to_xywh(boxes[keep]), classes[keep], scores[keep]):
            dt_anns.append({
                "id": len(dt_anns) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]),
                "score": float(score), "iscrowd": 0,
            })
            classes_seen.add(int(cls))

    if num_classes is not None:
        bad = sorted(c for c in classes_seen if c >= num_classes)
        if bad:
            raise ValueError(f"coco_metrics: class ids {bad} out of range for num_classes={num_classes}.")
        cat_ids = list(range(1, num_classes + 1))
    else:
        cat_ids = sorted(c + 1 for c in classes_seen)
    categories = [{"id": c, "name": str(c - 1)} for c in cat_ids]
    gt_data = {"images": images, "annotations": gt_anns, "categories": categories}
    dt_data = {"images": images, "annotations": dt_anns, "categories": categories}
    return gt_data, dt_data, cat_ids


def _per_class(precision: np.ndarray, cat_ids: list[int],
               class_names: Sequence[str] | None) -> dict[str, float]:
    """AP and AP50 per class from COCOeval's precision [T, R, K, A, M] (area all, 100 dets)."""
    out = {}
    for k, cat in enumerate(cat_ids):
        cls = cat - 1
        name = class_names[cls] if class_names is not None and cls < len(class_names) else str(cls)
        p_all = precision[:, :, k, 0, -1]
        p_50 = precision[0, :, k, 0, -1]
        out[f"AP/{name}"] = float(p_all[p_all > -1].mean()) if (p_all > -1).any() else -1.0
        out[f"AP50/{name}"] = float(p_50[p_50 > -1].mean()) if (p_50 > -1).any() else -1.0
    return out


def _average_precisions(precision: np.ndarray, params: Any) -> dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl from COCOeval's precision [T, R, K, A, M] at the last maxDets."""
    def mean(p: np.ndarray) -> float:
        p = p[p > -1]
        return float(p.mean()) if p.size else -1.0

    iou = list(np.round(params.iouThrs, 2))
    out = {}
    for name, t, area in (("AP", None, 0), ("AP50", 0.5, 0), ("AP75", 0.75, 0),
                          ("APs", None, 1), ("APm", None, 2), ("APl", None, 3)):
        p = precision[:, :, :, area, -1]
        out[name] = mean(p if t is None else p[iou.index(t)])
    return out


def coco_metrics(ground_truths: Iterable[Mapping[str, Any]],
                 detections: Iterable[Mapping[str, Any]], num_classes: int | None = None,
                 *, class_names: Sequence[str] | None = None, per_class: bool = False,
                 return_summary: bool = False,
                 max_detections: int | None = None) -> dict[str, float] | tuple[dict[str, float], str]:
    """COCO box metrics of per-image detections against per-image ground truth.

    ground_truths: per image ``{"image_id", "boxes" [N, 4] xyxy, "classes" [N],
    optional "iscrowd" / "difficult" [N] (both ignored in scoring), "height", "width"}``
    (the element format's nested ``"bounding_boxes"`` is accepted too). Every image
    evaluated must appear, with empty boxes if it has no objects.
    detections: per image ``{"image_id", "boxes" [K, 4] xyxy, "scores" [K], "classes" [K]}``.
    num_classes: if given, class ids must lie in ``0..num_classes-1``.
    max_detections: what the model keeps per image (None: COCO's 100); the limit
    used is `detection_limit` of it (never below the most detections of an image).
    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", ..., "ARl"}`` floats
    (-1.0 where undefined) and ``"max_detections"`` (int, the limit used; AP* and
    AR100 are at that limit); with ``per_class`` also ``"AP/<name>"``, ``"AP50/<name>"``;
    with ``return_summary`` a tuple (metrics, COCOeval's printed summary text, first
    line naming the limit).
    """
    from pycocotools.cocoeval import COCOeval

    gt_data, dt_data, cat_ids = _build(ground_truths, detections, num_classes)
    per_image: dict[int, int] = {}
    for ann in dt_data["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    limit = detection_limit(max_detections, max(per_image.values(), default=0))
    header = (f"COCO evaluation: up to {limit} detections per image (pycocotools maxDets=[1, 10, {limit}]; "
              f"AP and AR100 at {limit})\n")
    logger.info("%s", header.strip())
    if not gt_data["images"] or not cat_ids:
        metrics = {**_undefined_metrics(), "max_detections": limit}
        return (metrics, header + "no images or no classes to evaluate\n") if return_summary else metrics
    coco_gt, coco_dt = _make_coco(gt_data), _make_coco(dt_data)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):  # COCOeval prints progress and the table
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.catIds = cat_ids
        evaluator.params.maxDets = [1, 10, limit]
        evaluator.evaluate()
        evaluator.accumulate()
        start = text.tell()
        evaluator.summarize()
    summary = text.getvalue()[start:]
    metrics: dict[str, Any] = {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats)}
    if limit != COCO_MAX_DETECTIONS:
        # pycocotools' summarize() hard-codes maxDets=100 for "AP": recompute the AP
        # metrics from the accumulated precision at our maxDets, and fix that line.
        metrics.update(_average_precisions(evaluator.eval["precision"], evaluator.params))
        lines = summary.splitlines(keepends=True)
        if lines:
            lines[0] = (f" {'Average Precision':<18} (AP) @[ IoU={'0.50:0.95':<9} | area={'all':>6s} | "
                        f"maxDets={limit:>3d} ] = {metrics['AP']:0.3f}\n")
        summary = "".join(lines)
    metrics["max_detections"] = limit
    if per_class:
        metrics.update(_per_class(evaluator.eval["precision"], cat_ids, class_names))
    return (metrics, header + summary) if return_summary else metrics


def evaluate_detections(ground_truth: Any, detections: Mapping[Any, Mapping[str, Any]], *,
                        num_classes: int | None = None, class_names: Sequence[str] | None = None,
                        per_class: bool = False, max_detections: int | None = None,
                        return_summary: bool = False) -> dict[str, float] | tuple[dict[str, float], str]:
    """COCO metrics of detections on image files against their ground truth.

    ground_truth: ``ipg_keras.data.load_ground_truth(...)`` (a ``GroundTruth``) or a
    mapping file -> ``{"boxes" [N, 4] xyxy pixels, "classes" [N], optional
    "iscrowd"/"difficult" [N], "height", "width"}``.
    detections: file -> ``{"boxes" [K, 4] xyxy pixels of the file, "scores" [K],
    "classes" [K]}`` (class -1 = padding); only files that have ground truth are
    scored (``metrics["num_images"]`` of them). max_detections: see `coco_metrics`.
    This is the scoring of ``ipg-predict --annotations``.
    """
    gts = ground_truth.gts if hasattr(ground_truth, "gts") else ground_truth
    if class_names is None and hasattr(ground_truth, "class_names"):
        class_names = ground_truth.class_names
    scored = [f for f in detections if f in gts]
    ids = {f: i for i, f in enumerate(scored)}
    result = coco_metrics(
        [{"image_id": ids[f], **gts[f]} for f in scored],
        [{"image_id": ids[f], **{k: detections[f][k] for k in ("boxes", "scores", "classes")}} for f in scored],
        num_classes, class_names=class_names, per_class=per_class, max_detections=max_detections,
        return_summary=return_summary,
    )
    metrics = result[0] if return_summary else result
    metrics["num_images"] = len(scored)
    return result


class COCOEvaluator:
    """Accumulates batches of ground truth and predictions, then computes COCO metrics.

    Ground truth: padded batched ``{"boxes" [B, M, 4], "classes" [B, M]}`` (class -1 =
    padding; optional "difficult" / "iscrowd" [B, M]; ragged tensors accepted).
    Predictions: ``{"boxes" [B, K, 4], "scores" [B, K], "classes" [B, K],
    "num_detections" [B]}``; entries past ``num_detections`` are ignored.
    max_detections: what the model keeps per image (see `coco_metrics`).
    """

    def __init__(self, num_classes: int | None = None, class_names: Sequence[str] | None = None,
                 per_class: bool = False, max_detections: int | None = None) -> None:
        self.num_classes = num_classes
        self.class_names = class_names
        self.per_class = per_class
        self.max_detections = max_detections
        self.summary = ""
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._gts: list[dict[str, Any]] = []
        self._dets: list[dict[str, Any]] = []
        self._next_id = 0

    @property
    def num_images(self) -> int:
        return len(self._gts)

    def update(self, gt_batch: Mapping[str, Any], pred_batch: Mapping[str, Any],
               image_ids: Any | None = None, scales: Any | None = None) -> None:
        """Add one batch.

        image_ids: optional [B] ids (default: a running counter from 0).
        scales: optional [B] or [B, 2] (scale_y, scale_x) factors that map boxes of
        this batch back to original-image pixels (``original = boxes * scale``, i.e.
        original size / network input size), applied to predictions and ground truth
        alike, so that the small / medium / large buckets use original pixels.
        """
        gt_batch = gt_batch.get("bounding_boxes", gt_batch)
        for key in ("boxes", "classes"):
            if key not in gt_batch:
                raise ValueError(
                    f"COCOEvaluator.update: ground truth lacks '{key}' (keys: {list(gt_batch)})."
                )
        for key in ("boxes", "scores", "classes"):
            if key not in pred_batch:
                raise ValueError(
                    f"COCOEvaluator.update: predictions lack '{key}' (keys: {list(pred_batch)}); "
                    "expected the detector prediction format."
                )
        gt_boxes = _np(gt_batch["boxes"]).astype(np.float64)
        gt_classes = _np(gt_batch["classes"])
        flags = {k: _np(gt_batch[k]) for k in ("difficult", "iscrowd") if k in gt_batch}
        boxes = _np(pred_batch["boxes"]).astype(np.float64)
        scores = _np(pred_batch["scores"])
        classes = _np(pred_batch["classes"])
        batch = gt_boxes.shape[0]
        if boxes.shape[0] != batch:
            raise ValueError(
                f"COCOEvaluator.update: {batch} ground-truth images but {boxes.shape[0]} predictions."
            )
        num = (_np(pred_batch["num_detections"]).reshape(-1).astype(np.int64)
               if "num_detections" in pred_batch else np.full(batch, boxes.shape[1]))
        if image_ids is None:
            ids = np.arange(self._next_id, self._next_id + batch)
        else:
            ids = _np(image_ids).reshape(-1).astype(np.int64)
            if ids.shape[0] != batch:
                raise ValueError(f"COCOEvaluator.update: {ids.shape[0]} image_ids for a batch of {batch}.")
        self._next_id = max(self._next_id, int(ids.max()) + 1 if batch else self._next_id)
        factors = self._scale_factors(scales, batch)

        for b in range(batch):
            gt = {"image_id": int(ids[b]), "boxes": gt_boxes[b].reshape(-1, 4) * factors[b],
                  "classes": gt_classes[b].reshape(-1)}
            for key, value in flags.items():
                gt[key] = value[b].reshape(-1)
            n = int(num[b])
            self._gts.append(gt)
            self._dets.append({"image_id": int(ids[b]), "boxes": boxes[b, :n] * factors[b],
                               "scores": scores[b, :n], "classes": classes[b, :n]})

    @staticmethod
    def _scale_factors(scales: Any | None, batch: int) -> np.ndarray:
        """[B, 4] multipliers for xyxy boxes."""
        if scales is None:
            return np.ones((batch, 4))
        s = _np(scales).astype(np.float64)
        if s.ndim == 0:
            s = np.full(batch, float(s))
        if s.shape == (batch,):
            return np.repeat(s[:, None], 4, axis=1)
        if s.shape == (batch, 2):  # (scale_y, scale_x) -> (x, y, x, y)
            return np.stack([s[:, 1], s[:, 0], s[:, 1], s[:, 0]], axis=1)
        raise ValueError(f"COCOEvaluator.update: scales must be [B] or [B, 2] with B={batch}, got {s.shape}.")

    def result(self) -> dict[str, float]:
        """COCO metrics over everything added since the last reset (see coco_metrics)."""
        metrics, self.summary = coco_metrics(
            self._gts, self._dets, self.num_classes, class_names=self.class_names,
            per_class=self.per_class, return_summary=True, max_detections=self.max_detections,
        )
        return metrics


def _split_batch(batch: Any) -> tuple[Any, Mapping[str, Any], Any | None]:
    """(images, targets, image_ids or None) from a tuple batch or an element-format dict."""
    if isinstance(batch, Mapping):
        if "images" not in batch or "bounding_boxes" not in batch:
            raise ValueError(
                "evaluate_model: dict batches need 'images' and 'bounding_boxes' "
                f"(got keys {list(batch)})."
            )
        return batch["images"], batch["bounding_boxes"], batch.get("image_id")
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        images, targets = batch[0], batch[1]
        if not isinstance(targets, Mapping):
            raise ValueError("evaluate_model: the second item of each batch must be a targets dict.")
        return images, targets, targets.get("image_id")
    raise ValueError(
        "evaluate_model: expected batches (images, targets) or element-format dicts, got "
        f"{type(batch).__name__}."
    )


def _boxes_to_xyxy(targets: Mapping[str, Any], predictions: Mapping[str, Any], box_format: str,
                   image_shape: Sequence[int]) -> tuple[dict, dict]:
    """Targets and predictions with boxes from `box_format` to xyxy pixels of images `[B, H, W, 3]`."""
    from ipg_keras.ops.box_formats import convert_boxes

    height, width = int(image_shape[1]), int(image_shape[2])
    out = []
    for batch in (targets, predictions):
        batch = dict(batch)
        valid = _np(batch["classes"]) >= 0
        batch["boxes"] = convert_boxes(_np(batch["boxes"]), box_format, "xyxy", height, width, valid=valid).numpy()
        out.append(batch)
    return out[0], out[1]


def evaluate_model(model: Any, dataset: Iterable[Any], max_batches: int | None = None,
                   verbose: bool = True, num_classes: int | None = None,
                   class_names: Sequence[str] | None = None, per_class: bool = False,
                   predict_fn: Callable[[Any], Mapping[str, Any]] | None = None,
                   max_detections: int | None = None,
                   bounding_box_format: str | None = None) -> dict[str, float]:
    """COCO metrics of a detector over a batched dataset.

    dataset yields ``(images [B, H, W, 3], {"boxes" [B, M, 4], "classes" [B, M]})``
    (padded with -1; a third sample-weight item is ignored) or batched element-format
    dicts. Predictions come from ``model.predict_on_batch(images)`` (the detectors
    return the prediction format) or ``predict_fn(images)``. Boxes are evaluated in
    the network input frame. Image ids come from the batch when present
    ("image_id"), else count from 0. ``verbose`` shows a tqdm progress bar and prints
    the summary (its first line names the detection limit). max_detections: default
    the model's own ``max_detections`` (see `coco_metrics`).

    ``bounding_box_format``: format of the dataset's target boxes and of the
    predicted boxes (keras-cv / keras-hub names; ``rel_`` formats relative to the
    batch's image size); both are converted to xyxy pixels before evaluation,
    padding rows (class -1) left alone. None: the model's ``bounding_box_format``
    when predictions come from ``model.predict_on_batch``, "xyxy" with a
    ``predict_fn``. Raises ValueError for an unknown name.
    """
    from tqdm.auto import tqdm

    from ipg_keras.ops.box_formats import check_box_format

    predict = predict_fn if predict_fn is not None else model.predict_on_batch
    if max_detections is None:
        max_detections = model_max_detections(model)
    if bounding_box_format is None:
        bounding_box_format = getattr(model, "bounding_box_format", "xyxy") if predict_fn is None else "xyxy"
    box_format = check_box_format(bounding_box_format)
    evaluator = COCOEvaluator(num_classes=num_classes, class_names=class_names, per_class=per_class,
                              max_detections=max_detections)
    total = max_batches
    if total is None:
        try:
            cardinality = int(dataset.cardinality())  # tf.data: -1 unknown, -2 infinite
            total = cardinality if cardinality >= 0 else None
        except (AttributeError, TypeError):
            total = len(dataset) if hasattr(dataset, "__len__") else None
    with tqdm(total=total, desc="COCO eval", unit="batch", disable=not verbose, leave=False) as bar:
        for i, batch in enumerate(dataset):
            if max_batches is not None and i >= max_batches:
                break
            images, targets, image_ids = _split_batch(batch)
            predictions = predict(images)
            if not isinstance(predictions, Mapping) or "boxes" not in predictions:
                raise ValueError(
                    "evaluate_model: the model's prediction is not a prediction-format dict "
                    f"(got {type(predictions).__name__}); pass predict_fn returning "
                    "{'boxes', 'scores', 'classes', 'num_detections'}."
                )
            if box_format != "xyxy":
                targets, predictions = _boxes_to_xyxy(targets, predictions, box_format, np.shape(images))
            evaluator.update(targets, predictions, image_ids=image_ids)
            bar.update(1)
    metrics = evaluator.result()
    if verbose:
        print(evaluator.summary, end="")
    return metrics
