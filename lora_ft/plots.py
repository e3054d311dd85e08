"""Figures for the notebooks; each function returns a matplotlib Figure and saves nothing itself."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .config import Config
from .grids import DEFAULT_RECIPE
from .io import atomic_file
from .report import SERVING_WAYS
from .stats import mean_std, spread

RUN_ORDER = {"majority": 0, "pretrained-baseline": 1, "tfidf-logreg": 2, "linear-probe": 3, "full-finetune": 4,
             "lora": 5}  # by kind: the cheapest reference first, LoRA last
MARKERS = "osD^vPX"  # a marker per method or recipe, beside its colour (a star marks the default recipe)
DEFAULT_RECIPES = (DEFAULT_RECIPE, "all-linear-dropout0")  # Config's defaults as a recipe, or the sdpa one before it
METRICS = ("accuracy", "f1_macro")  # what the tables and figures score


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


def metric_dots(records: dict[str, dict], seeds=None) -> plt.Figure:
    """Test scores zoomed to the trained runs: a dot per seed, mean ± std a bar; untrained runs written at the edge."""
    runs = over_seeds(records, seeds)
    rows = ordered(records)
    trained = [r for r in rows if "train" in r] or rows
    reference = next((r for r in trained if r["kind"] == "full-finetune"), None)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(6 * len(METRICS), 1.4 + 0.55 * len(rows)), sharey=True)
    for ax, metric in zip(axes, METRICS):
        for i, r in enumerate(rows):
            values = _values(runs[r["run"]], metric)
            if r not in trained:  # far below the others: drawn, it would squeeze them together
                ax.annotate(f"◀ {spread_text(values)}: trains nothing, off the axis", (0.01, i),
                            xycoords=("axes fraction", "data"), va="center", fontsize=8, color="gray")
                continue
            ax.scatter(values, [i] * len(values), s=18, color=f"C{i}", alpha=0.6, zorder=3)
            ax.errorbar(np.mean(values), i, xerr=np.std(values, ddof=1) if len(values) > 1 else 0, fmt="|",
                        markersize=16, capsize=5, color=f"C{i}")
            ax.annotate(spread_text(values), (np.mean(values), i), xytext=(0, 10), textcoords="offset points",
                        ha="center", fontsize=8)
        if reference:  # the ceiling LoRA is measured against
            ax.axvline(np.mean(_values(runs[reference["run"]], metric)), color="gray", ls=":", lw=1)
        ax.set(xlabel=f"test {metric}", ylim=(len(rows) - 0.4, -0.7))  # the cheapest run on top, as in the tables
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.12)
    axes[0].set(yticks=range(len(rows)), yticklabels=[r["run"] for r in rows])
    n = sorted({len(runs[r["run"]]) for r in trained})
    fig.suptitle("Test scores on an axis zoomed to the trained runs: each seed a dot, mean ± standard deviation a bar "
                 f"({' to '.join(map(str, n))} seed{'s' if n[-1] > 1 else ''} per run)"
                 + ("; dotted: full fine-tuning's mean" if reference else ""), fontsize=10)
    fig.tight_layout()
    return fig


def confusion_matrices(records: dict[str, dict]) -> plt.Figure:
    """Each run's confusion matrix, row-normalised (recall on the diagonal), each true class's test examples named."""
    runs = ordered(records)
    columns = min(len(runs), 3)
    rows = -(-len(runs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.8 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(runs):]:
        ax.axis("off")
    for ax, record in zip(axes.flat, runs):
        matrix = np.asarray(record["confusion_matrix"])
        recall = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        sns.heatmap(recall, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                    xticklabels=record["labels"],
                    yticklabels=[f"{label} ({n:,})" for label, n in zip(record["labels"], matrix.sum(axis=1))])
        ax.set(title=f"{record['run']} (accuracy {record['metrics']['accuracy']:.3f})", xlabel="predicted",
               ylabel="true (test examples)")
    seeds = ", ".join(str(s) for s in sorted({r["meta"]["seed"] for r in runs}))
    fig.suptitle(f"Confusion matrices, row-normalised (recall): each true class's row sums to 1 (seed {seeds})")
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
    """Trainable and total weights of each run (log scale); a run that trains nothing shows its size only."""
    runs = [r for r in ordered(records) if r["params"]["total"]]
    fig, ax = plt.subplots(figsize=(7, 1 + 0.45 * len(runs)))
    names = [r["run"] for r in runs]
    ax.barh(names, [r["params"]["total"] for r in runs], color="lightgray")
    for name, r in zip(names, runs):
        trainable = r["params"]["trainable"] if "train" in r else 0
        if trainable:
            ax.barh(name, trainable, color="tab:orange")
        said = f"{trainable / r['params']['total']:.2%} trainable" if trainable else "not trained (its size only)"
        ax.text(r["params"]["total"], name, f" {said}", va="center", fontsize=8)
    # named in the title: a legend would cover a bar once there are more than a few runs
    ax.set(xscale="log", title="Parameters (log scale): trained in orange, total in gray", xlabel="parameters")
    return fig


def accuracy_against_cost(records: dict[str, dict], seeds=None) -> plt.Figure:
    """Test accuracy of each trained run against its trainable weights and training time, each seed a dot."""
    runs = over_seeds(records, seeds)
    trained = [(i, r) for i, r in enumerate(ordered(records)) if "train" in r]  # i: its colour, as in metric_dots
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    panels = ((axes[0], "trainable weights", lambda f: f["params"]["trainable"]),
              (axes[1], "training time (s)", lambda f: f["train"]["seconds"]))
    for ax, xlabel, x in panels:
        for i, r in trained:
            found = runs[r["run"]]
            xs, ys = [x(f) for f in found], _values(found)
            ax.scatter(xs, ys, s=50 if len(found) == 1 else 16, color=f"C{i}", alpha=0.7)
            if len(found) > 1:
                ax.errorbar(np.mean(xs), np.mean(ys), xerr=np.std(xs, ddof=1), yerr=np.std(ys, ddof=1),
                            color=f"C{i}", capsize=4)
            ax.annotate(r["run"], (max(xs), np.mean(ys)), xytext=(6, 3), textcoords="offset points", fontsize=8)
        ax.set(xscale="log", xlabel=xlabel, title=f"test accuracy against {xlabel.split(' (')[0]}")
        ax.margins(x=0.25)  # room for the names
        ax.grid(alpha=0.3)
    low, high = axes[0].get_ylim()
    ylabel = "test accuracy"
    for r in (r for r in records.values() if r["kind"] == "majority"):
        floor = float(np.mean(_values(runs[r["run"]])))
        if low <= floor <= high:
            for ax in axes:
                ax.axhline(floor, color="gray", ls="--", lw=1)
        ylabel += f"\n(majority class {floor:.3f}: {'dashed' if low <= floor <= high else 'below the axis'})"
    n = sorted({len(runs[r["run"]]) for _, r in trained}) or [0]
    axes[0].set_ylabel(ylabel)
    fig.suptitle(f"{' to '.join(map(str, n))} seed{'s' if n[-1] > 1 else ''} per run: each seed a dot, "
                 "mean ± standard deviation bars", fontsize=10)
    fig.tight_layout()
    return fig


def summary_table(records: dict[str, dict], seeds=None) -> pd.DataFrame:
    """Scores (mean ± std over the seeds) and costs of each run; not peak memory, which depends on what ran before."""
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


def _values(found: list[dict], metric: str = "accuracy") -> list[float]:  # a metric over a run's records
    return [f["metrics"][metric] for f in found]


def _scores(found: list[dict]) -> dict:  # accuracy and macro-F1 over a run's records, as the tables show them
    return {metric: spread_text(_values(found, metric)) for metric in METRICS}


def spread_text(values: list[float]):
    """A score as the table shows it: the value for one seed, "mean ± std" over several."""
    values = list(values)
    if len(values) == 1:
        return round(values[0], 4)
    return mean_std(spread(values))


def learning_curves(points: pd.DataFrame, majority: dict | None = None) -> plt.Figure:
    """Test scores against examples per class (curves.points); dashed, majority (default: results/majority.json)."""
    path = Config().paths.results / "majority.json"
    if majority is None and path.exists():
        majority = json.loads(path.read_text())
    methods = list(dict.fromkeys(points["method"]))
    groups = {"LoRA": [m for m in methods if m.startswith("lora")],
              "other methods": [m for m in methods if not m.startswith("lora")]}
    groups = {name: shown for name, shown in groups.items() if shown}
    marker = dict(zip(methods, MARKERS * len(methods)))
    fig, axes = plt.subplots(len(METRICS), len(groups), figsize=(6.5 * len(groups), 3.9 * len(METRICS)),
                             sharex=True, sharey="row", squeeze=False)
    ticks = points.drop_duplicates("x").sort_values("x")
    for row, metric in zip(axes, METRICS):
        stats = {m: points[points["method"] == m].groupby("x")[metric].agg(["mean", "std"]).fillna(0.0)
                 for m in methods}
        for ax, (group, shown) in zip(row, groups.items()):
            for i, other in enumerate(m for m in methods if m not in shown):
                ax.plot(stats[other].index, stats[other]["mean"], color="0.7", lw=1, zorder=1,
                        label="the other column's means" if i == 0 else None)
            for k, method in enumerate(shown):
                apart = 1.12 ** (k - (len(shown) - 1) / 2)  # on the log axis, so bars and draws do not overlap
                drawn = points[points["method"] == method]
                ax.errorbar(stats[method].index * apart, stats[method]["mean"], yerr=stats[method]["std"], capsize=3,
                            markersize=5, color=f"C{k}", marker=marker[method], label=method)
                ax.scatter(drawn["x"] * apart, drawn[metric], s=9, alpha=0.45, color=f"C{k}")
            if majority:
                ax.axhline(majority["metrics"][metric], color="gray", ls="--", lw=1,
                           label=f"majority class ({majority['metrics'][metric]:.3f})")
            ax.set(xscale="log", title=f"{group}: test {metric}")
            ax.set_xticks(ticks["x"], ["all" if n is None or n != n else f"{int(n)}" for n in ticks["per_class"]])
            ax.minorticks_off()
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
        row[0].set_ylabel(f"test {metric}")
    for ax in axes[-1]:
        ax.set_xlabel("training examples per class")
    fig.suptitle("Mean and ± 1 standard deviation over the draws (bars), each draw a dot", fontsize=10)
    fig.tight_layout()
    return fig


def recipe_speeds(folder: Path) -> dict[str, dict]:
    """Each recipe's speed and peak memory in folder/speed.json (bash benchmarks/recipe_speeds.sh), with its device."""
    path = Path(folder) / "speed.json"
    if not path.exists():
        return {}
    measured = json.loads(path.read_text())
    return {name: {**timed, "device": measured["meta"]["device"]} for name, timed in measured["recipes"].items()}


