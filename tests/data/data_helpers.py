"""Helpers and fixtures for the ipg_keras.data tests: tiny images and annotation files
written to tmp_path at test time, and the shared tree-crown data (skipped when absent).

Fixtures live here, not in a conftest.py, because other test folders import names
from their `conftest` module and a second conftest.py would shadow it. Test modules
import the fixtures they use from here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ipg_keras.utils.paths import trees_dir


def write_image(path: Path, width: int, height: int, fill=(10, 20, 30), fmt: str | None = None) -> Path:
    """Solid-colour RGB image file (format from the extension unless fmt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.empty((height, width, 3), np.uint8)
    arr[:] = fill
    Image.fromarray(arr).save(path, format=fmt)
    return path


def write_voc_xml(path: Path, filename: str | None, size, objects) -> Path:
    """VOC XML; objects: (name, (x1, y1, x2, y2), difficult) triples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    objs = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    fname = f"<filename>{filename}</filename>" if filename else ""
    sz = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    path.write_text(f"<annotation><folder>x</folder>{fname}{sz}{objs}</annotation>")
    return path


def render_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, 3] float32 image, background 0: box i filled with 200 in channel 0 and
    40 * (i + 1) in channel 1 (a pixel is wholly object i only where both match, so
    resampling blends with the background are never mistaken for another object)."""
    img = np.zeros((height, width, 3), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.int64)):
        img[y1:y2, x1:x2, 0] = 200.0
        img[y1:y2, x1:x2, 1] = 40.0 * (i + 1)
    return img


@pytest.fixture
def voc_folder(tmp_path: Path) -> Path:
    """Two images with XML next to them: a.jpg 64x48 (cat, dog[difficult]), b.png 40x30 (dog)."""
    write_image(tmp_path / "a.jpg", 64, 48, fill=(200, 0, 0))
    write_voc_xml(tmp_path / "a.xml", "a.jpg", (64, 48),
                  [("cat", (4, 5, 20, 30), False), ("dog", (30, 10, 60, 40), True)])
    write_image(tmp_path / "b.png", 40, 30, fill=(0, 0, 250))
    write_voc_xml(tmp_path / "b.xml", "b.png", (40, 30), [("dog", (1, 2, 11, 12), False)])
    return tmp_path


@pytest.fixture
def coco_files(tmp_path: Path) -> tuple[Path, Path]:
    """COCO JSON with sparse category ids 3/7/11, a crowd box, an image without boxes."""
    img_dir = tmp_path / "images"
    write_image(img_dir / "x.jpg", 50, 40)
    write_image(img_dir / "y.jpg", 30, 20)
    write_image(img_dir / "z.jpg", 16, 16)
    data = {
        "images": [
            {"id": 101, "file_name": "x.jpg", "width": 50, "height": 40},
            {"id": 205, "file_name": "y.jpg", "width": 30, "height": 20},
            {"id": 309, "file_name": "z.jpg", "width": 16, "height": 16},
        ],
        "categories": [{"id": 11, "name": "truck"}, {"id": 3, "name": "car"}, {"id": 7, "name": "bus"}],
        "annotations": [
            {"id": 1, "image_id": 101, "category_id": 3, "bbox": [2, 3, 10, 20], "iscrowd": 0, "area": 200},
            {"id": 2, "image_id": 101, "category_id": 11, "bbox": [20, 5, 25, 30], "iscrowd": 1, "area": 750},
            {"id": 3, "image_id": 205, "category_id": 7, "bbox": [0, 0, 30, 20], "iscrowd": 0, "area": 600},
        ],
    }
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(data))
    return ann, img_dir


@pytest.fixture(scope="session")
def trees() -> Path:
    """The shared aerial tree-crown data, or skip."""
    root = trees_dir()
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        pytest.skip(f"tree-crown sample data not found at {root} (set IPG_KERAS_TREES_DIR to its folder)")
    return root
