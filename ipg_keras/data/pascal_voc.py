"""Pascal VOC XML annotations: `from_pascal_voc` / `load_pascal_voc`.

Accepted layouts: XML files next to their images (one folder), the VOCdevkit
layout (`Annotations/`, `JPEGImages/`, `ImageSets/Main/<split>.txt`), a single
XML file, or an explicit list of XML files. Coordinates are used as written
(VOC's 1-based pixel indices are not shifted), as xyxy absolute pixels.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ipg_keras.data.records import ParsedDataset, finish_records
from ipg_keras.ops.box_formats import check_box_format
from ipg_keras.data.report import LoadReport

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".JPG", ".JPEG", ".PNG")
FLAG_KEYS = ("difficult",)


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


def load_pascal_voc(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    class_names: Sequence[str] | None = None,
    *,
    image_dir: str | os.PathLike | None = None,
    split: str | None = None,
    recursive: bool = False,
    strict: bool = False,
    validate: str = "verify",
) -> ParsedDataset:
    """Parse and validate a Pascal VOC dataset eagerly (see `from_pascal_voc`)."""
    xml_files = _find_xml_files(source, split, recursive)
    report = LoadReport(source if isinstance(source, (str, os.PathLike)) else f"{len(xml_files)} VOC files",
                        strict=strict)
    img_dir = Path(image_dir) if image_dir is not None else None

    parsed_xml = []
    for image_id, xml_path in enumerate(tqdm(xml_files, desc="reading VOC XML", disable=len(xml_files) < 200, leave=False)):
        # image_id = position in the (sorted) file list: stable, and unchanged when
        # other files are skipped.
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
        parsed_xml.append((image_id, xml_path, info))

    if class_names is None:
        names = sorted({o["name"] for _, _, info in parsed_xml for o in info["objects"] if o["name"]})
    else:
        names = [str(n) for n in class_names]
        if len(set(names)) != len(names):
            raise ValueError(f"class_names has duplicates: {names}")
    index = {n: i for i, n in enumerate(names)}

    entries = []
    for image_id, xml_path, info in parsed_xml:
        boxes, classes, difficult = [], [], []
        unknown, invalid = [], 0
        for obj in info["objects"]:
            if obj["name"] not in index:
                unknown.append(obj["name"] or "<empty>")
                continue
            if obj["bbox"] is None:
                invalid += 1
                continue
            boxes.append(obj["bbox"])
            classes.append(index[obj["name"]])
            difficult.append(obj["difficult"])
        if unknown:
            report.add("unknown_class", str(xml_path),
                       f"{len(unknown)} box(es) with class name(s) {sorted(set(unknown))} not in class_names "
                       f"{names}; dropped", len(unknown))
        if invalid:
            report.add("invalid_box", str(xml_path),
                       f"{invalid} object(s) without a numeric <bndbox> (xmin/ymin/xmax/ymax); dropped", invalid)
        image_path = _resolve_image(xml_path, info, img_dir)
        entries.append({
            "image_path": str(image_path) if image_path else None,
            "image_id": image_id,
            "annotation_path": str(xml_path),
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "classes": np.asarray(classes, np.int32),
            "flags": {"difficult": np.asarray(difficult, bool)},
            "size": info["size"],
            "missing_message": (
                f"image {info['filename'] or xml_path.stem + '.*'} for annotation {xml_path} not found "
                f"(looked next to the XML, in ../JPEGImages" + (f", in {img_dir}" if img_dir else "")
                + "); skipped"
            ),
        })
    records = finish_records(entries, report, validate, FLAG_KEYS)
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
    num_parallel_calls: int = tf.data.AUTOTUNE,
    bounding_box_format: str = "xyxy",
) -> tf.data.Dataset:
    """Pascal VOC dataset as a tf.data.Dataset in the element format of conventions.md.

    Args:
        source: folder of XML files next to their images, a VOCdevkit year folder
            (Annotations/ + JPEGImages/), one .xml file, or a list of .xml files.
        class_names: class id i = class_names[i]; boxes of other names are dropped
            and reported. None: the sorted set of names found in the files.
        image_dir: extra folder to look for images in (checked first).
        split: with a VOCdevkit folder, read ImageSets/Main/<split>.txt.
        recursive: search subfolders for .xml files.
        strict: raise `DataError` on the first problem instead of skipping it.
        validate: image check at load time: "header", "verify" (default) or "decode".
        bounding_box_format: format of the emitted boxes (keras-cv / keras-hub
            names, `ipg_keras.ops.box_formats.BOX_FORMATS`; `rel_` formats are
            relative to each image's size). Default "xyxy" pixels. Raises
            ValueError for an unknown name, before anything is read.

    Returns:
        Dataset of {"images" [H,W,3] float32, "bounding_boxes": {"boxes" [N,4] in bounding_box_format,
        "classes" [N] int32, "difficult" [N] bool}, "image_id" int64}; attributes
        `.class_names`, `.report` (`LoadReport`) and `.records`.
    """
    check_box_format(bounding_box_format)
    parsed = load_pascal_voc(source, class_names, image_dir=image_dir, split=split, recursive=recursive,
                             strict=strict, validate=validate)
    return parsed.to_dataset(num_parallel_calls, bounding_box_format)
