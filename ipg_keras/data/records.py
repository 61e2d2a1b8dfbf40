"""Eagerly parsed annotations (`ImageRecord`, `ParsedDataset`) and the tf.data
pipeline that decodes their images in parallel.

File loaders (Pascal VOC, COCO JSON) parse every annotation in Python first:
that is fast, and it lets every problem be reported with the file it comes
from. Images are checked at load time too (`ipg_keras.data.image_io.check_image`;
the default level proves each file complete, so a truncated JPEG is reported
and skipped here), because a decoding error inside tf.data stops training. Only
then is a `tf.data.Dataset` built, which decodes in parallel with the package's
one image reader, `ipg_keras.data.image_io.read_image`.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ipg_keras.data.boxes import to_box_format
from ipg_keras.data.image_io import CHECK_LEVELS, ImageInfo, check_image, read_image
from ipg_keras.data.report import DataError, LoadReport

VALIDATE_MODES = CHECK_LEVELS


@dataclasses.dataclass
class ImageRecord:
    """One image and its boxes, parsed and validated.

    boxes: float32 [N, 4] xyxy absolute pixels, inside the image, non-degenerate.
    classes: int32 [N] contiguous class ids.
    flags: name -> bool [N] (e.g. "difficult", "iscrowd").
    """

    image_path: str
    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray
    flags: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    annotation_path: str | None = None
    image_format: str = "JPEG"


def check_images(
    paths: Sequence[str], validate: str, desc: str = "checking images"
) -> list[ImageInfo | Exception]:
    """`check_image(path, validate)` for many files on a thread pool; errors are returned, not raised."""

    if validate not in VALIDATE_MODES:
        raise ValueError(f"validate={validate!r}; use one of {VALIDATE_MODES}")

    def one(p):
        try:
            return check_image(p, validate)
        except Exception as e:  # noqa: BLE001 - every failure is reported by the caller
            return e

    workers = min(16, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(
            tqdm(pool.map(one, paths), total=len(paths), desc=desc, disable=len(paths) < 200, leave=False)
        )


# Boxes whose coordinates all lie in [0, 1] on an image at least this large (both
# sides, pixels) are normalized coordinates, not pixels.
NORMALIZED_MIN_IMAGE_SIZE = 32
# Default share of a box's area that must lie inside the image for the box to be
# kept (clipped): the rule of `crop_boxes`, with the default of `AugmentConfig.min_visible`
# (a box cut by the image border, as after a random crop).
DEFAULT_MIN_VISIBLE = 0.3


def looks_normalized(boxes: np.ndarray, width: int, height: int) -> bool:
    """True when every coordinate of `boxes` [N>0, 4] lies in [0, 1] and the image is
    at least `NORMALIZED_MIN_IMAGE_SIZE` px on both sides: such boxes are fractions of
    the image size (TFDS, YOLO, many exports), not pixels."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (len(boxes) > 0 and min(width, height) >= NORMALIZED_MIN_IMAGE_SIZE
            and bool(np.all((boxes >= 0.0) & (boxes <= 1.0))))


def _fmt(box) -> list[float]:
    return [round(float(v), 3) for v in box]


