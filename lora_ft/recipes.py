"""Which LoRA? Named recipes (settings changed from the defaults) trained on one budget over seeds (notebook 08).

The budget is the default run's: the whole training split for two epochs, the learning rate decaying to zero at
the end, no early stopping and no model selection (the final weights are tested). One epoch would race learning
speed: the default run's validation macro-F1 still rose from 0.766 to 0.787 in its second epoch (results/lora.json),
and the "budget" group trains two recipes for three epochs to show how far two epochs are from convergence. Every
recipe is trained with each seed, each run in a fresh process (so
peak memory compares), and tested on the test split; records go to results/recipes/ (seeds beside them, as
lora_ft.seeds names them), and a finished record with the same settings is skipped, so `python -m lora_ft recipes`
continues where it stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from . import data, results, seeds
from .config import SEEDS, Config
from .errors import ConfigError
from .sweep import TARGET_SETS, train_run

BUDGET = {"epochs": 2.0, "train_size": None, "early_stopping_patience": 0}
# the settings every recipe starts from, fixed here so that the grid's records stay valid when Config's defaults
# change (the default adopted from this grid among them)
BASE = {"target_modules": TARGET_SETS["all-linear"], "r": 8, "alpha": 16.0, "learning_rate": 1e-3, "dropout": 0.0,
        "method": "lora", "loraplus_lr_ratio": None, "base_dropout": None}

# name: settings that differ from BASE (every linear layer, r 8, alpha 16, learning rate 1e-3); the groups are
# notebook 08's questions
RECIPES = {
    # which layers get adapters (r 8, alpha/r 2, learning rate 1e-3)
    "query-value": {"target_modules": TARGET_SETS["query-value"]},
    "attention": {"target_modules": TARGET_SETS["attention"]},
    "all-linear": {},
    # learning rate x alpha/r on all linear layers (alpha/r scales the update, so it acts on the step size too)
    **{f"all-linear-lr{lr:g}-ratio{ratio}": {"learning_rate": lr, "alpha": 8.0 * ratio}
       for lr in (3e-4, 1e-3, 3e-3) for ratio in (1, 2)},
    # peft's variants, each one setting away from all-linear LoRA (same budget and learning rate)
    **{f"all-linear-{method}": {"method": method} for method in ("dora", "rslora", "pissa", "ia3")},
    "all-linear-vera": {"method": "vera", "r": 256, "alpha": 512.0},
    # IA3's own paper trains its scales faster than LoRA's 1e-3 (T-Few: 3e-3); 1e-2 to see where that ends
    **{f"all-linear-ia3-lr{lr:g}": {"method": "ia3", "learning_rate": lr} for lr in (3e-3, 1e-2)},
    "all-linear-loraplus16": {"loraplus_lr_ratio": 16.0},
    # LoRA+ at 1e-3 puts B at 1.6e-2, where it diverged: the same ratio on a fifth of the learning rate
    "all-linear-loraplus16-lr0.0002": {"loraplus_lr_ratio": 16.0, "learning_rate": 2e-4},
    # speed knobs: the pretrained model's own dropout off (torch.compile loses on CPU: benchmarks/throughput.py)
    "all-linear-dropout0": {"base_dropout": 0.0},
    "query-value-dropout0": {"target_modules": TARGET_SETS["query-value"], "base_dropout": 0.0},
    # the budget itself: a third epoch (learning rate stretched over three) shows what two leave on the table
    "query-value-3epochs": {"target_modules": TARGET_SETS["query-value"], "epochs": 3.0},
    "all-linear-3epochs": {"epochs": 3.0},
}
# each group's recipes are compared with its reference: the previous default for targets, the default elsewhere;
# PAIRS names the comparisons of groups whose recipes each change one setting of another recipe
REFERENCE = {"targets": "query-value", "learning-rate": "all-linear-lr0.001-ratio2"}
PAIRS = {
    "speed": (("query-value-dropout0", "query-value"), ("all-linear-dropout0", "all-linear"),
              ("query-value-dropout0", "all-linear-dropout0")),  # the fastest recipe against the default
    "budget": (("query-value-3epochs", "query-value"), ("all-linear-3epochs", "all-linear")),
}
GROUPS = {
    "targets": ("query-value", "attention", "all-linear"),
    "learning-rate": tuple(name for name in RECIPES if name.startswith("all-linear-lr")),
    "variants": ("all-linear", *(f"all-linear-{v}" for v in ("dora", "rslora", "pissa", "vera", "ia3", "ia3-lr0.003",
                                                             "ia3-lr0.01", "loraplus16", "loraplus16-lr0.0002"))),
    "speed": ("query-value", "query-value-dropout0", "all-linear", "all-linear-dropout0"),
    "budget": ("query-value", "query-value-3epochs", "all-linear", "all-linear-3epochs"),
}


def comparisons(group: str) -> tuple[tuple[str, str], ...]:
    """(recipe, what it is compared with) for each comparison notebook 08 makes in group."""
    if group in PAIRS:
        return PAIRS[group]
    reference = REFERENCE.get(group, "all-linear")
    return tuple((name, reference) for name in GROUPS[group] if name != reference)


def settings(name: str, config: Config) -> Config:
    """config on the budget with recipe name's settings."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}: choose from {', '.join(RECIPES)}")
    return config.replace(**{**BASE, **BUDGET, **RECIPES[name]})


