"""`ipg-predict MODEL IMAGES... --output DIR`: detect objects in image files.

MODEL is a `.keras` file, a SavedModel folder (`ipg-export --format saved_model`)
or a `.tflite` file. IMAGES are files or folders (their image files, sorted).
Writes to DIR:

* `detections.json`: COCO results (`image_id`, `category_id`, `bbox` [x, y, w, h]
  in original pixels, `score`); `image_id` is the image's index in sorted file
  order, or its id in `--annotations` (COCO JSON); `category_id` is class + 1, or
  the COCO category of `--annotations` whose name matches the class name.
* `images.json`: `{relative path: image_id}`; `visualizations/<relative path>.png`:
  boxes drawn. Relative paths are taken from the folder holding all inputs and
  keep the extension (`cam1/000001.jpg` -> `visualizations/cam1/000001.jpg.png`),
  so files with the same name in different folders, or `frame.jpg` beside
  `frame.png`, never overwrite each other.
* with `--annotations` (COCO JSON file or Pascal VOC folder, read and cleaned by
  `ipg_keras.data.load_ground_truth` exactly as the loaders do): `metrics.json` with
  the COCO metrics (AP, AP50, AP75, APs, APm, APl, ...) and `max_detections`, the
  detection limit per image used in scoring; ground truth drawn green. Images
  match annotations by relative path (COCO `file_name` with folders, VOC XML
  paths), by bare name only when that is unambiguous.
* `errors.json` when some files failed (each with the reason); the others are
  still processed and the exit code is 1.

Images are read by `ipg_keras.data.image_io.read_image` (every format and mode,
EXIF orientation, 16-bit by full scale) and predicted by
`ipg_keras.inference.predict_image`: letterboxed to the model input size (resize
keeping aspect, pad); images larger than the input are cut into overlapping tiles
whose detections are merged by class-aware NMS (`--mode auto`, default).
`--mode resize` always letterboxes, `--mode slice` always tiles, `--mode direct`
feeds the image as is (a TFLite model then needs exactly its input size).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ipg_keras.data.image_files import find_image_files, relative_names
from ipg_keras.inference.predict import MODES


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ipg-predict", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("model", help=".keras file, SavedModel folder or .tflite file")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--annotations", default=None, help="COCO JSON file or Pascal VOC folder to score against")
    parser.add_argument("--class-names", default=None, help="comma-separated class names (for VOC and labels)")
    parser.add_argument("--image-size", default=None, help="input size of a .keras model: N or H,W (default: "
                        "the model's image_size, else 512)")
    parser.add_argument("--mode", choices=MODES, default="auto", help="auto: letterbox, tile larger images")
    parser.add_argument("--tile-size", type=int, default=None,
                        help="slice tiles of this many image pixels, each resized to the model's input (default: "
                             "the input size); use the data.tile_size a model was trained with")
    parser.add_argument("--tta", type=int, choices=(1, 4, 8), default=1,
                        help="test-time augmentation: predict 4 (flips) or 8 (flips and transposes) views of each "
                             "image and fuse their boxes (weighted box fusion); n times slower")
    parser.add_argument("--tta-scales", default="1",
                        help="comma-separated test-time scales, e.g. 1,0.8,1.25: the views are also predicted on the "
                             "image resized by each factor and all fused (as eval.tta_scales); n times slower")
    parser.add_argument("--overlap", type=float, default=0.25, help="tile overlap as a fraction of the tile")
    parser.add_argument("--max-detections", type=int, default=300,
                        help="detections kept per image (tiles merged by NMS) and scored with --annotations; "
                             "set it well above the number of objects in an image (dense scenes)")
    parser.add_argument("--score-threshold", type=float, default=0.0, help="drop detections below (results)")
    parser.add_argument("--draw-threshold", type=float, default=0.3, help="draw detections from this score")
    parser.add_argument("--no-draw", action="store_true", help="do not write visualizations")
    parser.add_argument("--recursive", action="store_true", help="search folders recursively")
    args = parser.parse_args(argv)
    if not 0.0 <= args.overlap < 1.0:
        parser.error("--overlap must be in [0, 1)")
    if args.max_detections < 1:
        parser.error("--max-detections must be at least 1")
    if args.tile_size is not None and args.tile_size < 1:
        parser.error("--tile-size must be a positive number of pixels")
    try:
        tta_scales = [float(x) for x in args.tta_scales.split(",") if x.strip()]
    except ValueError:
        tta_scales = []
    if not tta_scales or min(tta_scales) <= 0:
        parser.error(f"--tta-scales {args.tta_scales!r}: give positive resize factors separated by commas, e.g. "
                     "1,0.8,1.25")

    from ipg_keras.data.image_io import read_image
    from ipg_keras.inference import ModelLoadError, load_detector, predict_image
    from ipg_keras.utils.sizes import parse_image_size

    output = Path(args.output)
    files, errors = find_image_files(args.images, args.recursive)
    names = relative_names(files, args.images)  # output names: unique, extension kept
    if not files:
        print("ipg-predict: no image files found in " + ", ".join(args.images), file=sys.stderr)
        for e in errors:
            print(f"  {e['file']}: {e['error']}", file=sys.stderr)
        return 2
    try:
        size = parse_image_size(args.image_size)
    except ValueError as error:
        parser.error(str(error))
    try:
        detector = load_detector(args.model, image_size=size)
    except (ModelLoadError, FileNotFoundError) as error:
        print(f"ipg-predict: {error}", file=sys.stderr)
        return 2

    class_names = args.class_names.split(",") if args.class_names else getattr(detector, "class_names", None)
    ann = None
    if args.annotations:
        from ipg_keras.data import load_ground_truth

        try:
            ann = load_ground_truth(args.annotations, files, class_names,
                                    num_classes=getattr(detector, "num_classes", None))
        except (FileNotFoundError, ValueError) as error:
            print(f"ipg-predict: {error}", file=sys.stderr)
            return 2
        class_names = class_names or ann.class_names
        for f in ann.unmatched:
            reason = ann.ambiguous.get(f)
            print(f"ipg-predict: {f} has no annotation in {args.annotations}"
                  + (f" ({reason})" if reason else "") + "; not scored", file=sys.stderr)

    # Image ids: the annotation file's, else the index in sorted order (fresh ids
    # past the largest annotated one for files the annotations do not list).
    ids: dict[Path, int] = {}
    next_id = max(ann.ids.values(), default=-1) + 1 if ann else 0
    for i, f in enumerate(files):
        if ann and f in ann.ids:
            ids[f] = ann.ids[f]
        elif ann and ann.ids:
            ids[f] = next_id
            next_id += 1
        else:
            ids[f] = i

    from tqdm.auto import tqdm

    output.mkdir(parents=True, exist_ok=True)
    vis_dir = output / "visualizations"
    results, dets = [], {}
    for f in tqdm(files, desc="ipg-predict", disable=len(files) < 5):
        try:
            image = read_image(f)
            pred = predict_image(detector, image, args.mode, overlap=args.overlap, tile_size=args.tile_size,
                                 tta=args.tta, tta_scales=tta_scales, max_detections=args.max_detections)
        except (ValueError, OSError) as error:  # unreadable image, wrong size for a TFLite model
            errors.append({"file": str(f), "error": str(error)})
            print(f"ipg-predict: {f}: {error}", file=sys.stderr)
            continue
        keep = (pred["classes"] >= 0) & (pred["scores"] >= args.score_threshold)
        boxes, scores, classes = pred["boxes"][keep], pred["scores"][keep], pred["classes"][keep].astype(int)
        for box, score, cls in zip(boxes, scores, classes):
            results.append({
                "image_id": int(ids[f]),
                "category_id": ann.category_id(cls) if ann else int(cls) + 1,
                "bbox": [round(float(box[0]), 3), round(float(box[1]), 3),
                         round(float(box[2] - box[0]), 3), round(float(box[3] - box[1]), 3)],
                "score": round(float(score), 5),
            })
        gt = ann.gts.get(f) if ann else None
        if gt is not None:
            dets[f] = {"boxes": boxes, "scores": scores, "classes": classes}
        if not args.no_draw:
            from PIL import Image

            from ipg_keras.visualization import draw_detections

            drawn = draw_detections(image, boxes, classes, scores, class_names=class_names, ground_truth=gt,
                                    score_threshold=args.draw_threshold)
            target = vis_dir / f"{names[f]}.png"  # cam1/000001.jpg -> visualizations/cam1/000001.jpg.png
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(drawn).save(target)

    with open(output / "detections.json", "w") as fh:
        json.dump(results, fh)
    with open(output / "images.json", "w") as fh:
        json.dump({names[f]: int(ids[f]) for f in files}, fh, indent=1)
    summary: dict[str, Any] = {"images": len(files) - sum(1 for e in errors if Path(e["file"]) in ids),
                               "detections": len(results), "failed": len(errors)}
    if ann is not None:
        from ipg_keras.evaluation import evaluate_detections

        metrics = evaluate_detections(ann, dets, max_detections=args.max_detections)
        with open(output / "metrics.json", "w") as fh:
            json.dump(metrics, fh, indent=2)
        summary["metrics"] = {k: round(metrics[k], 4) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
        summary["max_detections"] = metrics["max_detections"]
    if errors:
        with open(output / "errors.json", "w") as fh:
            json.dump(errors, fh, indent=1)
    print(json.dumps(summary))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
