"""COCO detection JSON: `parse_coco_json`, `load_coco_json` / `from_coco_json` and `CocoLabelMap`.

`parse_coco_json` is the one COCO parser: the loaders and `load_ground_truth`
(scoring in `ipg-predict --annotations`) use it, and the boxes of both go
through the same cleaning rule (`records.sanitize_boxes`). What it refuses
(`DataError`) because the result would be wrong: duplicate image ids (a merged
export without renumbering puts the boxes of one image onto another), duplicate
annotation ids, one file name under two image ids, class names that match no
category. What it reports and drops: annotations of unknown images or
categories, annotations without a usable box.

COCO category ids are sparse (1..90 for the 80 classes of COCO 2017); models
need contiguous ids 0..K-1. `CocoLabelMap` maps both ways so that predictions
can be written back as COCO results for pycocotools. Without `class_names`,
classes are the categories sorted by id; with them, each class is matched to a
category by name (`ipg_keras.data.labels`). A category that only names the
supercategory of the others and has no annotation (some exporters add one with
id 0) is not a class. Crowd annotations (`iscrowd=1`) are kept with an `iscrowd`
flag, as COCO does: COCOeval treats them as ignore regions, and `make_batches`
leaves them out of training targets. An annotation without `bbox` gets the box
of its `segmentation` (polygons or RLE), as COCO defines it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from ipg_keras.data.labels import check_class_names, match_names
from ipg_keras.data.records import DEFAULT_MIN_VISIBLE, ParsedDataset, finish_records
from ipg_keras.ops.box_formats import check_box_format
from ipg_keras.data.report import DataError, LoadReport

FLAG_KEYS = ("iscrowd",)
logger = logging.getLogger("ipg_keras.data")


@dataclasses.dataclass(frozen=True)
class CocoLabelMap:
    """Contiguous class id <-> COCO category id.

    category_ids[c] is the COCO id of contiguous class c; class_names[c] its name.
    """

    category_ids: tuple[int, ...]
    class_names: tuple[str, ...]

    @classmethod
    def from_categories(cls, categories: Sequence[dict], class_names: Sequence[str] | None = None,
                        *, source: str = "COCO categories") -> "CocoLabelMap":
        """Label map of COCO `categories` ([{"id", "name"}, ...]).

        class_names None: classes are the categories sorted by id. Given: class c is
        the category whose name matches class_names[c] (case and surrounding spaces
        ignored). Raises ValueError on duplicate category ids, `DataError` (listing
        both lists) when a class name matches no category.
        """
        cats = sorted(categories, key=lambda c: int(c["id"]))
        ids = [int(c["id"]) for c in cats]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate COCO category ids in {ids}")
        names = [str(c.get("name", c["id"])) for c in cats]
        if class_names is None:
            return cls(tuple(ids), tuple(names))
        wanted = check_class_names(class_names)
        positions = match_names(wanted, names, source=source, what="categories")
        return cls(tuple(ids[p] for p in positions), tuple(wanted))

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


@dataclasses.dataclass
class CocoAnnotations:
    """A parsed COCO detection file (`parse_coco_json`).

    images: one dict per image, in file order: {"id", "file_name" (str or None),
    "width", "height" (annotated, 0 if absent), "boxes" float32 [N, 4] xyxy pixels
    as written (not yet checked against the image), "classes" int32 [N]
    contiguous, "iscrowd" bool [N]}.
    """

    path: Path
    label_map: CocoLabelMap
    images: list[dict]
    report: LoadReport


def _read_json(ann_path: Path) -> dict:
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
        used = sorted({a.get("category_id") for a in data.get("annotations", []) if isinstance(a, dict)},
                      key=str) if isinstance(data, dict) else []
        raise DataError(
            f"{ann_path}: COCO detection JSON needs top-level 'images' and 'categories' lists (and "
            f"'annotations'); found keys {sorted(data) if isinstance(data, dict) else type(data).__name__}"
            + (f". The annotations use category ids {used[:20]}: add \"categories\": "
               "[{\"id\": ..., \"name\": ...}, ...] naming each" if used and "categories" not in data else "")
        )
    for key in ("images", "categories", "annotations"):
        if key in data and not isinstance(data[key], list):
            raise DataError(f"{ann_path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


def _int_id(item, what: str, i: int, ann_path: Path) -> int:
    try:
        return int(item["id"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{ann_path}: {what} #{i} has no integer 'id' ({str(item)[:120]})") from None


def _check_unique_images(images: list[dict], ann_path: Path) -> None:
    """DataError on duplicate image ids (naming the files) or one file under two ids."""
    by_id: dict[int, list[str]] = {}
    for im in images:
        by_id.setdefault(int(im["id"]), []).append(str(im.get("file_name")))
    dups = {i: f for i, f in by_id.items() if len(f) > 1}
    if dups:
        shown = "; ".join(f"image id {i} is used by {', '.join(f)}" for i, f in list(dups.items())[:5])
        raise DataError(
            f"{ann_path}: {len(dups)} duplicate image id(s): {shown}"
            + (" ..." if len(dups) > 5 else "")
            + ". The boxes of these images cannot be told apart (typical of COCO files merged without "
            "renumbering): give every image its own id, and renumber the 'image_id' of its annotations."
        )
    by_name: dict[str, list[int]] = {}
    for im in images:
        if im.get("file_name"):
            by_name.setdefault(str(im["file_name"]), []).append(int(im["id"]))
    dups_name = {n: i for n, i in by_name.items() if len(i) > 1}
    if dups_name:
        shown = "; ".join(f"{n} has image ids {i}" for n, i in list(dups_name.items())[:5])
        raise DataError(f"{ann_path}: {len(dups_name)} file name(s) listed under several image ids: {shown}; "
                        "list each image once and give its annotations that image's id.")


def _check_unique_annotations(annotations: list, ann_path: Path) -> None:
    by_id: dict[int, list] = {}
    for a in annotations:
        if isinstance(a, dict) and a.get("id") is not None:
            try:
                by_id.setdefault(int(a["id"]), []).append(a.get("image_id"))
            except (TypeError, ValueError):
                continue
    dups = {i: imgs for i, imgs in by_id.items() if len(imgs) > 1}
    if dups:
        shown = "; ".join(f"annotation id {i} appears {len(v)} times (image ids {v})"
                          for i, v in list(dups.items())[:5])
        raise DataError(f"{ann_path}: {len(dups)} duplicate annotation id(s): {shown}"
                        + (" ..." if len(dups) > 5 else "")
                        + ". Give every annotation its own id (typical of COCO files merged without renumbering).")


def _placeholder_categories(categories: list[dict], used: set[int]) -> list[dict]:
    """Categories that only name the supercategory of other categories and have no
    annotation (e.g. an id-0 "vehicles" category above "car" and "bus")."""
    supers = {}
    for c in categories:
        sup = c.get("supercategory")
        if sup is not None:
            supers.setdefault(str(sup).strip().casefold(), set()).add(int(c["id"]))
    out = []
    for c in categories:
        others = supers.get(str(c.get("name", "")).strip().casefold(), set()) - {int(c["id"])}
        if others and int(c["id"]) not in used:
            out.append(c)
    return out


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().casefold() in ("1", "true", "yes")
    return bool(value)


def _segmentation_bbox(segmentation, height: int, width: int) -> list[float] | None:
    """[x, y, w, h] of a COCO segmentation (polygons or RLE), as COCO computes `bbox`."""
    try:
        if isinstance(segmentation, list) and segmentation:
            polys = segmentation if isinstance(segmentation[0], (list, tuple)) else [segmentation]
            xy = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in polys if len(p) >= 2])
            if not len(xy):
                return None
            lo, hi = xy.min(axis=0), xy.max(axis=0)
            return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]
        if isinstance(segmentation, dict) and "counts" in segmentation:
            from pycocotools import mask as mask_utils

            h, w = segmentation.get("size", (height, width))
            rle = segmentation
            if isinstance(rle["counts"], list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(rle, int(h), int(w))
            return [float(v) for v in mask_utils.toBbox(rle)]
    except (TypeError, ValueError, KeyError, IndexError):
        return None
    return None


def _bbox(ann: dict, image: dict) -> tuple[list[float] | None, bool]:
    """(xywh floats or None, derived from the segmentation?)."""
    bbox = ann.get("bbox")
    if isinstance(bbox, (list, tuple)) and len(bbox) == 4:
        try:
            return [float(v) for v in bbox], False
        except (TypeError, ValueError):
            return None, False
    if ann.get("segmentation") is not None:
        box = _segmentation_bbox(ann["segmentation"], int(image.get("height") or 0), int(image.get("width") or 0))
        return box, box is not None
    return None, False


def parse_coco_json(
    annotation_file: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    *,
    strict: bool = False,
    report: LoadReport | None = None,
) -> CocoAnnotations:
    """Parse a COCO detection JSON: the one COCO parser of the package.

    Args:
        annotation_file: COCO JSON with "images", "annotations", "categories".
        class_names: the model's classes; each is matched to a category by name.
            None: classes are the categories sorted by id.
        strict / report: problems go to `report` (a new `LoadReport` by default);
            strict raises `DataError` at the first one.

    Returns:
        `CocoAnnotations` (boxes xyxy pixels as written; `sanitize_boxes` checks
        them against each image's real size later).

    Raises:
        FileNotFoundError; DataError for an empty or invalid file, duplicate image
        ids (naming the files), duplicate annotation ids, a file name under two
        image ids, or class names that match no category (listing both lists).
    """
    ann_path = Path(annotation_file)
    data = _read_json(ann_path)
    report = report if report is not None else LoadReport(ann_path, strict=strict)
    annotations = data.get("annotations", []) or []
    categories = data["categories"]
    for i, c in enumerate(categories):
        _int_id(c, "category", i, ann_path)
    images = []
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict):
            raise DataError(f"{ann_path}: image #{i} is not an object with 'id' and 'file_name' ({str(im)[:120]})")
        images.append({**im, "id": _int_id(im, "image", i, ann_path)})
    _check_unique_images(images, ann_path)
    _check_unique_annotations(annotations, ann_path)

    used = set()
    for a in annotations:
        try:
            used.add(int(a.get("category_id")))
        except (TypeError, ValueError, AttributeError):
            pass
    if class_names is None:
        placeholders = _placeholder_categories(categories, used)
        if placeholders:
            logger.info("%s: categories %s only name the supercategory of others and have no annotation; "
                        "they are not classes", ann_path, [(int(c["id"]), c.get("name")) for c in placeholders])
            categories = [c for c in categories if c not in placeholders]
    label_map = CocoLabelMap.from_categories(categories, class_names, source=str(ann_path))
    cat_to_class = label_map.category_id_to_class
    cat_names = {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]}

    per_image: dict[int, list[tuple[list[float], int, bool]]] = {int(im["id"]): [] for im in images}
    image_by_id = {int(im["id"]): im for im in images}
    orphans: dict[object, int] = {}
    unknown_cats: dict[object, int] = {}
    invalid, from_segmentation = 0, 0
    for ann in annotations:
        if not isinstance(ann, dict):
            invalid += 1
            continue
        try:
            iid = int(ann.get("image_id", -1))
        except (TypeError, ValueError):
            iid = -1
        if iid not in per_image:
            orphans[ann.get("image_id")] = orphans.get(ann.get("image_id"), 0) + 1
            continue
        cid = ann.get("category_id")
        try:
            cls = cat_to_class[int(cid)]
        except (KeyError, TypeError, ValueError):
            unknown_cats[cid] = unknown_cats.get(cid, 0) + 1
            continue
        box, derived = _bbox(ann, image_by_id[iid])
        if box is None:
            invalid += 1
            continue
        from_segmentation += derived
        per_image[iid].append((box, cls, _flag(ann.get("iscrowd", 0))))
    for iid, n in orphans.items():
        report.add("annotation_without_image", str(ann_path),
                   f"{n} annotation(s) refer to image_id {iid}, which is not in 'images'; dropped", n)
    for cid, n in unknown_cats.items():
        name = cat_names.get(cid) if isinstance(cid, int) else None
        known = (f"not among the classes {list(label_map.class_names)}" if class_names is not None else
                 f"not in 'categories' {list(label_map.category_ids)[:10]}"
                 f"{'...' if label_map.num_classes > 10 else ''}")
        report.add("unknown_class", str(ann_path),
                   f"{n} annotation(s) with category_id {cid}" + (f" ({name!r})" if name else "")
                   + f" {known}; dropped", n)
    if invalid:
        report.add("invalid_box", str(ann_path),
                   f"{invalid} annotation(s) without a 4-number 'bbox' (nor a 'segmentation'); dropped", invalid)
    if from_segmentation:
        logger.info("%s: %d annotation(s) without 'bbox' got the box of their 'segmentation'",
                    ann_path, from_segmentation)

    parsed_images = []
    for im in images:
        iid = int(im["id"])
        items = per_image[iid]
        xywh = np.asarray([b for b, _, _ in items], np.float32).reshape(-1, 4)
        parsed_images.append({
            "id": iid,
            "file_name": str(im["file_name"]) if im.get("file_name") else None,
            "width": _size(im.get("width")),
            "height": _size(im.get("height")),
            "boxes": np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
            "classes": np.asarray([c for _, c, _ in items], np.int32),
            "iscrowd": np.asarray([f for _, _, f in items], bool),
        })
    return CocoAnnotations(path=ann_path, label_map=label_map, images=parsed_images, report=report)


def _size(value) -> int:
    try:
        return int(float(value or 0))
    except (TypeError, ValueError):
        return 0


def load_coco_json(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    strict: bool = False,
    validate: str = "verify",
    min_visible: float = DEFAULT_MIN_VISIBLE,
) -> ParsedDataset:
    """Parse and validate a COCO detection JSON eagerly (see `from_coco_json`)."""
    parsed = parse_coco_json(annotation_file, class_names, strict=strict)
    ann_path, report, label_map = parsed.path, parsed.report, parsed.label_map
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"COCO image_dir {image_dir} does not exist")
    entries = []
    for im in parsed.images:
        iid, file_name = im["id"], im["file_name"]
        path = image_dir / file_name if file_name else None
        entries.append({
            "image_path": str(path) if path else None,
            "image_id": iid,
            "annotation_path": f"{ann_path} (image id {iid}, {file_name})",
            "boxes": im["boxes"],
            "classes": im["classes"],
            "flags": {"iscrowd": im["iscrowd"]},
            "size": (im["width"], im["height"]),
            "missing_reason": "image_id_without_file",
            "missing_message": f"COCO image id {iid} ({ann_path.name}) has no file "
                               f"{path if path else '(no file_name)'}; image and its "
                               f"{len(im['boxes'])} box(es) skipped",
        })
    records = finish_records(entries, report, validate, FLAG_KEYS, min_visible)
    report.log()
    return ParsedDataset(records=records, class_names=list(label_map.class_names), report=report,
                         flag_keys=FLAG_KEYS, label_map=label_map)


def from_coco_json(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    strict: bool = False,
    validate: str = "verify",
    min_visible: float = DEFAULT_MIN_VISIBLE,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    bounding_box_format: str = "xyxy",
) -> tf.data.Dataset:
    """COCO detection JSON as a tf.data.Dataset in the element format of conventions.md.

    Args:
        annotation_file: COCO JSON with "images", "annotations", "categories".
        image_dir: folder the images' `file_name`s are relative to.
        class_names: class c = the category named class_names[c] (case and
            surrounding spaces ignored); None: the categories sorted by id.
        strict: raise `DataError` on the first problem instead of skipping it.
        validate: image check at load time (`ipg_keras.data.image_io.check_image`):
            "header", "verify" (default: also proves every file complete, so
            truncated files are reported and skipped) or "decode" (full decode).
        min_visible: a box partly outside its image is clipped and kept when at
            least this share of its area is inside, else dropped (`sanitize_boxes`).
        bounding_box_format: format of the emitted boxes (keras-cv / keras-hub
            names, `ipg_keras.ops.box_formats.BOX_FORMATS`; `rel_` formats are
            relative to each image's size). Default "xyxy" pixels. Raises
            ValueError for an unknown name, before anything is read.

    Raises:
        DataError: duplicate image or annotation ids, class names matching no
            category, boxes that all look normalized (see `parse_coco_json`).

    Returns:
        Dataset of {"images" [H,W,3] float32, "bounding_boxes": {"boxes" [N,4] in
        bounding_box_format, "classes" [N] int32 contiguous, "iscrowd" [N] bool}, "image_id" int64 = COCO
        image id}; attributes `.class_names`, `.label_map` (`CocoLabelMap`),
        `.report` (`LoadReport`), `.records`.
    """
    check_box_format(bounding_box_format)
    parsed = load_coco_json(annotation_file, image_dir, class_names=class_names, strict=strict,
                            validate=validate, min_visible=min_visible)
    return parsed.to_dataset(num_parallel_calls, bounding_box_format)
