"""`ipg_keras.inference`: predict_image on files and arrays in every mode, boxes in original
pixels, the one reader on this path (16bit-images case), any model form."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ipg_keras.data.image_io import ImageReadError, ImageReadWarning, read_image
from ipg_keras.export.runtime import letterbox
from ipg_keras.inference import MODES, as_detector, load_detector, predict_image
from shared_cases import case



class RecordingDetector:
    """Records its inputs; 'detects' one box [8, 8, 24, 24] (class 1, score 0.9) in every input's
    pixels, so the mapping back to the image is known."""

    format = "keras"

    def __init__(self, input_size=(64, 64)):
        self.input_size = input_size
        self.inputs = []

    def __call__(self, images):
        images = np.asarray(images)
        self.inputs.append(images.copy())
        b = len(images)
        boxes = np.zeros((b, 5, 4), np.float32)
        boxes[:, 0] = (8, 8, 24, 24)
        scores = np.zeros((b, 5), np.float32)
        scores[:, 0] = 0.9
        classes = np.full((b, 5), -1, np.int32)
        classes[:, 0] = 1
        return {"boxes": boxes, "scores": scores, "classes": classes, "num_detections": np.ones(b, np.int32)}


def test_resize_mode_letterboxes_and_maps_boxes_back(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (32, 128, 3), dtype=np.uint8)  # scale 0.5 into 64 x 64
    Image.fromarray(image).save(tmp_path / "wide.png")
    for source in (tmp_path / "wide.png", str(tmp_path / "wide.png"), image):
        det = RecordingDetector()
        out = predict_image(det, source, mode="resize")
        np.testing.assert_allclose(out["boxes"], [[16, 16, 48, 32]])  # [8, 8, 24, 24] / 0.5, clipped to y < 32
        assert out["scores"].tolist() == pytest.approx([0.9]) and out["classes"].tolist() == [1]
        assert out["boxes"].dtype == np.float32 and out["classes"].dtype == np.int32
        np.testing.assert_array_equal(det.inputs[0][0], letterbox(image, (64, 64))[0])


def test_auto_mode_tiles_large_images_and_merges_with_nms():
    det = RecordingDetector()
    big = np.zeros((64, 160, 3), np.uint8)  # wider than the 64 px input: tiles of 64, overlap 16
    out = predict_image(det, big)  # mode="auto"
    assert [len(b) for b in det.inputs] == [4]  # tiles at x = 0, 48, 96 (+ a blank one: fixed batch of 4)
    starts = [0, 48, 96]
    expected = sorted([[8 + x, 8, 24 + x, 24] for x in starts])
    assert sorted(out["boxes"].tolist()) == expected  # every tile's box, in image pixels, none overlapping
    small = predict_image(RecordingDetector(), np.zeros((40, 50, 3), np.uint8))  # fits: letterboxed, not tiled
    np.testing.assert_allclose(small["boxes"], [[6.25, 6.25, 18.75, 18.75]])  # scaled up by 64 / 50 to fit


class BrightBoxDetector(RecordingDetector):
    """'Detects' the bright pixels (> 128) of each input as one box, class 0, score 0.9."""

    def __call__(self, images):
        out = super().__call__(images)
        for i, image in enumerate(np.asarray(images)):
            ys, xs = np.nonzero(image[..., 0] > 128)
            out["num_detections"][i] = int(len(ys) > 0)
            if len(ys):
                out["boxes"][i, 0] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                out["classes"][i, 0] = 0
        return out


def test_slice_merges_an_object_seen_by_two_tiles_into_one_box():
    image = np.zeros((64, 100, 3), np.uint8)
    image[20:36, 40:56] = 255  # inside both tiles (x 0..64 and 36..100 with overlap 0.5)
    det = BrightBoxDetector()
    out = predict_image(det, image, mode="slice", overlap=0.5)
    assert [len(b) for b in det.inputs] == [4]  # 2 tiles, padded to the batch of 4
    np.testing.assert_allclose(out["boxes"], [[40, 20, 56, 36]])  # one box, in image pixels
    with pytest.raises(ValueError, match="overlap"):
        predict_image(det, image, overlap=1.0)


def test_slice_with_a_tile_size_zooms_each_tile_to_the_input_and_maps_boxes_back():
    """`tile_size` below the input side (a model trained on zoomed-in windows): tiles resized up, boxes scaled back."""
    det = RecordingDetector()  # 64 px input, box [8, 8, 24, 24] in input pixels
    out = predict_image(det, np.zeros((32, 80, 3), np.uint8), tile_size=32, overlap=0.5)  # auto: 80 > 32 slices
    assert det.inputs[0].shape[1:] == (64, 64, 3)  # 32 px tiles at x = 0, 16, 32, 48, zoomed 2x
    assert sorted(out["boxes"].tolist()) == sorted([[4 + x, 4, 12 + x, 12] for x in (0, 16, 32, 48)])
    with pytest.raises(ValueError, match="tile_size"):
        predict_image(det, np.zeros((32, 80, 3), np.uint8), tile_size=0, mode="slice")


def test_direct_mode_feeds_the_image_as_is():
    det = RecordingDetector()
    image = np.full((30, 40, 3), 7, np.uint8)
    out = predict_image(det, image, mode="direct")
    assert det.inputs[0].shape == (1, 30, 40, 3)
    np.testing.assert_allclose(out["boxes"], [[8, 8, 24, 24]])


def test_bad_inputs_raise_clear_errors(tmp_path):
    det = RecordingDetector()
    with pytest.raises(ValueError, match="mode='zoom'"):
        predict_image(det, np.zeros((8, 8, 3)), mode="zoom")
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        predict_image(det, np.zeros((8, 8)))
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.jpg"):
        predict_image(det, tmp_path / "notes.jpg")
    with pytest.raises(TypeError, match="Cannot predict with"):
        predict_image(object(), np.zeros((8, 8, 3)))
    assert MODES == ("auto", "resize", "slice", "direct")


def test_16bit_case_gives_identical_non_white_inputs_through_the_inference_path():
    folder = case("16bit-images")
    inputs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageReadWarning)
        for name in ("cells.tif", "cells.png"):
            det = RecordingDetector(input_size=(128, 128))  # 80 x 64 fits: letterboxed, scale 1.6
            predict_image(det, folder / name)
            inputs[name] = det.inputs[0][0]
    np.testing.assert_array_equal(inputs["cells.tif"], inputs["cells.png"])
    image = inputs["cells.tif"]
    assert image.max() < 255  # not white
    # Object (box x 20..44, y 16..40, scaled by 1.6) brighter than the background.
    assert image[int(28 * 1.6), int(32 * 1.6), 0] == pytest.approx(15) and image[5, 5, 0] == pytest.approx(3)


def test_keras_model_object_and_file_predict_alike(tmp_path):
    """as_detector wraps a Keras detector; load_detector reads its .keras file: same detections."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from model_helpers import tiny_retinanet

    model = tiny_retinanet(num_classes=2, max_level=5, score_threshold=0.0, prior_probability=0.3, max_detections=20)
    model(np.zeros((1, 64, 64, 3), np.float32))
    model.save(tmp_path / "tiny.keras")
    image = np.random.default_rng(1).integers(0, 255, (48, 80, 3), dtype=np.uint8)  # wider: 2 tiles of 64
    detector = as_detector(model, image_size=64)
    assert detector.input_size == (64, 64) and as_detector(model).input_size == (512, 512)
    from_object = predict_image(detector, image)
    from_file = predict_image(load_detector(tmp_path / "tiny.keras", image_size=64), image)
    assert len(from_object["boxes"]) == len(from_file["boxes"]) > 0
    np.testing.assert_allclose(from_object["boxes"], from_file["boxes"], atol=1e-3)
    assert from_object["boxes"][:, [0, 2]].max() <= 80 and from_object["boxes"][:, [1, 3]].max() <= 48
    np.testing.assert_array_equal(read_image(_save(tmp_path, image)), image)


def _save(folder: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(folder / "image.png")
    return folder / "image.png"
