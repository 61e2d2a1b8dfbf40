"""Does IPG help small objects? IPG vs ipg=False, same seeds, same schedule, same data.

    python benchmarks/ipg_study.py                 # the whole study (a few hours on 2 CPU cores)
    python benchmarks/ipg_study.py --quick         # smoke test: tiny budget, minutes
    python benchmarks/ipg_study.py --datasets synthetic --seeds 0 --epochs 2 --tag reduced   # a reduced run

Both arms use the CPU-sized model of the main job config
(`training/configs/synthetic_retinanet_cpu.yaml`: IPG-RetinaNet on a ResNet-18 at
width 0.25, FPN/heads 64, anchor size 2) and differ only in `model.ipg`.

Datasets:
* `synthetic`: the embedded synthetic small-object set (objects 6-64 px, 256x256
  images), train/val as in the main job config. The data are generated with data
  seed 0 for every run, so every arm and seed sees the same images; the run seed
  sets weight initialisation, shuffling and augmentation.
* `trees`: `../shared/data/trees` (Pascal VOC aerial tree crowns, one class):
  the train image is tiled into 256x256 tiles (overlap 64), the val image is
  evaluated whole by sliced inference (`ipg_keras.evaluation.evaluate_sliced`,
  256 tiles, overlap 64).

For every (dataset, arm, seed) one JSON lands in `<out>/<tag>/runs/`; a run
whose JSON exists is skipped (the study is resumable; delete a JSON to redo it).
The JSON stores the full settings, and a run is only reused when they match.
At the end `<out>/<tag>/summary.json`, `summary.md` (mean and standard
deviation over seeds of AP, AP50, APs per arm, and the paired IPG - baseline
difference) and `summary.png` are written from all run JSONs.

Schedules (`--tag full`, the defaults) are short, so that the whole study (12
runs) takes under an hour on 2 idle CPU cores: synthetic 2 epochs x 250 steps
of batch 8 (a quarter of the main job's epochs, no wall-clock limit, so both
arms train exactly the same number of steps); trees 20 epochs over the 156
tiles at batch 8 (380 steps). `--epochs N --tag NAME` runs a longer study.

`--save-models` keeps every run's `model.keras` and `config.yaml` in
`<out>/<tag>/models/<run>/` (an `ipg-train`-style run folder, so
`benchmarks/export_tflite.py --model` and `ipg-export` take it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine_info, quiet_tf, write_json  # noqa: E402

METRICS = ("AP", "AP50", "APs")
ARMS = {"ipg": True, "baseline": False}
BASE_CONFIG = "synthetic_retinanet_cpu"

# Per dataset: the full schedule, and the --quick one (smoke test only: numbers mean nothing).
SCHEDULES = {
    "synthetic": {
        "full": dict(num_train_images=2000, num_val_images=200, epochs=2, batch_size=8, steps_per_epoch=None),
        "quick": dict(num_train_images=16, num_val_images=8, epochs=1, batch_size=4, steps_per_epoch=2),
    },
    "trees": {
        "full": dict(epochs=20, batch_size=8, steps_per_epoch=None, tile_size=256, tile_overlap=64),
        "quick": dict(epochs=1, batch_size=4, steps_per_epoch=2, tile_size=256, tile_overlap=64),
    },
}


# ------------------------------------------------------------------------------- data
def synthetic_data(s: dict, image_size: int):
    from ipg_keras.data import SYNTHETIC_CLASS_NAMES, synthetic_dataset

    # Data seed 0 for every run: identical images for all arms and seeds.
    train = synthetic_dataset("train", num_images=s["num_train_images"], image_size=image_size, seed=0)
    val = synthetic_dataset("val", num_images=s["num_val_images"], image_size=image_size, seed=0)
    return train, val, list(SYNTHETIC_CLASS_NAMES)


def trees_data(s: dict):
    from ipg_keras.data import from_pascal_voc, tile_dataset
    from ipg_keras.utils.paths import trees_dir

    root = Path(trees_dir())
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"trees data not found at {root} (set IPG_KERAS_TREES_DIR or use --datasets synthetic)")
    train = from_pascal_voc(root / "train")
    names = list(train.class_names)
    val = from_pascal_voc(root / "val", class_names=names)
    tiles = tile_dataset(train, tile_size=s["tile_size"], overlap=s["tile_overlap"])
    return tiles, val, names


# ------------------------------------------------------------------------------- runs
def run_settings(dataset: str, arm: str, seed: int, schedule: dict, base_cfg) -> dict[str, Any]:
    m = base_cfg.model
    return {
        "dataset": dataset,
        "arm": arm,
        "ipg": ARMS[arm],
        "seed": seed,
        "schedule": schedule,
        "model": {k: getattr(m, k) for k in ("backbone", "width_multiplier", "ipg_width", "fpn_channels",
                                              "head_width", "head_depth", "min_level", "max_level", "anchor_size")},
        "image_size": base_cfg.data.image_size,
        "optimizer": {k: getattr(base_cfg.train, k) for k in ("optimizer", "learning_rate", "weight_decay",
                                                               "schedule", "warmup_steps")},
    }


def settings_hash(settings: dict) -> str:
    keyed = {k: v for k, v in settings.items() if k not in ("seed", "arm", "ipg")}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_and_evaluate(settings: dict, base_cfg, verbose: int, save_dir: Path | None = None) -> dict[str, Any]:
    """Trains one arm with one seed and returns its COCO metrics (and timings)."""
    import keras
    import tensorflow as tf

    from ipg_keras.data import make_batches
    from ipg_keras.evaluation import evaluate_model, evaluate_sliced
    from ipg_keras.training.train import build_model, build_optimizer

    dataset, seed, s = settings["dataset"], settings["seed"], settings["schedule"]
    size = settings["image_size"]
    cfg = base_cfg
    cfg.model.ipg = settings["ipg"]
    cfg.train.seed = seed
    cfg.train.epochs = s["epochs"]
    cfg.train.batch_size = s["batch_size"]
    keras.utils.set_random_seed(seed)

    if dataset == "synthetic":
        train, val, names = synthetic_data(s, size)
    else:
        train, val, names = trees_data(s)
    n_train = int(train.cardinality()) if int(train.cardinality()) >= 0 else sum(1 for _ in train)
    steps = s["steps_per_epoch"] or max(1, n_train // s["batch_size"])
    train_ds = make_batches(train, s["batch_size"], size, augment=True, shuffle=True, cache=True, seed=seed,
                            repeat=True, drop_remainder=True)

    model = build_model(cfg, len(names))
    model(tf.zeros([1, size, size, 3]), training=False)
    model.compile(optimizer=build_optimizer(cfg, steps), jit_compile=False)
    t0 = time.time()
    history = model.fit(train_ds, epochs=s["epochs"], steps_per_epoch=steps, verbose=verbose)
    train_seconds = time.time() - t0

    if save_dir is not None:
        from ipg_keras.training.callbacks import save_model_file
        from ipg_keras.training.config import save_config

        save_dir.mkdir(parents=True, exist_ok=True)
        if dataset == "synthetic":  # the run folder's config then rebuilds the same data
            cfg.data.num_train_images, cfg.data.num_val_images = s["num_train_images"], s["num_val_images"]
        save_config(cfg, save_dir / "config.yaml")
        save_model_file(model, save_dir / "model.keras")

    detect = tf.function(model.detect, reduce_retracing=True, jit_compile=False)

    def predict_fn(images):
        return {k: v.numpy() for k, v in detect(tf.convert_to_tensor(images, tf.float32)).items()}

    t0 = time.time()
    if dataset == "synthetic":
        val_ds = make_batches(val, 8, size, augment=False, cache=True)
        metrics = evaluate_model(model, val_ds, num_classes=len(names), class_names=names, verbose=False,
                                 predict_fn=predict_fn)
    else:
        metrics = evaluate_sliced(predict_fn, val, tile_size=s["tile_size"], overlap=s["tile_overlap"],
                                  batch_size=8, num_classes=len(names), class_names=names, verbose=False)
    return {
        **{k: float(metrics[k]) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
        "train_images_or_tiles": n_train,
        "steps": steps * s["epochs"],
        "final_loss": float(history.history["loss"][-1]),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.time() - t0, 1),
        "params": int(model.count_params()),
    }


# ---------------------------------------------------------------------------- summary
def summarize(run_dir: Path) -> dict[str, Any]:
    runs = [json.loads(p.read_text()) for p in sorted(run_dir.glob("*.json"))]
    summary: dict[str, Any] = {"num_runs": len(runs), "groups": [], "paired": []}
    for dataset in sorted({r["settings"]["dataset"] for r in runs}):
        by_arm = {arm: {r["settings"]["seed"]: r for r in runs
                        if r["settings"]["dataset"] == dataset and r["settings"]["arm"] == arm} for arm in ARMS}
        for arm, seeds in by_arm.items():
            if not seeds:
                continue
            group = {"dataset": dataset, "arm": arm, "seeds": sorted(seeds), "n": len(seeds)}
            for k in METRICS:
                values = [seeds[s]["metrics"][k] for s in sorted(seeds)]
                group[k] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1
                            else float("nan"), "values": values}
            summary["groups"].append(group)
        common_seeds = sorted(set(by_arm["ipg"]) & set(by_arm["baseline"]))
        if common_seeds:
            pair = {"dataset": dataset, "seeds": common_seeds, "n": len(common_seeds)}
            for k in METRICS:
                diffs = [by_arm["ipg"][s]["metrics"][k] - by_arm["baseline"][s]["metrics"][k] for s in common_seeds]
                pair[k] = {"mean": statistics.fmean(diffs),
                           "std": statistics.stdev(diffs) if len(diffs) > 1 else float("nan"), "values": diffs}
            summary["paired"].append(pair)
    return summary


def summary_table(summary: dict[str, Any]) -> str:
    def ms(d):
        return f"{d['mean']:.3f} ± {d['std']:.3f}" if d["std"] == d["std"] else f"{d['mean']:.3f} (1 seed)"

    rows = [[g["dataset"], g["arm"], g["n"], *(ms(g[k]) for k in METRICS)] for g in summary["groups"]]
    text = format_table(["dataset", "arm", "seeds", *(f"{k} mean ± std" for k in METRICS)], rows)
    if summary["paired"]:
        prow = [[p["dataset"], p["n"], *(("{:+.3f} ± {:.3f}".format(p[k]["mean"], p[k]["std"])
                                          if p[k]["std"] == p[k]["std"] else "{:+.3f} (1 seed)".format(p[k]["mean"]))
                                         for k in METRICS)] for p in summary["paired"]]
        text += "\n\nPaired difference IPG - baseline (same seed):\n" + format_table(
            ["dataset", "seeds", *(f"Δ{k}" for k in METRICS)], prow)
    return text


def plot_summary(summary: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({g["dataset"] for g in summary["groups"]})
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(5.5 * max(1, len(datasets)), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for j, arm in enumerate(ARMS):
            g = next((g for g in summary["groups"] if g["dataset"] == dataset and g["arm"] == arm), None)
            if g is None:
                continue
            xs = [i + (j - 0.5) * 0.35 for i in range(len(METRICS))]
            means = [g[k]["mean"] for k in METRICS]
            stds = [0.0 if g[k]["std"] != g[k]["std"] else g[k]["std"] for k in METRICS]
            ax.bar(xs, means, 0.35, yerr=stds, capsize=4, label=f"{arm} (n={g['n']})", alpha=0.75)
            for x, k in zip(xs, METRICS):
                ax.plot([x] * len(g[k]["values"]), g[k]["values"], "k.", ms=5)
        ax.set_xticks(range(len(METRICS)))
        ax.set_xticklabels(METRICS)
        ax.set_title(dataset)
        ax.set_ylabel("COCO metric")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="synthetic,trees")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arms", default="ipg,baseline")
    parser.add_argument("--quick", action="store_true", help="smoke test: a few steps per run (numbers meaningless)")
    parser.add_argument("--epochs", type=int, help="override the schedule's epochs (a reduced study: give --tag)")
    parser.add_argument("--num-train", dest="num_train", type=int, help="override synthetic train images")
    parser.add_argument("--tag", default=None, help="results subfolder (default: full, or quick with --quick)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "ipg_study"))
    parser.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity")
    parser.add_argument("--save-models", action="store_true", help="keep each run's model.keras + config.yaml")
    args = parser.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    for d in args.datasets:
        if d not in SCHEDULES:
            parser.error(f"unknown dataset {d!r}; use synthetic and/or trees")
    for a in args.arms:
        if a not in ARMS:
            parser.error(f"unknown arm {a!r}; use ipg and/or baseline")
    if args.tag is None:
        if args.epochs is not None or args.num_train is not None:
            parser.error("--epochs/--num-train change the schedule: name the reduced study with --tag")
        args.tag = "quick" if args.quick else "full"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_tf()
    from ipg_keras.training.config import load_config

    root = Path(args.out) / args.tag
    run_dir = root / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    done = 0
    for dataset in args.datasets:
        schedule = dict(SCHEDULES[dataset]["quick" if args.quick else "full"])
        if args.epochs is not None:
            schedule["epochs"] = args.epochs
        if args.num_train is not None and dataset == "synthetic":
            schedule["num_train_images"] = args.num_train
        for seed in args.seeds:
            for arm in args.arms:
                base_cfg = load_config(BASE_CONFIG)
                settings = run_settings(dataset, arm, seed, schedule, base_cfg)
                path = run_dir / f"{dataset}_{arm}_seed{seed}.json"
                if path.exists():
                    old = json.loads(path.read_text())
                    if old.get("settings_hash") != settings_hash(settings):
                        raise SystemExit(f"{path} was made with other settings (hash {old.get('settings_hash')} != "
                                         f"{settings_hash(settings)}): use another --tag or delete the file.")
                    print(f"skip {path.name} (exists)", flush=True)
                    continue
                print(f"=== {dataset} {arm} seed {seed} ({args.tag}) ===", flush=True)
                t0 = time.time()
                save_dir = root / "models" / path.stem if args.save_models else None
                metrics = train_and_evaluate(settings, base_cfg, args.verbose, save_dir)
                record = {"settings": settings, "settings_hash": settings_hash(settings), "tag": args.tag,
                          "metrics": metrics, "wall_seconds": round(time.time() - t0, 1), "machine": machine,
                          "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
                write_json(path, record)
                done += 1
                print(f"    {', '.join(f'{k} {metrics[k]:.3f}' for k in METRICS)} "
                      f"({record['wall_seconds']:.0f} s) -> {path}", flush=True)

    summary = summarize(run_dir)
    summary["tag"] = args.tag
    summary["machine"] = machine
    table = summary_table(summary)
    summary["table"] = table
    write_json(root / "summary.json", summary)
    title = f"IPG vs ipg=False ({args.tag}{': smoke test, meaningless numbers' if args.tag == 'quick' else ''})"
    (root / "summary.md").write_text(f"# {title}\n\n{table}\n")
    if summary["groups"]:
        plot_summary(summary, root / "summary.png", title)
    print(f"\n{title}\n{table}\n\nran {done} new run(s); wrote {root / 'summary.json'}, summary.md, summary.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
