"""`ipg-train CONFIG --check-anchors`: how the config's anchors fit its training boxes, and a proposal."""

from __future__ import annotations

import numpy as np

from ipg_keras.training.config import ConfigError, ExperimentConfig


def training_boxes(cfg: ExperimentConfig) -> np.ndarray:
    """`[N, 4]` xyxy training boxes of `cfg`, in the network's input pixels before augmentation.

    Tiled data (`data.tile_size`): tiles are resized by image_size / tile_size;
    otherwise each image is resized to fit `data.image_size`. VOC and COCO JSON
    boxes are read from the annotations without decoding an image.
    """
    d = cfg.data
    per_image: list[tuple[np.ndarray, int, int]] = []  # (boxes, height, width)
    if d.source in ("pascal_voc", "coco_json"):
        from ipg_keras.data import load_coco_json, load_pascal_voc

        if not d.train_annotations:
            raise ConfigError(f"data.source={d.source} needs data.train_annotations.")
        if d.source == "pascal_voc":
            parsed = load_pascal_voc(d.train_annotations, class_names=d.class_names)
        else:
            parsed = load_coco_json(d.train_annotations, d.train_images)
        per_image = [(np.asarray(r.boxes, np.float64), r.height, r.width) for r in parsed.records]
    else:
        from ipg_keras.training.train import build_datasets

        train, _, _ = build_datasets(cfg)
        for element in train.as_numpy_iterator():
            h, w = element["images"].shape[:2]
            per_image.append((np.asarray(element["bounding_boxes"]["boxes"], np.float64), h, w))
    out = []
    for boxes, h, w in per_image:
        scale = d.image_size / (d.tile_size if d.tile_size else max(h, w))
        out.append(boxes.reshape(-1, 4) * scale)
    boxes = np.concatenate(out) if out else np.zeros((0, 4))
    if not len(boxes):
        raise ConfigError(f"--check-anchors: the training data of {cfg.name!r} has no boxes.")
    return boxes


def anchor_check_report(cfg: ExperimentConfig) -> tuple[str, dict]:
    """`(text, proposal)`: the configured anchors' fit to the training boxes and a fitted proposal.

    proposal: `{"model.anchor_size": ..., "model.aspect_ratios": [...]}`, the
    overrides that apply it.
    """
    from ipg_keras.models.anchor_fit import anchor_fit_report, propose_anchors

    m = cfg.model
    if m.type != "retinanet":
        raise ConfigError(f"--check-anchors: model.type={m.type!r}; only retinanet anchors are configurable.")
    boxes = training_boxes(cfg)
    wh = boxes[:, 2:] - boxes[:, :2]
    side = np.sqrt(wh[:, 0] * wh[:, 1])
    q = np.percentile(side, [1, 10, 50, 90, 99])
    configured = anchor_fit_report(boxes, m.anchor_size, m.anchor_scales, m.aspect_ratios, m.min_level,
                                   m.max_level, m.positive_iou)
    proposed = propose_anchors(boxes, num_ratios=len(m.aspect_ratios), scales=m.anchor_scales,
                               min_level=m.min_level, max_level=m.max_level, positive_iou=m.positive_iou)
    proposal = {"model.anchor_size": proposed.anchor_size, "model.aspect_ratios": list(proposed.aspect_ratios)}
    lines = [
        f"{len(boxes)} training boxes of {cfg.name} in network-input pixels: sqrt(w*h) p1 {q[0]:.1f}, "
        f"p10 {q[1]:.1f}, median {q[2]:.1f}, p90 {q[3]:.1f}, p99 {q[4]:.1f}; "
        f"h/w median {np.median(wh[:, 1] / wh[:, 0]):.2f}",
        "configured: " + configured.summary(),
        "proposed:   " + proposed.summary(),
        "apply with: " + " ".join(f"--set {k}={_yaml(v)}" for k, v in proposal.items()),
    ]
    if m.matcher == "atss":
        lines.append(f"model.matcher=atss: each box's positives are the anchors among its {m.atss_topk} nearest per "
                     "level at IoU >= their mean + std, so a box below the IoU above still gets positives; the "
                     "coverage figures compare anchor sets, they are not the matcher's threshold")
    return "\n".join(lines), proposal


def _yaml(value) -> str:
    """A value as one shell word that `--set` parses back (YAML flow style, no spaces)."""
    if isinstance(value, list):
        return "[" + ",".join(f"{v:g}" for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)
