"""Size, latency and COCO AP of a detector's TFLite exports, per precision, against Keras.

Converts the model to every precision (`float32`, `float16`, `dynamic_int8`,
`int8` calibrated on training images), runs each with the LiteRT interpreter
(batch 1, fixed input size) and prints a table; `--output` gets the same as JSON.

    # the main job's model (ipg-train synthetic_retinanet_cpu writes runs/synthetic_retinanet_cpu/)
    .venv/bin/python benchmarks/export_tflite.py --model runs/synthetic_retinanet_cpu
    # smoke run with an untrained tiny model (sizes and latency only; AP is meaningless)
    .venv/bin/python benchmarks/export_tflite.py --untrained-tiny --eval-images 0

The image size and the data (calibration: training split; AP: validation split)
come from the run's `config.yaml` or `--config`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as a plain script from anywhere
    sys.path.insert(0, str(REPO))

PRECISIONS = ("float32", "float16", "dynamic_int8", "int8")


def _latency_ms(fn: Callable[[np.ndarray], Any], image: np.ndarray, runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(image)
        times.append((time.perf_counter() - start) * 1000.0)
    t = np.asarray(times)
    return {"mean_ms": float(t.mean()), "p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90))}


def _coco_ap(predict, batches, num_classes: int) -> dict[str, float | None]:
    if not batches:
        return {"AP": None, "AP50": None}
    from ipg_keras.evaluation import COCOEvaluator

    evaluator = COCOEvaluator(num_classes=num_classes)
    for images, targets in batches:
        evaluator.update(targets, predict(images))
    metrics = evaluator.result()
    return {"AP": float(metrics["AP"]), "AP50": float(metrics["AP50"])}


def _load(args) -> tuple[Any, Any, Path | None]:
    """(model, config or None, model file or None)."""
    if args.untrained_tiny:
        from ipg_keras.models import IPGRetinaNet

        model = IPGRetinaNet(
            num_classes=5, backbone="resnet18", fpn_channels=16, head_width=16, head_depth=1,
            backbone_kwargs={"width_multiplier": 0.25, "ipg_width": 8},
        )
        cfg = None
        if args.config:
            from ipg_keras.training.config import load_config

            cfg = load_config(args.config, args.overrides)
        return model, cfg, None
    from ipg_keras.cli.export import _find_config, resolve_model_path
    from ipg_keras.export.runtime import load_keras_model

    path = resolve_model_path(args.model)
    cfg = _find_config(path, args.config)
    if cfg is not None and args.overrides:
        from ipg_keras.training.config import load_config

        cfg = load_config(args.config or path.parent / "config.yaml", args.overrides)
    return load_keras_model(path), cfg, path


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tensorflow as tf

    from ipg_keras.export import TFLiteDetector, export_tflite

    model, cfg, model_path = _load(args)
    size = args.image_size or (cfg.data.image_size if cfg is not None else 128)
    data_cfg = cfg
    if data_cfg is None:
        from ipg_keras.training.config import load_config

        data_cfg = load_config("synthetic_retinanet_cpu", [f"data.image_size={size}"])
    from ipg_keras.data import make_batches
    from ipg_keras.training.train import build_datasets

    train, val, _ = build_datasets(data_cfg)
    batches = []
    if args.eval_images > 0:
        ds = make_batches(val.take(args.eval_images), 8, size)
        batches = [(x.numpy(), {k: v.numpy() for k, v in y.items()}) for x, y in ds]
    image = batches[0][0][:1] if batches else np.random.default_rng(0).uniform(0, 255, (1, size, size, 3))
    image = np.round(image).astype(np.float32)

    num_classes = int(getattr(model, "num_classes", 0))
    keras_fn = lambda x: model.predict_on_batch(x)  # noqa: E731
    rows = [{
        "format": "keras", "precision": "float32",
        "size_mb": round(model_path.stat().st_size / 2**20, 3) if model_path else None,
        **_latency_ms(keras_fn, image, args.runs, args.warmup),
        **_coco_ap(keras_fn, batches, num_classes),
    }]
    keras_ap = rows[0]["AP"]
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions:
            start = time.perf_counter()
            path = export_tflite(
                model, Path(tmp) / f"model_{precision}.tflite", precision=precision, image_size=size,
                representative_dataset=train if precision == "int8" else None,
                num_calibration_images=args.calibration_images,
            )
            convert_s = time.perf_counter() - start
            detector = TFLiteDetector(path, num_threads=args.threads)
            rows.append({
                "format": "tflite", "precision": precision, "size_mb": round(path.stat().st_size / 2**20, 3),
                **_latency_ms(detector, image, args.runs, args.warmup),
                **_coco_ap(detector, batches, num_classes), "convert_s": round(convert_s, 1),
            })
    for row in rows:
        row["AP_delta"] = None if row["AP"] is None or keras_ap is None else row["AP"] - keras_ap
    return {
        "model": str(model_path) if model_path else "untrained tiny IPG-RetinaNet",
        "image_size": size, "eval_images": sum(len(b[0]) for b in batches), "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "tensorflow": tf.__version__,
        "rows": rows,
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"model: {result['model']}  input: {result['image_size']}x{result['image_size']}  "
          f"eval images: {result['eval_images']}  threads: {result['threads']}")
    header = (f"{'format':<8}{'precision':<14}{'size MB':>9}{'mean ms':>10}{'p50 ms':>9}{'p90 ms':>9}"
              f"{'AP':>8}{'dAP':>8}{'AP50':>8}")
    print(header)
    print("-" * len(header))

    def fmt(v, spec):
        width = int("".join(c for c in spec.split(".")[0] if c.isdigit()))
        return format(v, spec) if v is not None else "-".rjust(width)

    for r in result["rows"]:
        print(f"{r['format']:<8}{r['precision']:<14}{fmt(r['size_mb'], '>9.3f')}{r['mean_ms']:>10.2f}"
              f"{r['p50_ms']:>9.2f}{r['p90_ms']:>9.2f}{fmt(r['AP'], '>8.4f')}{fmt(r['AP_delta'], '>+8.4f')}"
              f"{fmt(r['AP50'], '>8.4f')}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/synthetic_retinanet_cpu", help=".keras file or ipg-train run folder")
    parser.add_argument("--untrained-tiny", action="store_true", help="benchmark an untrained tiny model instead")
    parser.add_argument("--config", default=None, help="training config (default: the run's config.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.num_val_images=50 (repeatable)")
    parser.add_argument("--image-size", type=int, default=None, help="input size (default: the config's)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--eval-images", type=int, default=100, help="validation images for AP (0: skip AP)")
    parser.add_argument("--calibration-images", type=int, default=100)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="LiteRT interpreter threads")
    parser.add_argument("--output", default="runs/benchmarks/export_tflite.json", help="JSON results file")
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"export_tflite benchmark: {error}") from None
    print_table(result)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
