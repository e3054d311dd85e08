"""Notebook 06's tables and figures: the sweep (rank x alpha/r x targets) and its errors, read from its records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt

from .config import TARGET_SETS
from .plots import over_seeds, spread_text


def sweep_frame(records: dict[str, dict], seeds=None) -> pd.DataFrame:
    """One row per sweep run and seed: its settings, budget, size, time and test scores, ranks in numeric order."""
    set_names = {modules: name for name, modules in TARGET_SETS.items()}
    rows = []
    for run, found in over_seeds(records, seeds).items():
        for r in found:
            config = r["config"]
            rows.append({
                "run": run, "seed": r["meta"]["seed"],
                "targets": set_names.get(tuple(config["target_modules"] or ()), "custom"),
                "r": config["r"], "alpha": config["alpha"], "alpha/r": config["alpha"] / config["r"],
                "train_size": config["train_size"], "epochs": config["epochs"],
                "trainable": r["params"]["trainable"], "accuracy": r["metrics"]["accuracy"],
                "f1_macro": r["metrics"]["f1_macro"], "seconds": r["train"]["seconds"]})
    return pd.DataFrame(rows).sort_values(["targets", "r", "alpha", "seed"]).reset_index(drop=True)


def budget(frame: pd.DataFrame) -> str:
    """The training budget the records say each run had, e.g. "1 epoch, 4,000 training examples"."""
    said = []
    for size, epochs in frame[["train_size", "epochs"]].astype(object).itertuples(index=False):
        examples = "the whole training split" if pd.isna(size) else f"{int(size):,} training examples"
        said.append(f"{epochs:g} epoch{'' if epochs == 1 else 's'}, {examples}")
    return " or ".join(dict.fromkeys(said))


def sweep_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per sweep run: its settings, seeds, test scores (mean ± std over the seeds) and mean time."""
    keys = ["run", "targets", "r", "alpha", "alpha/r", "trainable"]
    return frame.groupby(keys, sort=False).agg(
        seeds=("seed", "size"), accuracy=("accuracy", spread_text), f1_macro=("f1_macro", spread_text),
        seconds=("seconds", "mean")).reset_index()


def sweep_lines(frame: pd.DataFrame) -> plt.Figure:
    """Scores against rank on query/value (mean, std band, a dot per seed); accuracy against trainable weights."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    grid = frame[frame["targets"] == "query-value"]
    ranks, n = sorted(grid["r"].unique()), frame.groupby("run")["seed"].size()
    for ax, metric in zip(axes[:2], ("accuracy", "f1_macro")):
        sns.lineplot(grid, x="r", y=metric, hue="alpha/r", errorbar="sd", palette="tab10", ax=ax)
        sns.scatterplot(grid, x="r", y=metric, hue="alpha/r", palette="tab10", s=18, legend=False, ax=ax)
        ax.set(xscale="log", xticks=ranks, xticklabels=ranks, title=f"{metric} against rank (query, value)")
        ax.minorticks_off()
    sns.scatterplot(frame, x="trainable", y="accuracy", hue="targets", style="alpha/r", s=40, ax=axes[2])
    axes[2].set(xscale="log", title="accuracy against trainable parameters (a dot per seed)")
    said = f"{n.min()} seed{'s' if n.min() > 1 else ''} per run" + (f" (up to {n.max()})" if n.max() > n.min() else "")
    fig.suptitle(f"Sweep on a short budget, {budget(frame)} per run: not comparable with the full runs' scores\n"
                 f"{said}; lines: mean, bands: standard deviation", fontsize=10, y=1.04)
    fig.tight_layout()
    return fig


def sweep_heatmap(frame: pd.DataFrame) -> plt.Figure:
    """Mean test accuracy over the seeds for each rank x alpha/r on query/value, annotated mean ± std."""
    grid = frame[frame["targets"] == "query-value"]
    mean = grid.pivot_table(index="r", columns="alpha/r", values="accuracy", aggfunc="mean")
    std = grid.pivot_table(index="r", columns="alpha/r", values="accuracy", aggfunc="std").reindex_like(mean)
    n = grid.groupby("run")["seed"].size().min()
    labels = mean.map("{:.3f}".format) + ("" if n == 1 else "\n± " + std.map("{:.3f}".format))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    sns.heatmap(mean, annot=labels, fmt="", cmap="viridis", ax=ax)
    seeds = f"mean ± std over {n} seeds" if n > 1 else "1 seed"
    ax.set(title=f"test accuracy, rank x alpha/r on query/value ({seeds})\nshort budget: {budget(grid)} per run")
    return fig


def misidentification(records: dict[str, dict]) -> plt.Figure:
    """Share of each true class that each configuration gets wrong (1 - recall), in the sweep table's order."""
    frame = sweep_frame(records)
    shares = pd.DataFrame({run: {label: 1 - s["recall"] for label, s in r["metrics"]["per_class"].items()}
                           for run, r in records.items()}).T.loc[list(dict.fromkeys(frame["run"]))]
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(shares) + 1.7))
    sns.heatmap(shares, annot=True, fmt=".2f", cmap="Reds", vmin=0, ax=ax)
    seeds = sorted({r["meta"]["seed"] for r in records.values()})
    ax.set(title=f"misidentified share of each true class (seed {', '.join(map(str, seeds))})\n"
                 f"short budget: {budget(frame)} per run", xlabel="true class", ylabel="")
    return fig


def confused_pairs(records: dict[str, dict]) -> pd.DataFrame:
    """(true, predicted) label pairs ranked by their share of all errors, summed over the runs."""
    labels = next(iter(records.values()))["labels"]
    total = sum(np.asarray(r["confusion_matrix"]) for r in records.values())
    errors = total.sum() - np.trace(total)
    pairs = [(labels[i], labels[j], total[i, j] / errors)
             for i in range(len(labels)) for j in range(len(labels)) if i != j]
    return pd.DataFrame(pairs, columns=["true", "predicted", "share of errors"]).sort_values(
        "share of errors", ascending=False).reset_index(drop=True)
