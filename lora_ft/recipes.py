"""Which LoRA? Named recipes (settings changed from the defaults) trained on one budget over seeds (notebook 08).

The budget: the whole training split for one epoch, learning rate decaying to zero within it, no early stopping.
The default run's validation accuracy rose only 0.3 points in its second epoch (results/lora.json), so one epoch is
close to convergence while costing half. Every recipe is trained with each seed and tested on the test split;
records go to results/recipes/ (seeds beside them, as lora_ft.seeds names them), and a finished record with the same
settings is skipped, so `python -m lora_ft recipes` continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from . import data, results, seeds
from .config import SEEDS, Config
from .errors import ConfigError
from .io import on_main_process
from .sweep import TARGET_SETS, train_run

BUDGET = {"epochs": 1.0, "train_size": None, "early_stopping_patience": 0}

# name: settings that differ from Config's defaults; the groups are notebook 08's questions
RECIPES = {
    # which layers get adapters (r 8, alpha/r 2, learning rate 1e-3)
    "query-value": {"target_modules": TARGET_SETS["query-value"]},
    "attention": {"target_modules": TARGET_SETS["attention"]},
    "all-linear": {"target_modules": TARGET_SETS["all-linear"]},
    # learning rate x alpha/r on all linear layers (alpha/r scales the update, so it acts on the step size too)
    **{f"all-linear-lr{lr:g}-ratio{ratio}": {"target_modules": TARGET_SETS["all-linear"], "learning_rate": lr,
                                             "alpha": 8.0 * ratio}
       for lr in (3e-4, 1e-3, 3e-3) for ratio in (1, 2)},
}
GROUPS = {
    "targets": ("query-value", "attention", "all-linear"),
    "learning-rate": tuple(name for name in RECIPES if name.startswith("all-linear-lr")),
}


def settings(name: str, config: Config) -> Config:
    """config on the budget with recipe name's settings."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}: choose from {', '.join(RECIPES)}")
    return config.replace(**BUDGET, **RECIPES[name])


def run(names=tuple(RECIPES), seeds_=SEEDS, config: Config | None = None, log=print) -> dict[str, dict]:
    """Train and test each recipe with each seed (finished ones skipped); summaries by recipe."""
    from .modeling import load_tokenizer

    splits, prepared = data.load_prepared(config.paths if config is not None else None)
    config = config or prepared
    where = folder(config)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    summaries = {}
    for name in names:
        for seed in seeds_:
            recipe = settings(name, config.replace(seed=seed))
            path = results.path_of(where, name, seed)
            if path.exists() and results.settings(results.read(path)) == results.config_settings(recipe):
                log(f"{name} seed {seed}: already done, skipped")
                continue
            record = train_run(recipe, splits, tokenizer, name)
            for key in ("predictions", "confidence"):  # the sweep's error analysis needs them; this grid does not
                record.pop(key, None)
            on_main_process(results.write, record, where)
            log(f"{name} seed {seed}: accuracy {record['metrics']['accuracy']:.4f}, macro-F1 "
                f"{record['metrics']['f1_macro']:.4f}, {record['train']['seconds']:.0f} s")
        if results.path_of(where, name).exists():
            summaries[name] = seeds.summarize(where, name)
    return summaries


def records(config: Config | None = None) -> dict[str, list[dict]]:
    """Every finished recipe's records over its seeds, by recipe."""
    where = folder(config)
    return {name: seeds.records(where, name) for name in RECIPES if results.path_of(where, name).exists()}


def folder(config: Config | None = None) -> Path:
    """results/recipes/ of config's output root (default: this mode's)."""
    return (config or Config()).paths.results / "recipes"
