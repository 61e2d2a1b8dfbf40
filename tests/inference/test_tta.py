"""Test-time augmentation: views map boxes back exactly; weighted box fusion averages each cluster per class."""

from __future__ import annotations

import numpy as np
import pytest

from ipg_keras.inference import predict_image, predict_views, weighted_box_fusion
from ipg_keras.inference.tta import VIEWS, unview_boxes, view_image
from fake_detectors import BrightBoxDetector


@pytest.mark.parametrize("view", VIEWS)
def test_each_view_maps_its_boxes_back_to_the_image(view):
    image = np.zeros((50, 70, 3), "uint8")
    image[10:18, 30:44] = 255
    pixels = view_image(image, view)
    assert pixels.shape[:2] == ((70, 50) if "t" in view else (50, 70))
    ys, xs = np.nonzero(pixels[..., 0])
    seen = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], "float32")
    np.testing.assert_array_equal(unview_boxes(seen, view, pixels.shape[:2]), [[30, 10, 44, 18]])


@pytest.mark.parametrize("views", [1, 4, 8])
def test_predict_image_with_tta_finds_the_same_box_in_image_pixels(views):
    image = np.zeros((80, 150, 3), "uint8")  # wider than the 64 px input: sliced in every view
    image[20:36, 90:110] = 255
    out = predict_image(BrightBoxDetector(label=1), image, tta=views)
    np.testing.assert_allclose(out["boxes"], [[90, 20, 110, 36]], atol=1e-4)
    np.testing.assert_allclose(out["scores"], [0.9], rtol=1e-6)  # every view found it: sum / views
    assert out["classes"].tolist() == [1]
    with pytest.raises(ValueError, match="tta=3"):
        predict_image(BrightBoxDetector(label=1), image, tta=3)


def test_weighted_box_fusion_averages_clusters_per_class_and_scores_over_the_views():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], "float32")
    scores = np.array([0.9, 0.3, 0.6, 0.8])
    classes = np.array([0, 0, 0, 1])
    out = weighted_box_fusion(boxes, scores, classes, num_views=2, iou_threshold=0.55)
    # class 0: {0.9 @ [0..10], 0.3 @ [1..11]} -> score-weighted mean, (0.9 + 0.3) / 2; the far box alone: 0.6 / 2;
    # class 1's box does not join class 0's cluster.
    np.testing.assert_allclose(out["boxes"], [[0.25, 0.25, 10.25, 10.25], [0, 0, 10, 10], [50, 50, 60, 60]],
                               rtol=1e-6)
    np.testing.assert_allclose(out["scores"], [0.6, 0.4, 0.3], rtol=1e-6)
    assert out["classes"].tolist() == [0, 1, 0]
    empty = weighted_box_fusion(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 4)
    assert empty["boxes"].shape == (0, 4) and empty["scores"].dtype == np.float32


def test_predict_views_rejects_other_view_counts():
    with pytest.raises(ValueError, match="1, 4"):
        predict_views(lambda x: {}, np.zeros((8, 8, 3)), views=2)


@pytest.mark.parametrize("scales", [(1.0, 0.5), (1.0, 0.8, 1.25), (2.0,)])
def test_views_at_other_scales_come_back_in_image_pixels(scales):
    image = np.zeros((80, 160, 3), "uint8")
    image[20:36, 90:110] = 255  # a box whose corners land on whole pixels at every scale tried
    out = predict_image(BrightBoxDetector(label=1), image, "direct", tta=4, tta_scales=scales)
    # Resizing blurs the edges by up to a pixel of the resized image; the fused box stays within that.
    np.testing.assert_allclose(out["boxes"], [[90, 20, 110, 36]], atol=1.0 / min(scales))
    np.testing.assert_allclose(out["scores"], [0.9], rtol=1e-6)  # every view at every scale found it
    assert len(out["boxes"]) == 1


def test_predict_views_fuses_every_view_at_every_scale():
    seen = []

    def predict(pixels):
        seen.append(pixels.shape[:2])
        return {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, int)}

    predict_views(predict, np.zeros((40, 60, 3), "uint8"), views=4, scales=(1.0, 0.5))
    assert sorted(seen) == sorted([(40, 60)] * 4 + [(20, 30)] * 4)
    for bad in ((), (1.0, 0.0), (-1.0,)):
        with pytest.raises(ValueError, match="scales"):
            predict_views(predict, np.zeros((8, 8, 3)), views=4, scales=bad)
    with pytest.raises(ValueError, match="tta_scales"):
        predict_image(BrightBoxDetector(), np.zeros((8, 8, 3), "uint8"), tta_scales=(0.0,))
