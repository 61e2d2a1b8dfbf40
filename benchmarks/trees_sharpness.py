"""How sharp are the trees train and val plots? High-frequency energy inside the crowns, and the blur that matches.

    python benchmarks/trees_sharpness.py
    python benchmarks/trees_sharpness.py --sigmas 0.5,0.7,1.0 --output benchmarks/results/trees_sharpness.json

For each Pascal VOC folder, the mean absolute Laplacian (4-neighbour, of the
grey image, 0..255 units) inside every annotated box; the median over the
boxes is the plot's sharpness. The train image is then blurred by
`ipg_keras.data.random_blur` (the training augmentation `data.blur`, at fixed
sigma) to find which sigma brings it to the val plot's value: the evidence
behind the blur augmentation of the trees recipe (RESULTS "Trees recipe").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine_info, quiet_tf, write_json  # noqa: E402

TREES = REPO.parent / "shared" / "data" / "trees"


def laplacian_energy(image: np.ndarray) -> np.ndarray:
    """|4-neighbour Laplacian| of the grey (channel mean) image, [H, W] (0 on the 1-pixel border)."""
    g = image.astype(np.float32).mean(-1)
    out = np.zeros_like(g)
    out[1:-1, 1:-1] = np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])
    return out


def box_sharpness(image: np.ndarray, boxes: np.ndarray) -> float:
    """Median over the xyxy pixel boxes of the mean Laplacian energy inside each box."""
    energy = laplacian_energy(image)
    values = [energy[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))].mean()
              for x1, y1, x2, y2 in boxes if x2 - x1 >= 1 and y2 - y1 >= 1]
    return float(np.median(values))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default=str(TREES / "train"), help="Pascal VOC folder of the training plot")
    parser.add_argument("--val", default=str(TREES / "val"), help="Pascal VOC folder of the validation plot")
    parser.add_argument("--sigmas", default="0.3,0.5,0.7,1.0,1.5", help="blurs of the train image to measure")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "trees_sharpness.json"))
    args = parser.parse_args(argv)
    quiet_tf()
    import tensorflow as tf

    from ipg_keras.data import load_ground_truth, random_blur
    from ipg_keras.data.image_files import find_image_files
    from ipg_keras.data.image_io import read_image

    def plot(folder):
        files, _ = find_image_files([folder], False)
        truth = load_ground_truth(folder, files, None)
        return [(read_image(f), truth.records[f].boxes) for f in files]

    plots = {"train": plot(args.train), "val": plot(args.val)}
    rows = []
    for name, images in plots.items():
        value = float(np.median([box_sharpness(image, boxes) for image, boxes in images]))
        rows.append({"image": name, "sigma": 0.0, "sharpness": round(value, 2)})
    train = plots["train"]
    for sigma in [float(s) for s in args.sigmas.split(",") if s]:
        value = float(np.median([box_sharpness(random_blur(tf.constant(image, tf.float32), [0, 0], 1.0,
                                                           (sigma, sigma)).numpy(), boxes)
                                 for image, boxes in train]))
        rows.append({"image": "train blurred", "sigma": sigma, "sharpness": round(value, 2)})
    val = rows[1]["sharpness"]
    for row in rows:
        ratio = f" ({row['sharpness'] / val:.2f}x val)" if val > 0 else ""
        print(f"{row['image']:>14} sigma {row['sigma']:.1f}: Laplacian energy in the crowns {row['sharpness']:.1f}"
              + ratio)
    write_json(args.output, {"machine": machine_info(), "train": args.train, "val": args.val, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
