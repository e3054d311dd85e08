"""Figures for the notebooks; each function returns a matplotlib Figure and saves nothing itself."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

RUN_ORDER = {"majority": 0, "pretrained-baseline": 1, "tfidf-logreg": 2, "linear-probe": 3, "full-finetune": 4,
             "lora": 5}  # by kind: the cheapest reference first, LoRA last


def ordered(records: dict[str, dict]) -> list[dict]:
    return sorted(records.values(), key=lambda r: (RUN_ORDER.get(r["kind"], 9), r["run"]))


def save(fig, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    tmp = folder / f".{name}.png.tmp"
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    os.replace(tmp, path)  # atomic: a crash never leaves half a figure where a good one was
    return path


def class_balance(splits) -> plt.Figure:
    names = splits["train"].features["label"].names
    rows = [(split, names[label]) for split in splits for label in splits[split]["label"]]
    frame = pd.DataFrame(rows, columns=["split", "label"])
    share = frame.groupby("split")["label"].value_counts(normalize=True).rename("share").reset_index()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.barplot(share, x="label", y="share", hue="split", order=names, hue_order=list(splits), ax=ax)
    ax.set(title="Class balance per split (stratified: the same shares)", xlabel="", ylabel="share of split")
    return fig


def token_lengths(lengths, max_length: int) -> plt.Figure:
    lengths = np.asarray(lengths)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(lengths, bins=range(0, int(lengths.max()) + 2, 2), color="tab:blue")
    ax.axvline(max_length, color="tab:red", linestyle="--",
               label=f"max_length = {max_length} ({(lengths > max_length).mean():.2%} truncated)")
    ax.set(title="Tokens per text (before truncation)", xlabel="tokens", ylabel="texts")
    ax.legend()
    return fig


def metric_bars(records: dict[str, dict], metrics=("accuracy", "f1_macro")) -> plt.Figure:
    rows = [(r["run"], m, r["metrics"][m]) for r in ordered(records) for m in metrics]
    frame = pd.DataFrame(rows, columns=["run", "metric", "value"])
    fig, ax = plt.subplots(figsize=(max(7, 1.5 * len(records)), 3.5))  # wide enough to label every bar
    sns.barplot(frame, x="metric", y="value", hue="run", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3f", fontsize=8)
    ax.set(title="Test metrics", ylim=(0, 1), xlabel="", ylabel="")
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)
    return fig


def confusion_matrices(records: dict[str, dict]) -> plt.Figure:
    runs = ordered(records)
    columns = min(len(runs), 3)
    rows = -(-len(runs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(runs):]:
        ax.axis("off")
    for ax, record in zip(axes.flat, runs):
        matrix = np.asarray(record["confusion_matrix"])
        share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)  # colour: recall per true class
        sns.heatmap(share, annot=matrix, fmt="d", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                    xticklabels=record["labels"], yticklabels=record["labels"])
        ax.set(title=f"{record['run']} (acc {record['metrics']['accuracy']:.3f})", xlabel="predicted", ylabel="true")
    fig.tight_layout()
    return fig


def training_curves(record: dict) -> plt.Figure:
    history = record["train"]["history"]
    train = [(h["epoch"], h["loss"]) for h in history if "loss" in h]
    evals = [h for h in history if "eval_loss" in h]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(*zip(*train), marker="o", label="training loss")
    left.plot([h["epoch"] for h in evals], [h["eval_loss"] for h in evals], marker="o", label="validation loss")
    left.set(title="Loss", xlabel="epoch")
    left.legend()
    for metric in ("eval_accuracy", "eval_f1_macro"):
        right.plot([h["epoch"] for h in evals], [h[metric] for h in evals], marker="o", label=metric[5:])
    right.set(title="Validation metrics", xlabel="epoch")
    right.legend()
    fig.tight_layout()
    return fig


def parameter_counts(records: dict[str, dict]) -> plt.Figure:
    runs = [r for r in ordered(records) if r["params"]["total"]]
    fig, ax = plt.subplots(figsize=(7, 1 + 0.45 * len(runs)))
    names = [r["run"] for r in runs]
    ax.barh(names, [r["params"]["total"] for r in runs], color="lightgray")
    ax.barh(names, [max(r["params"]["trainable"], 1) for r in runs], color="tab:orange")
    for i, r in enumerate(runs):
        share = r["params"]["trainable"] / r["params"]["total"]
        ax.text(r["params"]["total"], i, f" {share:.2%} trainable", va="center", fontsize=8)
    # named in the title: a legend would cover a bar once there are more than a few runs
    ax.set(xscale="log", title="Parameters (log scale): trainable in orange, total in gray", xlabel="parameters")
    return fig


def accuracy_against_cost(records: dict[str, dict]) -> plt.Figure:
    """Test accuracy of each trained run against the weights it trains and the size of what it saves (log scales),
    with the majority class as the floor. A run without a resources section is left out of the right panel."""
    trained = [r for r in ordered(records) if "train" in r]
    floor = [r for r in records.values() if r["kind"] == "majority"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    panels = ((axes[0], "trainable weights", lambda r: r["params"]["trainable"]),
              (axes[1], "saved size (MB)", lambda r: r.get("resources", {}).get("saved_mb")))
    for ax, xlabel, x in panels:
        for i, r in enumerate(trained):
            if x(r):  # missing, or 0, has no place on a log scale
                ax.scatter(x(r), r["metrics"]["accuracy"], s=50, color=f"C{i}")
                ax.annotate(r["run"], (x(r), r["metrics"]["accuracy"]), xytext=(5, 4), textcoords="offset points",
                            fontsize=8)
        for r in floor:
            ax.axhline(r["metrics"]["accuracy"], color="gray", linestyle="--", label="majority class")
        ax.set(xscale="log", xlabel=xlabel, title=f"test accuracy against {xlabel.split(' (')[0]}")
        ax.margins(x=0.25)  # room for the names
    axes[0].set_ylabel("accuracy")
    if floor:
        axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def summary_table(records: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for r in ordered(records):
        train, resources = r.get("train") or {}, r.get("resources") or {}
        total = r["params"]["total"]
        rows.append({
            "run": r["run"],
            "accuracy": round(r["metrics"]["accuracy"], 4),
            "f1_macro": round(r["metrics"]["f1_macro"], 4),
            "trainable params": f"{r['params']['trainable']:,}",
            "trainable %": f"{r['params']['trainable'] / total:.2%}" if total else "-",
            "train time (s)": train.get("seconds", "-"),
            "train examples/s": train.get("examples_per_second", "-"),
            "peak memory (MB)": resources.get("peak_memory_mb", "-"),
            "saved (MB)": resources.get("saved_mb", "-"),
            "test examples": r["n_examples"],
        })
    return pd.DataFrame(rows)


def sweep_frame(records: dict[str, dict]) -> pd.DataFrame:
    """One row per sweep run: its settings, size, time and test scores."""
    from .sweep import TARGET_SETS

    set_names = {modules: name for name, modules in TARGET_SETS.items()}
    rows = []
    for r in records.values():
        config = r["config"]
        rows.append({
            "run": r["run"], "targets": set_names.get(tuple(config["target_modules"] or ()), "custom"), "r": config["r"],
            "alpha": config["alpha"], "alpha/r": config["alpha"] / config["r"],
            "trainable": r["params"]["trainable"], "accuracy": r["metrics"]["accuracy"],
            "f1_macro": r["metrics"]["f1_macro"], "seconds": r["train"]["seconds"],
        })
    return pd.DataFrame(rows).sort_values(["targets", "r", "alpha"]).reset_index(drop=True)


def sweep_lines(frame: pd.DataFrame) -> plt.Figure:
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    grid = frame[frame["targets"] == "query-value"]
    for ax, metric in zip(axes[:2], ("accuracy", "f1_macro")):
        sns.lineplot(grid, x="r", y=metric, hue="alpha/r", marker="o", palette="tab10", ax=ax)
        ax.set(xscale="log", xticks=sorted(grid["r"].unique()), xticklabels=sorted(grid["r"].unique()),
               title=f"{metric} against rank (query, value)")
    sns.scatterplot(frame, x="trainable", y="accuracy", hue="targets", style="alpha/r", s=70, ax=axes[2])
    axes[2].set(xscale="log", title="accuracy against trainable parameters")
    fig.tight_layout()
    return fig


def sweep_heatmap(frame: pd.DataFrame, metric: str = "accuracy") -> plt.Figure:
    table = frame[frame["targets"] == "query-value"].pivot(index="r", columns="alpha/r", values=metric)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    sns.heatmap(table, annot=True, fmt=".3f", cmap="viridis", ax=ax)
    ax.set(title=f"test {metric}: rank x alpha/r")
    return fig


def misidentification(records: dict[str, dict]) -> plt.Figure:
    """Share of each true class that each configuration gets wrong (1 - recall)."""
    shares = pd.DataFrame({run: {label: 1 - s["recall"] for label, s in r["metrics"]["per_class"].items()}
                           for run, r in records.items()}).T.sort_index()
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(shares) + 1.5))
    sns.heatmap(shares, annot=True, fmt=".2f", cmap="Reds", vmin=0, ax=ax)
    ax.set(title="misidentified share of each true class", xlabel="true class", ylabel="")
    return fig


def confused_pairs(records: dict[str, dict]) -> pd.DataFrame:
    """(true, predicted) label pairs ranked by their share of all errors, summed over the runs."""
    labels = next(iter(records.values()))["labels"]
    total = sum(np.asarray(r["confusion_matrix"]) for r in records.values())
    errors = total.sum() - np.trace(total)
    pairs = [(labels[i], labels[j], total[i, j] / errors) for i in range(len(labels)) for j in range(len(labels)) if i != j]
    return pd.DataFrame(pairs, columns=["true", "predicted", "share of errors"]).sort_values(
        "share of errors", ascending=False).reset_index(drop=True)


def learning_curves(points: pd.DataFrame, metrics=("accuracy", "f1_macro")) -> plt.Figure:
    """Test scores against training examples per class (log x), one line per method: the mean over the draws, a
    band of +- one standard deviation, and each draw as a dot (lora_ft.curves.points)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.2), squeeze=False)
    methods = list(dict.fromkeys(points["method"]))
    colours = dict(zip(methods, sns.color_palette("tab10", len(methods))))
    for ax, metric in zip(axes[0], metrics):
        for method in methods:
            rows = points[points["method"] == method]
            stats = rows.groupby("x")[metric].agg(["mean", "std"]).fillna(0.0)
            ax.plot(stats.index, stats["mean"], marker="o", color=colours[method], label=method)
            ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                            color=colours[method], alpha=0.15, linewidth=0)
            ax.scatter(rows["x"], rows[metric], s=9, color=colours[method], alpha=0.5)
        ticks = points.drop_duplicates("x").sort_values("x")
        ax.set(xscale="log", xlabel="training examples per class", ylabel=f"test {metric}",
               title=f"{metric}: mean and +- 1 std over the draws")
        ax.set_xticks(ticks["x"], ["all" if n is None or n != n else f"{int(n)}" for n in ticks["per_class"]])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig
