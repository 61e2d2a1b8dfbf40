"""Throughput of the ipg_keras.data pipeline on the aerial tree-crown data.

Prints a table of images/s for each stage: decoding the large images, tiling,
tiling + augmentation + batching (uncached and with cached tiles), and, when a
training step is given, the step alone and the pipeline feeding the step (the
pipeline must be faster than the step so that training is never input-bound).

    .venv/bin/python benchmarks/data_pipeline.py --no-model
    .venv/bin/python benchmarks/data_pipeline.py --train-step mypkg.bench:make_step

`--train-step module:factory` names a function `factory(image_size, batch_size)`
returning `step(images, targets)`; from Python, `main(argv, train_step=step)`
injects the callable directly.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as a plain script from anywhere
    sys.path.insert(0, str(REPO))

TrainStep = Callable[[object, dict], object]


def _rate(iterable: Iterable, count: Callable[[object], int], steps: int, warmup: int) -> tuple[float, int]:
    """(items per second, items) over `steps` elements after `warmup` elements."""
    it = iter(iterable)
    for _ in range(warmup):
        next(it)
    n = 0
    start = time.perf_counter()
    for _ in range(steps):
        n += count(next(it))
    return n / (time.perf_counter() - start), n


def _load_step(spec: str, image_size: int, batch_size: int) -> TrainStep:
    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--train-step must be 'module:factory', got {spec!r}")
    factory = getattr(importlib.import_module(module), name)
    return factory(image_size, batch_size)


def run(args: argparse.Namespace, train_step: TrainStep | None = None) -> list[tuple[str, float, str]]:
    """Measure every stage; returns rows (stage, images per second, note)."""
    from ipg_keras.data import from_pascal_voc, make_batches, tile_dataset
    from ipg_keras.utils.paths import trees_dir

    folder = Path(args.data_dir) if args.data_dir else trees_dir() / args.split
    if not folder.is_dir():
        raise SystemExit(f"tree-crown data not found at {folder}; pass --data-dir or set IPG_KERAS_TREES_DIR")
    source = from_pascal_voc(folder, validate="header")
    rec = source.records[0]
    rows: list[tuple[str, float, str]] = []

    decoded = source.repeat()
    r, _ = _rate(decoded, lambda e: 1, max(2, args.steps // 10), 1)
    rows.append(("decode full image", r, f"{len(source.records)} image(s), first {rec.width}x{rec.height}"))

    tiles = tile_dataset(source, args.tile_size, args.overlap, args.min_visible)
    n_tiles = sum(1 for _ in tiles)
    r, _ = _rate(tiles.repeat(), lambda e: 1, args.steps, args.warmup)
    rows.append(("decode + tile", r, f"{n_tiles} tiles of {args.tile_size} px, overlap {args.overlap}"))

    count = lambda b: int(b[0].shape[0])  # noqa: E731
    common = dict(augment=True, shuffle=args.shuffle_buffer, seed=0, repeat=True)
    batches = make_batches(tiles, args.batch_size, args.image_size, **common)
    r, _ = _rate(batches, count, args.steps, args.warmup)
    rows.append(("tile + augment + batch", r, f"batch {args.batch_size} at {args.image_size} px"))

    cached = make_batches(tiles, args.batch_size, args.image_size, cache=True, **common)
    warm = max(args.warmup, -(-n_tiles // args.batch_size) + 1)  # fill the cache first
    r_cached, _ = _rate(cached, count, args.steps, warm)
    rows.append(("same, tiles cached", r_cached, "steady state after the first epoch"))

    if train_step is not None:
        images, targets = next(iter(cached))
        for _ in range(args.warmup):
            train_step(images, targets)
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step(images, targets)
        r_step = args.steps * int(images.shape[0]) / (time.perf_counter() - start)
        rows.append(("training step alone", r_step, "same batch over and over"))

        def fed():
            for images, targets in cached:
                train_step(images, targets)
                yield images

        r_fed, _ = _rate(fed(), lambda b: int(b.shape[0]), args.steps, args.warmup)
        bound = "input-bound" if r_cached < r_step else "compute-bound"
        rows.append(("pipeline + training step", r_fed, bound))
    return rows


def format_table(rows: list[tuple[str, float, str]]) -> str:
    """Plain-text table of the rows."""
    header = ("stage", "images/s", "note")
    width = max(len(header[0]), *(len(r[0]) for r in rows))
    lines = [f"{header[0]:<{width}}  {header[1]:>10}  {header[2]}", f"{'-' * width}  {'-' * 10}  {'-' * 4}"]
    lines += [f"{name:<{width}}  {rate:>10.1f}  {note}" for name, rate, note in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="VOC folder (default: <trees>/<split>)")
    p.add_argument("--split", default="train", choices=["train", "val"])
    p.add_argument("--tile-size", type=int, default=400)
    p.add_argument("--overlap", type=int, default=128)
    p.add_argument("--min-visible", type=float, default=0.5)
    p.add_argument("--image-size", type=int, default=384, help="training image size")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=40, help="timed batches (or elements) per stage")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--shuffle-buffer", type=int, default=256, help="tiles in the shuffle buffer")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-model", action="store_true", help="pipeline only (default when no --train-step)")
    g.add_argument("--train-step", help="module:factory, factory(image_size, batch_size) -> step(images, targets)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, train_step: TrainStep | None = None) -> list[tuple[str, float, str]]:
    args = parse_args(argv)
    if train_step is None and args.train_step and not args.no_model:
        train_step = _load_step(args.train_step, args.image_size, args.batch_size)
    rows = run(args, train_step)
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
