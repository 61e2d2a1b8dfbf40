"""Datasets for IPG-Net detectors: loaders, tiling, augmentation, batching.

Every loader yields elements in the format of notes/conventions.md:
{"images" [H,W,3] float32, "bounding_boxes": {"boxes" [N,4] xyxy pixels,
"classes" [N] int32, optional flags}, "image_id" int64}.

Box formats: the loaders (`from_pascal_voc`, `from_coco_json`, `from_tfds`,
`synthetic_dataset`) and `make_batches` take keras-cv / keras-hub's
`bounding_box_format=` ("xyxy" default, "rel_yxyx", "xywh", "center_xywh", ...;
`ipg_keras.ops.box_formats.BOX_FORMATS`) and pass it to a detector built with
the same format. The element-level tools (`tile_dataset`, augmentation,
`make_eval_batches`) work on xyxy pixels.
"""

from ipg_keras.data.augment import (
    AugmentConfig,
    augment_element,
    color_jitter,
    copy_paste,
    random_blur,
    random_crop,
    random_flip,
    random_rotate90,
    resize_and_pad,
    rotate90,
    scale_jitter,
)
from ipg_keras.data.image_files import IMAGE_EXTENSIONS, find_image_files, match_files, relative_names
from ipg_keras.data.image_io import ImageInfo, ImageReadError, ImageReadWarning, check_image, read_image
from ipg_keras.data.coco_json import CocoAnnotations, CocoLabelMap, from_coco_json, load_coco_json, parse_coco_json
from ipg_keras.data.ground_truth import GroundTruth, load_ground_truth
from ipg_keras.data.labels import class_key
from ipg_keras.data.pascal_voc import from_pascal_voc, load_pascal_voc, parse_voc_xml
from ipg_keras.data.pipeline import make_batches, make_eval_batches, to_original_frame
from ipg_keras.data.records import ImageRecord, ParsedDataset, records_to_dataset
from ipg_keras.data.report import DataError, LoadReport
from ipg_keras.data.tfds_loader import from_tfds
from ipg_keras.data.tiling import (
    TILE_ID_STRIDE, cut_tile, random_tile, random_tiles, tile_dataset, tile_grid, tile_starts,
)

from ipg_keras.data.synthetic import CLASS_NAMES as SYNTHETIC_CLASS_NAMES
from ipg_keras.data.synthetic import synthetic_dataset

__all__ = [
    "AugmentConfig",
    "CocoAnnotations",
    "CocoLabelMap",
    "DataError",
    "GroundTruth",
    "IMAGE_EXTENSIONS",
    "ImageInfo",
    "ImageReadError",
    "ImageReadWarning",
    "ImageRecord",
    "LoadReport",
    "ParsedDataset",
    "SYNTHETIC_CLASS_NAMES",
    "TILE_ID_STRIDE",
    "augment_element",
    "check_image",
    "class_key",
    "color_jitter",
    "copy_paste",
    "cut_tile",
    "random_blur",
    "find_image_files",
    "from_coco_json",
    "from_pascal_voc",
    "from_tfds",
    "load_coco_json",
    "load_ground_truth",
    "load_pascal_voc",
    "make_batches",
    "make_eval_batches",
    "match_files",
    "parse_coco_json",
    "parse_voc_xml",
    "random_crop",
    "random_flip",
    "random_rotate90",
    "random_tile",
    "random_tiles",
    "read_image",
    "records_to_dataset",
    "relative_names",
    "resize_and_pad",
    "rotate90",
    "scale_jitter",
    "synthetic_dataset",
    "tile_dataset",
    "tile_grid",
    "tile_starts",
    "to_original_frame",
]