def run(names=tuple(RECIPES), seeds_=SEEDS, config: Config | None = None, log=print, jobs: int = 1) -> dict[str, dict]:
    """Train and test each recipe with each seed, each in a fresh process, jobs of them at once (finished ones
    skipped); summaries by recipe.

    jobs > 1 is for a GPU, where one small run leaves the card mostly idle; on a CPU parallel runs only share its
    cores (and their timings then mean nothing)."""
    config = config or data.load_prepared()[1]
    where = folder(config)
    names = tuple(dict.fromkeys(names))  # groups overlap: each recipe once
    todo = []
    for name in names:
        for seed in seeds_:
            recipe = settings(name, config.replace(seed=seed))
            if results.finished(results.path_of(where, name, seed), results.config_settings(recipe)) is not None:
                log(f"{name} seed {seed}: already done, skipped")
            else:
                todo.append((name, seed))
    running, failed = {}, []
    while todo or running:
        while todo and len(running) < jobs:
            name, seed = todo.pop(0)
            code = f"from lora_ft import recipes; recipes.run_one({name!r}, {seed}, {str(config.paths.base)!r})"
            running[name, seed] = subprocess.Popen([sys.executable, "-c", code])
        for (name, seed), process in list(running.items()):
            if process.poll() is None:
                continue
            del running[name, seed]
            if process.returncode:
                failed.append(f"{name} seed {seed}")
                continue
            record = results.read(results.path_of(where, name, seed))
            log(f"{name} seed {seed}: accuracy {record['metrics']['accuracy']:.4f}, macro-F1 "
                f"{record['metrics']['f1_macro']:.4f}, {record['train']['seconds']:.0f} s")
        if running:
            time.sleep(0.5)
    if failed:
        raise ConfigError(f"{len(failed)} run(s) failed ({', '.join(failed)}; their errors are above): fix them, then "
                          "run the same command again; finished runs are kept")
    return {name: seeds.summarize(where, name) for name in names if results.path_of(where, name).exists()}


def run_one(name: str, seed: int, output_root: str) -> Path:
    """Train and test one recipe with one seed in this process; the record's path."""
    from .modeling import load_tokenizer

    splits, config = data.load_prepared(Config(output_root=output_root).paths)
    recipe = settings(name, config.replace(seed=seed))
    tokenizer = load_tokenizer(recipe.model, trust_remote_code=recipe.trust_remote_code)
    record = train_run(recipe, splits, tokenizer, name)
    for key in ("predictions", "confidence"):  # the sweep's error analysis needs them; this grid does not
        record.pop(key, None)
    return results.write(record, folder(recipe))


def records(config: Config | None = None) -> dict[str, list[dict]]:
    """Every finished recipe's records over its seeds, by recipe."""
    where = folder(config)
    return {name: seeds.records(where, name) for name in RECIPES if results.path_of(where, name).exists()}


def folder(config: Config | None = None) -> Path:
    """results/recipes/ of config's output root (default: this mode's)."""
    return (config or Config()).paths.results / "recipes"


def speeds(config: Config | None = None) -> dict[str, dict]:
    """Each recipe's training speed and peak memory on the machine that ran `python benchmarks/throughput.py --which`
    (results/recipes/speed.json; empty where it has not run), by recipe, each with that machine as "device"."""
    path = folder(config) / "speed.json"
    if not path.exists():
        return {}
    measured = json.loads(path.read_text())
    return {name: {**timed, "device": measured["meta"]["device"]} for name, timed in measured["recipes"].items()}
