"""IPG-RetinaNet: a one-stage detector on an image-pyramid-guided ResNet-FPN."""

from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf
from keras import ops

from ipg_keras.backbones import IPGResNet
from ipg_keras.layers import FeaturePyramid, PredictionHead
from ipg_keras.models.anchors import AnchorGenerator
from ipg_keras.models.detector import Detector, check_images
from ipg_keras.models.losses import giou_loss, quality_focal_loss, sigmoid_focal_loss, smooth_l1_loss
from ipg_keras.models.matching import match_anchors, match_anchors_atss
from ipg_keras.models.targets import global_positive_count
from ipg_keras.ops.boxes import BoxCoder, clip_boxes, elementwise_iou
from ipg_keras.ops.nms import batched_class_aware_nms

BOX_LOSSES = ("smooth_l1", "giou")
CLS_LOSSES = ("focal", "quality_focal")
MATCHERS = ("iou", "atss")


@keras.saving.register_keras_serializable(package="ipg_keras")
class IPGRetinaNet(Detector):
    """RetinaNet (Lin et al. 2017) on an IPG-guided ResNet with FPN P3-P7.

    `ipg=False` builds the same detector on the plain ResNet-FPN, the baseline.

    Call (`model(images)`) returns the raw head outputs `{"box": [B, A, 4],
    "cls": [B, A, num_classes]}` (logits); `compile()` + `fit()` train them
    with focal and box losses against targets `{"boxes": [B, M, 4] in
    bounding_box_format (xyxy pixels by default), "classes": [B, M]}` padded
    with -1. `predict()` returns decoded detections after class-aware NMS:
    `boxes` `[B, D, 4]` in bounding_box_format, `scores` `[B, D]`, `classes`
    `[B, D]` int32 (-1 = none), `num_detections` `[B]`; `detect()` and the
    exports give the same boxes in xyxy pixels.

    Images are `[B, H, W, 3]` RGB floats in 0..255. `fit`/`call` need H and W
    divisible by `2**max_level` (128 for P7) and raise a ValueError otherwise;
    `predict` pads the bottom/right edge to the next multiple itself, which
    leaves box coordinates unchanged.

    Args:
        num_classes: number of object classes (no background class).
        backbone: `"resnet18" | "resnet34" | "resnet50" | "resnet101"` or an `IPGResNet`.
        ipg: image pyramid guidance on (IPG-Net) or off (baseline).
        backbone_weights: `None`, `"imagenet"` or a keras.applications weights file.
        backbone_kwargs: further `IPGResNet` arguments (ipg_width, fusion, width_multiplier, ...).
        min_level, max_level: FPN levels (3..7 in RetinaNet).
        fpn_channels, head_width, head_depth, head_norm: FPN and head sizes.
        anchor_size, anchor_scales, aspect_ratios: anchors (4 x stride, 3 scales, 3 ratios).
        matcher: `"iou"` (RetinaNet: fixed thresholds `positive_iou` /
            `negative_iou`, 0.5 / 0.4, best anchor of each object also positive) or
            `"atss"` (Zhang et al. 2020, ATSS: per object, the `atss_topk` anchors
            per level nearest its centre are candidates, positive at IoU >= their
            mean + std with the centre inside the box; `ipg_keras.models.matching`).
        positive_iou, negative_iou: matching thresholds of the `"iou"` matcher.
        atss_topk: candidates per level and object of the `"atss"` matcher (9).
        cls_loss: `"focal"` (Lin et al. 2017: targets 1 for the matched class at
            positive anchors, `focal_alpha` / `focal_gamma`) or `"quality_focal"`
            (Li et al. 2020, GFL: the target is the IoU of the anchor's decoded
            box with its ground truth, so scores rank boxes by localisation;
            `focal_gamma` is its beta, `focal_alpha` does not apply).
        focal_alpha, focal_gamma: focal loss (0.25 / 2).
        box_loss: `"smooth_l1"` (beta `smooth_l1_beta`) or `"giou"`.
        box_loss_weight: weight of the box loss.
        prior_probability: initial foreground probability of the class head.
        pre_nms_topk, score_threshold, nms_iou_threshold, max_detections: inference.
        bounding_box_format: format of the `fit` targets and `predict` boxes,
            a name of `ipg_keras.ops.box_formats.BOX_FORMATS` ("xyxy", "xywh",
            "center_xywh", "yxyx", "rel_xyxy", "rel_yxyx", ...; keras-cv's and
            keras-hub's argument, converted by `keras.utils.bounding_boxes.convert_format`).
            `rel_` targets are relative to the `fit` images' size (the padded
            network input), `rel_` predictions to the size of the images given to
            `predict`. Raises ValueError for an unknown name.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str | IPGResNet = "resnet50",
        ipg: bool = True,
        backbone_weights: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        min_level: int = 3,
        max_level: int = 7,
        fpn_channels: int = 256,
        head_width: int = 256,
        head_depth: int = 4,
        head_norm: str | None = None,
        anchor_size: float = 4.0,
        anchor_scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        positive_iou: float = 0.5,
        negative_iou: float = 0.4,
        matcher: str = "iou",
        atss_topk: int = 9,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        cls_loss: str = "focal",
        box_loss: str = "smooth_l1",
        smooth_l1_beta: float = 0.11,
        box_loss_weight: float = 1.0,
        prior_probability: float = 0.01,
        pre_nms_topk: int = 1000,
        score_threshold: float = 0.05,
        nms_iou_threshold: float = 0.5,
        max_detections: int = 100,
        bounding_box_format: str = "xyxy",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}.")
        if cls_loss not in CLS_LOSSES:
            raise ValueError(f"cls_loss must be one of {CLS_LOSSES}, got {cls_loss!r}.")
        if matcher not in MATCHERS:
            raise ValueError(f"matcher must be one of {MATCHERS}, got {matcher!r}.")
        if int(atss_topk) < 1:
            raise ValueError(f"atss_topk must be >= 1, got {atss_topk!r}.")
        self._init_box_format(bounding_box_format)
        self._init_backbone(num_classes, backbone, ipg, backbone_weights, backbone_kwargs)
        self.min_level, self.max_level = int(min_level), int(max_level)
        self.fpn = FeaturePyramid(min_level, max_level, fpn_channels, extra_levels="conv_c5", name="fpn")
        self.anchor_generator = AnchorGenerator(min_level, max_level, anchor_size, anchor_scales, aspect_ratios)
        num_anchors = self.anchor_generator.num_anchors_per_location
        self.cls_head = PredictionHead(
            self.num_classes, num_anchors, head_width, head_depth, prior_probability, head_norm, name="cls_head"
        )
        self.box_head = PredictionHead(4, num_anchors, head_width, head_depth, None, head_norm, name="box_head")
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.cls_loss_tracker = keras.metrics.Mean(name="cls_loss")
        self.box_loss_tracker = keras.metrics.Mean(name="box_loss")
        self._config = dict(
            num_classes=self.num_classes,
            ipg=self.ipg,
            backbone_kwargs=self.backbone_kwargs,
            min_level=self.min_level,
            max_level=self.max_level,
            fpn_channels=int(fpn_channels),
            head_width=int(head_width),
            head_depth=int(head_depth),
            head_norm=head_norm,
            anchor_size=float(anchor_size),
            anchor_scales=[float(s) for s in anchor_scales],
            aspect_ratios=[float(r) for r in aspect_ratios],
            positive_iou=float(positive_iou),
            negative_iou=float(negative_iou),
            matcher=matcher,
            atss_topk=int(atss_topk),
            focal_alpha=float(focal_alpha),
            focal_gamma=float(focal_gamma),
            cls_loss=cls_loss,
            box_loss=box_loss,
            smooth_l1_beta=float(smooth_l1_beta),
            box_loss_weight=float(box_loss_weight),
            prior_probability=float(prior_probability),
            pre_nms_topk=int(pre_nms_topk),
            score_threshold=float(score_threshold),
            nms_iou_threshold=float(nms_iou_threshold),
            max_detections=int(max_detections),
        )

    @property
    def size_multiple(self) -> int:
        """H and W of the network input must be multiples of this."""
        return 2**self.max_level

    # ------------------------------------------------------------------ forward
    def call(self, images, training=None):
        check_images(images, self.size_multiple)
        features = self.backbone(images, training=training)
        pyramid = self.fpn(features)
        levels = [pyramid[f"P{l}"] for l in range(self.min_level, self.max_level + 1)]
        return {
            "box": ops.cast(self.box_head(levels), "float32"),
            "cls": ops.cast(self.cls_head(levels), "float32"),
        }

    # --------------------------------------------------------------------- loss
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        gt_boxes, gt_classes, gt_valid = self.unpack_targets(x, y)
        cfg = self._config
        anchors = self.anchors_for(x)
        if cfg["matcher"] == "atss":
            counts = self.anchor_generator.level_sizes(ops.shape(x)[1], ops.shape(x)[2])
            matched, _ = match_anchors_atss(anchors, counts, gt_boxes, gt_valid, cfg["atss_topk"])
        else:
            matched, _ = match_anchors(anchors, gt_boxes, gt_valid, cfg["positive_iou"], cfg["negative_iou"])
        positive = matched >= 0
        trained = positive | (matched == -1)  # positives and background; "ignore" is not trained
        index = ops.maximum(matched, 0)
        target_boxes = ops.take_along_axis(gt_boxes, ops.expand_dims(index, -1), axis=1)
        target_classes = ops.take_along_axis(gt_classes, index, axis=1)
        num_positive = global_positive_count(ops.sum(ops.cast(positive, "float32")))

        labels = ops.one_hot(target_classes, self.num_classes) * ops.expand_dims(ops.cast(positive, "float32"), -1)
        predicted = None
        if cfg["box_loss"] == "giou" or cfg["cls_loss"] == "quality_focal":
            predicted = self.box_coder.decode(y_pred["box"], anchors)
        if cfg["cls_loss"] == "quality_focal":
            # GFL: the positive target is the IoU of the predicted box, not trained through the score.
            quality = ops.stop_gradient(elementwise_iou(target_boxes, predicted))
            cls = quality_focal_loss(labels * ops.expand_dims(quality, -1), y_pred["cls"], cfg["focal_gamma"])
        else:
            cls = sigmoid_focal_loss(labels, y_pred["cls"], cfg["focal_alpha"], cfg["focal_gamma"])
        cls_loss = ops.sum(cls * ops.expand_dims(ops.cast(trained, "float32"), -1)) / num_positive

        pos_weight = ops.cast(positive, "float32")
        if cfg["box_loss"] == "giou":
            per_anchor = giou_loss(target_boxes, predicted)
        else:
            encoded = self.box_coder.encode(target_boxes, anchors)
            per_anchor = ops.sum(smooth_l1_loss(encoded, y_pred["box"], cfg["smooth_l1_beta"]), axis=-1)
        box_loss = ops.sum(per_anchor * pos_weight) / num_positive

        return self._track_and_sum(
            [(cls_loss, self.cls_loss_tracker, 1.0), (box_loss, self.box_loss_tracker, cfg["box_loss_weight"])]
        )

    # ---------------------------------------------------------------- inference
    def decode_predictions(self, raw, images, return_levels: bool = False):
        """Raw head outputs -> padded detections after top-k, decoding and class-aware NMS.

        With `return_levels`, the result also has `levels` `[B, D]` int32: the FPN
        level (3..7) whose anchor produced each detection (-1 for padding), for
        analyses of which level finds which objects (benchmarks/ipg_study.py).
        Boxes are xyxy pixels of `images`, before any bounding_box_format conversion.
        """
        cfg = self._config
        shape = ops.shape(images)
        height, width = shape[1], shape[2]
        box_deltas, cls_logits = raw["box"], raw["cls"]
        k = cfg["pre_nms_topk"]
        counts = [self.anchor_generator.level_count(l, height, width) for l in range(self.min_level, self.max_level + 1)]
        # Scores are bitwise those of a sigmoid over each level's slice (the
        # definition). When every level's slice has a whole number of vector
        # packets, one sigmoid over all levels gives those same values, and the
        # sigmoid of every pair need not even be kept (`_sigmoid_whole_packets`);
        # otherwise each level's slice is scored as before.
        # (Per image n * C a multiple of the packet: true for any batch size, known or not.)
        batch = cls_logits.shape[0]
        packed = all(isinstance(n, int) and (n * self.num_classes % _PACKET == 0 or
                                             batch is not None and batch * n * self.num_classes % _PACKET == 0)
                     for n in counts)
        if packed:
            best_scores = ops.max(ops.sigmoid(cls_logits), axis=-1)
        boxes_all, scores_all, classes_all, levels_all = [], [], [], []
        start = 0
        for level, count in zip(range(self.min_level, self.max_level + 1), counts):
            # Top-k over (anchor, class) pairs per level, as torchvision does.
            if packed:
                top_scores, anchor_index, classes = top_pairs(
                    cls_logits, k, start, count, best_scores[:, start : start + count], _sigmoid_whole_packets
                )
            else:
                scores = ops.sigmoid(cls_logits[:, start : start + count, :])
                top_scores, anchor_index, classes = top_pairs(scores, k, 0, count)
            top_deltas = tf.gather(box_deltas, anchor_index + start, batch_dims=1)
            start = start + count
            top_anchors = self.anchor_generator.anchors_at(level, width, anchor_index)
            boxes = self.box_coder.decode(top_deltas, top_anchors)
            boxes_all.append(boxes)
            scores_all.append(top_scores)
            classes_all.append(classes)
            levels_all.append(ops.full_like(classes, level))
        boxes = clip_boxes(ops.concatenate(boxes_all, 1), ops.cast(height, "float32"), ops.cast(width, "float32"))
        detections = batched_class_aware_nms(
            boxes,
            ops.concatenate(scores_all, 1),
            ops.concatenate(classes_all, 1),
            max_detections=cfg["max_detections"],
            iou_threshold=cfg["nms_iou_threshold"],
            score_threshold=cfg["score_threshold"],
            labels=ops.concatenate(levels_all, 1) if return_levels else None,
        )
        if return_levels:
            detections["levels"] = detections.pop("labels")
        return detections


# Float lanes of the widest vector packet Eigen's CPU kernels use (AVX-512); its
# sigmoid computes each lane alone, but elements after the last whole packet of a
# tensor go through scalar code, which rounds differently (about 2 in 3 values
# differ by an ulp on an AVX build).
_PACKET = 16


def _sigmoid_whole_packets(x):
    """`ops.sigmoid(x)` with every element computed in a vector packet (never in the scalar tail).

    Equal, bit for bit, to the sigmoid of any tensor holding these values in its
    whole packets (e.g. a level slice whose size is a multiple of `_PACKET`).
    """
    flat = ops.reshape(x, (-1,))
    size = ops.shape(flat)[0]
    pad = (-size) % _PACKET
    padded = ops.pad(flat, [[0, pad]]) if isinstance(pad, int) else tf.pad(flat, [[0, pad]])
    return ops.reshape(ops.sigmoid(padded)[:size], ops.shape(x))


def top_pairs(scores, k: int, start=0, count=None, best=None, score_fn=None):
    """The `k` highest-scoring (anchor, class) pairs of anchors `start:start + count`, per image.

    Args:
        scores: `[B, N, C]` class scores of `N` anchors (all levels), or logits
            with `score_fn` (e.g. `ops.sigmoid`), the element-wise map to scores.
        k: pairs kept (fewer when `count * C < k`).
        start, count: the level's anchors (int or scalar tensor); `count` None: all `N - start`.
        best: optional `[B, count]` = `max(score_fn(scores[:, start:start + count]), -1)`, if already computed.
        score_fn: None (`scores` are scores) or an element-wise, non-decreasing map.
    Returns:
        `(top_scores [B, K], anchor_index [B, K], classes [B, K])` int32, anchor
        indices counted from `start`, `K = min(k, count * C)`: exactly
        `tf.math.top_k` over the `count * C` flattened pair scores of those anchors
        (descending score; equal scores: lower flat index `anchor * C + class` first).

    Cost: with `count > k`, a top-k over all `count * C` pairs (2.9 M at 80
    classes on a 512x512 P3 level: 7 ms on the 2-core CPU) is replaced by a
    top-k over the `count` per-anchor best scores and one over the `k * C`
    pairs of the `k` best anchors (2 ms), and `score_fn` runs on those `k * C`
    only. The result is the same, ties included: every pair of the top `k`
    belongs to one of the top `k` anchors by best score (ties: lower anchor
    index first), because each anchor ranked above its anchor holds a pair
    ranked above it; and the candidate pairs are laid out in ascending flat
    index, so top-k breaks ties as before.
    """
    score_fn = score_fn or (lambda x: x)
    num_classes = scores.shape[-1]
    batch = ops.shape(scores)[0]
    if count is None:
        count = ops.shape(scores)[1] - start
    if isinstance(count, int) and count <= k:  # every anchor is a candidate: one top-k over <= k * C pairs
        flat = ops.reshape(score_fn(scores[:, start : start + count]), (batch, -1))
        top_scores, top_index = tf.math.top_k(flat, k=min(k, count * num_classes))
        return top_scores, top_index // num_classes, top_index % num_classes
    if best is None:
        best = ops.max(score_fn(scores[:, start : start + count]), axis=-1)  # [B, count]
    # Which k anchors, not their order: unsorted top-k (same set: TF ranks equal
    # values by index either way), then ascending anchor index = ascending flat pair index.
    _, anchors = tf.math.top_k(best, k=k if isinstance(count, int) else ops.minimum(k, count), sorted=False)
    anchors = ops.sort(anchors, axis=-1)
    # tf.gather, not ops.take_along_axis: Keras's TF take_along_axis transposes
    # the whole [B, N, C] tensor to gather along axis 1 (a 12 MB copy at 80 classes).
    candidates = score_fn(tf.gather(scores, anchors + start, batch_dims=1))  # [B, k', C]
    candidates = ops.reshape(candidates, (batch, -1))
    top_scores, position = tf.math.top_k(candidates, k=ops.minimum(k, ops.shape(candidates)[1]))
    anchor_index = tf.gather(anchors, position // num_classes, batch_dims=1)
    return top_scores, anchor_index, position % num_classes
