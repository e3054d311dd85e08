"""Figures for the notebooks; each function returns a matplotlib Figure and saves nothing itself."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .config import TARGET_SETS
from .io import atomic_file
from .report import SERVING_WAYS
from .stats import mean_std, spread

RUN_ORDER = {"majority": 0, "pretrained-baseline": 1, "tfidf-logreg": 2, "linear-probe": 3, "full-finetune": 4,
             "lora": 5}  # by kind: the cheapest reference first, LoRA last


def ordered(records: dict[str, dict]) -> list[dict]:
    return sorted(records.values(), key=lambda r: (RUN_ORDER.get(r["kind"], 9), r["run"]))


def save(fig, folder: Path, name: str) -> Path:
    """fig as folder/<name>.png, written atomically: a crash never leaves half a figure where a good one was."""
    path = Path(folder) / f"{name}.png"
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
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


def over_seeds(records: dict[str, dict], seeds: dict[str, list[dict]] | None = None) -> dict[str, list[dict]]:
    """Each run's records over its seeds (lora_ft.experiments.records), or its one record where seeds has none."""
    seeds = seeds or {}
    return {run: seeds.get(run) or [record] for run, record in records.items()}


def metric_bars(records: dict[str, dict], metrics=("accuracy", "f1_macro"), seeds=None) -> plt.Figure:
    """Mean test metrics over the seeds (bars), their standard deviation (error bars) and each seed (dots)."""
    runs = over_seeds(records, seeds)
    frame = pd.DataFrame([(r["run"], found["meta"]["seed"], m, found["metrics"][m])
                          for r in ordered(records) for found in runs[r["run"]] for m in metrics],
                         columns=["run", "seed", "metric", "value"])
    n = frame.groupby("run")["seed"].nunique()
    fig, ax = plt.subplots(figsize=(max(7, 1.5 * len(records)), 3.5))  # wide enough to label every bar
    sns.barplot(frame, x="metric", y="value", hue="run", errorbar="sd", capsize=0.1, err_kws={"linewidth": 1}, ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3f", fontsize=8, padding=6)
    sns.stripplot(frame, x="metric", y="value", hue="run", dodge=True, palette="dark:black", size=3, legend=False,
                  ax=ax)
    seeds_said = f"{n.min()} seeds" if n.min() == n.max() else f"{n.min()} to {n.max()} seeds"
    ax.set(title=f"Test metrics: mean, standard deviation and each seed ({seeds_said} per run)", ylim=(0, 1),
           xlabel="", ylabel="")
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
    """Training loss (as logged, every few dozen steps) and the validation loss and scores against epochs."""
    history = record["train"]["history"]
    train = [h for h in history if "loss" in h]
    evals = [h for h in history if "eval_loss" in h]
    style = dict(marker="o", markersize=3) if len(evals) > 1 else dict(marker="o")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, key, points in (("training", "loss", train), ("validation", "eval_loss", evals)):
        left.plot([h["epoch"] for h in points], [h[key] for h in points], label=f"{name} loss ({len(points)} points)",
                  **style)
    left.set(title="Loss", xlabel="epoch")
    left.legend()
    for metric in ("eval_accuracy", "eval_f1_macro"):
        right.plot([h["epoch"] for h in evals], [h[metric] for h in evals], label=metric[5:], **style)
    best = record["train"].get("best_epoch")
    if best is not None:  # restored with early stopping; otherwise the final weights are tested
        kept = "best checkpoint, kept" if record["config"].get("early_stopping_patience") else "best validation score"
        right.axvline(best, color="gray", linestyle="--", label=f"{kept} (epoch {best:.2f})")
    right.set(title="Validation scores", xlabel="epoch")
    right.legend(fontsize=8)
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


def accuracy_against_cost(records: dict[str, dict], seeds=None) -> plt.Figure:
    """Test accuracy of each trained run against its trainable weights and saved size (log scales), the majority
    class as the floor; each seed a dot, the mean +- standard deviation a bar where there are several."""
    runs = over_seeds(records, seeds)
    trained = [r for r in ordered(records) if "train" in r]
    floor = [r for r in records.values() if r["kind"] == "majority"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    panels = ((axes[0], "trainable weights", lambda r: r["params"]["trainable"]),
              (axes[1], "saved size (MB)", lambda r: r.get("resources", {}).get("saved_mb")))
    for ax, xlabel, x in panels:
        for i, r in enumerate(trained):
            if not x(r):  # missing, or 0, has no place on a log scale
                continue
            accuracy = [found["metrics"]["accuracy"] for found in runs[r["run"]]]
            ax.scatter([x(r)] * len(accuracy), accuracy, s=50 if len(accuracy) == 1 else 15, color=f"C{i}")
            if len(accuracy) > 1:
                ax.errorbar(x(r), np.mean(accuracy), yerr=np.std(accuracy, ddof=1), color=f"C{i}", capsize=4)
            ax.annotate(r["run"], (x(r), np.mean(accuracy)), xytext=(5, 4), textcoords="offset points", fontsize=8)
        for r in floor:
            ax.axhline(r["metrics"]["accuracy"], color="gray", linestyle="--", label="majority class")
        ax.set(xscale="log", xlabel=xlabel, title=f"test accuracy against {xlabel.split(' (')[0]}")
        ax.margins(x=0.25)  # room for the names
    axes[0].set_ylabel("accuracy")
    if floor:
        axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def summary_table(records: dict[str, dict], seeds=None) -> pd.DataFrame:
    """Scores (mean +- standard deviation over the seeds where there are several) and costs of each run; peak
    memory is left out: measured inside one notebook process, it depends on what ran before."""
    runs = over_seeds(records, seeds)
    rows = []
    for r in ordered(records):
        train, resources = r.get("train") or {}, r.get("resources") or {}
        total, found = r["params"]["total"], runs[r["run"]]
        rows.append({
            "run": r["run"], **_scores(found), "seeds": len(found),
            "trainable params": f"{r['params']['trainable']:,}",
            "trainable %": f"{r['params']['trainable'] / total:.2%}" if total else "-",
            "train time (s)": train.get("seconds", "-"), "train examples/s": train.get("examples_per_second", "-"),
            "saved (MB)": resources.get("saved_mb", "-"), "test examples": r["n_examples"]})
    return pd.DataFrame(rows)


def _scores(found: list[dict]) -> dict:  # accuracy and macro-F1 over a run's records, as the tables show them
    return {metric: spread_text([f["metrics"][metric] for f in found]) for metric in ("accuracy", "f1_macro")}


def spread_text(values: list[float]):
    """A score as the table shows it: the value for one seed, "mean ± std" over several."""
    values = list(values)
    if len(values) == 1:
        return round(values[0], 4)
    return mean_std(spread(values))


def sweep_frame(records: dict[str, dict], seeds=None) -> pd.DataFrame:
    """One row per sweep run and seed: its settings, size, time and test scores."""
    set_names = {modules: name for name, modules in TARGET_SETS.items()}
    rows = []
    for run, found in over_seeds(records, seeds).items():
        for r in found:
            config = r["config"]
            rows.append({
                "run": run, "seed": r["meta"]["seed"],
                "targets": set_names.get(tuple(config["target_modules"] or ()), "custom"),
                "r": config["r"], "alpha": config["alpha"], "alpha/r": config["alpha"] / config["r"],
                "trainable": r["params"]["trainable"], "accuracy": r["metrics"]["accuracy"],
                "f1_macro": r["metrics"]["f1_macro"], "seconds": r["train"]["seconds"],
            })
    return pd.DataFrame(rows).sort_values(["targets", "r", "alpha", "seed"]).reset_index(drop=True)


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
    n = frame.groupby("run")["seed"].size()
    for ax, metric in zip(axes[:2], ("accuracy", "f1_macro")):
        sns.lineplot(grid, x="r", y=metric, hue="alpha/r", errorbar="sd", palette="tab10", ax=ax)
        sns.scatterplot(grid, x="r", y=metric, hue="alpha/r", palette="tab10", s=18, legend=False, ax=ax)
        ax.set(xscale="log", xticks=sorted(grid["r"].unique()), xticklabels=sorted(grid["r"].unique()),
               title=f"{metric} against rank (query, value)")
    sns.scatterplot(frame, x="trainable", y="accuracy", hue="targets", style="alpha/r", s=40, ax=axes[2])
    axes[2].set(xscale="log", title="accuracy against trainable parameters (a dot per seed)")
    said = f"{n.min()} seed{'s' if n.min() > 1 else ''} per run" + (f" (up to {n.max()})" if n.max() > n.min() else "")
    fig.suptitle(f"{said}; lines: mean, bands: standard deviation", fontsize=9, y=1.02)
    fig.tight_layout()
    return fig


def sweep_heatmap(frame: pd.DataFrame, metric: str = "accuracy") -> plt.Figure:
    """Mean test metric over the seeds for each rank x alpha/r on query/value, annotated mean ± std."""
    grid = frame[frame["targets"] == "query-value"]
    mean = grid.pivot_table(index="r", columns="alpha/r", values=metric, aggfunc="mean")
    std = grid.pivot_table(index="r", columns="alpha/r", values=metric, aggfunc="std").reindex_like(mean)
    n = grid.groupby("run")["seed"].size().min()
    labels = mean.map(lambda v: f"{v:.3f}") if n == 1 else mean.combine(std, lambda m, s: m.map("{:.3f}".format)
                                                                          + "\n± " + s.map("{:.3f}".format))
    fig, ax = plt.subplots(figsize=(5, 3.8))
    sns.heatmap(mean, annot=labels, fmt="", cmap="viridis", ax=ax)
    ax.set(title=f"test {metric}: rank x alpha/r ({'mean ± std over ' + str(n) + ' seeds' if n > 1 else '1 seed'})")
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
    pairs = [(labels[i], labels[j], total[i, j] / errors)
             for i in range(len(labels)) for j in range(len(labels)) if i != j]
    return pd.DataFrame(pairs, columns=["true", "predicted", "share of errors"]).sort_values(
        "share of errors", ascending=False).reset_index(drop=True)


def learning_curves(points: pd.DataFrame, metrics=("accuracy", "f1_macro")) -> plt.Figure:
    """Test scores against training examples per class (curves.points), per method: mean, +- 1 std band, draws."""
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


def recipe_speeds(folder: Path) -> dict[str, dict]:
    """Each recipe's speed and peak memory in folder/speed.json (benchmarks/throughput.py --which), with its device."""
    path = Path(folder) / "speed.json"
    if not path.exists():
        return {}
    measured = json.loads(path.read_text())
    return {name: {**timed, "device": measured["meta"]["device"]} for name, timed in measured["recipes"].items()}


def recipe_speed(found: list[dict], timed: dict | None = None) -> dict:
    """A recipe's examples/s, minutes for its budget and peak memory: from timed (recipe_speeds) where given, else
    from its records (whatever trained them; several runs at once on a GPU make those times meaningless)."""
    processed = float(np.mean([f["train"]["examples_per_second"] * f["train"]["seconds"] for f in found]))
    if timed:
        per_second, memory, where = timed["examples_per_second"], timed["peak_memory_mb"], timed["device"]
    else:
        per_second = float(np.mean([f["train"]["examples_per_second"] for f in found]))
        memory = float(np.mean([f["resources"]["peak_memory_mb"] for f in found]))
        where = found[0]["meta"]["device"]
    return {"examples/s": per_second, "minutes": processed / per_second / 60, "peak MB": memory, "speed on": where}


def recipe_table(runs: dict[str, list[dict]], speed: dict | None = None) -> pd.DataFrame:
    """Notebook 08: each recipe's test scores (mean ± std over its seeds) and costs (recipe_speed)."""
    rows = []
    for name, found in runs.items():
        cost = recipe_speed(found, (speed or {}).get(name))
        rows.append({
            "recipe": name, **_scores(found), "seeds": len(found),
            "trainable params": f"{found[0]['params']['trainable']:,}",
            "train examples/s": round(cost["examples/s"], 1), "train time (min)": round(cost["minutes"], 1),
            "peak memory (MB)": round(cost["peak MB"]),
            "adapter (MB)": round(float(np.mean([f["resources"]["saved_mb"] for f in found])), 2),
            "accuracy runs on": ", ".join(sorted({f["meta"]["device"] for f in found})), "speed on": cost["speed on"]})
    return pd.DataFrame(rows)


def recipe_costs(runs: dict[str, list[dict]], speed: dict | None = None) -> plt.Figure:
    """Notebook 08: test accuracy of each recipe against its training time (recipe_speed) and trainable weights;
    each seed a dot, mean ± std a bar; a colour and marker per recipe, named in the legend (labels would pile up)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), sharey=True, layout="constrained")
    markers, speed = "osD^v", speed or {}
    style = {name: {"color": f"C{i % 10}", "marker": markers[i // 10 % len(markers)]} for i, name in enumerate(runs)}
    panels = ((axes[0], "training time (min)", lambda name, found: recipe_speed(found, speed.get(name))["minutes"],
               "linear"),
              (axes[1], "trainable weights", lambda name, found: found[0]["params"]["trainable"], "log"))
    handles = {}
    for ax, xlabel, x, scale in panels:
        for name, found in runs.items():
            where, ys = x(name, found), [f["metrics"]["accuracy"] for f in found]
            handles[name] = ax.scatter([where] * len(ys), ys, s=12 if len(found) > 1 else 40, alpha=0.6, **style[name])
            if len(found) > 1:
                handles[name] = ax.errorbar(where, np.mean(ys), yerr=np.std(ys, ddof=1), capsize=3, markersize=7,
                                            label=name, **style[name])
        ax.set(xscale=scale, xlabel=xlabel, title=f"test accuracy against {xlabel.split(' (')[0]}")
        ax.margins(x=0.1)
    axes[0].set_ylabel("accuracy")
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize=8, frameon=False)
    return fig


def serving_costs(frame: pd.DataFrame, title: str) -> plt.Figure:
    """Memory (held, and while classifying: dotted), load time and rows/s against the number of tasks served, a line
    per way (the adapters' mixed batches dashed)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    columns = (("held_mb", "memory the models add (MB)"), ("load_s", "load time (s)"),
               ("rows_per_s", "rows classified per second"))
    for color, (way, rows) in zip(sns.color_palette("colorblind"), frame.groupby("way", sort=False)):
        for ax, (column, label) in zip(axes, columns):
            ax.plot(rows["tasks"], rows[column], marker="o", color=color, label=SERVING_WAYS[way])
            ax.set(xlabel="tasks served", ylabel=label, xticks=sorted(frame["tasks"].unique()))
        axes[0].plot(rows["tasks"], rows["working_mb"], marker=".", ls=":", color=color)
        if rows["mixed_rows_per_s"].notna().any():
            axes[2].plot(rows["tasks"], rows["mixed_rows_per_s"], marker="s", ls="--", color=color,
                         label=SERVING_WAYS[way] + ", tasks mixed in each batch")
    for ax in axes:
        ax.set_ylim(bottom=0)
    axes[0].set_title("held once loaded (solid); while classifying (dotted)", fontsize=9)
    axes[2].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def treatments(scores: dict[str, dict], title: str) -> plt.Figure:
    """Accuracy of each way of training (a row each): a dot per seed, joined across rows by seed, and the mean."""
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.55 * len(scores)))
    names = list(scores)
    seeds = sorted({seed for by_seed in scores.values() for seed in by_seed})
    for color, seed in zip(sns.color_palette("colorblind"), seeds):
        ax.plot([scores[n].get(seed, np.nan) for n in names], range(len(names)), marker="o", ls=":", lw=0.8,
                color=color, label=f"seed {seed}")
    ax.scatter([np.mean(list(scores[n].values())) for n in names], range(len(names)), marker="|", s=400,
               color="black", label="mean", zorder=3)
    ax.set(yticks=range(len(names)), yticklabels=names, xlabel="test accuracy", title=title)
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig
