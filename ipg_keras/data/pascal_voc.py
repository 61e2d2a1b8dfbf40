"""Pascal VOC XML annotations: `parse_voc_xml`, `read_voc_files`, `voc_objects`,
`from_pascal_voc` / `load_pascal_voc`.

Accepted layouts: XML files next to their images (one folder), the VOCdevkit
layout (`Annotations/`, `JPEGImages/`, `ImageSets/Main/<split>.txt`), a single
XML file, or an explicit list of XML files. Coordinates are used as written
(VOC's 1-based pixel indices are not shifted), as xyxy absolute pixels.

The loaders and `load_ground_truth` (scoring in `ipg-predict --annotations`)
share the parser (`parse_voc_xml`, `read_voc_files`), the class rule
(`voc_class_names`, `voc_objects`: names matched as in `ipg_keras.data.labels`)
and the box cleaning (`records.sanitize_boxes`): an object without a numeric
`<bndbox>` or with xmin > xmax is dropped and reported by every consumer alike.
Two annotation files for one image are refused (`DataError`).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ipg_keras.data.labels import check_class_names, class_key
from ipg_keras.data.records import DEFAULT_MIN_VISIBLE, ParsedDataset, finish_records
from ipg_keras.data.report import DataError, LoadReport
from ipg_keras.ops.box_formats import check_box_format

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".JPG", ".JPEG", ".PNG")
FLAG_KEYS = ("difficult",)
logger = logging.getLogger("ipg_keras.data")


def parse_voc_xml(path: str | os.PathLike) -> dict:
    """Parse one VOC XML file.

    Returns {"filename": str | None, "path": str | None, "size": (w, h) | None,
    "objects": [{"name": str, "bbox": [x1, y1, x2, y2] floats or None, "difficult": bool}]}.
    Raises ET.ParseError on malformed XML, ValueError when the root is not <annotation>.
    """
    root = ET.parse(path).getroot()
    if root.tag != "annotation":
        raise ValueError(f"root element is <{root.tag}>, expected <annotation>")
    size = None
    size_el = root.find("size")
    if size_el is not None:
        try:
            size = (int(float(size_el.findtext("width"))), int(float(size_el.findtext("height"))))
        except (TypeError, ValueError):
            size = None
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bbox = None
        bb = obj.find("bndbox")
        if bb is not None:
            try:
                bbox = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (TypeError, ValueError):
                bbox = None
        difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true", "True")
        objects.append({"name": name, "bbox": bbox, "difficult": difficult})
    return {
        "filename": (root.findtext("filename") or "").strip() or None,
        "path": (root.findtext("path") or "").strip() or None,
        "size": size,
        "objects": objects,
    }


def _find_xml_files(source, split: str | None, recursive: bool) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        src = Path(source)
        if src.is_file():
            return [src]
        if not src.is_dir():
            raise FileNotFoundError(f"Pascal VOC source {src} does not exist (pass a folder, an .xml file or a list)")
        ann_dir = src / "Annotations" if (src / "Annotations").is_dir() else src
        if split is not None:
            split_file = src / "ImageSets" / "Main" / f"{split}.txt"
            if not split_file.is_file():
                raise FileNotFoundError(f"split={split!r} needs {split_file}, which does not exist")
            stems = [ln.split()[0] for ln in split_file.read_text().splitlines() if ln.strip()]
            return [ann_dir / f"{s}.xml" for s in stems]
        files = sorted(ann_dir.rglob("*.xml") if recursive else ann_dir.glob("*.xml"))
        if not files:
            raise FileNotFoundError(
                f"no .xml annotation files in {ann_dir}" + ("" if recursive else " (pass recursive=True to search subfolders)")
            )
        return files
    files = [Path(p) for p in source]
    if not files:
        raise ValueError("from_pascal_voc got an empty list of annotation files")
    return files


def _resolve_image(xml_path: Path, info: dict, image_dir: Path | None) -> Path | None:
    candidates = []
    name = info["filename"]
    dirs = [d for d in (image_dir, xml_path.parent, xml_path.parent.parent / "JPEGImages") if d is not None]
    if name:
        candidates += [d / name for d in dirs]
    # Files renamed or converted after labelling: same stem as the XML, any image extension.
    stems = {xml_path.stem} | ({Path(name).stem} if name else set())
    candidates += [d / f"{s}{ext}" for d in dirs for s in sorted(stems) for ext in IMAGE_EXTENSIONS]
    if info["path"]:
        candidates.append(Path(info["path"]))
    for c in candidates:
        if c.is_file():
            return c
    return None


def read_voc_files(xml_files: Sequence[Path], report: LoadReport) -> list[tuple[int, Path, dict]]:
    """(image_id, xml_path, `parse_voc_xml` result) of every readable file; missing,
    empty and malformed files are reported and left out. image_id = position in
    `xml_files`: stable, and unchanged when other files are skipped."""
    out = []
    for image_id, xml_path in enumerate(tqdm(xml_files, desc="reading VOC XML", disable=len(xml_files) < 200,
                                             leave=False)):
        xml_path = Path(xml_path)
        if not xml_path.is_file():
            report.add("bad_annotation", str(xml_path), "annotation file not found; skipped")
            continue
        if xml_path.stat().st_size == 0 or not xml_path.read_bytes().strip():
            report.add("empty_annotation", str(xml_path), "annotation file is empty; image skipped")
            continue
        try:
            info = parse_voc_xml(xml_path)
        except (ET.ParseError, ValueError) as e:
            report.add("bad_annotation", str(xml_path), f"not valid Pascal VOC XML ({e}); image skipped")
            continue
        out.append((image_id, xml_path, info))
    return out


def voc_class_names(parsed_xml: Sequence[tuple[int, Path, dict]], class_names: Sequence[str] | None) -> list[str]:
    """The classes: `class_names` (checked for duplicates), or the sorted names found in
    the files, spellings that differ only in case or surrounding spaces counted once
    (the first in sorted order is used, and the merge is logged)."""
    if class_names is not None:
        return check_class_names(class_names)
    spellings: dict[str, set[str]] = {}
    for _, _, info in parsed_xml:
        for o in info["objects"]:
            if class_key(o["name"]):
                spellings.setdefault(class_key(o["name"]), set()).add(o["name"])
    merged = {k: sorted(v) for k, v in spellings.items() if len(v) > 1}
    if merged:
        logger.warning("Pascal VOC: class names that differ only in case or spaces are one class: %s",
                       list(merged.values()))
    return sorted(sorted(v)[0] for v in spellings.values())


def voc_objects(info: dict, names: Sequence[str], xml_path: Path | str, report: LoadReport
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes float32 [N, 4] xyxy as written, classes int32 [N], difficult bool [N]) of
    one parsed file. Objects whose name is not a class (matched with `class_key`) or
    without a numeric `<bndbox>` are reported and left out."""
    index = {class_key(n): i for i, n in enumerate(names)}
    boxes, classes, difficult = [], [], []
    unknown, invalid = [], 0
    for obj in info["objects"]:
        if class_key(obj["name"]) not in index:
            unknown.append(obj["name"] or "<empty>")
            continue
        if obj["bbox"] is None:
            invalid += 1
            continue
        boxes.append(obj["bbox"])
        classes.append(index[class_key(obj["name"])])
        difficult.append(obj["difficult"])
    if unknown:
        report.add("unknown_class", str(xml_path),
                   f"{len(unknown)} box(es) with class name(s) {sorted(set(unknown))} not in class_names "
                   f"{list(names)}; dropped", len(unknown))
    if invalid:
        report.add("invalid_box", str(xml_path),
                   f"{invalid} object(s) without a numeric <bndbox> (xmin/ymin/xmax/ymax); dropped", invalid)
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int32),
            np.asarray(difficult, bool))


