"""How well a detector's anchors fit a dataset's boxes, and anchors that fit better.

An object is learned only through the anchors matched to it: in RetinaNet an
anchor is a positive when its IoU with the box is at least `positive_iou`
(0.5), and a box no anchor reaches gets only its best anchor as a low-quality
match, a weak target. `anchor_fit_report` measures, for a configured anchor
set, the best IoU any anchor reaches with each training box, with the anchors
placed where the detector places them (centres on each level's stride grid,
as `AnchorGenerator`), and the share of boxes without an anchor at
`positive_iou`. `propose_anchors` fits anchors to the boxes: k-means on the box
shapes with the distance `1 - IoU` (Redmon & Farhadi, YOLO9000, 2017; the
YOLO-family "autoanchor" tools do the same) gives the aspect ratios, and the
base size is the one that covers the most boxes at `positive_iou`.

Boxes are in the detector's input pixels (scale them as the input pipeline
does before calling). Pure numpy: no model is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ipg_keras.models.anchors import AnchorGenerator

DEFAULT_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))


def _wh(boxes) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    if len(wh) and (wh <= 0).any():
        bad = boxes[(wh <= 0).any(axis=1)][0]
        raise ValueError(f"anchor fit: box {bad.tolist()} has no area; boxes must be xyxy with x2 > x1, y2 > y1.")
    return wh


def shape_iou(wh_a: np.ndarray, wh_b: np.ndarray) -> np.ndarray:
    """IoU of box shapes `[N, 2]` x `[K, 2]` (w, h) with their centres aligned: `[N, K]`."""
    inter = np.minimum(wh_a[:, None, 0], wh_b[None, :, 0]) * np.minimum(wh_a[:, None, 1], wh_b[None, :, 1])
    area_a = wh_a[:, 0] * wh_a[:, 1]
    area_b = wh_b[:, 0] * wh_b[:, 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def best_anchor_iou(boxes, generator: AnchorGenerator) -> np.ndarray:
    """`[N]` highest IoU of each xyxy box with any anchor of `generator`, anchors on their grids.

    On each level the best anchor of a given shape is the one centred on the
    grid point nearest the box centre (the overlap along x and along y each
    shrink as the centres move apart), so only that point is tried per shape
    and level: exact, and O(N * levels * shapes).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    _wh(boxes)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    best = np.zeros(len(boxes))
    for level in range(generator.min_level, generator.max_level + 1):
        stride = 2.0**level
        ax = (np.floor(cx / stride) + 0.5) * stride  # nearest grid centre ((i + 0.5) * stride)
        ay = (np.floor(cy / stride) + 0.5) * stride
        for x1, y1, x2, y2 in generator._shapes(level):
            anchors = np.stack([ax + x1, ay + y1, ax + x2, ay + y2], axis=1)
            iw = np.clip(np.minimum(boxes[:, 2], anchors[:, 2]) - np.maximum(boxes[:, 0], anchors[:, 0]), 0, None)
            ih = np.clip(np.minimum(boxes[:, 3], anchors[:, 3]) - np.maximum(boxes[:, 1], anchors[:, 1]), 0, None)
            inter = iw * ih
            union = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                     + (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1]) - inter)
            best = np.maximum(best, inter / union)
    return best


@dataclasses.dataclass
class AnchorFit:
    """Coverage of boxes by one anchor set.

    anchor_size, scales, aspect_ratios, min_level, max_level: the anchors
        (`AnchorGenerator` arguments; ratios are height / width).
    positive_iou: the matching threshold the coverage is measured at.
    best_iou: `[N]` best IoU of each box with any anchor.
    """

    anchor_size: float
    scales: tuple[float, ...]
    aspect_ratios: tuple[float, ...]
    min_level: int
    max_level: int
    positive_iou: float
    best_iou: np.ndarray

    @property
    def uncovered(self) -> float:
        """Share of boxes with no anchor at IoU >= positive_iou."""
        return float(np.mean(self.best_iou < self.positive_iou)) if len(self.best_iou) else 0.0

    @property
    def mean_best_iou(self) -> float:
        return float(np.mean(self.best_iou)) if len(self.best_iou) else 0.0

    def summary(self) -> str:
        q = np.percentile(self.best_iou, [0, 10, 50, 90]) if len(self.best_iou) else np.zeros(4)
        ratios = ", ".join(f"{r:g}" for r in self.aspect_ratios)
        return (f"anchor_size {self.anchor_size:g} (x stride, P{self.min_level}-P{self.max_level}), "
                f"aspect_ratios [{ratios}], {len(self.scales)} scales: best-anchor IoU mean {self.mean_best_iou:.3f}, "
                f"min {q[0]:.3f} / p10 {q[1]:.3f} / median {q[2]:.3f} / p90 {q[3]:.3f}; "
                f"{100 * self.uncovered:.1f}% of {len(self.best_iou)} boxes have no anchor at IoU >= "
                f"{self.positive_iou:g}")


