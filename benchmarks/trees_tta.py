"""Test-time augmentation on the trees val image: flips / 90-degree turns merged by weighted box fusion.

    python benchmarks/trees_tta.py runs/F_long3000/model.keras
    python benchmarks/trees_tta.py runs/trees/model.keras --thresholds 0.55,0.65,0.75

Measures how much averaging the sliced predictions of the flipped (and
transposed) val image improves the trees detector (`predict_image(tta=4)`,
`ipg-predict --tta 4`, `eval.tta: 4`), and at which fusion IoU. Each view is predicted by sliced inference as
`ipg-predict --mode slice --max-detections 1000` does, its boxes mapped back to
the original frame; the views' boxes are then clustered greedily by descending
score (IoU >= threshold with a cluster's current mean box) and each cluster
becomes one box: the score-weighted mean of its boxes, scored by the sum of
its scores over the number of views (`ipg_keras.inference.tta`). COCO AP / AP50 / AP75 of
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


def predict_view(detector, image: np.ndarray, view: str, max_detections: int, scale: float = 1.0):
    """Sliced prediction of one view (`ipg_keras.inference.tta.VIEWS`), boxes mapped back to `image`'s pixels.

    `scale` != 1 resizes the image by that factor first (`ipg_keras.inference.tta.scale_image`) and
    divides the boxes by it after (what `predict_image(..., tta_scales=...)` does per scale).
    """
    from ipg_keras.inference import predict_image
    from ipg_keras.inference.tta import unview_boxes, view_image

    if scale != 1.0:
        from ipg_keras.inference.tta import scale_image

        resized = scale_image(image, scale)
        boxes, scores = predict_view(detector, resized, view, max_detections)
        h, w = image.shape[:2]
        factors = np.array([resized.shape[1] / w, resized.shape[0] / h] * 2, np.float32)
        return boxes / factors, scores
    pixels = view_image(image, view)
    pred = predict_image(detector, pixels, "slice", max_detections=max_detections)
    return unview_boxes(pred["boxes"], view, pixels.shape[:2]), pred["scores"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help=".keras file or ipg-train run folder of a trees model")
    parser.add_argument("--val", default=str(VAL), help="Pascal VOC folder with the val image")
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--max-detections", type=int, default=1000)
    parser.add_argument("--thresholds", default="0.55,0.65,0.75", help="WBF IoU thresholds to try")
    parser.add_argument("--scales", default="", help="extra test scales, e.g. 0.8,1.25: each scale's 4 views are "
                        "fused with the 4 views at scale 1")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "trees_tta.json"))
    args = parser.parse_args(argv)
    quiet_tf()
    from ipg_keras.data import load_ground_truth
    from ipg_keras.data.image_files import find_image_files
    from ipg_keras.data.image_io import read_image
    from ipg_keras.evaluation import coco_metrics
    from ipg_keras.inference import load_detector, weighted_box_fusion
    from ipg_keras.inference.tta import VIEWS

    files, _ = find_image_files([args.val], False)
    truth = load_ground_truth(args.val, files, None)
    detector = load_detector(args.model, image_size=args.image_size)
    gts, views = [], {view: [] for view in VIEWS}  # every view's prediction, once; fused below
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

    scales = [float(x) for x in args.scales.split(",") if x]
    scaled = {scale: {view: [predict_view(detector, read_image(f), view, args.max_detections, scale)
                             for f in files] for view in VIEWS[:4]} for scale in scales}

    def fuse(view_lists, threshold):
        fused = []
        for i in range(len(gts)):
            boxes = np.concatenate([v[i][0] for v in view_lists])
            scores = np.concatenate([v[i][1] for v in view_lists])
            out = weighted_box_fusion(boxes, scores, np.zeros(len(boxes), np.int32), len(view_lists), threshold,
                                      args.max_detections)
            fused.append((out["boxes"], out["scores"]))
        return fused

    rows = [{"setting": "plain (1 view)", **score(views[""])}]
    for count in (4, 8):
        for threshold in [float(t) for t in args.thresholds.split(",")]:
            fused = []
            for i in range(len(gts)):
                boxes = np.concatenate([views[v][i][0] for v in VIEWS[:count]])
                scores = np.concatenate([views[v][i][1] for v in VIEWS[:count]])
                out = weighted_box_fusion(boxes, scores, np.zeros(len(boxes), np.int32), count, threshold,
                                          args.max_detections)
                fused.append((out["boxes"], out["scores"]))
            rows.append({"setting": f"{count} views, WBF IoU {threshold}", **score(fused)})
    for scale in scales:
        rows.append({"setting": f"4 views at scale {scale} alone, WBF IoU 0.65",
                     **score(fuse([scaled[scale][v] for v in VIEWS[:4]], 0.65))})
        rows.append({"setting": f"4 views at scale 1 + 4 at scale {scale}, WBF IoU 0.65",
                     **score(fuse([views[v] for v in VIEWS[:4]] + [scaled[scale][v] for v in VIEWS[:4]], 0.65))})
    if len(scales) > 1:
        rows.append({"setting": f"4 views at scales 1, {', '.join(map(str, scales))}, WBF IoU 0.65",
                     **score(fuse([views[v] for v in VIEWS[:4]]
                                  + [scaled[s][v] for s in scales for v in VIEWS[:4]], 0.65))})
    for row in rows:
        print(f"{row['setting']}: AP {row['AP']:.3f} AP50 {row['AP50']:.3f} AP75 {row['AP75']:.3f} "
              f"APs {row['APs']:.3f}")
    write_json(args.output, {"machine": machine_info(), "model": str(args.model), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
