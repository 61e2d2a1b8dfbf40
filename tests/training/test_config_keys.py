"""Every config key the validator accepts is acted on, or rejected where it would do nothing.

`KEY_USES` is the audit: for each key of the experiment config, the function
of `ipg_keras.training.train` that reads it. A new key without a use (or a use
that stops reading it) fails `test_every_key_is_read_where_the_audit_says`.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import numpy as np
import pytest
from PIL import Image
from training_helpers import TINY

from ipg_keras.training import train as train_module
from ipg_keras.training.config import ConfigError, ExperimentConfig, load_config

BUILD_MODEL = "build_model"
KEY_USES = {
    **{f"model.{k}": BUILD_MODEL for k in (
        "type", "backbone", "ipg", "backbone_weights", "width_multiplier", "ipg_width", "ipg_depth",
        "ipg_out_ratio", "ipg_levels", "fusion", "fusion_init", "pyramid_method", "min_level", "max_level", "fpn_channels",
        "head_width", "head_depth", "head_norm", "batchnorm", "anchor_size", "box_loss", "box_loss_weight",
        "score_threshold", "nms_iou_threshold", "max_detections", "anchor_scales", "aspect_ratios", "positive_iou",
        "negative_iou", "focal_alpha", "focal_gamma", "cls_loss", "matcher", "atss_topk")},
    # Faster R-CNN's optional sizes: FASTER_RCNN_OPTIONAL, read by build_model.
    **{f"model.{k}": "FASTER_RCNN_OPTIONAL" for k in (
        "rpn_head_width", "roi_head_width", "num_rois", "pre_nms_topk_train", "post_nms_topk_train",
        "pre_nms_topk_test", "post_nms_topk_test")},
    "model.num_classes": "_run",
    **{f"data.{k}": "build_datasets" for k in (
        "source", "num_train_images", "num_val_images", "min_object_size", "max_object_size", "max_objects",
        "tfds_name", "tfds_data_dir", "train_split", "val_split", "train_annotations", "train_images",
        "val_annotations", "val_images", "class_names")},
    "data.image_size": "batch_train",
    **{f"data.{k}": "batch_train" for k in (
        "tile_size", "min_visible", "max_boxes", "augment", "shuffle_buffer", "cache", "sampling", "tiles_per_image")},
    **{f"data.{k}": "augment_config" for k in (
        "horizontal_flip", "vertical_flip", "rotate90", "scale_range", "brightness", "contrast", "saturation", "hue",
        "channel_gain", "blur", "blur_sigma", "copy_paste", "copy_paste_count")},
    "data.tile_overlap": "tile_overlap_pixels",  # batch_train's and _run's tiling overlap in pixels
    **{f"train.{k}": "build_schedule" for k in (
        "epochs", "learning_rate", "schedule", "warmup_steps", "warmup_factor", "decay_epochs", "decay_rate",
        "min_lr_factor")},
    **{f"train.{k}": "build_optimizer" for k in (
        "optimizer", "momentum", "weight_decay", "clipnorm", "global_clipnorm", "ema")},
    **{f"train.{k}": "_run" for k in ("steps_per_epoch", "checkpoint_every_steps", "max_minutes", "verbose",
                                       "init_from")},
    **{f"train.{k}": "run" for k in ("batch_size", "seed", "strategy", "cpu_devices", "mixed_precision")},
    "train.jit_compile": "_run",
    **{f"eval.{k}": "_run" for k in ("every_n_epochs", "at_end", "num_visualized")},
    **{f"eval.{k}": "batch_eval" for k in ("max_images", "batch_size")},
    "eval.tta": "make_sliced_evaluate_fn",
    "eval.tta_scales": "make_sliced_evaluate_fn",
    "export.saved_model": "_run",
    "export.directory": "export_tflite_files",
    "export.tflite": "export_tflite_files",
}


def _all_keys() -> list[str]:
    config = ExperimentConfig()
    return [f"{section.name}.{f.name}" for section in dataclasses.fields(config)
            if dataclasses.is_dataclass(getattr(config, section.name))
            for f in dataclasses.fields(getattr(config, section.name))]


def test_the_audit_covers_every_key():
    assert sorted(KEY_USES) == sorted(_all_keys())


@pytest.mark.parametrize("key", _all_keys())
def test_every_key_is_read_where_the_audit_says(key):
    name = key.split(".")[1]
    where = getattr(train_module, KEY_USES[key])
    source = repr(where) if isinstance(where, tuple) else inspect.getsource(where)
    assert re.search(rf"\.{name}\b|['\"]{name}['\"]", source), f"{key} is not read in {KEY_USES[key]}"


@pytest.mark.parametrize(
    "config,overrides,message",
    [
        ("synthetic_faster_rcnn_cpu", ["model.head_width=32"], "'model.head_width': 32 has no effect here; it "
                                                                "applies only with model.type=retinanet"),
        ("synthetic_faster_rcnn_cpu", ["model.box_loss=giou"], "only with model.type=retinanet"),
        ("synthetic_retinanet_cpu", ["model.num_rois=64"], "'model.num_rois'.*model.type=faster_rcnn"),
        ("synthetic_faster_rcnn_cpu", ["model.max_level=5"], "FPN levels are fixed"),
        ("synthetic_retinanet_cpu", ["data.tfds_name=coco/2017"], "'data.tfds_name'.*data.source=tfds"),
        ("synthetic_retinanet_cpu", ["data.source=tfds", "data.tfds_name=voc/2007"],
         "'data.num_train_images': 2000 .*data.source=synthetic"),
        ("synthetic_retinanet_cpu", ["data.train_annotations=a.json"], "data.source=coco_json|pascal_voc"),
        ("synthetic_retinanet_cpu", ["data.class_names=[a, b]"], "'data.class_names'.*data.source=pascal_voc"),
        ("synthetic_retinanet_cpu", ["data.tile_overlap=0.5"], "'data.tile_overlap'.*data.tile_size set"),
        ("synthetic_retinanet_cpu", ["train.momentum=0.95"], "'train.momentum'.*train.optimizer=sgd"),
        ("synthetic_faster_rcnn_cpu", ["model.focal_gamma=1.5"], "'model.focal_gamma'.*model.type=retinanet"),
        ("synthetic_retinanet_cpu", ["data.augment=false", "data.rotate90=0.5"], "'data.rotate90'.*data.augment"),
        ("synthetic_retinanet_cpu", ["data.blur_sigma=[0.5, 1.0]"], "'data.blur_sigma'.*data.blur > 0"),
        ("synthetic_retinanet_cpu", ["data.blur=0.5", "data.blur_sigma=[2.0, 1.0]"], "data.blur_sigma.*low <= high"),
        ("synthetic_retinanet_cpu", ["data.copy_paste_count=4"], "'data.copy_paste_count'.*data.copy_paste > 0"),
        ("synthetic_retinanet_cpu", ["data.copy_paste=0.5", "data.copy_paste_count=0"], "data.copy_paste_count"),
        ("synthetic_retinanet_cpu", ["data.copy_paste=1.5"], "data.copy_paste.*probability"),
        ("synthetic_retinanet_cpu", ["data.sampling=random"], "'data.sampling'.*data.tile_size"),
        ("synthetic_retinanet_cpu", ["train.weight_decay=0.01"], "train.optimizer=sgd|adamw"),
        ("synthetic_retinanet_cpu", ["train.decay_rate=0.5"], "'train.decay_rate'.*train.schedule=step"),
        ("tiny_distributed_cpu", ["train.min_lr_factor=0.1"], "'train.min_lr_factor'.*train.schedule=cosine"),
        ("tiny_distributed_cpu", ["export.tflite=[int8, int8]"], "lists a precision twice"),
        ("tiny_distributed_cpu", ["export.tflite=[int4]"], "'int4' is not float32"),
        ("synthetic_retinanet_cpu", ["model.fusion=gated", "model.fusion_init=one"],
         "'model.fusion_init'.*fusion=concat|sum"),
        ("synthetic_retinanet_cpu", ["model.ipg=false", "model.fusion_init=one"], "'model.fusion_init'.*ipg=true"),
        ("synthetic_retinanet_cpu", ["model.cls_loss=quality_focal", "model.focal_alpha=0.5"],
         "'model.focal_alpha'.*cls_loss=focal"),
        ("synthetic_retinanet_cpu", ["model.cls_loss=varifocal"], "model.cls_loss"),
        ("synthetic_retinanet_cpu", ["model.matcher=hungarian"], "model.matcher"),
        ("synthetic_retinanet_cpu", ["model.matcher=atss", "model.positive_iou=0.6"],
         "'model.positive_iou'.*matcher=iou"),
        ("synthetic_retinanet_cpu", ["model.atss_topk=5"], "'model.atss_topk'.*matcher=atss"),
        ("synthetic_retinanet_cpu", ["model.matcher=atss", "model.atss_topk=0"], "model.atss_topk.*>= 1"),
        ("synthetic_faster_rcnn_cpu", ["model.matcher=atss"], "'model.matcher'.*model.type=retinanet"),
    ],
)
def test_keys_that_would_do_nothing_are_rejected(config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config, overrides)


def test_neutral_and_matching_values_are_accepted():
    assert load_config("synthetic_retinanet_cpu", ["train.weight_decay=0.0"]).train.weight_decay == 0.0  # adam
    qfl = load_config("synthetic_retinanet_cpu", ["model.cls_loss=quality_focal", "model.focal_gamma=1.5"])
    assert train_module.build_model(qfl, 2).get_config()["cls_loss"] == "quality_focal"
    atss = train_module.build_model(load_config("synthetic_retinanet_cpu", ["model.matcher=atss",
                                                                          "model.atss_topk=5"]), 2).get_config()
    assert (atss["matcher"], atss["atss_topk"]) == ("atss", 5)
    blur = train_module.augment_config(load_config("synthetic_retinanet_cpu", ["data.blur=0.5",
                                                                               "data.blur_sigma=[0.3, 1.2]"]).data)
    assert (blur.blur, blur.blur_sigma) == (0.5, (0.3, 1.2))
    paste = train_module.augment_config(load_config("synthetic_retinanet_cpu", ["data.copy_paste=0.5",
                                                                                "data.copy_paste_count=4"]).data)
    assert (paste.copy_paste, paste.copy_paste_count) == (0.5, 4)
    cfg = load_config("synthetic_faster_rcnn_cpu", ["model.min_level=2", "model.max_level=6"])
    assert (cfg.model.min_level, cfg.model.max_level) == (2, 6)
    # Faster R-CNN needs multiples of 32 only, not 2**max_level.
    assert load_config("synthetic_faster_rcnn_cpu", ["data.image_size=288"]).data.image_size == 288
    assert load_config("tiny_distributed_cpu", ["export.tflite=true"]).export.tflite == ["float32"]
    assert load_config("tiny_distributed_cpu", ["export.tflite=false"]).export.tflite == []
    assert load_config("tiny_distributed_cpu", ["export.tflite=[float16, int8]"]).export.tflite == ["float16", "int8"]


def test_fusion_init_reaches_the_fusion_layers():
    model = train_module.build_model(load_config("tiny_distributed_cpu", ["model.fusion_init=one"]), 3)
    fusions = [l for l in model.backbone.layers if l.name.startswith("ipg_fusion_")]
    assert fusions and all(l.init == "one" for l in fusions)
    assert all(np.all(np.asarray(l.bn.gamma) == 1.0) for l in fusions)


def test_anchor_size_reaches_both_detectors():
    retina = train_module.build_model(load_config("tiny_distributed_cpu"), 3)
    assert retina.get_config()["anchor_size"] == 4.0  # unset: RetinaNet's default
    frcnn_cfg = load_config("synthetic_faster_rcnn_cpu", ["model.anchor_size=6.0"])
    assert train_module.build_model(frcnn_cfg, 3).get_config()["anchor_size"] == 6.0  # was ignored before
    frcnn_cfg.model.anchor_size = None
    assert train_module.build_model(frcnn_cfg, 3).get_config()["anchor_size"] == 8.0  # Faster R-CNN's default


def test_pascal_voc_images_folder_is_used(tmp_path):
    ann, images = tmp_path / "ann", tmp_path / "imgs"
    ann.mkdir()
    images.mkdir()
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(images / "a.png")
    (ann / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>64</width><height>48</height><depth>3</depth></size>"
        "<object><name>tree</name><bndbox><xmin>4</xmin><ymin>5</ymin><xmax>20</xmax><ymax>30</ymax></bndbox>"
        "</object></annotation>"
    )
    cfg = load_config("trees_retinanet", [f"data.train_annotations={ann}", f"data.val_annotations={ann}",
                                          f"data.train_images={images}", "data.class_names=[tree]"])
    train, val, names = train_module.build_datasets(cfg)
    assert names == ["tree"] and len(train.records) == 1 and len(val.records) == 1
    element = next(iter(train))
    assert element["images"].shape == (48, 64, 3)
    np.testing.assert_array_equal(element["bounding_boxes"]["boxes"].numpy(), [[4, 5, 20, 30]])


def test_ipg_train_writes_the_tflite_files_of_export_tflite(tmp_path):
    from ipg_keras.export.runtime import KerasDetector, TFLiteDetector

    export_dir = tmp_path / "exports"
    cfg = load_config("tiny_distributed_cpu", TINY + [
        "export.tflite=true", f"export.directory={export_dir}", "train.epochs=1", "train.steps_per_epoch=1",
        "eval.every_n_epochs=0", "eval.at_end=false", "train.checkpoint_every_steps=null",
    ])
    result = train_module.run(cfg, tmp_path / "run")
    path = export_dir / "tiny_distributed_cpu_float32.tflite"
    assert result["tflite"] == {"float32": str(path)} and path.is_file()
    detector = TFLiteDetector(path)
    assert detector.input_size == (128, 128)
    images = np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 3)).round().astype("float32")
    got = detector(images)
    want = KerasDetector(tmp_path / "run" / "model.keras", image_size=128)(images)
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    np.testing.assert_allclose(np.sort(got["scores"], axis=1), np.sort(want["scores"], axis=1), atol=1e-4)
