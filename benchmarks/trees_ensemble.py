"""Are a detector's errors variance or bias? Fuse several models' predictions and see whether AP moves.

    for run in strong_aug seed1 qfl lr2e3 blur; do
        ipg-predict runs/trees_recipe/$run/model.keras ../shared/data/trees/val --annotations \
            ../shared/data/trees/val --image-size 384 --mode slice --max-detections 1000 --tta 4 \
            --tta-scales 1,0.8,1.25 --no-draw --output preds/$run
    done
    python benchmarks/trees_ensemble.py preds/* --output benchmarks/results/trees_ensemble.json

Each PRED folder is one model's `ipg-predict` output (detections.json,
images.json), already fused over its test-time views. The script scores each
model alone and every combination of two or more (all of them last), the models' detections
fused per image by weighted box fusion (`ipg_keras.inference.weighted_box_fusion`,
IoU 0.65, the fused score is the sum over the number of models), as
model ensembles of detectors are usually fused (Solovyev et al. 2021). If the
models' errors were independent (variance: seed, schedule, loss), the ensemble
would score above its members; if it scores like them, the errors are shared
(bias: what the training data teaches), and more runs of the same recipe
cannot fix them.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, write_json  # noqa: E402
from trees_errors import TREES_VAL, coco_figures, read_predictions  # noqa: E402


def fuse(members: list[dict], max_detections: int, iou_threshold: float = 0.65) -> dict:
    """Per-file weighted box fusion of several models' `{file: {"boxes", "scores", "classes"}}`."""
    from ipg_keras.inference import weighted_box_fusion

    fused = {}
    for f in members[0]:
        parts = [m[f] for m in members]
        fused[f] = weighted_box_fusion(np.concatenate([p["boxes"].reshape(-1, 4) for p in parts]),
                                       np.concatenate([p["scores"] for p in parts]),
                                       np.concatenate([p["classes"] for p in parts]),
                                       len(parts), iou_threshold, max_detections)
    return fused


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", nargs="+", help="ipg-predict --output folders, one per model")
    parser.add_argument("--annotations", default=str(TREES_VAL), help="COCO JSON file or Pascal VOC folder")
    parser.add_argument("--images", help="folder the images.json paths are relative to (default: --annotations)")
    parser.add_argument("--max-detections", type=int, default=1000)
    parser.add_argument("--output", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    if len(args.predictions) < 2:
        parser.error("give two or more prediction folders: an ensemble needs members")
    names = [Path(p).name for p in args.predictions]
    if len(set(names)) < len(names):
        parser.error(f"prediction folders must have different names (they label the rows): {names}")
    from ipg_keras.data import load_ground_truth

    images = Path(args.images or args.annotations)
    models = {n: read_predictions(Path(p), images) for n, p in zip(names, args.predictions)}
    truth = load_ground_truth(args.annotations, list(models[names[0]]))

    def metrics(dets):
        return coco_figures(truth.gts, dets, args.max_detections, ("AP", "AP50", "AP75", "APs"))

    rows = [{"members": [n], **metrics(models[n])} for n in names]
    for size in range(2, len(names) + 1):
        for combo in itertools.combinations(names, size):
            rows.append({"members": list(combo), **metrics(fuse([models[n] for n in combo], args.max_detections))})
    singles = [r["AP"] for r in rows if len(r["members"]) == 1]
    summary = {"best_single_AP": max(singles), "mean_single_AP": round(float(np.mean(singles)), 4),
               "all_fused_AP": rows[-1]["AP"],
               "best_pair_AP": max((r["AP"] for r in rows if len(r["members"]) == 2), default=None)}
    print(format_table(["models", "AP", "AP50", "AP75", "APs"],
                       [[" + ".join(r["members"]), r["AP"], r["AP50"], r["AP75"], r["APs"]] for r in rows]))
    print(f"mean single AP {summary['mean_single_AP']:.3f}, best single {summary['best_single_AP']:.3f}, "
          f"all {len(names)} fused {summary['all_fused_AP']:.3f}")
    if args.output:
        write_json(args.output, {"predictions": args.predictions, "annotations": args.annotations,
                                 "rows": rows, **summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