def check_one_annotation_per_image(pairs: Sequence[tuple[str, str]], source: object) -> None:
    """DataError when two annotation files describe one image file.

    pairs: (image path, annotation file). A copied XML whose `<filename>` still
    names the original image is the usual cause: its boxes would be trained or
    scored on the wrong picture."""
    by_image: dict[str, list[str]] = {}
    for image, ann in pairs:
        if image is not None:
            by_image.setdefault(str(image), []).append(str(ann))
    dups = {i: a for i, a in by_image.items() if len(a) > 1}
    if dups:
        shown = "; ".join(f"{i} is annotated by {', '.join(a)}" for i, a in list(dups.items())[:5])
        raise DataError(f"{source}: {len(dups)} image(s) with several annotation files: {shown}"
                        + (" ..." if len(dups) > 5 else "")
                        + ". Fix the <filename> of the copies (or remove them): one XML per image.")


def load_pascal_voc(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    class_names: Sequence[str] | None = None,
    *,
    image_dir: str | os.PathLike | None = None,
    split: str | None = None,
    recursive: bool = False,
    strict: bool = False,
    validate: str = "verify",
    min_visible: float = DEFAULT_MIN_VISIBLE,
) -> ParsedDataset:
    """Parse and validate a Pascal VOC dataset eagerly (see `from_pascal_voc`)."""
    xml_files = _find_xml_files(source, split, recursive)
    report = LoadReport(source if isinstance(source, (str, os.PathLike)) else f"{len(xml_files)} VOC files",
                        strict=strict)
    img_dir = Path(image_dir) if image_dir is not None else None
    parsed_xml = read_voc_files(xml_files, report)
    names = voc_class_names(parsed_xml, class_names)

    entries = []
    for image_id, xml_path, info in parsed_xml:
        boxes, classes, difficult = voc_objects(info, names, xml_path, report)
        image_path = _resolve_image(xml_path, info, img_dir)
        entries.append({
            "image_path": str(image_path) if image_path else None,
            "image_id": image_id,
            "annotation_path": str(xml_path),
            "boxes": boxes,
            "classes": classes,
            "flags": {"difficult": difficult},
            "size": info["size"],
            "missing_message": (
                f"image {info['filename'] or xml_path.stem + '.*'} for annotation {xml_path} not found "
                f"(looked next to the XML, in ../JPEGImages" + (f", in {img_dir}" if img_dir else "")
                + "); skipped"
            ),
        })
    check_one_annotation_per_image(
        [(str(Path(e["image_path"]).resolve()) if e["image_path"] else None, e["annotation_path"])
         for e in entries], report.source)
    records = finish_records(entries, report, validate, FLAG_KEYS, min_visible)
    report.log()
    return ParsedDataset(records=records, class_names=names, report=report, flag_keys=FLAG_KEYS)


