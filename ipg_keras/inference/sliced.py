"""Sliced inference: detect small objects in an image of any size.

The image is cut into overlapping tiles (`ipg_keras.data.tiling.tile_grid`),
tiles are predicted in batches by any callable, boxes are shifted back to the
full image, and duplicates across tiles are merged with the package's class-aware
NMS (`ipg_keras.ops.nms`, the one the detectors and their exports use).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import tensorflow as tf

from ipg_keras.data.tiling import cut_tile, tile_grid
from ipg_keras.ops.nms import class_aware_nms_indices

Predictor = Callable[[np.ndarray], Mapping[str, object]]


def merge_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou_threshold: float = 0.5,
    max_detections: int = 300,
    score_threshold: float = 0.0,
) -> np.ndarray:
    """Indices of the detections kept by class-aware NMS, by descending score.

    The package's own NMS (`ipg_keras.ops.nms.class_aware_nms_indices`, the one
    inside the detectors and their exports) on one image: boxes of different classes never
    suppress each other. boxes `[K, 4]` xyxy pixels, scores `[K]`, classes `[K]` int.
    Returns int64 `[N]` indices into the inputs, `N <= max_detections`.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    classes = np.asarray(classes, np.int64).reshape(-1)
    if len(boxes) == 0:
        return np.zeros([0], np.int64)
    indices, valid = class_aware_nms_indices(boxes, scores, classes, int(max_detections), float(iou_threshold),
                                             float(score_threshold))
    return indices.numpy()[: int(valid)].astype(np.int64)


def _to_numpy(x) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def sliced_predict(
    predictor: Predictor,
    image,
    *,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 8,
    input_size: int | None = None,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.05,
    max_detections: int = 300,
    include_full_image: bool = False,
    pad_batch: bool = True,
) -> dict[str, np.ndarray]:
    """Detect on an image of any size by tiling it.

    Args:
        predictor: callable taking float32 [B, h, w, 3] (0..255 RGB) and returning
            the prediction dict of conventions.md ("boxes" [B, K, 4] xyxy in the
            input frame, "scores", "classes", "num_detections"), numpy or tensors.
            E.g. a Keras detector or its `predict_on_batch`.
        image: [H, W, 3] array or tensor, any numeric dtype (0..255 RGB).
        tile_size, overlap: tiling (see `tile_grid`); tiles at the image border are
            shifted inward, tiles of images smaller than tile_size are zero-padded.
        batch_size: tiles per predictor call.
        input_size: if given, tiles are resized to input_size x input_size before
            prediction (the detector's input size) and boxes scaled back.
        iou_threshold, score_threshold, max_detections: of the final class-aware NMS.
        include_full_image: also predict on the whole image resized to fit
            (input_size or tile_size), which helps objects larger than a tile.
        pad_batch: pad the last batch with blank tiles to batch_size, so a
            compiled predictor sees one shape only.

    Returns:
        {"boxes": [K, 4] float32 xyxy in full-image pixels, "scores": [K] float32,
         "classes": [K] int32, "num_detections": int K}, sorted by score.
    """
    img = np.asarray(_to_numpy(image), np.float32)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"sliced_predict expects one [H, W, 3] image, got shape {img.shape}")
    h, w = img.shape[:2]
    net = int(input_size or tile_size)
    windows = tile_grid(h, w, tile_size, overlap)

    # Jobs: a tile window, or None for the whole image. Tiles are cut per batch so
    # that memory stays at one batch whatever the image size.
    jobs: list = [tuple(int(v) for v in win) for win in windows]
    if include_full_image:
        jobs.append(None)

    def make_input(job):
        """(pixels [net, net, 3], x offset, y offset, image pixels per input pixel)."""
        if job is None:
            s = net / max(h, w)
            nh, nw = max(1, round(h * s)), max(1, round(w * s))
            full = np.zeros([net, net, 3], np.float32)
            full[:nh, :nw] = tf.image.resize(img, [nh, nw], antialias=True).numpy()
            return full, 0, 0, 1.0 / s
        x1, y1 = job[:2]
        tile = cut_tile(img, job, tile_size)
        if net != tile_size:
            tile = tf.image.resize(tile, [net, net], antialias=True).numpy()
        return tile, x1, y1, tile_size / net

    all_boxes, all_scores, all_classes = [], [], []
    for start in range(0, len(jobs), batch_size):
        inputs = [make_input(j) for j in jobs[start:start + batch_size]]
        chunk = np.stack([t[0] for t in inputs])
        n = len(chunk)
        if pad_batch and n < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], np.float32)])
        pred = predictor(chunk)
        boxes = _to_numpy(pred["boxes"]).astype(np.float32)
        scores = _to_numpy(pred["scores"]).astype(np.float32)
        classes = _to_numpy(pred["classes"]).astype(np.int32)
        num = (_to_numpy(pred["num_detections"]).astype(np.int64).reshape(-1)
               if "num_detections" in pred else np.full([len(chunk)], boxes.shape[1]))
        for b in range(n):
            k = int(num[b])
            bx, sc, cl = boxes[b, :k], scores[b, :k], classes[b, :k]
            valid = (cl >= 0) & (sc >= score_threshold)
            bx, sc, cl = bx[valid], sc[valid], cl[valid]
            _, ox, oy, sc_f = inputs[b]
            bx = bx * sc_f + np.asarray([ox, oy, ox, oy], np.float32)
            all_boxes.append(bx)
            all_scores.append(sc)
            all_classes.append(cl)

    boxes = np.concatenate(all_boxes) if all_boxes else np.zeros([0, 4], np.float32)
    scores = np.concatenate(all_scores) if all_scores else np.zeros([0], np.float32)
    classes = np.concatenate(all_classes) if all_classes else np.zeros([0], np.int32)
    # Boxes from padded tile areas may spill past the image: clip, drop empty ones.
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, classes = boxes[ok], scores[ok], classes[ok]
    keep = merge_detections(boxes, scores, classes, iou_threshold, max_detections, score_threshold)
    return {
        "boxes": boxes[keep].astype(np.float32),
        "scores": scores[keep].astype(np.float32),
        "classes": classes[keep].astype(np.int32),
        "num_detections": int(len(keep)),
    }
