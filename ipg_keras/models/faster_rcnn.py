"""IPG-Faster R-CNN: a two-stage detector (RPN + RoI box head) on an image-pyramid-guided ResNet-FPN."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import keras
import tensorflow as tf
from keras import layers, ops

from ipg_keras.backbones import IPGResNet
from ipg_keras.layers import FeaturePyramid, PredictionHead
from ipg_keras.models.anchors import AnchorGenerator
from ipg_keras.models.losses import smooth_l1_loss
from ipg_keras.models.matching import match_anchors
from ipg_keras.models.detector import Detector, check_images
from ipg_keras.models.roi_align import ROI_ALIGN_METHODS, multilevel_roi_align
from ipg_keras.models.sampling import gather_sampled, sample_balanced
from ipg_keras.models.targets import at_least_one_target, global_positive_count
from ipg_keras.ops import POSTPROCESS_SCOPE
from ipg_keras.ops.boxes import BoxCoder, clip_boxes
from ipg_keras.ops.nms import batched_class_aware_nms

# FPN levels: the RPN runs on P2-P6, RoIs are pooled from P2-P5 (Lin et al. 2017).
RPN_LEVELS = (2, 6)
ROI_LEVELS = (2, 5)
# Proposals and detections narrower or lower than this (pixels) are dropped (torchvision: 1e-3 and 1e-2).
MIN_PROPOSAL_SIZE = 1e-3
MIN_DETECTION_SIZE = 1e-2


@keras.saving.register_keras_serializable(package="ipg_keras")
class RoIBoxHead(keras.layers.Layer):
    """Fast R-CNN box head: `num_fc` fully connected layers, then class logits and class-specific boxes.

    Args:
        num_classes: object classes; the logits have one more column, the
            background, last (index `num_classes`).
        fc_width: width of the hidden fully connected layers (1024).
        num_fc: number of hidden layers (2).

    Shape:
        input: pooled RoI features `[B, R, S, S, C]`.
        output: `(logits [B, R, num_classes + 1], box deltas [B, R, num_classes, 4])`.
    """

    def __init__(self, num_classes: int, fc_width: int = 1024, num_fc: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.fc_width = int(fc_width)
        self.num_fc = int(num_fc)
        self.fcs = [layers.Dense(self.fc_width, activation="relu", name=f"fc{i + 1}") for i in range(self.num_fc)]
        # Detectron2's initialisation: small logits and smaller deltas, so the
        # untrained head starts near "uniform classes, boxes = proposals".
        self.cls_score = layers.Dense(
            self.num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name="cls_score"
        )
        self.bbox_pred = layers.Dense(
            4 * self.num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001), name="bbox_pred"
        )

    def build(self, input_shape):
        size = 1
        for d in input_shape[2:]:
            if d is None:
                raise ValueError(f"RoIBoxHead needs static pooled feature sizes, got input shape {input_shape}.")
            size *= int(d)
        shape = (None, size)
        for fc in self.fcs:
            fc.build(shape)
            shape = (None, self.fc_width)
        self.cls_score.build(shape)
        self.bbox_pred.build(shape)

    def call(self, pooled):
        shape = ops.shape(pooled)
        flat = 1
        for d in pooled.shape[2:]:
            flat *= int(d)
        x = ops.reshape(pooled, (shape[0], shape[1], flat))
        for fc in self.fcs:
            x = fc(x)
        logits = self.cls_score(x)
        deltas = ops.reshape(self.bbox_pred(x), (shape[0], shape[1], self.num_classes, 4))
        return logits, deltas

    def compute_output_shape(self, input_shape):
        b, r = input_shape[0], input_shape[1]
        return (b, r, self.num_classes + 1), (b, r, self.num_classes, 4)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "fc_width": self.fc_width,
                "num_fc": self.num_fc}


def assign_rpn_targets(
    anchors,
    gt_boxes,
    gt_valid,
    positive_iou: float = 0.7,
    negative_iou: float = 0.3,
    num_samples: int = 256,
    positive_fraction: float = 0.5,
):
    """RPN training targets: IoU matching, then a balanced random sample of anchors.

    Anchors with IoU >= `positive_iou` with a ground truth, and for every ground
    truth its best-overlapping anchors, are positive; IoU < `negative_iou` is
    background; the rest is ignored. Then `num_samples` anchors per image are
    drawn, at most `positive_fraction` of them positive.

    Args:
        anchors: `[A, 4]` xyxy.
        gt_boxes: `[B, M, 4]` xyxy, padded (`M` may be 0); gt_valid: `[B, M]` bool.
    Returns:
        `(matched [B, A] int32, sampled_positive [B, A] bool, sampled_negative [B, A] bool)`;
        `matched` indexes the ground truth of positives (-1 background, -2 ignored).
    """
    matched, _ = match_anchors(anchors, gt_boxes, gt_valid, positive_iou, negative_iou,
                               allow_low_quality_matches=True)
    positive, negative = sample_balanced(matched >= 0, matched == -1, num_samples, positive_fraction)
    return matched, positive, negative


def assign_roi_targets(
    proposals,
    proposal_valid,
    gt_boxes,
    gt_classes,
    gt_valid,
    num_classes: int,
    num_samples: int = 512,
    positive_fraction: float = 0.25,
    positive_iou: float = 0.5,
):
    """Box-head training RoIs: proposals plus the ground truth, matched and sampled.

    A candidate with IoU >= `positive_iou` with a ground truth is positive
    (labelled with that box's class), below is background (label `num_classes`).
    Then `num_samples` RoIs per image are drawn, at most `positive_fraction` positive.

    Args:
        proposals: `[B, P, 4]` xyxy; proposal_valid: `[B, P]` bool.
        gt_boxes: `[B, M, 4]`; gt_classes: `[B, M]` int; gt_valid: `[B, M]` bool;
            `M` may be 0 (images without objects: every RoI is background).
    Returns:
        dict of `rois` `[B, K, 4]`, `labels` `[B, K]` int32, `matched_boxes` `[B, K, 4]`
        (ground truth of positives), `positive` `[B, K]` bool and `valid` `[B, K]` bool
        (False for padding rows when fewer than `K = min(num_samples, P + M)` were sampled).
    """
    gt_boxes, gt_classes, gt_valid = at_least_one_target(gt_boxes, gt_classes, gt_valid)
    gt_boxes = tf.where(gt_valid[..., None], gt_boxes, 0.0)
    # Adding the ground truth guarantees positives from the first step on,
    # when the untrained RPN proposes nothing useful (Detectron2 and torchvision do too).
    candidates = tf.concat([tf.cast(proposals, tf.float32), gt_boxes], axis=1)
    candidate_valid = tf.concat([tf.cast(proposal_valid, tf.bool), gt_valid], axis=1)
    matched, _ = match_anchors(candidates, gt_boxes, gt_valid, positive_iou, positive_iou,
                               allow_low_quality_matches=False)
    positive = (matched >= 0) & candidate_valid
    negative = (matched == -1) & candidate_valid
    sampled_positive, sampled_negative = sample_balanced(positive, negative, num_samples, positive_fraction)
    index, valid = gather_sampled(sampled_positive, sampled_negative, num_samples)
    rois = tf.gather(candidates, index, batch_dims=1)
    is_positive = tf.gather(sampled_positive, index, batch_dims=1) & valid
    gt_index = tf.maximum(tf.gather(matched, index, batch_dims=1), 0)
    labels = tf.where(is_positive, tf.gather(gt_classes, gt_index, batch_dims=1), num_classes)
    return {
        "rois": tf.stop_gradient(rois),
        "labels": labels,
        "matched_boxes": tf.gather(gt_boxes, gt_index, batch_dims=1),
        "positive": is_positive,
        "valid": valid,
    }


@keras.saving.register_keras_serializable(package="ipg_keras")
class IPGFasterRCNN(Detector):
    """Faster R-CNN with FPN (Ren et al. 2015, Lin et al. 2017) on an IPG-guided ResNet.

    `ipg=False` builds the same detector on the plain ResNet-FPN, the baseline.

    Stages: backbone -> FPN P2-P6 (P6 = max-pool of P5) -> RPN (one 3x3 conv of
    `rpn_head_width`, then objectness and box deltas for 3 anchors per location,
    size `anchor_size` x stride) -> proposals (per level top-k, decode, clip, NMS
    per level, merged top-k) -> multi-level RoIAlign 7x7 -> two FC layers ->
    class logits (with background) and class-specific box deltas.

    Call (`model(images)`) returns the raw outputs: `rpn_cls` `[B, A]` objectness
    logits, `rpn_box` `[B, A, 4]`, `proposals` `[B, P, 4]` with `proposal_scores`
    `[B, P]` and `num_proposals` `[B]`, `features` (`{"P2".."P5"}`, what the
    box head pools from) and, at inference only, the box head on the proposals:
    `cls` `[B, P, num_classes + 1]` (background last) and `box`
    `[B, P, num_classes, 4]`. In training the box head runs in `compute_loss`
    on the sampled RoIs, which depend on the targets. `compile()` + `fit()` train
    the four losses (`rpn_cls_loss`, `rpn_box_loss`, `cls_loss`, `box_loss`)
    against targets `{"boxes": [B, M, 4] in bounding_box_format (xyxy pixels by
    default), "classes": [B, M]}` padded with -1. `predict()` returns
    detections after per-class NMS: `boxes` `[B, D, 4]` in bounding_box_format,
    `scores` `[B, D]`, `classes` `[B, D]` int32 (-1 = none), `num_detections`
    `[B]`; `detect()` and the exports give the same boxes in xyxy pixels.

    Images are `[B, H, W, 3]` RGB floats in 0..255. `fit`/`call` need H and W
    divisible by 32 and raise a ValueError otherwise; `predict` pads the
    bottom/right edge itself. The graph has data-dependent shapes (NMS,
    per-level RoI partition), so the model does not support XLA (`jit_compile`).

    Args:
        num_classes: number of object classes (no background class).
        backbone: `"resnet18" | "resnet34" | "resnet50" | "resnet101"` or an `IPGResNet`.
        ipg: image pyramid guidance on (IPG-Net) or off (baseline).
        backbone_weights: `None`, `"imagenet"` or a keras.applications weights file.
        backbone_kwargs: further `IPGResNet` arguments (ipg_width, fusion, width_multiplier, ...).
        fpn_channels: FPN width (256).
        rpn_head_width: width of the RPN's 3x3 conv (None: `fpn_channels`).
        anchor_size, aspect_ratios: RPN anchors (8 x stride, ratios 0.5/1/2).
        rpn_positive_iou, rpn_negative_iou: RPN matching (0.7 / 0.3).
        rpn_batch_size, rpn_positive_fraction: anchors sampled per image (256, half positive at most).
        rpn_nms_iou_threshold: proposal NMS (0.7).
        pre_nms_topk_train, post_nms_topk_train: proposals per level before NMS / per image after (2000 / 2000).
        pre_nms_topk_test, post_nms_topk_test: the same at inference (1000 / 1000).
        roi_output_size, roi_sampling_ratio: RoIAlign (7, 2; aligned).
        roi_head_width, roi_head_depth: FC layers of the box head (1024, 2).
        num_rois, roi_positive_fraction, roi_positive_iou: RoIs sampled per image (512, 25 %, IoU 0.5).
        box_coder_weights: box head deltas' weights (10, 10, 5, 5); the RPN uses (1, 1, 1, 1).
        smooth_l1_beta: smooth-L1 beta of both box losses (1/9, as torchvision).
        score_threshold, nms_iou_threshold, max_detections: inference (0.05, 0.5 per class, 100).
        roi_align_method: `"crop_and_resize"` (TensorFlow's fused kernel, fast to
            train) or `"gather"` (builtin ops only; the TFLite export switches to
            it while tracing). Same values either way.
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
        fpn_channels: int = 256,
        rpn_head_width: int | None = None,
        anchor_size: float = 8.0,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        rpn_positive_iou: float = 0.7,
        rpn_negative_iou: float = 0.3,
        rpn_batch_size: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_nms_iou_threshold: float = 0.7,
        pre_nms_topk_train: int = 2000,
        post_nms_topk_train: int = 2000,
        pre_nms_topk_test: int = 1000,
        post_nms_topk_test: int = 1000,
        roi_output_size: int = 7,
        roi_sampling_ratio: int = 2,
        roi_head_width: int = 1024,
        roi_head_depth: int = 2,
        num_rois: int = 512,
        roi_positive_fraction: float = 0.25,
        roi_positive_iou: float = 0.5,
        box_coder_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        smooth_l1_beta: float = 1.0 / 9.0,
        score_threshold: float = 0.05,
        nms_iou_threshold: float = 0.5,
        max_detections: int = 100,
        roi_align_method: str = "crop_and_resize",
        bounding_box_format: str = "xyxy",
        **kwargs,
    ):
        super().__init__(**kwargs)
        for key, value in (
            ("rpn_batch_size", rpn_batch_size), ("num_rois", num_rois), ("pre_nms_topk_train", pre_nms_topk_train),
            ("post_nms_topk_train", post_nms_topk_train), ("pre_nms_topk_test", pre_nms_topk_test),
            ("post_nms_topk_test", post_nms_topk_test), ("roi_output_size", roi_output_size),
            ("roi_sampling_ratio", roi_sampling_ratio), ("max_detections", max_detections),
        ):
            if int(value) < 1:
                raise ValueError(f"IPGFasterRCNN {key} must be >= 1, got {value}.")
        for key, value in (("rpn_positive_fraction", rpn_positive_fraction),
                           ("roi_positive_fraction", roi_positive_fraction)):
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"IPGFasterRCNN {key} must be in (0, 1], got {value}.")
        if float(rpn_negative_iou) > float(rpn_positive_iou):
            raise ValueError(
                f"rpn_negative_iou ({rpn_negative_iou}) must not exceed rpn_positive_iou ({rpn_positive_iou})."
            )
        if roi_align_method not in ROI_ALIGN_METHODS:
            raise ValueError(f"roi_align_method must be one of {ROI_ALIGN_METHODS}, got {roi_align_method!r}.")
        self.roi_align_method = str(roi_align_method)
        self._init_box_format(bounding_box_format)
        if len(tuple(box_coder_weights)) != 4:
            raise ValueError(f"box_coder_weights needs 4 values (wx, wy, ww, wh), got {box_coder_weights!r}.")
        self._init_backbone(num_classes, backbone, ipg, backbone_weights, backbone_kwargs)
        self.min_level, self.max_level = RPN_LEVELS
        rpn_head_width = int(rpn_head_width or fpn_channels)
        self.fpn = FeaturePyramid(self.min_level, self.max_level, fpn_channels, extra_levels="maxpool", name="fpn")
        self.anchor_generator = AnchorGenerator(self.min_level, self.max_level, anchor_size, (1.0,), aspect_ratios)
        # One shared 3x3 conv, then objectness (1) and box deltas (4) per anchor
        # from the same output conv: PredictionHead flattens them per anchor in
        # the anchor generator's order. Objectness and deltas are separate
        # tensors (output_groups) so int8 TFLite gives each its own range.
        self.rpn_head = PredictionHead(
            5, self.anchor_generator.num_anchors_per_location, rpn_head_width, 1, None, None,
            output_groups=(1, 4), name="rpn_head",
        )
        self.box_head = RoIBoxHead(self.num_classes, roi_head_width, roi_head_depth, name="box_head")
        self.rpn_box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.box_coder = BoxCoder(box_coder_weights)
        self.rpn_cls_loss_tracker = keras.metrics.Mean(name="rpn_cls_loss")
        self.rpn_box_loss_tracker = keras.metrics.Mean(name="rpn_box_loss")
        self.cls_loss_tracker = keras.metrics.Mean(name="cls_loss")
        self.box_loss_tracker = keras.metrics.Mean(name="box_loss")
        # NMS and the per-level RoI partition have data-dependent shapes: keep
        # compile(jit_compile="auto") from choosing XLA on GPUs.
        self.supports_jit = False
        self._config = dict(
            num_classes=self.num_classes,
            ipg=self.ipg,
            backbone_kwargs=self.backbone_kwargs,
            fpn_channels=int(fpn_channels),
            rpn_head_width=rpn_head_width,
            anchor_size=float(anchor_size),
            aspect_ratios=[float(r) for r in aspect_ratios],
            rpn_positive_iou=float(rpn_positive_iou),
            rpn_negative_iou=float(rpn_negative_iou),
            rpn_batch_size=int(rpn_batch_size),
            rpn_positive_fraction=float(rpn_positive_fraction),
            rpn_nms_iou_threshold=float(rpn_nms_iou_threshold),
            pre_nms_topk_train=int(pre_nms_topk_train),
            post_nms_topk_train=int(post_nms_topk_train),
            pre_nms_topk_test=int(pre_nms_topk_test),
            post_nms_topk_test=int(post_nms_topk_test),
            roi_output_size=int(roi_output_size),
            roi_sampling_ratio=int(roi_sampling_ratio),
            roi_head_width=int(roi_head_width),
            roi_head_depth=int(roi_head_depth),
            num_rois=int(num_rois),
            roi_positive_fraction=float(roi_positive_fraction),
            roi_positive_iou=float(roi_positive_iou),
            box_coder_weights=[float(w) for w in box_coder_weights],
            smooth_l1_beta=float(smooth_l1_beta),
            score_threshold=float(score_threshold),
            nms_iou_threshold=float(nms_iou_threshold),
            max_detections=int(max_detections),
        )

    @property
    def size_multiple(self) -> int:
        """H and W of the network input must be multiples of this (the stride of C5; P6 is a ceil max-pool)."""
        return 32

    def build(self, input_shape):
        # Explicit, because a training-mode call never reaches the box head
        # (it runs in compute_loss): every weight must exist before fit
        # builds the optimizer and before a saved model's weights are loaded.
        input_shape = tuple(input_shape)
        channels = self._config["fpn_channels"]
        if not self.backbone.built:
            self.backbone.build(input_shape)
        self.fpn.build(self.backbone.compute_output_shape(input_shape))
        self.rpn_head.build([(None, None, None, channels)])
        size = self._config["roi_output_size"]
        self.box_head.build((None, None, size, size, channels))
        self.built = True

    def get_config(self):
        return {**super().get_config(), "roi_align_method": self.roi_align_method}

    @contextlib.contextmanager
    def builtin_ops_variant(self) -> Iterator["IPGFasterRCNN"]:
        """RoIAlign by gathers (same values) instead of `CropAndResize` + `DynamicPartition`, which LiteRT lacks."""
        previous = self.roi_align_method
        self.roi_align_method = "gather"
        try:
            yield self
        finally:
            self.roi_align_method = previous

    # ------------------------------------------------------------------ forward
    def call(self, images, training=None):
        check_images(images, self.size_multiple)
        training = bool(training)
        features = self.backbone(images, training=training)
        pyramid = self.fpn(features)
        rpn = ops.cast(self.rpn_head([pyramid[f"P{l}"] for l in range(self.min_level, self.max_level + 1)]), "float32")
        with tf.name_scope(POSTPROCESS_SCOPE):
            rpn_cls, rpn_box = rpn[..., 0], rpn[..., 1:]
            proposals, scores, num_proposals = self.generate_proposals(rpn_cls, rpn_box, images, training)
        outputs = {
            "rpn_cls": rpn_cls,
            "rpn_box": rpn_box,
            "proposals": proposals,
            "proposal_scores": scores,
            "num_proposals": num_proposals,
            "features": {f"P{l}": pyramid[f"P{l}"] for l in range(ROI_LEVELS[0], ROI_LEVELS[1] + 1)},
        }
        if not training:
            outputs["cls"], outputs["box"] = self.box_head_outputs(outputs["features"], proposals)
        return outputs

    def generate_proposals(self, rpn_cls, rpn_box, images, training: bool = False):
        """RPN outputs -> `(proposals [B, P, 4], scores [B, P], num_proposals [B])`, no gradient.

        Per level: the top `pre_nms_topk` anchors by objectness are decoded and
        clipped; NMS (IoU `rpn_nms_iou_threshold`) runs per level, and the best
        `post_nms_topk` boxes over all levels are kept, sorted by score. Rows
        past `num_proposals` are zero padding.
        """
        cfg = self._config
        pre = cfg["pre_nms_topk_train"] if training else cfg["pre_nms_topk_test"]
        post = cfg["post_nms_topk_train"] if training else cfg["post_nms_topk_test"]
        rpn_cls = tf.stop_gradient(rpn_cls)
        rpn_box = tf.stop_gradient(rpn_box)
        shape = ops.shape(images)
        height, width = shape[1], shape[2]
        boxes_all, scores_all, levels_all = [], [], []
        start = 0
        for level in range(self.min_level, self.max_level + 1):
            count = self.anchor_generator.level_count(level, height, width)
            logits = rpn_cls[:, start : start + count]
            deltas = rpn_box[:, start : start + count]
            start = start + count
            top_logits, index = tf.math.top_k(logits, k=tf.minimum(pre, count))
            top_deltas = tf.gather(deltas, index, batch_dims=1)
            boxes = self.rpn_box_coder.decode(top_deltas, self.anchor_generator.anchors_at(level, width, index))
            boxes_all.append(boxes)
            scores_all.append(tf.sigmoid(top_logits))
            levels_all.append(tf.fill(tf.shape(index), level))
        boxes = clip_boxes(tf.concat(boxes_all, 1), tf.cast(height, tf.float32), tf.cast(width, tf.float32))
        scores = tf.concat(scores_all, 1)
        keep = ((boxes[..., 2] - boxes[..., 0]) >= MIN_PROPOSAL_SIZE) & (
            (boxes[..., 3] - boxes[..., 1]) >= MIN_PROPOSAL_SIZE
        )
        # Boxes too small get a score below the NMS score threshold (0): dropped.
        scores = tf.where(keep, scores, -1.0)
        # Class-aware NMS with the level as "class" is per-level NMS; its
        # sorted, padded output is the merged top-`post` list.
        nms = batched_class_aware_nms(
            boxes, scores, tf.concat(levels_all, 1), max_detections=post,
            iou_threshold=cfg["rpn_nms_iou_threshold"], score_threshold=0.0,
        )
        return nms["boxes"], nms["scores"], nms["num_detections"]

    def box_head_outputs(self, features, rois):
        """Box head on `rois` `[B, R, 4]`: `(logits [B, R, C + 1], deltas [B, R, C, 4])` float32."""
        cfg = self._config
        with tf.name_scope(POSTPROCESS_SCOPE):  # sample positions and levels are pixel math
            pooled = multilevel_roi_align(
                {l: features[f"P{l}"] for l in range(ROI_LEVELS[0], ROI_LEVELS[1] + 1)},
                tf.stop_gradient(rois),
                output_size=cfg["roi_output_size"],
                sampling_ratio=cfg["roi_sampling_ratio"],
                min_level=ROI_LEVELS[0],
                max_level=ROI_LEVELS[1],
                method=self.roi_align_method,
            )
        logits, deltas = self.box_head(pooled)
        return ops.cast(logits, "float32"), ops.cast(deltas, "float32")

    # --------------------------------------------------------------------- loss
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        gt_boxes, gt_classes, gt_valid = self.unpack_targets(x, y)
        cfg = self._config
        beta = cfg["smooth_l1_beta"]

        # RPN: objectness on the sampled anchors, boxes on the sampled positives,
        # both divided by the number of sampled anchors (torchvision).
        anchors = self.anchors_for(x)
        matched, positive, negative = assign_rpn_targets(
            anchors, gt_boxes, gt_valid, cfg["rpn_positive_iou"], cfg["rpn_negative_iou"],
            cfg["rpn_batch_size"], cfg["rpn_positive_fraction"],
        )
        sampled = ops.cast(positive | negative, "float32")
        pos_weight = ops.cast(positive, "float32")
        num_sampled = global_positive_count(ops.sum(sampled))
        objectness = ops.binary_crossentropy(pos_weight, y_pred["rpn_cls"], from_logits=True)
        rpn_cls_loss = ops.sum(objectness * sampled) / num_sampled
        target_boxes = tf.gather(gt_boxes, ops.maximum(matched, 0), batch_dims=1)
        encoded = self.rpn_box_coder.encode(target_boxes, anchors)
        rpn_box = ops.sum(smooth_l1_loss(encoded, y_pred["rpn_box"], beta), axis=-1)
        rpn_box_loss = ops.sum(rpn_box * pos_weight) / num_sampled

        # Box head on the sampled RoIs (proposals + ground truth).
        num_proposals = y_pred["num_proposals"]
        proposal_valid = tf.range(tf.shape(y_pred["proposals"])[1])[None, :] < num_proposals[:, None]
        targets = assign_roi_targets(
            y_pred["proposals"], proposal_valid, gt_boxes, gt_classes, gt_valid, self.num_classes,
            cfg["num_rois"], cfg["roi_positive_fraction"], cfg["roi_positive_iou"],
        )
        logits, deltas = self.box_head_outputs(y_pred["features"], targets["rois"])
        valid = ops.cast(targets["valid"], "float32")
        roi_positive = ops.cast(targets["positive"], "float32")
        num_rois = global_positive_count(ops.sum(valid))
        ce = ops.sparse_categorical_crossentropy(targets["labels"], logits, from_logits=True)
        cls_loss = ops.sum(ce * valid) / num_rois
        # Class-specific regression: only the deltas of the ground-truth class are trained.
        class_index = ops.minimum(targets["labels"], self.num_classes - 1)
        chosen = tf.gather(deltas, class_index, batch_dims=2)
        box_targets = self.box_coder.encode(targets["matched_boxes"], targets["rois"])
        box = ops.sum(smooth_l1_loss(box_targets, chosen, beta), axis=-1)
        box_loss = ops.sum(box * roi_positive) / num_rois

        return self._track_and_sum([
            (rpn_cls_loss, self.rpn_cls_loss_tracker, 1.0),
            (rpn_box_loss, self.rpn_box_loss_tracker, 1.0),
            (cls_loss, self.cls_loss_tracker, 1.0),
            (box_loss, self.box_loss_tracker, 1.0),
        ])

    # ---------------------------------------------------------------- inference
    def decode_predictions(self, raw, images):
        """Raw outputs -> padded detections: softmax scores, class-specific boxes, per-class NMS."""
        cfg = self._config
        shape = ops.shape(images)
        height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
        proposals = raw["proposals"]
        batch, num = ops.shape(proposals)[0], ops.shape(proposals)[1]
        scores = ops.softmax(raw["cls"], axis=-1)[..., : self.num_classes]  # [B, P, C]; background dropped
        boxes = self.box_coder.decode(raw["box"], ops.expand_dims(proposals, 2))  # [B, P, C, 4]
        boxes = clip_boxes(boxes, height, width)
        keep = ((boxes[..., 2] - boxes[..., 0]) >= MIN_DETECTION_SIZE) & (
            (boxes[..., 3] - boxes[..., 1]) >= MIN_DETECTION_SIZE
        )
        keep = keep & (ops.arange(num)[None, :, None] < ops.cast(raw["num_proposals"], "int32")[:, None, None])
        scores = ops.where(keep, scores, 0.0)
        classes = ops.broadcast_to(ops.arange(self.num_classes, dtype="int32"), ops.shape(scores))
        return batched_class_aware_nms(
            ops.reshape(boxes, (batch, -1, 4)),
            ops.reshape(scores, (batch, -1)),
            ops.reshape(classes, (batch, -1)),
            max_detections=cfg["max_detections"],
            iou_threshold=cfg["nms_iou_threshold"],
            score_threshold=cfg["score_threshold"],
        )
