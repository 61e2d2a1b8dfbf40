"""Trees recipe search: named variants of `trees_retinanet`, each one resumable `ipg-train` run, and their table.

    python benchmarks/trees_recipe.py                    # train the missing variants in order, then print the table
    python benchmarks/trees_recipe.py --only P2_min2     # one variant
    python benchmarks/trees_recipe.py --table            # only the table of what has finished
    python benchmarks/trees_recipe.py --step-times       # s/step of every variant on one batch, interleaved

Each variant is `ipg-train trees_retinanet` (or its `CONFIGS` entry) `--output runs/trees_recipe/<name> --set ...`
(a killed run resumes from its checkpoint when started again; a finished one is
skipped). The table gives, per variant, its overrides, the best and the final val
AP / AP50 / AP75 / APs of the val-AP curve (sliced inference of the whole val
image, `history.jsonl`) and the training time, so the next person does not repeat
what was tried. Finished runs' curves and metrics are copied to
`benchmarks/results/trees/<name>/` (committed; weights are not).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, ipg_train  # noqa: E402

CONFIG = "trees_retinanet"
# In the order they are worth trying (RESULTS.md "Trees recipe" says why); each on top of the config.
VARIANTS: dict[str, list[str]] = {
    "recipe": [],
    "P2_min2": ["model.min_level=2", "train.max_minutes=150"],
    "head4": ["model.head_depth=4"],
    "width05_fpn128": ["model.width_multiplier=0.5", "model.fpn_channels=128", "model.head_width=128"],
    "iou04": ["model.positive_iou=0.4", "model.negative_iou=0.3"],
    # Start from the main job's synthetic model (the IPG study's synthetic/ipg/seed0 unit reproduces it
    # exactly: `python benchmarks/ipg_study.py --phases headline-synthetic --seeds 0`).
    # Zoom: 192 or 256 px windows resized to the 384 px input (2x / 1.5x), the val image sliced alike.
    "zoom2": ["data.tile_size=192"],
    "zoom15": ["data.tile_size=256"],
    # The recipe fits its train image (AP50 0.77 there) far better than the val plot (0.40): regularise.
    "adamw005": ["train.optimizer=adamw", "train.weight_decay=0.05"],
    # Stronger photometric and scale jitter (another plot: other light, denser canopy), with the TTA evaluation;
    # adopted: these are trees_retinanet.yaml's values since (AP50 0.495 vs 0.431).
    "strong_aug": ["data.scale_range=[0.5,2.0]", "data.brightness=0.3", "data.contrast=0.45", "data.saturation=0.45",
                   "data.hue=0.08", "data.channel_gain=0.25"],
    # On top of strong_aug (the config since): strong jitter may need a longer schedule, or more capacity now
    # that it regularises (width 0.5 did not help with the mild jitter: C_w05).
    "long5000": ["train.epochs=250"],
    "width05": ["model.width_multiplier=0.5"],
    # The val curve swings by +-0.04 AP50 between evaluations 200 steps apart: average the weights.
    "ema998": ["train.ema=0.998"],
    # AP75 (0.06) is what holds AP down: weigh the GIoU box loss twice (as ATSS / GFL configs do).
    "giou2": ["model.box_loss_weight=2.0"],
    # The val plot is softer than the train plot (its crowns carry a third of the high-frequency energy, as the
    # train image blurred by sigma ~0.6 px: benchmarks/trees_sharpness.py): blur half of the training windows.
    "blur": ["data.blur=0.5", "data.blur_sigma=[0.3,1.5]"],
    # Learning rate and warm-up of Adam (1e-3, 50 steps, cosine to 0 since recipe A), measured on the config.
    "lr2e3": ["train.learning_rate=0.002"],
    "lr5e4": ["train.learning_rate=0.0005"],
    "warmup300": ["train.warmup_steps=300"],
    # Ranking, not recall, holds AP down: over all 1000 detections 81 % of the val crowns have a box at IoU >= 0.5
    # (AP50 0.55), and the matched boxes' median IoU is 0.64. Train the score toward the box's IoU (GFL's quality
    # focal loss), so that loose and duplicate boxes score below well-placed ones.
    "qfl": ["model.cls_loss=quality_focal"],
    "atss": ["model.matcher=atss"],
    "qfl_seed1": ["model.cls_loss=quality_focal", "train.seed=1"],
    # Five models fused score like one (benchmarks/trees_ensemble.py): the errors are bias, what the sparse train
    # plot teaches. Copy-paste the windows' own crowns onto their background (shadow, grass, next to other crowns),
    # as Kisantal et al. 2019 do for small objects: denser scenes than the train plot has.
    "copy_paste": ["data.copy_paste=0.5"],
    # The other way from zoom2: 512 px windows shrunk to the 384 px input (0.75x), more canopy context per window.
    "zoom075": ["data.tile_size=512"],
    # The config itself with another seed: how far apart two runs of the same recipe land.
    "seed1": ["train.seed=1"],
    # Depth, and for ResNet-50 the bottleneck's 4x wider stage outputs (C3: 128 channels at width 0.25, against 32 for
    # ResNet-18): the small crowns are missed even on the train plot, which points at the features at P3.
    "r34": ["model.backbone=resnet34"],
    "r50": ["model.backbone=resnet50"],
    "lr2e3_width05": ["train.learning_rate=0.002", "model.width_multiplier=0.5"],
    "init_synth": ["train.init_from=benchmarks/results/ipg_study/study/runs/synthetic/ipg/seed0/model.keras"],
    # The two-stage detector on the same data, schedule and evaluation (its own config, trees_faster_rcnn.yaml):
    # AP75 and ranking are what hold AP down, and a RoIAlign box head re-scores and re-fits each proposal on
    # features pooled from the box itself. 1.22x the config's step.
    "faster_rcnn": [],
}
# Variants trained from another config than CONFIG (their overrides apply to it).
CONFIGS: dict[str, str] = {"faster_rcnn": "trees_faster_rcnn"}
KEEP = ("config.yaml", "history.csv", "metrics.json", "training_curves.png")


def run_variant(name: str, out: Path) -> int:
    return ipg_train(CONFIGS.get(name, CONFIG), out / name, VARIANTS[name])


def keep_results(run: Path, keep: Path) -> None:
    """Copies a finished run's curves and metrics (`KEEP`, not its weights) into `keep`, to be committed."""
    keep.mkdir(parents=True, exist_ok=True)
    for file in KEEP:
        if (run / file).is_file():
            shutil.copy2(run / file, keep / file)


