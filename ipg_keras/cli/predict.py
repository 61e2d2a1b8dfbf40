"""`ipg-predict MODEL IMAGES... --output DIR`: detect objects in image files.

MODEL is a `.keras` file, a SavedModel folder (`ipg-export --format saved_model`)
or a `.tflite` file. IMAGES are files or folders (their image files, sorted).
Writes to DIR:

* `detections.json`: COCO results (`image_id`, `category_id`, `bbox` [x, y, w, h]
  in original pixels, `score`); `image_id` is the image's index in sorted file
  order, or its id in `--annotations` (COCO JSON); `category_id` is class + 1, or
  the COCO category of `--annotations` whose name matches the class name.
* `images.json`: `{file: image_id}`; `visualizations/<name>.png`: boxes drawn.
* with `--annotations` (COCO JSON file or Pascal VOC folder, read and cleaned by
  `ipg_keras.data.load_ground_truth` exactly as the loaders do): `metrics.json` with
  the COCO metrics (AP, AP50, AP75, APs, APm, APl, ...) and `max_detections`, the
  detection limit per image used in scoring; ground truth drawn green.
* `errors.json` when some files failed (each with the reason); the others are
  still processed and the exit code is 1.

Images are letterboxed to the model input size (resize keeping aspect, pad);
images larger than the input are cut into overlapping tiles whose detections
are merged by class-aware NMS (`--mode auto`, default). `--mode resize` always
letterboxes, `--mode slice` always tiles, `--mode direct` feeds the image as is
(a TFLite model then needs exactly its input size).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MODES = ("auto", "resize", "slice", "direct")


# ----------------------------------------------------------------- inputs
def collect_images(inputs: Sequence[str], recursive: bool = False) -> tuple[list[Path], list[dict]]:
    """Image files from files and folders, sorted; plus errors for inputs that do not exist."""
    files: list[Path] = []
    errors: list[dict] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = [p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
            if not found:
                errors.append({"file": str(path), "error": "folder holds no image files "
                               f"({', '.join(IMAGE_EXTENSIONS)})"})
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append({"file": str(path), "error": "no such file or folder"})
    unique = sorted(set(files), key=lambda p: str(p))
    return unique, errors


def read_image(path: Path) -> np.ndarray:
    """uint8 `[H, W, 3]` RGB; raises ValueError naming the file when it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from None


# -------------------------------------------------------------- inference
def _pad_to(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if batch.shape[1:3] == (h, w):
        return batch
    out = np.zeros((batch.shape[0], h, w, 3), batch.dtype)
    out[:, : batch.shape[1], : batch.shape[2]] = batch
    return out


def predict_image(detector, image: np.ndarray, mode: str = "auto", overlap: float = 0.25,
                  batch_size: int = 4) -> dict[str, np.ndarray]:
    """Detections `{"boxes" [K, 4] original pixels, "scores", "classes"}` of one uint8 image."""
    from ipg_keras.inference import sliced_predict

    in_h, in_w = detector.input_size
    h, w = image.shape[:2]
    larger = h > in_h or w > in_w
    if mode == "slice" or (mode == "auto" and larger):
        tile = min(in_h, in_w)
        is_tflite = getattr(detector, "format", "") == "tflite"
        out = sliced_predict(
            lambda tiles: detector(_pad_to(tiles, (in_h, in_w))), image.astype(np.float32),
            tile_size=tile, overlap=int(round(tile * overlap)), batch_size=1 if is_tflite else batch_size,
            score_threshold=0.0, pad_batch=not is_tflite,
        )
        return {k: out[k] for k in ("boxes", "scores", "classes")}
    if mode == "direct" or getattr(detector, "format", "") == "saved_model":
        # As is; a SavedModel letterboxes inside and returns original pixels itself.
        out = detector(image[None])
        scale = 1.0
    else:
        from ipg_keras.export.runtime import letterbox

        padded, scale = letterbox(image, (in_h, in_w))
        out = detector(padded[None])
    n = int(out["num_detections"][0])
    boxes = out["boxes"][0, :n] / scale
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    return {"boxes": boxes, "scores": out["scores"][0, :n], "classes": out["classes"][0, :n]}


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
    parser.add_argument("--overlap", type=float, default=0.25, help="tile overlap as a fraction of the tile")
    parser.add_argument("--score-threshold", type=float, default=0.0, help="drop detections below (results)")
    parser.add_argument("--draw-threshold", type=float, default=0.3, help="draw detections from this score")
    parser.add_argument("--no-draw", action="store_true", help="do not write visualizations")
    parser.add_argument("--recursive", action="store_true", help="search folders recursively")
    args = parser.parse_args(argv)
    if not 0.0 <= args.overlap < 1.0:
        parser.error("--overlap must be in [0, 1)")

    from ipg_keras.cli.export import parse_image_size
    from ipg_keras.export.runtime import ModelLoadError, load_detector

    output = Path(args.output)
    files, errors = collect_images(args.images, args.recursive)
    if not files:
        print("ipg-predict: no image files found in " + ", ".join(args.images), file=sys.stderr)
        for e in errors:
            print(f"  {e['file']}: {e['error']}", file=sys.stderr)
        return 2
    try:
        size = parse_image_size(args.image_size)
    except argparse.ArgumentTypeError as error:
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
            print(f"ipg-predict: {f} has no annotation in {args.annotations}; not scored", file=sys.stderr)

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
            pred = predict_image(detector, image, args.mode, args.overlap)
        except ValueError as error:  # unreadable image, wrong size for a TFLite model
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

            vis_dir.mkdir(exist_ok=True)
            drawn = draw_detections(image, boxes, classes, scores, class_names=class_names, ground_truth=gt,
                                    score_threshold=args.draw_threshold)
            Image.fromarray(drawn).save(vis_dir / f"{f.stem}.png")

    with open(output / "detections.json", "w") as fh:
        json.dump(results, fh)
    with open(output / "images.json", "w") as fh:
        json.dump({str(f): int(ids[f]) for f in files}, fh, indent=1)
    summary: dict[str, Any] = {"images": len(files) - sum(1 for e in errors if Path(e["file"]) in ids),
                               "detections": len(results), "failed": len(errors)}
    if ann is not None:
        from ipg_keras.evaluation import evaluate_detections

        metrics = evaluate_detections(ann, dets, max_detections=getattr(detector, "max_detections", None))
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