def anchor_fit_report(boxes, anchor_size: float = 4.0, scales: Sequence[float] = DEFAULT_SCALES,
                      aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), min_level: int = 3, max_level: int = 7,
                      positive_iou: float = 0.5) -> AnchorFit:
    """The `AnchorFit` (best-anchor IoU of every box, uncovered share) of one anchor configuration.

    boxes: `[N, 4]` xyxy in the detector's input pixels. Raises ValueError for
    boxes without area.
    """
    generator = AnchorGenerator(min_level, max_level, anchor_size, scales, aspect_ratios)
    return AnchorFit(float(anchor_size), tuple(float(s) for s in scales), tuple(float(r) for r in aspect_ratios),
                     int(min_level), int(max_level), float(positive_iou), best_anchor_iou(boxes, generator))


def kmeans_shapes(wh, k: int, iterations: int = 100, seed: int = 0) -> np.ndarray:
    """k-means of box shapes `[N, 2]` (w, h) with the distance `1 - shape IoU` (YOLO9000); `[k, 2]` by area.

    Each cluster centre is the median shape of its members (more robust than
    the mean, as in the YOLO tools). Raises ValueError with fewer boxes than k.
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    if len(wh) < k:
        raise ValueError(f"kmeans_shapes: {len(wh)} boxes cannot make {k} clusters.")
    rng = np.random.default_rng(seed)
    centres = wh[rng.choice(len(wh), k, replace=False)]
    for _ in range(iterations):
        assign = np.argmax(shape_iou(wh, centres), axis=1)
        new = np.array([np.median(wh[assign == j], axis=0) if np.any(assign == j) else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return centres[np.argsort(centres[:, 0] * centres[:, 1])]


def propose_anchors(boxes, num_ratios: int = 3, scales: Sequence[float] = DEFAULT_SCALES, min_level: int = 3,
                    max_level: int = 7, positive_iou: float = 0.5,
                    sizes: Sequence[float] = tuple(np.arange(1.0, 8.01, 0.25)), seed: int = 0,
                    tolerance: float = 0.005) -> AnchorFit:
    """Anchors fitted to the boxes: aspect ratios from k-means, base size by best coverage.

    1. k-means (`kmeans_shapes`, `num_ratios * len(scales)` clusters) on the
       box shapes; the clusters' aspect ratios (h / w), sorted, are split into
       `num_ratios` groups, each giving its geometric mean (rounded to 0.05);
       ratios within 15 % of each other are merged (square crowns give one).
    2. For this ratio set and for the single ratio of the median box, every
       candidate `anchor_size` (in strides) is tried with the anchors placed
       as the detector places them. The fewest boxes below `positive_iou` wins
       (ties: higher mean best IoU); the single ratio is preferred when its
       uncovered share is within `tolerance` (a third of the anchors: a
       cheaper head and matching).
    Returns the winner's `AnchorFit`.
    """
    wh = _wh(boxes)
    k = max(1, min(len(wh), num_ratios * len(scales)))
    clusters = kmeans_shapes(wh, k, seed=seed)
    cluster_ratios = np.sort(clusters[:, 1] / clusters[:, 0])
    groups = [g for g in np.array_split(cluster_ratios, min(num_ratios, len(cluster_ratios))) if len(g)]
    ratios: list[float] = []
    for g in groups:
        r = max(0.05, round(float(np.exp(np.mean(np.log(g)))) * 20) / 20)
        if not ratios or r > ratios[-1] * 1.15:
            ratios.append(r)
    single = [max(0.05, round(float(np.median(wh[:, 1] / wh[:, 0])) * 20) / 20)]

    def best(ratio_set):
        fits = [anchor_fit_report(boxes, s, scales, ratio_set, min_level, max_level, positive_iou) for s in sizes]
        return max(fits, key=lambda f: (-f.uncovered, f.mean_best_iou))

    several = best(ratios)
    one = best(single) if ratios != single else several
    return one if one.uncovered <= several.uncovered + tolerance else several
