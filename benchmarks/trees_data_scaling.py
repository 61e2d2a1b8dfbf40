"""Trees learning curve: the config trained on part of the train plot, to see what more labelled canopy would buy.

    python benchmarks/trees_data_scaling.py --part top          # the top half of the train image (294 of 574 crowns)
    python benchmarks/trees_data_scaling.py --part top --prepare-only --out /tmp/x   # only write the cropped VOC folder

Every lever of the recipe family lands at val AP 0.15-0.18 and five models fused score like one
(`benchmarks/RESULTS.md`, "Trees recipe"): the errors are what one sparse train plot teaches about another.
If so, val AP should fall when the recipe sees less of that plot, and the slope says how much more labelled
canopy AP 0.20 would take. Each part is a window of the train image written as its own Pascal VOC folder
(image cropped with PIL; boxes shifted into the window and clipped to it, kept when at least half of their
area is inside: the trees config's tiling rule, `ipg_keras.data.boxes.crop_boxes`), then
`ipg-train trees_retinanet --set data.train_annotations=FOLDER` with everything else the config's (schedule, augmentation, evaluation on the whole val plot). Runs resume from
their checkpoints and finished ones are skipped; curves and metrics are copied to
`benchmarks/results/trees/data_<part>/` like `benchmarks/trees_recipe.py`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, ipg_train  # noqa: E402
from trees_recipe import finished, keep_results  # noqa: E402

TRAIN = REPO.parent / "shared" / "data" / "trees" / "train"
# Windows of the train image as fractions (x1, y1, x2, y2) of its width and height.
PARTS = {
    "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 1.0),
    "top_left": (0.0, 0.0, 0.5, 0.5),
}


def crop_voc(xml_path: Path, window: tuple[float, float, float, float], out: Path,
             min_visible: float = 0.5) -> dict:
    """Writes the window of one VOC-annotated image as a new VOC folder `out` (image + XML).

    `window` is (x1, y1, x2, y2) in fractions of the image's width and height. Boxes
    (xyxy pixels as written) are shifted into the window and clipped to it; a box is
    kept when at least `min_visible` of its area lies inside. Returns
    {"window": [x1, y1, x2, y2] pixels, "boxes": kept, "dropped": cut off}.
    Raises FileNotFoundError when the XML's image is not next to it.
    """
    import numpy as np
    from PIL import Image

    from ipg_keras.data.boxes import crop_boxes
    from ipg_keras.data.pascal_voc import parse_voc_xml

    info = parse_voc_xml(xml_path)
    image_path = xml_path.parent / (info["filename"] or "")
    if not image_path.is_file():
        raise FileNotFoundError(f"{xml_path}: its image {image_path} is missing; put it next to the XML")
    with Image.open(image_path) as image:
        width, height = image.size
        x1, y1 = round(window[0] * width), round(window[1] * height)
        x2, y2 = round(window[2] * width), round(window[3] * height)
        out.mkdir(parents=True, exist_ok=True)
        image.crop((x1, y1, x2, y2)).save(out / image_path.name)
    root = ET.parse(xml_path).getroot()
    root.find("size/width").text, root.find("size/height").text = str(x2 - x1), str(y2 - y1)
    objects = root.findall("object")
    boxes = np.asarray([[float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
                        for o in objects], np.float32).reshape(-1, 4)
    # The package's rule for boxes cut by a tile (clip to the window, keep at >= min_visible of the area).
    cut = crop_boxes({"boxes": boxes, "index": np.arange(len(objects))}, x1, y1, x2 - x1, y2 - y1, min_visible)
    inside = dict(zip(cut["index"].numpy().tolist(), cut["boxes"].numpy().tolist()))
    for i, obj in enumerate(objects):
        if i not in inside:
            root.remove(obj)
            continue
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), inside[i]):
            obj.find(f"bndbox/{key}").text = f"{value:g}"
    ET.ElementTree(root).write(out / xml_path.name)
    return {"window": [x1, y1, x2, y2], "boxes": len(inside), "dropped": len(objects) - len(inside)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", required=True, choices=sorted(PARTS), help="window of the train image to train on")
    parser.add_argument("--train", default=str(TRAIN), help="the full train VOC folder (one image)")
    parser.add_argument("--out", default=str(REPO / "runs" / "trees_recipe"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "trees"),
                        help="where the finished run's curves and metrics are copied (data_<part>/)")
    parser.add_argument("--prepare-only", action="store_true", help="write the cropped VOC folder, do not train")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="further config overrides of the run")
    args = parser.parse_args(argv)
    xml_files = sorted(Path(args.train).glob("*.xml"))
    if len(xml_files) != 1:
        parser.error(f"--train {args.train}: expected the folder of one VOC-annotated image (one .xml), found "
                     f"{len(xml_files)}; point --train at the trees train folder")
    (xml_path,) = xml_files
    name = f"data_{args.part}"
    data = Path(args.out) / name / "train_data"
    part = crop_voc(xml_path, PARTS[args.part], data)
    print(f"{name}: window {part['window']} of {xml_path.name}: {part['boxes']} boxes kept, "
          f"{part['dropped']} cut off", flush=True)
    if args.prepare_only:
        return 0
    run = Path(args.out) / name / "run"
    if finished(run):
        print(f"skip {name} (finished)")
        return 0
    code = ipg_train("trees_retinanet", run, [f"data.train_annotations={data}", *args.set])
    if code != 0:
        return code
    keep = Path(args.results) / name
    keep_results(run, keep)
    (keep / "part.json").write_text(json.dumps(part, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
