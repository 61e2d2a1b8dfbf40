"""Ground truth of image files for scoring: `load_ground_truth` and `GroundTruth`.

`ipg-predict --annotations` (and any user scoring detections of image files)
reads annotations here, through the loaders' own parsers (`parse_coco_json`,
`read_voc_files` / `voc_objects`), class rule (`ipg_keras.data.labels`) and box
cleaning (`records.sanitize_boxes` against each file's real size): what is
scored is what the loaders would train on.

Files are matched to annotations by relative path: an annotation's path
(COCO `file_name`, or a VOC XML's path below the annotation folder, with its
`<filename>` or its own name) matches the file whose path ends with the most
of its folders. A file name that several annotations fit equally well (or an
annotation that several files fit equally well) is ambiguous: it is left
unscored and logged, never guessed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ipg_keras.data.coco_json import parse_coco_json
from ipg_keras.data.image_files import match_annotated_files
from ipg_keras.data.image_io import check_image
from ipg_keras.data.labels import check_class_names
from ipg_keras.data.pascal_voc import read_voc_files, voc_class_names, voc_objects
from ipg_keras.data.records import (
    DEFAULT_MIN_VISIBLE,
    ImageRecord,
    check_not_all_normalized,
    clean_entry,
)
from ipg_keras.data.report import DataError, LoadReport

logger = logging.getLogger("ipg_keras.data")


@dataclasses.dataclass
class GroundTruth:
    """Cleaned ground truth of the image files given to `load_ground_truth`.

    Attributes:
        records: file -> `ImageRecord` (boxes float32 [N, 4] xyxy pixels of the
            file, clipped/dropped by `sanitize_boxes`; classes int32 [N] in the
            model's class order; flags "iscrowd" (COCO) or "difficult" (VOC)).
        class_names: the classes, in class-id order.
        category_ids: COCO files: class c -> COCO category id (by name when the
            classes have names); None for Pascal VOC (category = class + 1).
        image_ids: COCO files: file -> COCO image id; empty for Pascal VOC.
        unmatched: files without (unambiguous) annotation, in input order.
        report: what was dropped or clipped (`LoadReport`).
        ambiguous: unmatched files whose annotation is ambiguous -> why
            (`ipg_keras.data.image_files.match_annotated_files`).
    """

    records: dict[Path, ImageRecord]
    class_names: list[str]
    category_ids: list[int] | None
    image_ids: dict[Path, int]
    unmatched: list[Path]
    report: LoadReport
    ambiguous: dict[Path, str] = dataclasses.field(default_factory=dict)

    @property
    def ids(self) -> dict[Path, int]:
        """Alias of `image_ids`."""
        return self.image_ids

    @functools.cached_property
    def gts(self) -> dict[Path, dict[str, np.ndarray]]:
        """file -> {"boxes" [N, 4], "classes" [N], "iscrowd"/"difficult" [N], "height", "width"},
        the per-image form of `ipg_keras.evaluation.coco_metrics` (without "image_id")."""
        return {f: {"boxes": r.boxes, "classes": r.classes, **r.flags, "height": r.height, "width": r.width}
                for f, r in self.records.items()}

    def category_id(self, class_id: int) -> int:
        """COCO category id of a class (class + 1 without a COCO file).

        Raises DataError listing both lists when the class has no category."""
        class_id = int(class_id)
        if self.category_ids is None:
            return class_id + 1
        if not 0 <= class_id < len(self.category_ids):
            raise DataError(
                f"{self.report.source}: the model predicted class {class_id}, but the annotation classes are "
                f"{self.class_names} (categories {self.category_ids}); pass the model's class names "
                "(--class-names / class_names) so that classes match categories by name")
        return self.category_ids[class_id]


def _check_num_classes(class_names: Sequence[str] | None, num_classes: int | None, found: Sequence[str],
                       source: Path, what: str) -> None:
    if num_classes is None:
        return
    if class_names is not None and len(class_names) != num_classes:
        raise DataError(f"{source}: the model has {num_classes} classes but {len(class_names)} class names were "
                        f"given ({list(class_names)})")
    if class_names is None and len(found) != num_classes:
        raise DataError(
            f"{source}: the model has {num_classes} classes (names unknown) but the annotations define "
            f"{len(found)} {what}: {list(found)}. Pass the model's class names (--class-names / class_names, "
            "in class-id order) so that they are matched by name")


def _clean(entries: list[dict], report: LoadReport, flag_keys: tuple[str, ...], min_visible: float
           ) -> dict[Path, ImageRecord]:
    records = {}
    for entry in entries:
        try:
            info = check_image(entry["image_path"], "header")
        except Exception:  # noqa: BLE001 - an unreadable file has no ground truth; its reader reports it
            continue
        records[entry["file"]] = clean_entry(entry, info, report, flag_keys, min_visible)
    check_not_all_normalized(report, sum(1 for e in entries if len(e["boxes"])))
    report.images_loaded = len(records)
    report.boxes_loaded = int(sum(len(r.boxes) for r in records.values()))
    return records


def load_ground_truth(
    path: str | os.PathLike,
    files: Sequence[str | os.PathLike],
    class_names: Sequence[str] | None = None,
    *,
    num_classes: int | None = None,
    strict: bool = False,
    min_visible: float = DEFAULT_MIN_VISIBLE,
) -> GroundTruth:
    """Ground truth of image `files` from a COCO JSON file or Pascal VOC annotations.

    Args:
        path: COCO detection JSON, a folder of VOC XML files (searched
            recursively; `Annotations/` of a VOCdevkit folder), or one XML file.
        files: the image files to score (matched by relative path, see module doc).
        class_names: the model's classes in class-id order; matched to COCO
            categories / VOC names by name (case and surrounding spaces ignored).
            None: COCO categories sorted by id, or the sorted VOC names.
        num_classes: the model's number of classes, when known: without
            class_names it must equal the number of annotated classes.
        strict: raise `DataError` at the first problem instead of reporting it.
        min_visible: see `sanitize_boxes`.

    Raises:
        FileNotFoundError: `path` does not exist or holds no XML file.
        DataError: duplicate COCO image or annotation ids, classes that match no
            category (listing both lists), a model class count that differs from
            the annotations', boxes that all look normalized.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotations {path} do not exist (pass a COCO JSON file or a Pascal VOC folder)")
    files = [Path(f) for f in files]
    if class_names is not None:
        class_names = check_class_names(class_names)
    report = LoadReport(path, strict=strict)
    if path.is_file() and path.suffix.lower() == ".json":
        return _coco(path, files, class_names, num_classes, report, min_visible)
    if path.is_dir() or path.suffix.lower() == ".xml":
        return _voc(path, files, class_names, num_classes, report, min_visible)
    raise ValueError(f"annotations {path}: expected a COCO .json file or a Pascal VOC folder of .xml files")


def _finish(records, class_names, category_ids, image_ids, files, problems, report) -> GroundTruth:
    for f, reason in problems.items():
        logger.warning("%s: %s: %s", report.source, f, reason)
    report.log()
    unmatched = [f for f in files if f not in records]
    return GroundTruth(records, list(class_names), category_ids, image_ids, unmatched, report, dict(problems))


def _coco(path, files, class_names, num_classes, report, min_visible) -> GroundTruth:
    parsed = parse_coco_json(path, class_names, report=report)
    label_map = parsed.label_map
    _check_num_classes(class_names, num_classes, label_map.class_names, path, "categories")
    keys = [(i, im["file_name"], True) for i, im in enumerate(parsed.images) if im["file_name"]]
    matched, problems = match_annotated_files(files, keys)
    entries = []
    for f, i in matched.items():
        im = parsed.images[i]
        entries.append({
            "file": f, "image_path": str(f), "image_id": im["id"],
            "annotation_path": f"{path} (image id {im['id']}, {im['file_name']})",
            "boxes": im["boxes"], "classes": im["classes"], "flags": {"iscrowd": im["iscrowd"]},
            "size": (im["width"], im["height"]),
        })
    records = _clean(entries, report, ("iscrowd",), min_visible)
    image_ids = {e["file"]: int(e["image_id"]) for e in entries if e["file"] in records}
    return _finish(records, label_map.class_names, list(label_map.category_ids), image_ids, files, problems, report)


def _voc(path, files, class_names, num_classes, report, min_visible) -> GroundTruth:
    if path.is_dir():
        folder = path / "Annotations" if (path / "Annotations").is_dir() else path
        xmls = sorted(folder.rglob("*.xml"))
        if not xmls:
            raise FileNotFoundError(f"annotations {path}: no .xml files in {folder} or its subfolders")
    else:
        folder, xmls = path.parent, [path]
    parsed = read_voc_files(xmls, report)
    names = voc_class_names(parsed, class_names)
    _check_num_classes(class_names, num_classes, names, path, "class names")
    keys = []
    for i, (_, xml, info) in enumerate(parsed):
        rel = xml.relative_to(folder)
        if info["filename"]:
            keys.append((i, str(rel.parent / info["filename"]), True))
        keys.append((i, str(rel), False))
    matched, problems = match_annotated_files(files, keys)
    entries = []
    for f, i in matched.items():
        image_id, xml, info = parsed[i]
        boxes, classes, difficult = voc_objects(info, names, xml, report)
        entries.append({
            "file": f, "image_path": str(f), "image_id": image_id, "annotation_path": str(xml),
            "boxes": boxes, "classes": classes, "flags": {"difficult": difficult}, "size": info["size"],
        })
    records = _clean(entries, report, ("difficult",), min_visible)
    return _finish(records, names, None, {}, files, problems, report)
