"""Where does a detector's AP go? Recall, localisation and ranking headroom of one prediction run.

    ipg-predict MODEL ../shared/data/trees/val --annotations ../shared/data/trees/val --image-size 384 \
        --mode slice --max-detections 1000 --tta 4 --tta-scales 1,0.8,1.25 --no-draw --output PRED
    python benchmarks/trees_errors.py PRED --output benchmarks/results/trees_errors_<run>.json

Reads PRED/detections.json and PRED/images.json (what `ipg-predict` writes) and
the ground truth (`--annotations`, a COCO JSON file or Pascal VOC folder, read by
`ipg_keras.data.load_ground_truth`, files found in `--images`, by default the
annotations folder), and prints:

* the COCO metrics of the detections as they are (`ipg-predict`'s figures);
* recall at IoU 0.3 ... 0.8 over all detections kept, whatever their score:
  how many objects have any box at all (the recall ceiling of AP at that IoU);
* the matched boxes' IoU: for each object, the best IoU of any detection;
* the correlation of score and IoU over the detections at IoU >= 0.3 with an
  object (Pearson): how well the score ranks boxes by how well they sit;
* two "fixed" rescorings in the spirit of TIDE (Bolya et al. 2020), each an
  upper bound of what one kind of improvement could buy with the same boxes:
  `scores = IoU` re-scores every detection by its best IoU with an object of
  its class (perfect ranking by localisation quality: what an IoU-aware
  score such as GFL's quality focal loss aims at); `boxes = truth` replaces
  each detection's box by the object it overlaps at IoU >= 0.5 (perfect
  localisation, scores kept). Both use the ground truth and are diagnostics,
  never predictions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, format_table, write_json  # noqa: E402

TREES_VAL = REPO.parent / "shared" / "data" / "trees" / "val"
IOUS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes `[N, 4]` x `[M, 4]` -> `[N, M]` (numpy; 0 for empty inputs)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def coco_figures(gts: dict, detections: dict, max_detections: int,
                 keys=("AP", "AP50", "AP75", "APs", "APm")) -> dict[str, float]:
    """COCO metrics `keys` (rounded to 4 places) of `{file: detections}` against `{file: ground truth}`."""
    from ipg_keras.evaluation.coco import evaluate_detections

    m = evaluate_detections(gts, detections, max_detections=max_detections)
    return {k: round(float(m[k]), 4) for k in keys}


def _correlation(pairs: np.ndarray) -> float | None:
    """Pearson correlation of the two columns of `[N, 2]`; None when fewer than 2 rows or a column is constant."""
    if len(pairs) < 2 or pairs.std(0).min() == 0:
        return None
    return round(float(np.corrcoef(pairs.T)[0, 1]), 4)


def analyse(gts: dict, detections: dict, max_detections: int) -> dict:
    """The figures described in the module docstring, for `{file: detections}` against `{file: ground truth}`."""
    best_per_object, rescored, relocated, near = [], {}, {}, []
    for f, d in detections.items():
        gt = gts[f]
        boxes = np.asarray(d["boxes"], np.float64).reshape(-1, 4)
        d = {**d, "boxes": boxes}
        iou = pairwise_iou(boxes, np.asarray(gt["boxes"], np.float64))
        same = np.asarray(d["classes"])[:, None] == np.asarray(gt["classes"])[None, :]
        iou = np.where(same, iou, 0.0)  # [detections, objects], same class only
        best_per_object.extend(iou.max(0) if len(boxes) else np.zeros(iou.shape[1]))
        best = iou.max(1) if iou.shape[1] else np.zeros(len(boxes))  # per detection, and its object
        index = iou.argmax(1) if iou.shape[1] else np.full(len(boxes), -1)
        rescored[f] = {**d, "scores": best}
        close = best >= 0.3
        near.extend(zip(np.asarray(d["scores"], np.float64)[close], best[close]))
        moved = boxes.copy()
        hit = best >= 0.5
        moved[hit] = np.asarray(gt["boxes"], np.float64)[index[hit]]
        relocated[f] = {**d, "boxes": moved}
    best_per_object = np.asarray(best_per_object)
    return {
        "objects": int(len(best_per_object)),
        "detections": int(sum(len(d["scores"]) for d in detections.values())),
        "as_predicted": coco_figures(gts, detections, max_detections),
        "recall_any_score": {str(t): round(float((best_per_object >= t).mean()), 4) for t in IOUS},
        "best_iou_per_object_quantiles": {str(q): round(float(np.quantile(best_per_object, q)), 4)
                                          for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
        "fixed_scores_equal_iou": coco_figures(gts, rescored, max_detections),
        # How well the score ranks the boxes near an object by their IoU (1: perfectly, 0: not at all).
        "score_iou_correlation": _correlation(np.asarray(near, np.float64).reshape(-1, 2)),
        "fixed_boxes_equal_truth": coco_figures(gts, relocated, max_detections),
    }


def read_predictions(folder: Path, images: Path) -> dict:
    """`ipg-predict`'s detections.json + images.json -> `{file: {"boxes" xyxy, "scores", "classes"}}`."""
    ids = json.loads((folder / "images.json").read_text())
    by_id = {i: images / rel for rel, i in ids.items()}
    out = {f: {"boxes": [], "scores": [], "classes": []} for f in by_id.values()}
    for det in json.loads((folder / "detections.json").read_text()):
        x, y, w, h = det["bbox"]
        d = out[by_id[det["image_id"]]]
        d["boxes"].append([x, y, x + w, y + h])
        d["scores"].append(det["score"])
        d["classes"].append(det["category_id"] - 1)
    return {f: {k: np.asarray(v, np.float64 if k != "classes" else np.int64) for k, v in d.items()}
            for f, d in out.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", help="an ipg-predict --output folder (detections.json, images.json)")
    parser.add_argument("--annotations", default=str(TREES_VAL), help="COCO JSON file or Pascal VOC folder")
    parser.add_argument("--images", help="folder the images.json paths are relative to (default: --annotations)")
    parser.add_argument("--max-detections", type=int, default=1000)
    parser.add_argument("--output", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    from ipg_keras.data import load_ground_truth

    images = Path(args.images or args.annotations)
    detections = read_predictions(Path(args.predictions), images)
    truth = load_ground_truth(args.annotations, list(detections))
    result = analyse(truth.gts, detections, args.max_detections)
    rows = [[name, *result[key].values()] for name, key in (
        ("as predicted", "as_predicted"), ("scores = IoU (ranking fixed)", "fixed_scores_equal_iou"),
        ("boxes = truth (localisation fixed)", "fixed_boxes_equal_truth"))]
    print(f"{result['objects']} objects, {result['detections']} detections")
    print(format_table(["scoring", "AP", "AP50", "AP75", "APs", "APm"], rows))
    print("recall at IoU (any score): " + ", ".join(f"{t} {v:.3f}" for t, v in result["recall_any_score"].items()))
    print(f"score-IoU correlation (detections at IoU >= 0.3): {result['score_iou_correlation']}")
    print("best IoU per object, quantiles: "
          + ", ".join(f"{q} {v:.3f}" for q, v in result["best_iou_per_object_quantiles"].items()))
    if args.output:
        write_json(args.output, {"predictions": args.predictions, "annotations": args.annotations, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
