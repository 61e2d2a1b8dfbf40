"""Inference-side checks on a trees model: NMS thresholds, whole-image inference, BatchNorm re-estimated on val.

    python benchmarks/trees_inference_checks.py runs/trees_recipe/recipe/model.keras \
        --output benchmarks/results/trees_inference_checks_recipe.json

Each setting predicts the val image(s) as the config scores them (`predict_image`
in mode "slice", 1000 detections, 1 view and the config's 12 views: 4 flips at
scales 1, 0.8, 1.25 fused by weighted box fusion) with one thing changed, and
gives COCO AP / AP50 / AP75 / APs:

* `config`: nothing changed (the model's NMS IoU 0.5 per tile, 0.5 at the tile merge);
* `model_nms=T`: the detector's own NMS (per tile) at IoU T;
* `merge_nms=T`: the NMS that merges the tiles at IoU T;
* `whole_image`: no tiles: the image zero-padded to a multiple of the detector's
  size multiple (128 for P3-P7) in one forward pass (the network is fully
  convolutional; its anchors follow the input size);
* `adabn=A`: AdaBN (Li et al. 2016, "Revisiting batch normalization for practical
  domain adaptation"): every BatchNormalization's moving mean and variance become
  `A * (statistics of the val image's tiles) + (1 - A) * (the trained ones)`, the
  tiles (the sliced grid, unlabelled) run once through the backbone in training
  mode. A test of whether the train-to-val gap lies in the first- and second-order
  feature statistics (another plot: other light, denser canopy).

None of these changes the config; the script exists so that the figures in
benchmarks/RESULTS.md ("Where the trees recipe stands") can be reproduced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, quiet_tf, write_json  # noqa: E402
from trees_errors import TREES_VAL, coco_figures  # noqa: E402

KEYS = ("AP", "AP50", "AP75", "APs")


def adapt_batchnorm(model, tiles: np.ndarray, alpha: float = 1.0) -> int:
    """AdaBN: set every BatchNormalization's moving statistics to those of `tiles`, mixed by `alpha`.

    tiles: float32 `[N, H, W, 3]` (0..255 RGB) of the target images, run once through
    `model.backbone` in training mode as one batch (the layers' momentum set to 0
    for that call, so the moving statistics become the batch's). The result is
    `alpha * new + (1 - alpha) * old` per layer. Returns the number of layers adapted.
    """
    import keras

    layers = [l for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    old = [(l.moving_mean.numpy().copy(), l.moving_variance.numpy().copy(), l.momentum) for l in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model.backbone(tiles, training=True)
    finally:
        for layer, (mean, variance, momentum) in zip(layers, old):
            layer.momentum = momentum
            layer.moving_mean.assign(alpha * layer.moving_mean.numpy() + (1.0 - alpha) * mean)
            layer.moving_variance.assign(alpha * layer.moving_variance.numpy() + (1.0 - alpha) * variance)
    return len(layers)


def grid_tiles(images: list[np.ndarray], tile: int, overlap: float) -> np.ndarray:
    """The tiles sliced inference cuts from `images` (`ipg_keras.data.tiling.tile_grid`), as one float32 batch."""
    from ipg_keras.data.tiling import cut_tile, tile_grid

    return np.stack([cut_tile(image, window, tile) for image in images
                     for window in tile_grid(*image.shape[:2], tile, int(round(tile * overlap)))])


def whole_image_predictor(model):
    """`predict(image [H, W, 3]) -> {"boxes", "scores", "classes"}`: one forward pass of the zero-padded image.

    The image is padded bottom/right to a multiple of the detector's `size_multiple` and predicted by
    `predict_image(mode="direct")`; boxes are clipped to the image itself.
    """
    from ipg_keras.inference import predict_image

    multiple = int(getattr(model, "size_multiple", 128))

    def predict(image: np.ndarray) -> dict:
        h, w = image.shape[:2]
        padded = np.zeros([-(-h // multiple) * multiple, -(-w // multiple) * multiple, 3], np.float32)
        padded[:h, :w] = image
        out = predict_image(model, padded, "direct")
        boxes = out["boxes"]
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
        return {**out, "boxes": boxes}

    return predict


def run(model_path: str, annotations: str, image_size: int, max_detections: int, settings: list[str],
        views: int = 4, scales: tuple[float, ...] = (1.0, 0.8, 1.25), overlap: float = 0.25) -> list[dict]:
    """One row per (setting, view count): `{"setting", "views", AP, AP50, AP75, APs}`."""
    from ipg_keras.data import load_ground_truth
    from ipg_keras.data.image_files import find_image_files
    from ipg_keras.data.image_io import read_image
    from ipg_keras.inference import load_detector, predict_image
    from ipg_keras.inference.tta import predict_views

    files, _ = find_image_files([annotations], False)
    truth = load_ground_truth(annotations, files)
    images = {f: read_image(f).astype(np.float32) for f in files}
    rows = []
    for setting in settings:
        name, _, value = setting.partition("=")
        detector = load_detector(model_path, image_size=image_size)  # fresh weights and NMS for every setting
        merge = 0.5
        if name == "model_nms":
            detector.model._config["nms_iou_threshold"] = float(value)
        elif name == "merge_nms":
            merge = float(value)
        elif name == "adabn":
            adapt_batchnorm(detector.model, grid_tiles(list(images.values()), image_size, overlap), float(value))
        elif name not in ("config", "whole_image"):
            raise ValueError(f"unknown setting {setting!r}")

        def one_view(image, merge=merge):
            return predict_image(detector, image, "slice", overlap=overlap, iou_threshold=merge,
                                 max_detections=max_detections)

        predict = whole_image_predictor(detector.model) if name == "whole_image" else one_view
        for count, view_scales in ((1, (1.0,)), (views, scales)):
            detections = {f: predict_views(predict, image, count, scales=view_scales, max_detections=max_detections)
                          for f, image in images.items()}
            figures = coco_figures(truth.gts, detections, max_detections, KEYS)
            rows.append({"setting": setting, "views": count * len(view_scales), **figures})
            print(f"{setting}, {count * len(view_scales)} view(s): {figures}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help=".keras file or ipg-train run folder of a trees model")
    parser.add_argument("--annotations", default=str(TREES_VAL), help="Pascal VOC folder or COCO JSON of the val images")
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--max-detections", type=int, default=1000)
    parser.add_argument("--settings", default="config,model_nms=0.6,model_nms=0.7,merge_nms=0.6,whole_image,"
                        "adabn=0.5,adabn=1.0", help="comma-separated settings (module docstring)")
    parser.add_argument("--views", type=int, default=4, help="flips per scale of the multi-view rows (1, 4 or 8)")
    parser.add_argument("--scales", default="1,0.8,1.25", help="scales of the multi-view rows")
    parser.add_argument("--output", help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    quiet_tf()
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    rows = run(args.model, args.annotations, args.image_size, args.max_detections, settings, args.views,
               tuple(float(s) for s in args.scales.split(",")))
    print(format_table(["setting", "views", *KEYS], [[r["setting"], r["views"], *(r[k] for k in KEYS)] for r in rows]))
    if args.output:
        write_json(args.output, {"model": args.model, "annotations": args.annotations, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