def sanitize_boxes(
    boxes: np.ndarray, width: int, height: int, file: str, report: LoadReport,
    min_visible: float = DEFAULT_MIN_VISIBLE,
) -> np.ndarray:
    """The cleaning rule for annotated boxes, the same for every format and consumer.

    boxes: float32 [N, 4] xyxy pixels (clipped in place); width, height: the image
    file's real size in pixels. Returns a bool keep-mask [N]. In order:

    * non-finite coordinates: dropped (`invalid_box`);
    * x2 <= x1 or y2 <= y1 (inverted or zero size) or wholly outside the image:
      dropped (`degenerate_box`);
    * all remaining boxes of the image within [0, 1] on an image of at least
      32 px: normalized, not pixels; dropped (`normalized_box`);
    * partly outside the image: clipped to it and kept when at least
      `min_visible` of its area is inside (`box_clipped`), else dropped
      (`box_outside`): the rule of `crop_boxes` / `tile_dataset`.

    Each reason is reported once per file with its count and the first box.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros([0], bool)
    finite = np.all(np.isfinite(boxes), axis=1)
    safe = np.where(finite[:, None], boxes, 0.0)
    degenerate = finite & ((safe[:, 2] <= safe[:, 0]) | (safe[:, 3] <= safe[:, 1]))
    clipped_boxes = safe.copy()
    clipped_boxes[:, [0, 2]] = np.clip(clipped_boxes[:, [0, 2]], 0, width)
    clipped_boxes[:, [1, 3]] = np.clip(clipped_boxes[:, [1, 3]], 0, height)
    area = np.maximum(safe[:, 2] - safe[:, 0], 0) * np.maximum(safe[:, 3] - safe[:, 1], 0)
    visible = (np.maximum(clipped_boxes[:, 2] - clipped_boxes[:, 0], 0)
               * np.maximum(clipped_boxes[:, 3] - clipped_boxes[:, 1], 0))
    outside = finite & ~degenerate & (
        (safe[:, 0] < 0) | (safe[:, 1] < 0) | (safe[:, 2] > width) | (safe[:, 3] > height)
    )
    # Wholly outside: nothing left after clipping, so it is a dropped (degenerate) box.
    gone = outside & (visible <= 0)
    degenerate |= gone
    outside &= ~gone
    normalized = np.zeros(len(boxes), bool)
    candidates = finite & ~degenerate
    if candidates.any() and looks_normalized(safe[candidates], width, height):
        normalized = candidates
        outside &= False
        report.add(
            "normalized_box", file,
            f"all {int(normalized.sum())} box(es) lie within [0, 1] on the {width}x{height} image: they look "
            f"normalized (fractions of the image size), not pixels (first: {_fmt(safe[normalized][0])}); dropped. "
            "Convert to pixels: multiply x by the width and y by the height",
            int(normalized.sum()),
        )
    kept_clipped = outside & (visible >= min_visible * area)
    dropped_outside = outside & ~kept_clipped
    if kept_clipped.any():
        first = safe[kept_clipped][0]
        report.add(
            "box_clipped", file,
            f"{int(kept_clipped.sum())} box(es) extend outside the {width}x{height} image and were clipped to it "
            f"(at least min_visible={min_visible:g} of each inside; first, before clipping: {_fmt(first)})",
            int(kept_clipped.sum()),
        )
    if dropped_outside.any():
        i = int(np.flatnonzero(dropped_outside)[0])
        report.add(
            "box_outside", file,
            f"{int(dropped_outside.sum())} box(es) lie mostly outside the {width}x{height} image (less than "
            f"min_visible={min_visible:g} of the area inside; first: {_fmt(safe[i])}, "
            f"{visible[i] / max(area[i], 1e-9):.0%} inside); dropped",
            int(dropped_outside.sum()),
        )
    if degenerate.any():
        first = safe[degenerate][0].tolist()
        report.add(
            "degenerate_box",
            file,
            f"{int(degenerate.sum())} degenerate box(es) (x2<=x1 or y2<=y1, or wholly outside the "
            f"{width}x{height} image) dropped (first: {[round(v, 1) for v in first]})",
            int(degenerate.sum()),
        )
    if (~finite).any():
        report.add("invalid_box", file, f"{int((~finite).sum())} box(es) with non-finite coordinates dropped",
                   int((~finite).sum()))
    boxes[:] = np.where(kept_clipped[:, None], clipped_boxes, boxes)
    return finite & ~degenerate & ~normalized & ~dropped_outside


@dataclasses.dataclass
class ParsedDataset:
    """Validated records of a dataset, its class names and its `LoadReport`.

    `to_dataset()` gives the tf.data.Dataset in the element format of conventions.md.
    """

    records: list[ImageRecord]
    class_names: list[str]
    report: LoadReport
    flag_keys: tuple[str, ...] = ()
    label_map: object | None = None  # CocoLabelMap for COCO JSON

    @property
    def num_boxes(self) -> int:
        return int(sum(len(r.boxes) for r in self.records))

    def to_dataset(self, num_parallel_calls: int = tf.data.AUTOTUNE,
                   bounding_box_format: str = "xyxy") -> tf.data.Dataset:
        """tf.data.Dataset of elements (see conventions.md), images decoded in parallel.

        Boxes are in `bounding_box_format` (a name of `ipg_keras.ops.box_formats.BOX_FORMATS`;
        `rel_` formats relative to each image's size); the records stay xyxy pixels.
        The returned dataset carries `.class_names`, `.report`, `.records` (and
        `.label_map` for COCO) as attributes; they are lost by later `.map()` etc.
        """
        ds = records_to_dataset(self.records, self.flag_keys, num_parallel_calls)
        ds = to_box_format(ds, bounding_box_format, num_parallel_calls)
        return attach_info(ds, class_names=self.class_names, report=self.report,
                           records=self.records, label_map=self.label_map)


def attach_info(ds: tf.data.Dataset, **info) -> tf.data.Dataset:
    """Set loader metadata (class_names, report, ...) as attributes of `ds`."""
    for k, v in info.items():
        setattr(ds, k, v)
    return ds


def decode_image_file(path: tf.Tensor) -> tf.Tensor:
    """float32 `[H, W, 3]` RGB 0..255 of an image file inside tf.data.

    Runs `ipg_keras.data.image_io.read_image` (the package's one reader, so every
    format and mode gives the pixels every other path gives) through
    `tf.py_function`; Pillow releases the GIL while decoding, so parallel map calls
    decode in parallel. A file that fails raises an error naming it.
    """

    def read(p):
        return read_image(os.fsdecode(p.numpy()))

    img = tf.py_function(read, [path], tf.uint8)
    return tf.cast(tf.ensure_shape(img, [None, None, 3]), tf.float32)


def records_to_dataset(
    records: Sequence[ImageRecord],
    flag_keys: Sequence[str] = (),
    num_parallel_calls: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Build the element dataset from records; decoding runs in parallel, order kept."""
    n = len(records)
    paths = tf.constant([r.image_path for r in records] or [""], tf.string)
    ids = tf.constant([r.image_id for r in records] or [0], tf.int64)
    counts = [len(r.boxes) for r in records]
    splits = tf.constant(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
    all_boxes = tf.constant(
        np.concatenate([r.boxes for r in records]).astype(np.float32) if n else np.zeros([0, 4], np.float32)
    )
    all_classes = tf.constant(
        np.concatenate([r.classes for r in records]).astype(np.int32) if n else np.zeros([0], np.int32)
    )
    all_flags = {
        k: tf.constant(np.concatenate([r.flags[k] for r in records]).astype(bool) if n else np.zeros([0], bool))
        for k in flag_keys
    }

    def load(i):
        s, e = splits[i], splits[i + 1]
        image = decode_image_file(paths[i])
        bb = {"boxes": all_boxes[s:e], "classes": all_classes[s:e]}
        for k, v in all_flags.items():
            bb[k] = v[s:e]
        return {"images": image, "bounding_boxes": bb, "image_id": ids[i]}

    return tf.data.Dataset.range(n).map(tf.autograph.experimental.do_not_convert(load), num_parallel_calls=num_parallel_calls, deterministic=True)


def clean_entry(
    entry: dict, info: ImageInfo, report: LoadReport, flag_keys: Sequence[str],
    min_visible: float = DEFAULT_MIN_VISIBLE,
) -> ImageRecord:
    """`ImageRecord` of one parsed entry whose image is `info` (`check_image`'s result):
    the annotated size is checked against the file, boxes go through `sanitize_boxes`."""
    path = entry["image_path"]
    width, height, fmt = info.width, info.height, info.format
    annotated = entry.get("size")
    if annotated and annotated[0] > 0 and annotated[1] > 0 and tuple(annotated) != (width, height):
        report.add(
            "size_mismatch",
            entry.get("annotation_path") or path,
            f"annotation says {annotated[0]}x{annotated[1]} but {path} is {width}x{height}; "
            "boxes are checked against the real size"
            + (" (the file's EXIF orientation turns it by 90 degrees, as viewers and read_image show it; "
               "if the boxes were drawn on the unrotated pixels, rotate the file or the boxes)"
               if tuple(annotated) == (height, width) else ""),
        )
    boxes = np.asarray(entry["boxes"], np.float32).reshape(-1, 4).copy()
    keep = sanitize_boxes(boxes, width, height, entry.get("annotation_path") or path, report, min_visible)
    classes = np.asarray(entry["classes"], np.int32).reshape(-1)
    flags = {k: np.asarray(entry["flags"].get(k, np.zeros(len(classes), bool)), bool)[keep] for k in flag_keys}
    return ImageRecord(
        image_path=str(path),
        image_id=int(entry["image_id"]),
        width=width,
        height=height,
        boxes=boxes[keep],
        classes=classes[keep],
        flags=flags,
        annotation_path=entry.get("annotation_path"),
        image_format=fmt,
    )


def check_not_all_normalized(report: LoadReport, images_with_boxes: int) -> None:
    """Raise `DataError` when the boxes of every image with boxes looked normalized:
    training or scoring on what is left (nothing) would be wrong, not merely smaller."""
    flagged = len(report.files.get("normalized_box", []))
    if images_with_boxes and flagged >= images_with_boxes:
        example = next(i for i in report.issues if i.reason == "normalized_box")
        raise DataError(
            f"{report.source}: the boxes of all {images_with_boxes} annotated image(s) lie within [0, 1]: "
            "they are normalized coordinates, not pixels. Convert them to pixels (x * width, y * height) "
            f"first. Example: {example.file}: {example.message}"
        )


def finish_records(
    parsed: list[dict], report: LoadReport, validate: str, flag_keys: Sequence[str],
    min_visible: float = DEFAULT_MIN_VISIBLE,
) -> list[ImageRecord]:
    """Check the image of each parsed entry, clip/drop boxes, and build `ImageRecord`s.

    Each entry: {"image_path", "image_id", "annotation_path", "boxes" [N,4] xyxy,
    "classes" [N], "flags": {k: [N]}, optional "size": (w, h) annotated}. Entries
    whose image is missing or corrupt are reported and left out; boxes follow
    `sanitize_boxes`. Raises `DataError` when nothing is usable, or when every
    annotated image's boxes look normalized.
    """
    existing = [e for e in parsed if _exists(e, report)]
    infos = check_images([e["image_path"] for e in existing], validate)
    records = []
    for entry, info in zip(existing, infos):
        path = entry["image_path"]
        if isinstance(info, Exception):
            reason = str(info).replace(f"cannot read image {path}: ", "cannot read image: ")
            if not isinstance(info, ValueError):
                reason = f"cannot read image ({type(info).__name__}: {info})"
            report.add("corrupt_image", path, f"{reason}; skipped")
            continue
        records.append(clean_entry(entry, info, report, flag_keys, min_visible))
    check_not_all_normalized(report, sum(1 for e in existing if len(e["boxes"])))
    report.images_loaded = len(records)
    report.boxes_loaded = int(sum(len(r.boxes) for r in records))
    if not records:
        # Loading nothing at all must not look like success.
        raise DataError(f"no usable image in {report.source}:\n{report.summary()}")
    return records


def _exists(entry: dict, report: LoadReport) -> bool:
    path = entry["image_path"]
    if path is not None and Path(path).is_file():
        return True
    reason = entry.get("missing_reason", "missing_image")
    report.add(reason, str(path if path is not None else entry.get("annotation_path")),
               entry.get("missing_message") or "image file not found; skipped")
    return False