def from_pascal_voc(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    class_names: Sequence[str] | None = None,
    *,
    image_dir: str | os.PathLike | None = None,
    split: str | None = None,
    recursive: bool = False,
    strict: bool = False,
    validate: str = "verify",
    min_visible: float = DEFAULT_MIN_VISIBLE,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    bounding_box_format: str = "xyxy",
) -> tf.data.Dataset:
    """Pascal VOC dataset as a tf.data.Dataset in the element format of conventions.md.

    Args:
        source: folder of XML files next to their images, a VOCdevkit year folder
            (Annotations/ + JPEGImages/), one .xml file, or a list of .xml files.
        class_names: class id i = class_names[i]; boxes of other names are dropped
            and reported. None: the sorted set of names found in the files. Names
            match ignoring case and surrounding spaces (`ipg_keras.data.labels`).
        image_dir: extra folder to look for images in (checked first).
        split: with a VOCdevkit folder, read ImageSets/Main/<split>.txt.
        recursive: search subfolders for .xml files.
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
        DataError: two XML files for one image; boxes that all look normalized.

    Returns:
        Dataset of {"images" [H,W,3] float32, "bounding_boxes": {"boxes" [N,4] in bounding_box_format,
        "classes" [N] int32, "difficult" [N] bool}, "image_id" int64}; attributes
        `.class_names`, `.report` (`LoadReport`) and `.records`.
    """
    check_box_format(bounding_box_format)
    parsed = load_pascal_voc(source, class_names, image_dir=image_dir, split=split, recursive=recursive,
                             strict=strict, validate=validate, min_visible=min_visible)
    return parsed.to_dataset(num_parallel_calls, bounding_box_format)
