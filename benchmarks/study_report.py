"""Statistics, tables and plots of the IPG study (benchmarks/ipg_study.py) from its finished runs.

Everything here reads the run records (one dict per finished (dataset,
variant, seed) unit) and computes: mean and std per arm, paired differences
against the `baseline` arm of the same dataset and seed with a 95 %
confidence interval (paired t), the ablation table, the selection of the
best IPG variant on synthetic validation, and the plots.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Iterable, Sequence

METRICS = ("AP", "AP50", "APs", "ARs")
BASELINE = "baseline"
DEFAULT_IPG = "ipg"

# Two-sided 95 % quantiles of Student's t by degrees of freedom (df > 30: normal).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042}


def t_quantile_975(df: int) -> float:
    if df < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom (2 pairs), got df={df}")
    return T975.get(df, 1.960)


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std and the 95 % t interval of the mean (`ci` = (nan, nan) for one value)."""
    values = [float(v) for v in values]
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": n, "mean": mean, "std": float("nan"), "ci": (float("nan"), float("nan")), "values": values}
    std = statistics.stdev(values)
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci": (mean - half, mean + half), "values": values}


def group_runs(runs: Iterable[dict]) -> dict[tuple[str, str], dict[int, dict]]:
    """`{(dataset, variant): {seed: run}}`."""
    groups: dict[tuple[str, str], dict[int, dict]] = {}
    for run in runs:
        groups.setdefault((run["dataset"], run["variant"]), {})[int(run["seed"])] = run
    return groups


