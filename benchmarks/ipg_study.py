"""Does image pyramid guidance help small objects? Paired seeds, converged schedules, ablations.

    python benchmarks/ipg_study.py                               # the whole queue, in order (many hours on 2 CPU cores)
    python benchmarks/ipg_study.py --phases headline-synthetic   # one phase
    python benchmarks/ipg_study.py --max-minutes 13              # a batch: stops in time, resumes next call
    python benchmarks/ipg_study.py --report                      # tables and plots from the finished runs only
    python benchmarks/ipg_study.py --quick                       # CI smoke test (numbers mean nothing)

Design (issue 16). Every (dataset, variant, seed) is one unit: an `ipg-train`
run folder `<out>/<tag>/runs/<dataset>/<variant>/seed<k>/` trained by
`ipg_keras.training` in a subprocess, so a killed unit resumes from its last
checkpoint (saved every epoch) and a finished one (metrics.json at all steps +
analysis.json) is skipped. `unit.json` pins the unit's settings; a folder
made with other settings stops the study with its name instead of mixing runs.

* Datasets and schedules (fixed in steps; `train.max_minutes` is only a guard):
  - `synthetic`: the main job, `training/configs/synthetic_retinanet_cpu.yaml`
    (IPG-RetinaNet, ResNet-18 x0.25, 2000 train / 200 val images of 256 px,
    8 epochs x 250 steps of batch 8 = 2000 steps), val AP after every epoch.
    The data are generated with data seed 0 whatever the run seed, so every
    arm and seed sees the same images; the run seed sets initialisation,
    shuffling and augmentation.
  - `trees`: `training/configs/trees_retinanet.yaml` (the trees recipe of
    issue 17; val AP of the whole val image by sliced inference).
* Variants: `baseline` (`model.ipg=false`), `ipg` (the package defaults of
  the config), and the ablations of what the paper leaves open
  (`../shared/design/ipg-net.md`): fusion mode, fusion initialisation,
  guided levels, transform width/depth, pyramid method (see VARIANTS).
* Phases, run in this order (`--phases`): `headline-synthetic` (ipg vs
  baseline, seeds 0-4), `headline-trees` (seeds 0-2), `ablation` (every
  variant, seeds 0-2 on synthetic; ipg/baseline seeds come from the
  headline), `confirm-trees` (the variant selected on synthetic validation,
  if it is not `ipg`, against the trees baseline seeds).
* Report (`<out>/<tag>/report.md`, `summary.json`, plots): mean ± std per arm,
  paired Δ vs baseline with 95 % t intervals for AP, AP50, APs, ARs, the
  ablation table with FLOPs and params, per-seed paired differences
  (`paired.png`), validation curves (`curves_<dataset>.png`), recall per object
  size and true positives per FPN level (`breakdown.png`; `breakdown_trees.png`
  by size only), and the selection /
  confirmation decision.

On a GPU machine the same command runs unchanged (`--max-minutes` keeps a
batch within its time; what is left resumes on the next call).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_report as report  # noqa: E402
from common import ipg_train, machine_info, quiet_tf, run_logged, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIGS = {"synthetic": "synthetic_retinanet_cpu", "trees": "trees_retinanet"}
# The study's own settings on top of each base config (no exports; a val-AP curve).
STUDY_OVERRIDES = {
    "synthetic": ["eval.every_n_epochs=1", "export.saved_model=false", "train.verbose=2"],
    "trees": ["export.saved_model=false", "train.verbose=2"],
}
# --quick: a few steps per unit, to test the machinery (CI).
QUICK_OVERRIDES = {
    "synthetic": ["data.num_train_images=16", "data.num_val_images=8", "train.epochs=2", "train.steps_per_epoch=2",
                  "train.batch_size=4", "train.warmup_steps=1", "eval.batch_size=4"],
    "trees": ["train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2", "train.warmup_steps=1",
              "eval.every_n_epochs=1"],
}
VARIANTS: dict[str, list[str]] = {
    "baseline": ["model.ipg=false"],
    "ipg": [],  # the config's IPG settings: concat fusion, zero-gamma init, C2-C5, width 16, depth 1, area
    "fusion_sum": ["model.fusion=sum"],
    "fusion_gated": ["model.fusion=gated"],
    "init_one": ["model.fusion_init=one"],
    "levels_c4c5": ["model.ipg_levels=[4,5]"],
    "levels_c2c3": ["model.ipg_levels=[2,3]"],
    "width_32": ["model.ipg_width=32"],
    "depth_2": ["model.ipg_depth=2"],
    "bilinear": ["model.pyramid_method=bilinear"],
}
ABLATIONS = [v for v in VARIANTS if v not in ("baseline",)]
NO_DEADLINE_GUARD = 24 * 60.0  # minutes: train.max_minutes of a unit when the study has no --max-minutes
PHASES = ("headline-synthetic", "headline-trees", "ablation", "confirm-trees")
PHASE_SEEDS = {"headline-synthetic": [0, 1, 2, 3, 4], "headline-trees": [0, 1, 2], "ablation": [0, 1, 2],
               "confirm-trees": [0, 1, 2]}


# ----------------------------------------------------------------------------- units
def unit_dir(root: Path, dataset: str, variant: str, seed: int) -> Path:
    return root / "runs" / dataset / variant / f"seed{seed}"


def unit_overrides(dataset: str, variant: str, seed: int, quick: bool) -> list[str]:
    """The `--set` keys of one unit (without the wall-clock guard, which may change between calls)."""
    return [*STUDY_OVERRIDES[dataset], *(QUICK_OVERRIDES[dataset] if quick else []), *VARIANTS[variant],
            f"train.seed={seed}"]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def is_trained(folder: Path) -> bool:
    metrics = read_json(folder / "metrics.json")
    return bool(metrics) and metrics.get("steps_completed") == metrics.get("total_steps")


def is_finished(folder: Path) -> bool:
    return is_trained(folder) and (folder / "analysis.json").is_file()


def pin_unit(folder: Path, identity: dict[str, Any]) -> None:
    """Writes unit.json, or checks that an existing one has the same settings."""
    path = folder / "unit.json"
    old = read_json(path)
    if old is not None and old != identity:
        raise SystemExit(
            f"{folder} holds a run with other settings ({json.dumps(old)}) than this study asks for "
            f"({json.dumps(identity)}): use another --tag, or delete that folder to redo it."
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, identity)


def train_unit(folder: Path, dataset: str, overrides: list[str], guard_minutes: float | None) -> int:
    """Runs (or resumes) `ipg-train` for one unit in a subprocess; its log is appended to train.log."""
    guard = [f"train.max_minutes={guard_minutes:.2f}"] if guard_minutes else []
    return ipg_train(BASE_CONFIGS[dataset], folder, overrides + guard, log=folder / "train.log")


# -------------------------------------------------------------------------- analysis
def _collect_synthetic(model, cfg):
    """Ground truth and detections (with FPN levels) of the synthetic val set."""
    import numpy as np

    from ipg_keras.training.train import batch_eval, build_datasets

    _, val, _ = build_datasets(cfg)
    ground_truths, detections, image_id = [], [], 0
    for images, targets in batch_eval(cfg, val):
        raw = model(images, training=False)
        out = {k: np.asarray(v) for k, v in model.decode_predictions(raw, images, return_levels=True).items()}
        for b in range(images.shape[0]):
            n = int(out["num_detections"][b])
            ground_truths.append({"image_id": image_id, "boxes": np.asarray(targets["boxes"][b]),
                                  "classes": np.asarray(targets["classes"][b]),
                                  "height": images.shape[1], "width": images.shape[2]})
            detections.append({"image_id": image_id, **{k: out[k][b, :n] for k in ("boxes", "scores", "classes",
                                                                                   "levels")}})
            image_id += 1
    return ground_truths, detections


def _collect_sliced(model, cfg):
    """Ground truth and sliced-inference detections of large val images (no FPN levels)."""
    import numpy as np

    from ipg_keras.inference import as_detector, predict_image
    from ipg_keras.training.train import build_datasets

    _, val, _ = build_datasets(cfg)
    detector = as_detector(model, image_size=cfg.data.tile_size)
    ground_truths, detections = [], []
    for image_id, element in enumerate(val.as_numpy_iterator()):
        image = element["images"]
        det = predict_image(detector, image, mode="slice", overlap=cfg.data.tile_overlap,
                            iou_threshold=cfg.model.nms_iou_threshold, max_detections=cfg.model.max_detections)
        bb = element["bounding_boxes"]
        ground_truths.append({"image_id": image_id, "boxes": bb["boxes"], "classes": bb["classes"],
                              "height": image.shape[0], "width": image.shape[1]})
        detections.append({"image_id": image_id, **{k: np.asarray(det[k]) for k in ("boxes", "scores", "classes")}})
    return ground_truths, detections


def analyze_unit_subprocess(folder: Path, dataset: str) -> dict[str, Any]:
    """`analyze_unit` in a fresh process (this script with `--analyze`), which reads the unit's config.yaml with
    the code on disk now: a study process running for hours must not parse a config written by a newer
    `ipg-train` with its older code (a new config key stopped the queue twice). Raises if it fails."""
    rc = run_logged([sys.executable, Path(__file__).resolve(), "--analyze", folder, "--dataset", dataset],
                    log=folder / "train.log")
    if rc != 0:
        raise RuntimeError(f"analysis of {folder} failed (exit {rc}); see {folder / 'train.log'}")
    return read_json(folder / "analysis.json")


def analyze_unit(folder: Path, dataset: str) -> dict[str, Any]:
    """Per object-size bucket AP/recall and (synthetic) true positives per FPN level; writes analysis.json."""
    import keras

    from ipg_keras.evaluation.breakdown import size_bucket_metrics, true_positives_by_level
    from ipg_keras.training.config import load_config

    cfg = load_config(str(folder / "config.yaml"))
    model = keras.saving.load_model(folder / "model.keras")
    collect = _collect_synthetic if dataset == "synthetic" else _collect_sliced
    ground_truths, detections = collect(model, cfg)
    limit = cfg.model.max_detections
    analysis = {"size_buckets": size_bucket_metrics(ground_truths, detections, max_detections=limit)}
    if dataset == "synthetic":
        analysis["tp_levels"] = true_positives_by_level(ground_truths, detections, max_detections=limit)
    write_json(folder / "analysis.json", analysis)
    return analysis


# ---------------------------------------------------------------------------- records
def read_run(folder: Path) -> dict[str, Any]:
    """The record of a finished unit: identity, metrics, validation curve and analysis."""
    unit = read_json(folder / "unit.json")
    metrics = read_json(folder / "metrics.json")
    curve: dict[str, list] = {"steps": [], "val_AP": [], "val_APs": [], "val_AP50": []}
    history = folder / "history.jsonl"
    if history.is_file():
        for line in history.read_text().splitlines():
            record = json.loads(line)
            if record.get("val_AP") is not None:
                curve["steps"].append(record["steps_done"])
                for k in ("val_AP", "val_APs", "val_AP50"):
                    curve[k].append(record.get(k, float("nan")))
    return {**{k: unit[k] for k in ("dataset", "variant", "seed")}, "metrics": metrics, "curve": curve,
            "analysis": read_json(folder / "analysis.json"), "train_seconds": metrics.get("train_seconds"),
            "steps": metrics.get("steps_completed"), "folder": str(folder)}


def finished_runs(root: Path) -> list[dict[str, Any]]:
    return [read_run(p.parent) for p in sorted((root / "runs").glob("*/*/seed*/unit.json")) if is_finished(p.parent)]


def variant_costs(root: Path, quick: bool, variants) -> dict[str, dict[str, Any]]:
    """GFLOPs (one image, forward) and params of synthetic `variants`; cached in costs.json."""
    path = root / "costs.json"
    costs = read_json(path) or {}
    missing = [v for v in VARIANTS if v in set(variants) and v not in costs]
    if not missing:
        return costs
    import tensorflow as tf

    from common import count_flops
    from ipg_keras.training.config import load_config
    from ipg_keras.training.train import build_model

    for variant in missing:
        cfg = load_config(BASE_CONFIGS["synthetic"], unit_overrides("synthetic", variant, 0, quick))
        model = build_model(cfg, 5)
        size = cfg.data.image_size
        model(tf.zeros([1, size, size, 3]), training=False)
        flops = count_flops(lambda x: model(x, training=False), tf.TensorSpec([1, size, size, 3], tf.float32))
        costs[variant] = {"gflops": flops / 1e9, "params": int(model.count_params()), "image_size": size}
    write_json(path, costs)
    return costs


# ------------------------------------------------------------------------------ queue
def phase_units(phase: str, summary: dict[str, Any], seeds: list[int] | None,
                variants: list[str] | None) -> list[tuple[str, str, int]]:
    """The (dataset, variant, seed) units of a phase, ordered so that pairs complete seed by seed."""
    seed_list = seeds if seeds is not None else PHASE_SEEDS[phase]
    if phase == "headline-synthetic":
        dataset, arms = "synthetic", ["ipg", "baseline"]
    elif phase == "headline-trees":
        dataset, arms = "trees", ["ipg", "baseline"]
    elif phase == "ablation":
        dataset, arms = "synthetic", ["baseline", *ABLATIONS]
    else:  # confirm-trees: the variant picked on synthetic validation, if it is not the default
        selected = report.select_variant(summary, ABLATIONS)["variant"]
        if selected in (None, "ipg"):
            return []
        dataset, arms = "trees", [selected, "baseline"]
    if variants is not None:
        arms = [a for a in arms if a in variants]
    return [(dataset, arm, seed) for seed in seed_list for arm in arms]


def write_report(root: Path, tag: str, quick: bool) -> dict[str, Any]:
    runs = finished_runs(root)
    summary = report.summarize(r for r in runs)
    costs = variant_costs(root, quick, {r["variant"] for r in runs if r["dataset"] == "synthetic"})
    selection = report.select_variant(summary, ABLATIONS)
    decision = None
    if selection["variant"]:
        decision = report.confirmation(summary, selection["variant"])
    title = f"IPG study ({tag}{': smoke test, meaningless numbers' if quick else ''})"
    text = [f"# {title}", "", f"{len(runs)} finished runs.", "", "## Arms", "", report.arms_table(summary), "",
            "## Paired differences against ipg=False (same seed)", "", report.paired_table(summary), "",
            "## Ablations (synthetic)", "", report.ablation_table(summary, costs), "",
            *[line for dataset in sorted({r["dataset"] for r in runs}) for line in (
                f"## Where IPG helps or hurts: {dataset}, per object size (ipg vs ipg=False)", "",
                report.size_table(runs, dataset), "")],
            "## Selection and confirmation", "", f"- selected on synthetic validation: {selection['variant']} "
            f"({selection['reason']})"]
    if decision:
        text.append(f"- confirmation on trees: {decision['reason']}")
    (root / "report.md").write_text("\n".join(text) + "\n")
    write_json(root / "summary.json", {"summary": summary, "costs": costs, "selection": selection,
                                       "confirmation": decision, "runs": runs})
    if runs:
        report.plot_paired(summary, root / "paired.png", variants=["ipg"], title=title)
        report.plot_ablation(summary, root / "ablation.png")
        for dataset in sorted({r["dataset"] for r in runs}):
            report.plot_curves(runs, root / f"curves_{dataset}.png", dataset)
        report.plot_breakdown(runs, root / "breakdown.png")
        if any(r["dataset"] == "trees" for r in runs):
            report.plot_breakdown(runs, root / "breakdown_trees.png", dataset="trees")
    print("\n".join(text), flush=True)
    return summary


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, in order; of {PHASES}")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds for every phase (default per phase)")
    parser.add_argument("--variants", default=None, help=f"only these variants, of {list(VARIANTS)}")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop within this many minutes (the running unit checkpoints; rerun to resume)")
    parser.add_argument("--max-runs", type=int, default=None, help="train at most this many units, then report")
    parser.add_argument("--quick", action="store_true", help="smoke test: a few steps per unit (numbers meaningless)")
    parser.add_argument("--report", action="store_true", help="only write the report from the finished runs")
    parser.add_argument("--tag", default=None, help="results subfolder (default: study, or quick with --quick)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ipg_study"))
    parser.add_argument("--analyze", default=None, help=argparse.SUPPRESS)  # one unit folder (the queue's subprocess)
    parser.add_argument("--dataset", default=None, choices=sorted(BASE_CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    for phase in args.phases:
        if phase not in PHASES:
            parser.error(f"unknown phase {phase!r}; use {', '.join(PHASES)}")
    args.seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    args.variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    for v in args.variants or []:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}; use {', '.join(VARIANTS)}")
    args.tag = args.tag or ("quick" if args.quick else "study")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_tf()
    if args.analyze:
        analysis = analyze_unit(Path(args.analyze), args.dataset)
        print(f"analysed {args.analyze}: {len(analysis['size_buckets'])} size buckets", flush=True)
        return 0
    root = Path(args.out) / args.tag
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "machine.json", machine_info())
    deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else None
    trained = failed = 0
    stop = args.report
    for phase in args.phases:
        if stop:
            break
        summary = report.summarize(finished_runs(root))
        for dataset, variant, seed in phase_units(phase, summary, args.seeds, args.variants):
            folder = unit_dir(root, dataset, variant, seed)
            overrides = unit_overrides(dataset, variant, seed, args.quick)
            pin_unit(folder, {"dataset": dataset, "variant": variant, "seed": seed,
                              "base_config": BASE_CONFIGS[dataset], "overrides": overrides})
            if is_finished(folder):
                print(f"skip {dataset}/{variant}/seed{seed} (finished)", flush=True)
                continue
            if args.max_runs is not None and trained >= args.max_runs:
                stop = True
                break
            left = None if deadline is None else (deadline - time.monotonic()) / 60
            if left is not None and left < 1.0:
                print(f"--max-minutes reached: {dataset}/{variant}/seed{seed} and later units are left for the "
                      "next call", flush=True)
                stop = True
                break
            print(f"=== [{phase}] {dataset}/{variant}/seed{seed} -> {folder}", flush=True)
            t0 = time.time()
            if not is_trained(folder):
                # The trainer's guard stops a unit a minute before the deadline (it resumes next call).
                # Without --max-minutes the unit gets a day: the config's own guard (13 min for the main
                # job) would cut units short on a loaded machine and stop the queue.
                rc = train_unit(folder, dataset, overrides, NO_DEADLINE_GUARD if left is None else max(0.5, left - 1.0))
                trained += 1
                if rc != 0:
                    failed += 1
                    print(f"    ipg-train exited with {rc}; see {folder / 'train.log'}", flush=True)
                    continue
                if not is_trained(folder):
                    print(f"    stopped by the time limit after {time.time() - t0:.0f} s; resumes next call",
                          flush=True)
                    stop = True
                    break
            analysis = analyze_unit_subprocess(folder, dataset)
            metrics = read_json(folder / "metrics.json")
            print(f"    AP {metrics['AP']:.3f} AP50 {metrics['AP50']:.3f} APs {metrics['APs']:.3f} "
                  f"ARs {metrics['ARs']:.3f} ({time.time() - t0:.0f} s; "
                  f"{len(analysis['size_buckets'])} size buckets)", flush=True)
    write_report(root, args.tag, args.quick)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