def recipe_speed(found: list[dict], timed: dict | None = None) -> dict:
    """A recipe's examples/s, minutes for its budget and peak memory: from timed (recipe_speeds), else its records."""
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


def recipe_costs(runs: dict[str, list[dict]], speed: dict | None = None, default=DEFAULT_RECIPES) -> plt.Figure:
    """Notebook 08: each recipe's accuracy against training time and trainable weights; default: a name or names, the
    first that runs holds drawn as a black star (legend, not labels: they would pile up)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), sharey=True, layout="constrained")
    speed, names = speed or {}, (default,) if isinstance(default, str) else default
    chosen = next((name for name in names if name in runs), None)
    # 10 colours against 7 markers: two recipes share a colour only 10 apart, and then not their marker; the default
    # alone is black, a star
    others = [name for name in runs if name != chosen]
    style = {name: {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)]} for i, name in enumerate(others)}
    style.update({chosen: {"color": "black", "marker": "*"}} if chosen else {})
    costs = {name: recipe_speed(found, speed.get(name)) for name, found in runs.items()}
    measured = " and ".join(sorted({cost["speed on"] for cost in costs.values()}))
    panels = ((axes[0], f"training time (min), estimated:\nexamples trained / examples/s measured on {measured}",
               lambda name: costs[name]["minutes"], "linear"),
              (axes[1], "trainable weights", lambda name: runs[name][0]["params"]["trainable"], "log"))
    handles = {}
    for ax, xlabel, x, scale in panels:
        for name, found in runs.items():
            where, ys, big = x(name), _values(found), name == chosen
            handles[name] = ax.scatter([where] * len(ys), ys, s=(12 if len(found) > 1 else 40) * (3 if big else 1),
                                       alpha=0.6, **style[name])
            if len(found) > 1:
                handles[name] = ax.errorbar(where, np.mean(ys), yerr=np.std(ys, ddof=1), capsize=3,
                                            markersize=13 if big else 7, **style[name])
        if chosen:
            ax.axhline(np.mean(_values(runs[chosen])), color="black", ls=":", lw=0.8)
        ax.set(xscale=scale, xlabel=xlabel, title=f"test accuracy against {xlabel.split(' (')[0]}")
        ax.margins(x=0.1)
    axes[0].set_ylabel("accuracy")
    labels = [f"{name} (default; dotted: its mean)" if name == chosen else name for name in handles]
    fig.legend(list(handles.values()), labels, loc="outside right center", fontsize=8, frameon=False)
    return fig


def serving_costs(frame: pd.DataFrame, title: str) -> plt.Figure:
    """Memory (held; while classifying dotted), load time and rows/s against the tasks served, a line per way."""
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