def finished(folder: Path) -> dict | None:
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    return metrics if metrics.get("steps_completed") == metrics.get("total_steps") else None


def describe(name: str) -> str:
    """A variant's overrides, or which config it is when it has none."""
    config = "(the config)" if name not in CONFIGS else f"({CONFIGS[name]})"
    return " ".join(VARIANTS[name]) or config


def table(out: Path) -> str:
    rows = ["| variant | overrides | steps | best val AP / AP50 (step) | final AP / AP50 / AP75 / APs | training s |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name in VARIANTS:
        metrics = finished(out / name)
        if metrics is None:
            rows.append(f"| {name} | {describe(name)} | not run | - | - | - |")
            continue
        curve = [json.loads(line) for line in (out / name / "history.jsonl").read_text().splitlines()]
        curve = [r for r in curve if r.get("val_AP") is not None]
        best = max(curve, key=lambda r: r["val_AP50"]) if curve else None
        rows.append(
            f"| {name} | {describe(name)} | {metrics['steps_completed']} | "
            + (f"{best['val_AP']:.3f} / {best['val_AP50']:.3f} ({best['steps_done']})" if best else "-")
            + f" | {metrics['AP']:.3f} / {metrics['AP50']:.3f} / {metrics['AP75']:.3f} / {metrics['APs']:.3f}"
            f" | {metrics['train_seconds']:.0f} |"
        )
    return "\n".join(rows)


def step_times(names: list[str], rounds: int = 4) -> dict[str, float]:
    """Median seconds of one `train_on_batch` per variant, on the same recipe batch, interleaved.

    What a variant costs per step (run it on an otherwise idle machine), so its
    schedule can be sized to the 30-minute budget before training it.
    """
    import keras

    from ipg_keras.training import load_config
    from ipg_keras.training import train as T

    base = load_config(CONFIG)
    train, _, _ = T.build_datasets(base)
    x, y = next(iter(T.batch_train(base, train)))
    models = {}
    for name in names:
        keras.utils.set_random_seed(0)
        model = T.build_model(load_config(CONFIGS.get(name, CONFIG), VARIANTS[name]), 1)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        for _ in range(2):  # trace and warm up
            model.train_on_batch(x, y)
        models[name] = model
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help=f"comma-separated variants of {list(VARIANTS)}")
    parser.add_argument("--table", action="store_true", help="print the table of finished variants only")
    parser.add_argument("--step-times", action="store_true", help="time one training step of each variant")
    parser.add_argument("--out", default=str(REPO / "runs" / "trees_recipe"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(VARIANTS)
    for name in names:
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}; use {', '.join(VARIANTS)}")
    if args.step_times:
        medians = step_times(names)
        for name, seconds in medians.items():
            print(f"{name}: {seconds:.3f} s/step ({seconds / medians[names[0]]:.2f}x {names[0]})")
        return 0
    failed = 0
    for name in [] if args.table else names:
        if finished(out / name):
            print(f"skip {name} (finished)", flush=True)
            continue
        if run_variant(name, out) != 0:
            failed += 1
            continue
        keep_results(out / name, REPO / "benchmarks" / "results" / "trees" / name)
    print(table(out))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
