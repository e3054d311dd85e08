"""The figures show what their titles say: recall rows, every seed, the budget, ranks in numeric order, the default."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from lora_ft import Config, plots, sweep_plots
from lora_ft.config import TARGET_SETS
from lora_ft.run import record as run_record

LABELS = ["negative", "neutral", "positive"]
TRUE = np.array([0, 0, 0, 0, 1, 1, 2, 2])


def record(run, kind, predicted=(0, 0, 0, 1, 1, 2, 2, 0), seed=42, trainable=10, seconds=1.0, smoke=True, **settings):
    trained = kind not in ("majority", "pretrained-baseline")
    train = {"seconds": seconds, "examples_per_second": 6.0, "epochs": 1.0, "history": []} if trained else None
    return run_record(run, kind, Config(smoke=smoke, seed=seed, **settings), LABELS, "test", TRUE,
                      np.array(predicted), {"trainable": trainable, "total": 1000}, train,
                      {"peak_memory_mb": 1.0, "saved_mb": 0.1})


@pytest.fixture(scope="module")
def runs():
    """Every kind notebook 04 compares, three seeds each; the trained runs take longer on the later seeds."""
    kinds = {"majority": (0,) * 8, "pretrained-baseline": (2,) * 8, "tfidf-logreg": (0, 0, 0, 1, 1, 1, 2, 0),
             "full-finetune": tuple(TRUE), "lora": (0, 0, 0, 1, 1, 2, 2, 0)}
    return {kind: [record(kind, kind, predicted, seed=seed, seconds=10.0 * (seed - 41))
                   for seed in (42, 43, 44)] for kind, predicted in kinds.items()}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_confusion_matrices_show_recall_rows_that_sum_to_one(runs):
    fig = plots.confusion_matrices({run: found[0] for run, found in runs.items()})
    assert "row-normalised (recall)" in fig._suptitle.get_text()
    for ax, found in zip(fig.axes, runs.values()):
        shown = np.asarray(ax.collections[0].get_array()).reshape(3, 3)
        assert shown.sum(axis=1) == pytest.approx(np.ones(3))
        assert [t.get_text() for t in ax.texts] == [f"{v:.2f}" for v in shown.ravel()]  # shares, not counts
        assert shown[2, 2] == pytest.approx(found[0]["metrics"]["per_class"]["positive"]["recall"])


def test_metric_dots_draw_every_seed_of_the_trained_runs_and_name_the_rest(runs):
    records = {run: found[0] for run, found in runs.items()}
    fig = plots.metric_dots(records, seeds=runs)
    accuracy = fig.axes[0]
    seeds = [c for c in accuracy.collections if type(c).__name__ == "PathCollection"]
    assert len(seeds) == 3 and all(len(c.get_offsets()) == 3 for c in seeds)  # the trained runs, each seed a dot
    low, high = accuracy.get_xlim()
    assert low > runs["majority"][0]["metrics"]["accuracy"]  # the axis is zoomed to the trained runs
    aside = [t.get_text() for t in accuracy.texts if "trains nothing" in t.get_text()]
    assert len(aside) == 2 and aside[0].startswith(f"◀ {runs['majority'][0]['metrics']['accuracy']:.4f}")


def test_accuracy_against_cost_draws_every_seed_against_weights_and_training_time(runs):
    records = {run: found[0] for run, found in runs.items()}
    by_weights, by_time = plots.accuracy_against_cost(records, seeds=runs).axes
    assert by_time.get_xlabel() == "training time (s)"
    for ax in (by_weights, by_time):
        assert [t.get_text() for t in ax.texts] == ["tfidf-logreg", "full-finetune", "lora"]  # trained runs only
    dots = [c.get_offsets() for c in by_time.collections if type(c).__name__ == "PathCollection"]
    assert [list(d[:, 0]) for d in dots] == [[10.0, 20.0, 30.0]] * 3  # each seed at its own train.seconds
    assert "majority class 0.500: below the axis" in by_weights.get_ylabel()


def test_the_untrained_model_is_drawn_as_not_trained():
    records = {"pretrained-baseline": record("pretrained-baseline", "pretrained-baseline", trainable=1000),
               "lora": record("lora", "lora")}
    ax = plots.parameter_counts(records).axes[0]
    assert [t.get_text() for t in ax.texts] == [" not trained (its size only)", " 1.00% trainable"]
    orange = [p for p in ax.patches if p.get_facecolor()[:3] == pytest.approx((1.0, 0.498, 0.055), abs=1e-3)]
    assert len(orange) == 1  # lora's trained share; none for the untrained model


def sweep_records(train_size=4000, epochs=1.0):
    """Query/value at three ranks and two alphas, in the order a string sort gives (r16 before r4)."""
    names = sorted(f"sweep-query-value-r{r}-alpha{alpha}" for r in (1, 4, 16) for alpha in (r, 2 * r))
    settings = dict(target_modules=TARGET_SETS["query-value"], train_size=train_size, epochs=epochs, smoke=False)
    return {name: record(name, "lora", r=int(name.split("-r")[1].split("-")[0]),
                         alpha=float(name.split("alpha")[1]), **settings) for name in names}


def test_misidentification_sorts_ranks_as_numbers():
    ax = sweep_plots.misidentification(sweep_records()).axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    ranks = [int(row.split("-r")[1].split("-")[0]) for row in rows]
    assert ranks == [1, 1, 4, 4, 16, 16]


@pytest.mark.parametrize("train_size, epochs, said", [(4000, 1.0, "1 epoch, 4,000 training examples"),
                                                      (None, 2.0, "2 epochs, the whole training split")])
def test_sweep_figures_state_the_budget_the_records_ran(train_size, epochs, said):
    records = sweep_records(train_size, epochs)
    frame = sweep_plots.sweep_frame(records)
    assert sweep_plots.budget(frame) == said
    assert said in sweep_plots.sweep_lines(frame)._suptitle.get_text()
    assert said in sweep_plots.sweep_heatmap(frame).axes[0].get_title()
    assert said in sweep_plots.misidentification(records).axes[0].get_title()


def test_learning_curves_split_lora_from_the_rest_and_draw_the_majority_class():
    points = pd.DataFrame([{"method": method, "per_class": n, "x": float(n), "seed": seed,
                            "accuracy": 0.5 + n / 1000, "f1_macro": 0.4 + n / 1000}
                           for method in ("lora", "lora-small", "tfidf-logreg") for n in (8, 32) for seed in (42, 43)])
    majority = record("majority", "majority", predicted=(0,) * 8)
    fig = plots.learning_curves(points, majority=majority)
    assert [ax.get_title() for ax in fig.axes] == ["LoRA: test accuracy", "other methods: test accuracy",
                                                   "LoRA: test f1_macro", "other methods: test f1_macro"]
    for ax, metric in zip(fig.axes, ("accuracy", "accuracy", "f1_macro", "f1_macro")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        floor = majority["metrics"][metric]
        assert list(lines[f"majority class ({floor:.3f})"].get_ydata()) == [floor, floor]
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes[:2]]
    assert legends[0][-2:] == ["lora", "lora-small"] and legends[1][-1] == "tfidf-logreg"


def test_recipe_costs_mark_the_default_and_say_the_time_is_estimated():
    def run(accuracy, trainable):
        return {"metrics": {"accuracy": accuracy}, "params": {"trainable": trainable},
                "train": {"examples_per_second": 100.0, "seconds": 60.0},
                "resources": {"peak_memory_mb": 1.0}, "meta": {"device": "cpu"}}

    names = ["query-value", "attention", "all-linear", *(f"all-linear-{i}" for i in range(10)), "all-linear-dropout0"]
    runs = {name: [run(0.80 + i / 1000, 1000 * (i + 1)), run(0.81, 1000)] for i, name in enumerate(names)}
    for added, default in ((None, "all-linear-dropout0"), ("all-linear-dropout0-eager", "all-linear-dropout0-eager")):
        if added:  # once the eager recipe exists it is the default
            runs[added] = [run(0.805, 2000), run(0.806, 2000)]
        fig = plots.recipe_costs(runs)
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert [label for label in labels if "(default" in label] == [f"{default} (default; dotted: its mean)"]
        dots = {name: c for name, c in zip(runs, (c for c in fig.axes[0].collections
                                                  if type(c).__name__ == "PathCollection"))}
        styles = {(tuple(np.round(d.get_facecolor()[0][:3], 3)), d.get_paths()[0].vertices.tobytes())
                  for d in dots.values()}
        assert len(styles) == len(runs)  # no two recipes look alike
        black = [name for name, d in dots.items() if tuple(d.get_facecolor()[0][:3]) == (0.0, 0.0, 0.0)]
        assert black == [default]  # and only the default is black
        assert "estimated" in fig.axes[0].get_xlabel() and "examples/s measured on cpu" in fig.axes[0].get_xlabel()
        plt.close(fig)
    assert "(default" in plots.recipe_costs(runs, default="attention").legends[0].get_texts()[1].get_text()
