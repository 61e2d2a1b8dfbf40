"""`ipg-export MODEL --format saved_model|tflite --output PATH`: export a trained detector.

MODEL is a `.keras` file or a training run folder holding `model.keras` (what
`ipg-train` writes). The export size defaults to the training image size of the
run's `config.yaml` (or `--config`), else the model's `image_size`, else 512.
`--precision int8` calibrates on `--num-calibration` training images drawn from
that config's training data, or from the image files of `--calibration-dir`.
`--runtime mediapipe` writes a TFLite model that MediaPipe Tasks' ObjectDetector
(Android, iOS, web) loads as it is: metadata and the label map inside; the labels
are `--class-names`, else the class names of the config's training data, else
numbered (with a warning). Needs `pip install "ipg-keras[mobile]"`.

Examples:
    ipg-export runs/synthetic_retinanet_cpu --format saved_model --output saved_models/ipg/1
    ipg-export runs/synthetic_retinanet_cpu --format tflite --precision int8 --output ipg_int8.tflite
    ipg-export runs/synthetic_retinanet_cpu --format tflite --runtime mediapipe --output ipg_mediapipe.tflite
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ipg_keras.utils.sizes import parse_image_size

FORMATS = ("saved_model", "tflite")
PRECISIONS = ("float32", "float16", "dynamic_int8", "int8")
RUNTIMES = ("litert", "mediapipe")


def resolve_model_path(path: str | Path) -> Path:
    """A `.keras` file, or `model.keras` / `last.keras` inside a run folder."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.keras", "last.keras"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} is a folder without model.keras or last.keras; pass a .keras file.")
    if not path.is_file():
        raise FileNotFoundError(f"Model {path} does not exist; pass a .keras file or an ipg-train run folder.")
    return path


def _find_config(model_path: Path, config: str | None):
    """The training config: `--config`, else `config.yaml` next to the model (ipg-train run folder)."""
    from ipg_keras.training.config import load_config

    if config is not None:
        return load_config(config)
    candidate = model_path.parent / "config.yaml"
    return load_config(candidate) if candidate.is_file() else None


def calibration_source(cfg, calibration_dir: str | None) -> Any:
    """Images for int8 calibration: a folder of image files, else the config's training data.

    Both are read by the package's one image reader (`read_image`, directly or in the
    loaders), so the calibration sees the pixels training and prediction see.
    """
    if calibration_dir is not None:
        from ipg_keras.data.image_files import find_image_files
        from ipg_keras.data.image_io import read_image

        files, _ = find_image_files([calibration_dir])
        if not files:
            raise FileNotFoundError(f"--calibration-dir {calibration_dir} holds no image files.")

        def images():
            for f in files:
                try:
                    yield read_image(f)
                except ValueError as error:  # one unreadable file should not stop the export
                    print(f"ipg-export: skipping calibration image: {error}", file=sys.stderr)

        return images
    if cfg is None:
        raise ValueError(
            "--precision int8 needs calibration images: pass --config (the training config, whose training "
            "data is used) or --calibration-dir DIR (a folder of representative images)."
        )
    from ipg_keras.training.train import build_datasets

    train, _, _ = build_datasets(cfg)
    return train.shuffle(256, seed=cfg.train.seed)


def config_class_names(cfg) -> list[str] | None:
    """Class names of the config's training data (`build_datasets`), None if there is no config or no data here."""
    if cfg is None:
        return None
    if cfg.data.class_names:
        return list(cfg.data.class_names)
    from ipg_keras.training.train import build_datasets

    try:
        _, _, names = build_datasets(cfg)
    except Exception as error:  # noqa: BLE001 - data missing on this machine: labels are numbered instead
        print(f"ipg-export: cannot read the class names of {cfg.name}'s training data ({error}); "
              "pass --class-names", file=sys.stderr)
        return None
    return list(names) if names else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ipg-export", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("model", help=".keras file or ipg-train run folder")
    parser.add_argument("--format", choices=FORMATS, default="saved_model")
    parser.add_argument("--output", required=True, help="SavedModel folder, or .tflite file")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32", help="TFLite only")
    parser.add_argument("--runtime", choices=RUNTIMES, default="litert",
                        help="TFLite only: litert (our signature, LiteRT interpreter) or mediapipe (MediaPipe Tasks "
                             "ObjectDetector: its output contract, metadata and label map inside)")
    parser.add_argument("--class-names", default=None, help="comma-separated class names, in class order "
                        "(default: the training config's)")
    parser.add_argument("--image-size", type=parse_image_size, default=None, help="N or H,W (default: training size)")
    parser.add_argument("--config", default=None, help="training config (name or YAML) for image size and calibration")
    parser.add_argument("--calibration-dir", default=None, help="folder of images to calibrate int8 with")
    parser.add_argument("--num-calibration", type=int, default=100, help="int8 calibration images (default 100)")
    parser.add_argument("--calibration-percentile", default="99.99",
                        help="int8 activation ranges cover this percentile of calibration values; 'minmax' "
                             "keeps TFLite's min/max ranges (default 99.99)")
    parser.add_argument("--max-pixels", type=int, default=None, help="SavedModel serving_bytes pixel limit")
    parser.add_argument("--max-batch-size", type=int, default=None, help="SavedModel serving_bytes images per request")
    args = parser.parse_args(argv)
    if args.format == "saved_model" and args.precision != "float32":
        parser.error("--precision applies to --format tflite only")
    if args.format == "saved_model" and args.runtime != "litert":
        parser.error("--runtime applies to --format tflite only")

    try:
        model_path = resolve_model_path(args.model)
        cfg = _find_config(model_path, args.config)
        source = None
        if args.format == "tflite" and args.precision == "int8":
            source = calibration_source(cfg, args.calibration_dir)  # fails fast, before loading the model
        from ipg_keras.export.runtime import load_keras_model

        model = load_keras_model(model_path)
        image_size = args.image_size or (
            (cfg.data.image_size, cfg.data.image_size) if cfg is not None else None
        )
        if args.format == "saved_model":
            from ipg_keras.export import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_PIXELS, export_saved_model

            out = export_saved_model(model, args.output, image_size=image_size,
                                     max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
                                     max_batch_size=args.max_batch_size or DEFAULT_MAX_BATCH_SIZE)
        else:
            from ipg_keras.export.tflite import export_tflite

            percentile = None if args.calibration_percentile.lower() == "minmax" else float(args.calibration_percentile)
            class_names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
            if class_names is None and args.runtime == "mediapipe":
                class_names = config_class_names(cfg)
            out = export_tflite(model, args.output, precision=args.precision, image_size=image_size,
                                representative_dataset=source, num_calibration_images=args.num_calibration,
                                calibration_percentile=percentile, runtime=args.runtime, class_names=class_names)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as error:
        print(f"ipg-export: {error}", file=sys.stderr)
        return 2
    from ipg_keras.export import read_metadata

    print(json.dumps({"output": str(out), **(read_metadata(out) or {})}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
