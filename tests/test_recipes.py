"""Notebook 08's recipes: one budget for all, each recipe's own settings on top, speeds read back."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from lora_ft import Config, experiments, grids, plots, report_recipes, results
from lora_ft.config import LEARNING_RATE, ROOT, TARGET_SETS
from lora_ft.errors import ConfigError

FOLDER = ROOT / "results" / "recipes"


def test_every_recipe_gets_the_budget_unless_it_is_the_budget_question():
    config = Config(smoke=False, output_root="unused")
    for name in grids.RECIPES:
        settings = experiments.recipe(name).settings(config)
        assert settings.train_size is None and settings.early_stopping_patience == 0
        assert settings.epochs == (3.0 if name.endswith("-3epochs") else grids.RECIPE_BUDGET["epochs"]), name
    assert experiments.recipe("query-value").settings(config).target_modules == TARGET_SETS["query-value"]
    lr = experiments.recipe("all-linear-lr0.0003-ratio1").settings(config)
    assert (lr.learning_rate, lr.alpha / lr.r) == (3e-4, 1.0)
    with pytest.raises(ConfigError, match="unknown recipe 'qv': choose from query-value, "):
        experiments.recipe("qv")


def test_every_committed_recipe_record_is_finished():
    """Planning each committed recipe record's run (no training) finds it finished: RECIPE_BASE and RECIPES still
    describe the settings the records hold (learning rate config.LEARNING_RATE, target sets config.TARGET_SETS)."""
    paths = sorted(FOLDER.glob("*.json")) + sorted((FOLDER / "seeds").glob("*.json"))
    made = [results.read(path) for path in paths if path.name != "speed.json"]
    assert len(made) >= len(grids.RECIPES)
    grid = [experiments.recipe(r["run"], r["meta"]["seed"]) for r in made]
    todo, done = experiments.plan(grid, Config(smoke=False), FOLDER)
    assert todo == [] and len(done) == len(made)
    assert grids.RECIPE_BASE["learning_rate"] == LEARNING_RATE


def test_groups_name_known_recipes_and_each_recipe_is_in_a_group():
    grouped = {name for names in grids.GROUPS.values() for name in names}
    assert grouped <= set(grids.RECIPES) and set(grids.RECIPES) <= grouped


def test_every_recipe_of_a_group_is_compared_with_a_recipe_of_that_group():
    for group, names in grids.GROUPS.items():
        pairs = grids.comparisons(group)
        assert all(name in names and reference in names and name != reference for name, reference in pairs), group
        assert {name for pair in pairs for name in pair} == set(names), group
    assert grids.comparisons("targets") == (("attention", "query-value"), ("all-linear", "query-value"))
    assert ("query-value-3epochs", "query-value") in grids.comparisons("budget")


def test_speeds_come_back_with_the_machine_that_measured_them(tmp_path):
    config = Config(output_root=str(tmp_path))
    assert plots.recipe_speeds(experiments.recipe_folder(config)) == {}
    experiments.recipe_folder(config).mkdir(parents=True)
    (experiments.recipe_folder(config) / "speed.json").write_text(json.dumps({
        "recipes": {"all-linear": {"examples_per_second": 150.0, "peak_memory_mb": 900.0}},
        "meta": {"device": "cpu (2 threads)"}}))
    assert plots.recipe_speeds(experiments.recipe_folder(config)) == {
        "all-linear": {"examples_per_second": 150.0, "peak_memory_mb": 900.0, "device": "cpu (2 threads)"}}


def test_recipes_do_not_follow_the_defaults_so_their_records_stay_valid():
    """Adopting a recipe as Config's default must not turn the grid's records stale (or change what they mean)."""
    config = Config(smoke=False, output_root="unused")
    moved = config.replace(base_dropout=0.0, target_modules=("query", "value"), learning_rate=5e-4, alpha=8.0)
    for name in grids.RECIPES:
        assert experiments.recipe(name).settings(moved) == experiments.recipe(name).settings(config), name


def test_the_cost_figure_names_every_recipe_once_with_a_style_of_its_own():
    def run(accuracy, trainable):
        return {"metrics": {"accuracy": accuracy}, "params": {"trainable": trainable},
                "train": {"examples_per_second": 100.0, "seconds": 60.0},
                "resources": {"peak_memory_mb": 1.0}, "meta": {"device": "cpu"}}

    runs = {f"recipe-{i}": [run(0.80 + i / 1000, 1000 * (i + 1)), run(0.81, 1000 * (i + 1))] for i in range(12)}
    runs["single"] = [run(0.7, 500)]
    speed = {"recipe-0": {"examples_per_second": 50.0, "peak_memory_mb": 1.0, "device": "cpu"}}
    fig = plots.recipe_costs(runs, speed)
    legend = fig.legends[0]
    assert [text.get_text() for text in legend.get_texts()] == list(runs)
    dots = [c for c in fig.axes[0].collections if type(c).__name__ == "PathCollection"]  # each recipe's seeds
    styles = {(tuple(np.round(d.get_facecolor()[0], 3)), d.get_paths()[0].vertices.tobytes()) for d in dots}
    assert len(dots) == len(styles) == len(runs)  # 10 colours, then the next marker
    # recipe-0 is timed at half its records' speed: its budget takes 2 minutes, the others 1
    minutes = dict(zip(runs, (d.get_offsets()[0][0] for d in dots)))
    assert minutes["recipe-0"] == pytest.approx(2.0) and minutes["recipe-1"] == pytest.approx(1.0)
    plt.close(fig)


def test_the_default_recipe_is_configs_defaults():
    """grids.DEFAULT_RECIPE must be the recipe with Config's defaults as a bf16 CPU resolves them ("auto" attention:
    eager), so that notebook 08 and the figures mark the right one."""
    config = Config(smoke=False, output_root="unused")
    default = experiments.recipe(report_recipes.DEFAULT).settings(config)
    resolved = {"attention": "eager", "target_modules": TARGET_SETS["all-linear"]}  # None: every linear layer
    for key in grids.RECIPE_BASE:
        assert getattr(default, key) == resolved.get(key, getattr(config, key)), key


def recipe_record(name, seed, accuracy, attention="eager"):
    """A minimal valid record of recipe name; attention None: a record from before the setting existed."""
    config = Config(smoke=False, seed=seed).to_dict()
    if attention is None:
        config.pop("attention")
    return {"run": name, "kind": "lora", "model": "m", "dataset": "d", "split": "test", "n_examples": 10,
            "labels": ["a", "b"], "config": config, "confusion_matrix": [[5, 0], [0, 5]],
            "metrics": {"accuracy": accuracy, "f1_macro": accuracy - 0.01, "precision_macro": accuracy,
                        "recall_macro": accuracy, "per_class": {}},
            "params": {"trainable": 1000, "total": 10000}, "resources": {"peak_memory_mb": 1.0, "saved_mb": 0.5},
            "train": {"seconds": 60.0, "examples_per_second": 100.0, "epochs": 2.0, "history": [],
                      **({"attention": attention} if attention else {})},
            "meta": {"smoke": False, "seed": seed, "versions": {}, "device": "cpu (2 threads)", "created": "now"}}


def write_recipe(folder, name, accuracies, attention="eager"):
    for seed, accuracy in zip((42, 43, 44), accuracies):
        results.write(recipe_record(name, seed, accuracy, attention), folder / "recipes")


def test_recipe_text_pairs_by_seed_names_the_kernel_and_says_what_is_not_yet_run(tmp_path):
    a, b = report_recipes.COMPARISONS["kernel"][0]
    runs = report_recipes.recipe_runs(tmp_path)
    assert "not yet run" in report_recipes.kernel_sentence(runs)  # no records: no crash, no verdict
    write_recipe(tmp_path, b, (0.800, 0.810, 0.805), attention=None)  # before `attention`: the model's own, sdpa
    command = f"`python -m lora_ft recipes --names {a}`"
    assert report_recipes.kernel_verdict(tmp_path).endswith(f"{a} not yet run ({command})")
    write_recipe(tmp_path, a, (0.801, 0.809, 0.806))
    runs = report_recipes.recipe_runs(tmp_path)
    assert [report_recipes.kernels(runs[name]) for name in (a, b)] == ["eager", "sdpa"]
    sentence = report_recipes.kernel_sentence(runs)
    assert "0.8053 ± 0.0040 with eager attention" in sentence and "0.8050 ± 0.0050 with sdpa" in sentence
    assert sentence.endswith("+0.03 ± 0.07 points paired over seeds 42-44 (ahead on 2 of 3), noise by the "
                             "project's rule")
    [row] = report_recipes.comparison_rows(runs, report_recipes.COMPARISONS["kernel"])
    assert (row["attention"], row["seeds"], row["ahead on"], row["verdict"]) == ("eager", 3, "2 of 3", "noise")


def test_recipe_findings_choose_their_words_by_the_rule(tmp_path):
    write_recipe(tmp_path, "all-linear", (0.800, 0.810, 0.805))
    write_recipe(tmp_path, "all-linear-dora", (0.790, 0.801, 0.794))  # behind on every seed by about a point
    found = report_recipes.findings(report_recipes.recipe_runs(tmp_path), {}, None)
    assert "**None of peft's variants recorded so far beats plain LoRA (all-linear) beyond the spread**" in found
    assert "all-linear-dora -1.00 ± 0.06 (beyond the spread)" in found
    assert "all-linear-loraplus16-lr0.0002 not yet run" in found  # a recipe without records is named, not skipped
    write_recipe(tmp_path, "all-linear-dora", (0.811, 0.820, 0.816))  # ahead on every seed by about a point
    found = report_recipes.findings(report_recipes.recipe_runs(tmp_path), {}, None)
    assert "**all-linear-dora beats plain LoRA beyond the spread**" in found
    assert "**The default's headline run**: not yet run" in found
