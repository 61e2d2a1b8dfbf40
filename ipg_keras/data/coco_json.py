"""COCO detection JSON: `from_coco_json` / `load_coco_json` and `CocoLabelMap`.

COCO category ids are sparse (1..90 for the 80 classes of COCO 2017); models
need contiguous ids 0..K-1. `CocoLabelMap` maps both ways so that predictions
can be written back as COCO results for pycocotools. Crowd annotations
(`iscrowd=1`) are kept with an `iscrowd` flag, as COCO does: COCOeval treats
them as ignore regions, and `make_batches` leaves them out of training targets.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from ipg_keras.data.records import ParsedDataset, finish_records
from ipg_keras.ops.box_formats import check_box_format
from ipg_keras.data.report import DataError, LoadReport

FLAG_KEYS = ("iscrowd",)


@dataclasses.dataclass(frozen=True)
class CocoLabelMap:
    """Contiguous class id <-> COCO category id.

    category_ids[c] is the COCO id of contiguous class c (sorted by COCO id);
    class_names[c] its name.
    """

    category_ids: tuple[int, ...]
    class_names: tuple[str, ...]

    @classmethod
    def from_categories(cls, categories: Sequence[dict]) -> "CocoLabelMap":
        cats = sorted(categories, key=lambda c: int(c["id"]))
        ids = [int(c["id"]) for c in cats]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate COCO category ids in {ids}")
        return cls(tuple(ids), tuple(str(c.get("name", c["id"])) for c in cats))

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def category_id_to_class(self) -> dict[int, int]:
        return {cid: i for i, cid in enumerate(self.category_ids)}

    def to_class(self, category_id: int) -> int:
        """Contiguous class of a COCO category id (KeyError if unknown)."""
        return self.category_id_to_class[int(category_id)]

    def to_category_id(self, class_id: int) -> int:
        """COCO category id of a contiguous class id."""
        return self.category_ids[int(class_id)]

    def classes_to_category_ids(self, classes) -> np.ndarray:
        """Vectorised `to_category_id` for an int array of any shape (-1 padding stays -1)."""
        classes = np.asarray(classes, np.int64)
        table = np.asarray(self.category_ids + (-1,), np.int64)  # index -1 -> -1
        return table[np.where(classes < 0, -1, classes)]


def load_coco_json(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    strict: bool = False,
    validate: str = "verify",
) -> ParsedDataset:
    """Parse and validate a COCO detection JSON eagerly (see `from_coco_json`)."""
    ann_path = Path(annotation_file)
    if not ann_path.is_file():
        raise FileNotFoundError(f"COCO annotation file {ann_path} does not exist")
    text = ann_path.read_text(encoding="utf-8")
    if not text.strip():
        # One file holds the whole dataset: nothing can be loaded, so this always raises.
        raise DataError(f"{ann_path}: COCO annotation file is empty; nothing to load")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{ann_path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise DataError(f"{ann_path}: COCO detection JSON needs top-level 'images' and 'categories' lists "
                        f"(and 'annotations'); found keys {sorted(data) if isinstance(data, dict) else type(data)}")
    report = LoadReport(ann_path, strict=strict)
    label_map = CocoLabelMap.from_categories(data["categories"])
    cat_to_class = label_map.category_id_to_class
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"COCO image_dir {image_dir} does not exist")

    images = {}
    for im in data["images"]:
        images[int(im["id"])] = im
    per_image: dict[int, list[dict]] = {i: [] for i in images}
    orphans: dict[int, int] = {}
    unknown_cats: dict[int, int] = {}
    invalid = 0
    for ann in data.get("annotations", []):
        iid = int(ann.get("image_id", -1))
        if iid not in per_image:
            orphans[iid] = orphans.get(iid, 0) + 1
            continue
        cid = ann.get("category_id")
        if cid is None or int(cid) not in cat_to_class:
            unknown_cats[cid] = unknown_cats.get(cid, 0) + 1
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            invalid += 1
            continue
        per_image[iid].append(ann)
    for iid, n in orphans.items():
        report.add("annotation_without_image", str(ann_path),
                   f"{n} annotation(s) refer to image_id {iid}, which is not in 'images'; dropped", n)
    for cid, n in unknown_cats.items():
        report.add("unknown_class", str(ann_path),
                   f"{n} annotation(s) with category_id {cid} not in 'categories' {list(label_map.category_ids)[:10]}"
                   f"{'...' if label_map.num_classes > 10 else ''}; dropped", n)
    if invalid:
        report.add("invalid_box", str(ann_path), f"{invalid} annotation(s) without a 4-number 'bbox'; dropped", invalid)

    entries = []
    for iid, im in images.items():
        anns = per_image[iid]
        xywh = np.asarray([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        file_name = im.get("file_name")
        path = image_dir / file_name if file_name else None
        entries.append({
            "image_path": str(path) if path else None,
            "image_id": iid,
            "annotation_path": f"{ann_path} (image id {iid}, {file_name})",
            "boxes": boxes,
            "classes": np.asarray([cat_to_class[int(a["category_id"])] for a in anns], np.int32),
            "flags": {"iscrowd": np.asarray([bool(a.get("iscrowd", 0)) for a in anns], bool)},
            "size": (int(im.get("width", 0) or 0), int(im.get("height", 0) or 0)),
            "missing_reason": "image_id_without_file",
            "missing_message": f"COCO image id {iid} ({ann_path.name}) has no file "
                               f"{path if path else '(no file_name)'}; image and its {len(anns)} box(es) skipped",
        })
    records = finish_records(entries, report, validate, FLAG_KEYS)
    report.log()
    return ParsedDataset(records=records, class_names=list(label_map.class_names), report=report,
                         flag_keys=FLAG_KEYS, label_map=label_map)


def from_coco_json(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    strict: bool = False,
    validate: str = "verify",
    num_parallel_calls: int = tf.data.AUTOTUNE,
    bounding_box_format: str = "xyxy",
) -> tf.data.Dataset:
    """COCO detection JSON as a tf.data.Dataset in the element format of conventions.md.

    Args:
        annotation_file: COCO JSON with "images", "annotations", "categories".
        image_dir: folder the images' `file_name`s are relative to.
        strict: raise `DataError` on the first problem instead of skipping it.
        validate: image check at load time: "header", "verify" (default) or "decode".
        bounding_box_format: format of the emitted boxes (keras-cv / keras-hub
            names, `ipg_keras.ops.box_formats.BOX_FORMATS`; `rel_` formats are
            relative to each image's size). Default "xyxy" pixels. Raises
            ValueError for an unknown name, before anything is read.

    Returns:
        Dataset of {"images" [H,W,3] float32, "bounding_boxes": {"boxes" [N,4] in
        bounding_box_format, "classes" [N] int32 contiguous, "iscrowd" [N] bool}, "image_id" int64 = COCO
        image id}; attributes `.class_names`, `.label_map` (`CocoLabelMap`),
        `.report` (`LoadReport`), `.records`.
    """
    check_box_format(bounding_box_format)
    parsed = load_coco_json(annotation_file, image_dir, strict=strict, validate=validate)
    return parsed.to_dataset(num_parallel_calls, bounding_box_format)
