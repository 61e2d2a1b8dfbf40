"""The image cases of ../shared/cases (README.md there): truncated-jpeg and 16bit-images
through the data loaders; the same files through `ipg-predict` are in tests/export/test_cli.py
and through `ipg_keras.inference` in tests/inference/test_predict.py."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ipg_keras.data import from_coco_json, from_pascal_voc, make_batches
from ipg_keras.data.image_io import ImageReadWarning, read_image
from shared_cases import case



def test_truncated_jpeg_is_reported_by_name_and_skipped_and_training_data_goes_on():
    folder = case("truncated-jpeg")
    ds = from_pascal_voc(folder)  # the default load-time check
    report = ds.report
    assert report.counts == {"corrupt_image": 1}
    assert report.files == {"corrupt_image": [str(folder / "cut.jpg")]}
    assert "truncated" in report.issues[0].message and "No problems found" not in report.summary()
    assert [Path(r.image_path).name for r in ds.records] == ["good.jpg"]
    elements = list(ds)  # iterating decodes every image: no "Invalid JPEG data" inside tf.data
    assert len(elements) == 1 and elements[0]["images"].shape == (64, 96, 3)
    np.testing.assert_array_equal(elements[0]["images"].numpy(), read_image(folder / "good.jpg"))
    # The training pipeline runs on what is left.
    images, targets = next(iter(make_batches(ds, batch_size=1, image_size=128)))
    assert images.shape == (1, 128, 128, 3) and int((targets["classes"] >= 0).numpy().sum()) == 1


def test_16bit_tiff_and_png_load_identically_dark_not_white():
    folder = case("16bit-images")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImageReadWarning)
        ds = from_coco_json(folder / "ann.json", folder)
        images = {int(e["image_id"]): e["images"].numpy() for e in ds}
    tif, png = images[1], images[2]  # ann.json: id 1 = cells.tif, id 2 = cells.png
    np.testing.assert_array_equal(tif, png)
    # Full-scale rule: background 1000 >> 8 = 3, object 4000 >> 8 = 15; never white.
    assert set(np.unique(tif).tolist()) == {3.0, 15.0}
    x, y, w, h = 20, 16, 24, 24  # the object's box in ann.json
    assert np.all(tif[y:y + h, x:x + w] == 15) and tif[0, 0, 0] == 3
    # The reader does not stay silent about such dark data.
    assert any("cells" in str(w.message) and "dark image" in str(w.message) for w in caught)