def summarize(runs: Iterable[dict], metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    """Per (dataset, variant) statistics and paired differences against the baseline of the same seeds."""
    groups = group_runs(runs)
    arms, paired = [], []
    for (dataset, variant), seeds in sorted(groups.items()):
        arm = {"dataset": dataset, "variant": variant, "seeds": sorted(seeds)}
        for k in metrics:
            arm[k] = mean_ci([seeds[s]["metrics"][k] for s in sorted(seeds)])
        arms.append(arm)
        base = groups.get((dataset, BASELINE))
        if variant == BASELINE or not base:
            continue
        common = sorted(set(seeds) & set(base))
        if not common:
            continue
        pair = {"dataset": dataset, "variant": variant, "seeds": common}
        for k in metrics:
            pair[k] = mean_ci([seeds[s]["metrics"][k] - base[s]["metrics"][k] for s in common])
        paired.append(pair)
    return {"arms": arms, "paired": paired}


def fmt_ci(stat: dict[str, Any], signed: bool = False) -> str:
    sign = "+" if signed else ""
    if stat["n"] < 2:
        return f"{stat['mean']:{sign}.3f} (1 seed)"
    lo, hi = stat["ci"]
    return f"{stat['mean']:{sign}.3f} [{lo:{sign}.3f}, {hi:{sign}.3f}]"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def arms_table(summary: dict[str, Any], metrics: Sequence[str] = METRICS) -> str:
    rows = [[a["dataset"], a["variant"], len(a["seeds"]),
             *(f"{a[k]['mean']:.3f} ± {a[k]['std']:.3f}" if a[k]["n"] > 1 else f"{a[k]['mean']:.3f}"
               for k in metrics)] for a in summary["arms"]]
    return markdown_table(["dataset", "variant", "seeds", *(f"{k} mean ± std" for k in metrics)], rows)


def paired_table(summary: dict[str, Any], metrics: Sequence[str] = METRICS) -> str:
    rows = [[p["dataset"], p["variant"], len(p["seeds"]), *(fmt_ci(p[k], signed=True) for k in metrics)]
            for p in summary["paired"]]
    return markdown_table(["dataset", "variant - baseline", "paired seeds",
                           *(f"Δ{k} [95 % CI]" for k in metrics)], rows)


def ablation_table(summary: dict[str, Any], costs: dict[str, dict], dataset: str = "synthetic") -> str:
    """One row per variant: FLOPs, params, AP, APs and ΔAPs against the baseline with its 95 % CI."""
    paired = {p["variant"]: p for p in summary["paired"] if p["dataset"] == dataset}
    rows = []
    for arm in summary["arms"]:
        if arm["dataset"] != dataset:
            continue
        v = arm["variant"]
        cost = costs.get(v, {})
        rows.append([
            v, f"{cost['gflops']:.3f}" if "gflops" in cost else "n/a",
            f"{cost['params']:,}" if "params" in cost else "n/a", len(arm["seeds"]),
            f"{arm['AP']['mean']:.3f}", f"{arm['APs']['mean']:.3f}",
            fmt_ci(paired[v]["APs"], signed=True) if v in paired else "-",
            fmt_ci(paired[v]["AP"], signed=True) if v in paired else "-",
        ])
    return markdown_table(["variant", "GFLOPs", "params", "seeds", "AP", "APs", "ΔAPs vs baseline [95 % CI]",
                           "ΔAP vs baseline [95 % CI]"], rows)


def size_table(runs: Iterable[dict], dataset: str, variant: str = DEFAULT_IPG) -> str:
    """Per object-size bucket (from each unit's `analysis.json`): objects, mean AP of the baseline and `variant`,
    their paired ΔAP (same seeds) with its 95 % t interval, and mean recall at IoU 0.5. Empty buckets are left out."""
    groups = group_runs(r for r in runs if r["dataset"] == dataset and r.get("analysis"))
    base, mine = groups.get((dataset, BASELINE), {}), groups.get((dataset, variant), {})
    seeds = sorted(set(base) & set(mine))
    if not seeds:
        return f"(no paired {dataset} units with a size analysis)"

    def bucket(run, name):
        return next(b for b in run["analysis"]["size_buckets"] if b["bucket"] == name)

    rows = []
    for b in base[seeds[0]]["analysis"]["size_buckets"]:
        if b["num_gt"] <= 0:
            continue
        name = b["bucket"]
        ap_base = [bucket(base[s], name)["AP"] for s in seeds]
        ap_mine = [bucket(mine[s], name)["AP"] for s in seeds]
        diff = mean_ci([m - q for m, q in zip(ap_mine, ap_base)])
        recall = [statistics.fmean(bucket(g[s], name)["recall50"] for s in seeds) for g in (base, mine)]
        rows.append([name, b["num_gt"], f"{statistics.fmean(ap_base):.3f}", f"{statistics.fmean(ap_mine):.3f}",
                     fmt_ci(diff, signed=True), f"{recall[0]:.3f} / {recall[1]:.3f}"])
    return markdown_table(["size bucket (sqrt(area), px)", "objects", f"{BASELINE} AP", f"{variant} AP",
                           f"ΔAP [95 % CI], {len(seeds)} paired seeds", f"recall@0.5 {BASELINE} / {variant}"], rows)


def select_variant(summary: dict[str, Any], candidates: Sequence[str], dataset: str = "synthetic",
                   metric: str = "APs", min_seeds: int = 3) -> dict[str, Any]:
    """The IPG variant with the highest mean paired Δmetric on `dataset` (its validation set only).

    Only candidates with at least `min_seeds` paired seeds compete; returns
    `{"variant", "reason", "ranking": [(variant, mean Δ, n)]}` (`variant` None
    while no candidate has enough seeds).
    """
    ranking = sorted(((p["variant"], p[metric]["mean"], p[metric]["n"]) for p in summary["paired"]
                      if p["dataset"] == dataset and p["variant"] in candidates and p[metric]["n"] >= min_seeds),
                     key=lambda r: -r[1])
    if not ranking:
        return {"variant": None, "reason": f"no IPG variant has {min_seeds} paired seeds on {dataset} yet",
                "ranking": []}
    best = ranking[0]
    return {"variant": best[0], "ranking": ranking,
            "reason": f"highest mean Δ{metric} vs baseline on {dataset} validation ({best[1]:+.4f}, n={best[2]})"}


def confirmation(summary: dict[str, Any], variant: str, dataset: str = "trees",
                 metric: str = "APs") -> dict[str, Any]:
    """Does `variant` beat the baseline on `dataset`? Holds when the 95 % CI of the paired Δ lies above 0."""
    pair = next((p for p in summary["paired"] if p["dataset"] == dataset and p["variant"] == variant), None)
    if pair is None or pair[metric]["n"] < 2:
        return {"holds": None, "reason": f"{variant} vs baseline on {dataset}: fewer than 2 paired seeds"}
    lo, hi = pair[metric]["ci"]
    holds = lo > 0
    return {"holds": holds, "delta": pair[metric]["mean"], "ci": (lo, hi), "n": pair[metric]["n"],
            "reason": f"Δ{metric} {fmt_ci(pair[metric], signed=True)} on {dataset} "
                      f"({'CI above 0' if holds else 'CI includes or lies below 0'})"}


# ----------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_paired(summary: dict[str, Any], path: Path, variants: Sequence[str] = (DEFAULT_IPG,),
                metrics: Sequence[str] = METRICS, title: str = "") -> None:
    """Per-seed paired differences (variant - baseline), one panel per dataset: dots per seed, mean and 95 % CI."""
    plt = _plt()
    pairs = [p for p in summary["paired"] if p["variant"] in variants]
    datasets = sorted({p["dataset"] for p in pairs}) or ["(none)"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for j, p in enumerate(q for q in pairs if q["dataset"] == dataset):
            for i, k in enumerate(metrics):
                x = i + 0.2 * j
                ax.plot([x] * len(p[k]["values"]), p[k]["values"], "o", ms=4, alpha=0.6, color=f"C{j}",
                        label=f"{p['variant']} per seed (n={p[k]['n']})" if i == 0 else None)
                if p[k]["n"] > 1:
                    lo, hi = p[k]["ci"]
                    ax.errorbar([x + 0.08], [p[k]["mean"]], yerr=[[p[k]["mean"] - lo], [hi - p[k]["mean"]]],
                                fmt="s", color=f"C{j}", capsize=4)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(range(len(metrics)))
        ax.set_xticklabels([f"Δ{k}" for k in metrics])
        ax.set_title(f"{dataset}: variant - baseline, same seed")
        ax.set_ylabel("paired difference (mean, 95 % CI)")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ablation(summary: dict[str, Any], path: Path, dataset: str = "synthetic", metric: str = "APs") -> None:
    """Forest plot: paired Δmetric vs baseline with 95 % CI, one row per variant."""
    plt = _plt()
    pairs = [p for p in summary["paired"] if p["dataset"] == dataset]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(3, len(pairs)) + 1))
    for i, p in enumerate(pairs):
        s = p[metric]
        ax.plot(s["values"], [i] * len(s["values"]), "o", color="0.6", ms=4)
        if s["n"] > 1:
            ax.errorbar([s["mean"]], [i], xerr=[[s["mean"] - s["ci"][0]], [s["ci"][1] - s["mean"]]], fmt="s",
                        color="C0", capsize=4)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_yticks(range(len(pairs)))
    ax.set_yticklabels([f"{p['variant']} (n={p[metric]['n']})" for p in pairs])
    ax.set_xlabel(f"Δ{metric} vs baseline (paired by seed; mean, 95 % CI; grey: seeds)")
    ax.set_title(f"IPG ablations on {dataset}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(runs: Iterable[dict], path: Path, dataset: str, variants: Sequence[str] = (BASELINE, DEFAULT_IPG),
                metric: str = "val_AP") -> None:
    """Validation-metric curves per seed (thin) and their mean (thick) for the given variants."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for j, variant in enumerate(variants):
        curves = [r["curve"] for r in runs if r["dataset"] == dataset and r["variant"] == variant and r.get("curve")]
        for c in curves:
            ax.plot(c["steps"], c[metric], color=f"C{j}", alpha=0.3, lw=0.8)
        if curves:
            n = min(len(c["steps"]) for c in curves)
            mean = [statistics.fmean(c[metric][i] for c in curves) for i in range(n)]
            ax.plot(curves[0]["steps"][:n], mean, color=f"C{j}", lw=2, label=f"{variant} (mean of {len(curves)})")
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.set_title(f"{dataset}: validation curves")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_breakdown(runs: Iterable[dict], path: Path, dataset: str = "synthetic",
                   variants: Sequence[str] = (BASELINE, DEFAULT_IPG)) -> None:
    """Left: AP and recall at IoU 0.5 per object-size bucket; right: true positives per FPN level (seed means).

    Runs without `tp_levels` in their analysis (trees: sliced inference merges the tiles' levels) leave the
    right panel empty, with a note.
    """
    plt = _plt()
    runs = [r for r in runs if r["dataset"] == dataset and r.get("analysis")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(variants))
    for j, variant in enumerate(variants):
        mine = [r["analysis"] for r in runs if r["variant"] == variant]
        if not mine:
            continue
        buckets = [b["bucket"] for b in mine[0]["size_buckets"] if b["num_gt"] > 0]
        ap = [statistics.fmean(next(b["AP"] for b in a["size_buckets"] if b["bucket"] == name)
                               for a in mine) for name in buckets]
        recall = [statistics.fmean(next(b["recall50"] for b in a["size_buckets"] if b["bucket"] == name)
                                   for a in mine) for name in buckets]
        ax1.bar([i + j * width for i in range(len(buckets))], ap, width, label=f"{variant} AP (n={len(mine)})")
        ax1.plot([i + j * width for i in range(len(buckets))], recall, "o", color=f"C{j}", mec="k",
                 label=f"{variant} recall at IoU 0.5")
        ax1.set_xticks([i + width * (len(variants) - 1) / 2 for i in range(len(buckets))])
        ax1.set_xticklabels(buckets, rotation=30)
        if all("tp_levels" in a for a in mine):
            levels = sorted({k for a in mine for k in a["tp_levels"]["all"]})
            counts = [statistics.fmean(a["tp_levels"]["all"].get(k, 0) for a in mine) for k in levels]
            ax2.bar([int(k[1:]) + j * width for k in levels], counts, width, label=variant)
        else:
            ax2.text(0.5, 0.5, "no per-level record\n(sliced inference)", ha="center", transform=ax2.transAxes)
    ax1.set_xlabel("object size sqrt(area), px")
    ax1.set_ylabel("AP (IoU .5:.95), bars; recall at IoU 0.5, dots")
    ax1.legend(fontsize=7)
    ax2.set_xticks(range(3, 8))
    ax2.set_xticklabels([f"P{l}" for l in range(3, 8)])
    ax2.set_xlabel("FPN level of the anchor (P3 = stride 8)")
    ax2.set_ylabel("true positives at IoU 0.5 (val set)")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend()
    fig.suptitle(f"{dataset}: where IPG helps or hurts (means over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
