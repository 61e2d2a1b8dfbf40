"""Test-time augmentation on the trees val image: flips / 90-degree turns merged by weighted box fusion.

    python benchmarks/trees_tta.py runs/F_long3000/model.keras
    python benchmarks/trees_tta.py runs/trees/model.keras --thresholds 0.55,0.65,0.75

Measures whether averaging the sliced predictions of the flipped (and
transposed) val image improves the trees detector, before such a mode is built
into `predict_image`. Each view is predicted by sliced inference as
`ipg-predict --mode slice --max-detections 1000` does, its boxes mapped back to
the original frame; the views' boxes are then clustered greedily by descending
score (IoU >= threshold with a cluster's current mean box) and each cluster
becomes one box: the score-weighted mean of its boxes, scored by the sum of
its scores over the number of views (weighted box fusion, Solovyev et al. 2021;
a box seen in one view only keeps 1/n of its score). COCO AP / AP50 / AP75 of
the val image at up to 1000 detections, for the plain prediction, 4 views
(identity, h-flip, v-flip, both) and 8 views (the same, transposed). Prints
one line per setting and writes `benchmarks/results/trees_tta.json`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine_info, quiet_tf, write_json  # noqa: E402

VAL = REPO.parent / "shared" / "data" / "trees" / "val"
VIEWS = ("", "h", "v", "hv", "t", "th", "tv", "thv")  # t: transpose (then flips): the 8 symmetries of a square


def predict_view(detector, image: np.ndarray, view: str, max_detections: int):
    """Sliced prediction of one flipped / transposed view, boxes mapped back to `image`'s pixels."""
    from ipg_keras.inference import predict_image

    x = image.transpose(1, 0, 2) if "t" in view else image
    x = x[:, ::-1] if "h" in view else x
    x = x[::-1] if "v" in view else x
    h, w = x.shape[:2]
    pred = predict_image(detector, np.ascontiguousarray(x), "slice", max_detections=max_detections)
    boxes = pred["boxes"].copy()
    if "h" in view:
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    if "v" in view:
        boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    if "t" in view:
        boxes = boxes[:, [1, 0, 3, 2]]
    return boxes, pred["scores"]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area - inter, 1e-9)


def weighted_box_fusion(boxes: np.ndarray, scores: np.ndarray, num_views: int, iou_threshold: float,
                        max_detections: int):
    """One class: clusters by IoU with the cluster's mean box, in descending score order (see module docstring)."""
    order = np.argsort(-scores, kind="stable")
    sums, weights, means = [], [], np.zeros((0, 4), np.float64)
    for box, score in zip(boxes[order].astype(np.float64), scores[order]):
        if len(means):
            overlaps = _iou(box, means)
            k = int(overlaps.argmax())
            if overlaps[k] >= iou_threshold:
                sums[k] += score * box
                weights[k] += score
                means[k] = sums[k] / weights[k]
                continue
        sums.append(score * box)
        weights.append(float(score))
        means = np.vstack([means, box[None]])
    fused_scores = np.asarray(weights) / num_views
    keep = np.argsort(-fused_scores, kind="stable")[:max_detections]
    return means[keep].astype(np.float32), fused_scores[keep].astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help=".keras file or ipg-train run folder of a trees model")
    parser.add_argument("--val", default=str(VAL), help="Pascal VOC folder with the val image")
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--max-detections", type=int, default=1000)
    parser.add_argument("--thresholds", default="0.55,0.65,0.75", help="WBF IoU thresholds to try")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "trees_tta.json"))
    args = parser.parse_args(argv)
    quiet_tf()
    from ipg_keras.data import load_ground_truth
    from ipg_keras.data.image_files import find_image_files
    from ipg_keras.data.image_io import read_image
    from ipg_keras.evaluation import coco_metrics
    from ipg_keras.inference import load_detector

    files, _ = find_image_files([args.val], False)
    truth = load_ground_truth(args.val, files, None)
    detector = load_detector(args.model, image_size=args.image_size)
    gts, views = [], {view: [] for view in VIEWS}
    for image_id, f in enumerate(files):
        image = read_image(f)
        record = truth.records[f]
        gts.append({"image_id": image_id, "boxes": record.boxes, "classes": record.classes,
                    "height": image.shape[0], "width": image.shape[1]})
        for view in VIEWS:
            views[view].append(predict_view(detector, image, view, args.max_detections))

    def score(detections) -> dict[str, float]:
        dets = [{"image_id": gt["image_id"], "boxes": b, "scores": s, "classes": np.zeros(len(b), np.int32)}
                for gt, (b, s) in zip(gts, detections)]
        m = coco_metrics(gts, dets, 1, max_detections=args.max_detections)
        return {k: round(float(m[k]), 4) for k in ("AP", "AP50", "AP75", "APs")}

    rows = [{"setting": "plain (1 view)", **score(views[""])}]
    for count in (4, 8):
        for threshold in [float(t) for t in args.thresholds.split(",")]:
            fused = []
            for i in range(len(gts)):
                boxes = np.concatenate([views[v][i][0] for v in VIEWS[:count]])
                scores = np.concatenate([views[v][i][1] for v in VIEWS[:count]])
                fused.append(weighted_box_fusion(boxes, scores, count, threshold, args.max_detections))
            rows.append({"setting": f"{count} views, WBF IoU {threshold}", **score(fused)})
    for row in rows:
        print(f"{row['setting']}: AP {row['AP']:.3f} AP50 {row['AP50']:.3f} AP75 {row['AP75']:.3f} APs {row['APs']:.3f}")
    write_json(args.output, {"machine": machine_info(), "model": str(args.model), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
