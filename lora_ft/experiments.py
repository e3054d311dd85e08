"""Experiments as data, one runner: the sweep (notebook 06), the recipes (08), extra seeds (04 to 06) and the learning
curves (07). A grid is a list of Experiment; `run` skips those whose record exists with the same settings, trains the
others, writes one record each and summarises each name over its seeds. Adding a recipe is adding data."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from . import baselines, curves, data, results, stats
from .config import DEFAULT_SEED, NOT_TRAINED, SEEDS, TARGET_SETS, Config
from .errors import ConfigError
from .grids import RECIPE_BASE, RECIPE_BUDGET, RECIPES
from .io import write_json_atomic
from .modeling import lora_targets, model_skeleton
from .results import default_seed_record, records, rerun_command  # noqa: F401 (experiments.records ...)
from .run import NO_VALIDATION, ONCE_PER_EPOCH, SAME_BUDGET, record, train_and_score
from .training import on_main_process

METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro")  # summarised over the seeds
COSTS = (("train", "seconds"), ("train", "examples_per_second"), ("resources", "peak_memory_mb"))


@dataclass(frozen=True)
class Experiment:
    """One run of a grid: the record's name, the settings it changes from the grid's Config, its seed (or draw);
    recipe: settings outside Config a record keeps (SetFit's); method and per_class: a learning curve's point;
    examples: the Trainer's training split size, which the budget rule reads (Config.budget), None for a run with no
    optimizer steps (Config.untrained) or whose changes resolve the budget already (a seed's re-run); classes: those
    examples' classes where few enough per class for the rule to train contrastively (a curve's small points)."""

    name: str
    changes: dict = field(default_factory=dict)
    seed: int = DEFAULT_SEED
    recipe: dict | None = None
    method: str = "lora"
    per_class: int | None = None
    examples: int | None = None
    classes: int | None = None

    def settings(self, config: Config) -> Config:
        made = config.replace(seed=self.seed, **self.changes)
        return made.untrained() if self.examples is None else made.budget(self.examples, self.classes)

    def wanted(self, config: Config) -> dict:
        """What results.settings must give this experiment's record for it to count as finished."""
        found = results.config_settings(self.settings(config))
        return found if self.recipe is None else {**found, "recipe": self.recipe}


def plan(grid, config: Config, folder: Path) -> tuple[list[Experiment], list[dict]]:
    """(the experiments still to run, the finished records), from the records in folder alone."""
    todo, done = [], []
    for experiment in grid:
        found = results.finished(results.path_of(folder, experiment.name, experiment.seed), experiment.wanted(config))
        (todo if found is None else done).append(experiment if found is None else found)
    return todo, done


def run(grid, config: Config, folder: Path, train, log=print, jobs: int = 1) -> dict[str, dict]:
    """Train each unfinished experiment with train(experiment, settings) -> record into folder; summaries by name."""
    todo, done = plan(grid, config, folder)
    if done:
        log(f"{len(done)} already done, skipped")
    failed = []

    def one(experiment: Experiment) -> None:
        try:
            record = train(experiment, experiment.settings(config))
        except Failed as error:
            failed.append(str(error))
            return
        on_main_process(results.write, record, folder)
        cost = record.get("reused_from") or f"{record['train']['seconds']:.0f} s" if "train" in record else "untrained"
        log(f"{experiment.name} seed {experiment.seed}: accuracy {record['metrics']['accuracy']:.4f}, macro-F1 "
            f"{record['metrics']['f1_macro']:.4f}, " + (f"reused {cost}" if "reused_from" in record else cost))

    if jobs > 1:  # for trainers with a process each: the recipes on a GPU, which one small run leaves mostly idle
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, todo))
    else:
        for experiment in todo:
            one(experiment)
    if failed:
        raise ConfigError(f"{len(failed)} run(s) failed ({', '.join(failed)}; their errors are above): fix them, then "
                          "run the same command again; finished runs are kept")
    names = dict.fromkeys(e.name for e in grid)
    return {name: summarize(folder, name) for name in names if results.path_of(folder, name).exists()}


class Failed(ConfigError):
    """A run in a process of its own failed (its error is above): the grid goes on and reports it at the end."""


def summarize(folder: Path, name: str) -> dict:
    """Mean, standard deviation (n - 1), min and max over name's seeds, written to <folder>/summaries/<name>.json."""
    found = records(folder, name)
    summary = {"run": name, "kind": found[0]["kind"], "n": len(found), "seeds": [r["meta"]["seed"] for r in found],
               "metrics": {metric: stats.spread([r["metrics"][metric] for r in found]) for metric in METRICS}}
    for section, cost in COSTS:
        values = [r[section][cost] for r in found if cost in r.get(section, {})]
        if len(values) == len(found):
            summary.setdefault(section, {})[cost] = stats.spread(values)
    on_main_process(write_json_atomic, Path(folder) / "summaries" / f"{name}.json", summary)
    return summary


# ---- the sweep (notebook 06): rank x alpha/r on query/value, and other target sets at one point, on one budget

SWEEP = {
    "ranks": (1, 4, 8, 16),  # LoRA ranks, on each of "targets"
    "alpha_ratios": (1, 2),  # alpha / r: each run gets alpha = ratio * r
    "targets": ("query-value",),  # target sets (config.TARGET_SETS) that get every rank x alpha/r
    "extra_targets": ("attention", "all-linear"),  # target sets run once more, at EXTRA_POINT
    "train_size": 4000,  # stratified training subsample per run: a budget ten runs can afford on 2 CPU cores
    "epochs": 1.0,  # passes over it
}
EXTRA_POINT = (8, 2)  # (r, alpha / r) of the extra target sets


def sweep_grid(ranks=SWEEP["ranks"], alpha_ratios=SWEEP["alpha_ratios"], targets=SWEEP["targets"],
               extra_targets=SWEEP["extra_targets"], train_size: int | None = SWEEP["train_size"],
               epochs: float = SWEEP["epochs"], seed: int = DEFAULT_SEED) -> list[Experiment]:
    """Every rank x alpha/r per target set, then each extra set at EXTRA_POINT: epochs over train_size examples."""
    points = [(r, ratio, t) for t in targets for r, ratio in itertools.product(ranks, alpha_ratios)]
    points += [p for p in ((*EXTRA_POINT, t) for t in extra_targets) if p not in points]
    return [Experiment(sweep_name(t, r, ratio), dict(
        r=r, alpha=float(r * ratio), target_modules=TARGET_SETS[t], early_stopping_patience=0,
        train_size=train_size, epochs=float(epochs)), seed, examples=train_size) for r, ratio, t in points]


def sweep_name(targets: str, r: int, ratio: float) -> str:  # alpha = ratio x r
    return f"sweep-{targets}-r{r}-alpha{r * ratio:g}"


def sweep(config: Config, log=print, **changes) -> dict[str, dict]:
    """Notebook 06's grid (SWEEP with changes to it: ranks=..., epochs=...), each record with every test prediction
    (the error analysis); summaries by run."""
    settings = {**SWEEP, **changes}
    skeleton = model_skeleton(config.model, config.trust_remote_code)
    for name in (*settings["targets"], *settings["extra_targets"]):  # before anything is trained or written
        if name not in TARGET_SETS:
            raise ConfigError(f"unknown target set {name!r}: choose from {sorted(TARGET_SETS)}")
        lora_targets(skeleton, TARGET_SETS[name])
    splits = data.prepare(config)
    splits["train"] = data.subsample(splits["train"], settings["train_size"], config.split_seed)
    grid = sweep_grid(**{**settings, "train_size": len(splits["train"])})
    log(f"{len(grid)} configurations, {len(splits['train']):,} training examples each")

    return run(grid, config, config.paths.results, lambda experiment, settings: train_and_score(
        settings, splits, experiment.name, schedule=NO_VALIDATION, per_example=True, quiet=True)[0], log)


# ---- the recipes (notebook 08, declared in lora_ft.grids): each seed in a fresh process so peak memory compares

def recipe(name: str, seed: int = DEFAULT_SEED, examples: int | None = None) -> Experiment:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}: choose from {', '.join(RECIPES)}")
    return Experiment(name, {**RECIPE_BASE, **RECIPE_BUDGET, **RECIPES[name]}, seed, examples=examples)


def recipes(names=tuple(RECIPES), seeds=SEEDS, config: Config | None = None, log=print,
            jobs: int = 1) -> dict[str, dict]:
    """Each recipe with each seed, each in a fresh process (so peak memory compares); summaries by recipe."""
    splits, prepared = data.load_prepared((config or Config()).paths)
    config, examples = config or prepared, len(splits["train"])
    grid = [recipe(name, seed, examples) for name in dict.fromkeys(names) for seed in seeds]  # each once
    return run(grid, config, recipe_folder(config), lambda e, _: _recipe_in_a_process(e, config), log, jobs)


def _recipe_in_a_process(experiment: Experiment, config: Config) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        made = Path(scratch) / "record.json"
        code = (f"from lora_ft import experiments; experiments.recipe_in_this_process({experiment.name!r}, "
                f"{experiment.seed}, {str(config.paths.base)!r}, {str(made)!r})")
        if subprocess.run([sys.executable, "-c", code]).returncode or not made.exists():
            raise Failed(f"{experiment.name} seed {experiment.seed}")
        return json.loads(made.read_text())


def recipe_in_this_process(name: str, seed: int, output_root: str, target: str) -> None:
    """One recipe and seed on the prepared data under output_root; its record to target."""
    splits, config = data.load_prepared(Config(output_root=output_root).paths)
    experiment = recipe(name, seed, len(splits["train"]))
    record = train_and_score(experiment.settings(config), splits, name, schedule=NO_VALIDATION, quiet=True)[0]
    write_json_atomic(Path(target), record)


def recipe_records(config: Config | None = None) -> dict[str, list[dict]]:  # finished recipes' records, by recipe
    where = recipe_folder(config)
    return {name: records(where, name) for name in RECIPES if results.path_of(where, name).exists()}


def recipe_folder(config: Config | None = None) -> Path:  # results/recipes/ (default: this mode's)
    return (config or Config()).paths.results / "recipes"


# ---- extra seeds: a recorded run (results/<run>.json) again with its settings and only the seed changed

SEEDED = (*baselines.RUNS, "lora", *SAME_BUDGET)  # besides the sweep's runs


def seed_grid(runs, seeds, results_dir: Path) -> tuple[Config, list[Experiment]]:
    """The Config runs' records were made in, and each run x other seed, changing every setting to the record's."""
    grid, mode = [], set()
    for name in runs:
        if name not in SEEDED and not name.startswith("sweep-"):
            raise ConfigError(f"no step re-runs {name!r} with another seed: choose from the notebooks' runs "
                              f"({', '.join([*SEEDED, 'sweep-...'])})")
        reference = default_seed_record(results_dir, name)
        made = Config(**{**reference["config"], "smoke": reference["meta"]["smoke"]})
        mode.add(made.smoke)
        changes = {k: getattr(made, k) for k in made.to_dict() if k not in (*NOT_TRAINED, "seed")}
        grid += [Experiment(name, changes, seed) for seed in seeds if seed != reference["meta"]["seed"]]
    return Config(smoke=mode == {True}, output_root=str(Path(results_dir).parent)), grid


def seeds(runs=None, seeds=SEEDS[1:], results_dir: Path | None = None, log=print) -> dict[str, dict]:
    """Re-run each recorded run (None: all in results_dir) with each seed: same splits, new initialisation, order."""
    results_dir = Path(results_dir) if results_dir is not None else Config().paths.results
    if runs is None:
        runs = [r for r in results.load_all(results_dir) if r in SEEDED or r.startswith("sweep-")]
    config, grid = seed_grid(runs, seeds, results_dir)
    summaries = run(grid, config, results_dir, _rerun, log)
    return {name: summaries.get(name) or summarize(results_dir, name) for name in runs}


def _prepared(config: Config, what: str):
    """The prepared splits, refused when made with other data settings than config's (train_size aside)."""
    splits, prepared = data.load_prepared(config.paths)
    differ = [k for k, v in prepared.data_settings().items() if k != "train_size" and v != config.data_settings()[k]]
    if differ:
        raise ConfigError(f"the prepared data in {config.paths.data} differs from {what} (in {differ}): prepare the "
                          "data again with them (notebook 01)")
    return splits


def _rerun(experiment: Experiment, settings: Config) -> dict:
    name = experiment.name
    splits = _prepared(settings, f"the data {name!r} was recorded on")
    splits["train"] = data.subsample(splits["train"], settings.train_size, settings.split_seed)
    if name in baselines.RUNS:
        return baselines.RUNS[name](splits, settings)
    if name in SAME_BUDGET:
        return train_and_score(settings, splits, name, adapters=SAME_BUDGET[name], schedule=ONCE_PER_EPOCH,
                               quiet=True)[0]
    if name == "lora":
        return train_and_score(settings, splits, name, save_to=settings.paths.adapter, quiet=True)[0]
    return train_and_score(settings, splits, name, schedule=NO_VALIDATION, per_example=True, quiet=True)[0]


# ---- the learning curves (notebook 07): method x examples per class x draw, settings in lora_ft.curves

def curve_grid(config: Config, methods=curves.METHODS, per_class=curves.PER_CLASS, draws: int | None = None, *,
               classes: int, train_examples: int, log=print) -> list[Experiment]:
    """Every method x n x draw with its settings (curves.changes), but those above a cap."""
    points = []
    for method, n in itertools.product(methods, per_class):
        if curves.above_cap(method, n, log):
            continue
        recipe = curves.setfit_recipe(config) if method == "setfit" else None
        size = train_examples if n is None else n * classes
        points += [Experiment(curves.run_name(method, n), curves.changes(config, method, n, classes, train_examples),
                              seed, recipe, method, n, size if method in curves.TRAINED else None, classes)
                   for seed in curves.draw_seeds(n, draws)]
    return points


def learning_curves(config: Config, methods=curves.METHODS, per_class=curves.PER_CLASS, draws: int | None = None,
                    log=print, results_dir: Path | None = None, sample=data.sample_per_class) -> dict[str, dict]:
    """Every method x n x draw on config's prepared data, into results_dir (default results/curves/); summaries by
    run. draws None: curves.draw_count; sample(split, n, seed) draws the training examples."""
    curves.check_methods(methods)
    splits = _prepared(config, "these settings")
    points = curve_grid(config, methods, per_class, draws, classes=len(data.labels_of(splits)),
                        train_examples=len(splits["train"]), log=log)
    folder = Path(results_dir) if results_dir is not None else config.paths.results / "curves"

    def train(point: Experiment, settings: Config) -> dict:
        headline = results.path_of(config.paths.results, point.method, point.seed)  # reused at "all" if the same
        at_all = point.per_class is None and point.method in curves.HEADLINE
        made = results.finished(headline, point.wanted(settings)) if at_all else None
        if made is not None:
            made = {**made, "reused_from": str(headline.relative_to(config.paths.results.parent))}
        else:
            drawn = DatasetDict({**splits, "train": sample(splits["train"], point.per_class, point.seed)})
            made = train_point(point.method, drawn, settings)
        made.update(run=point.name, curve={"method": point.method, "per_class": point.per_class, "seed": point.seed,
                                           "train_examples": settings.train_size or len(splits["train"])})
        return made

    return run(points, config, folder, train, log)


def train_point(method: str, drawn, config: Config, members: int = 1) -> dict:
    """method trained on drawn["train"] and its test record (members > 1: an ensemble of that many LoRA runs)."""
    # without early stopping, validations choose nothing and are skipped (as in the recipes' grid); at "all" a method
    # trains as the headline runs reused there did, so the two pair (validations change weights: docs/which-lora.md)
    skip = config.early_stopping_patience == 0 and config.train_size is not None
    schedule = NO_VALIDATION if skip or method in curves.FIXED_STEPS else None
    with tempfile.TemporaryDirectory() as tmp:
        scratch = config.replace(output_root=tmp)
        if members > 1:
            if method not in ("lora", "lora-mean"):
                raise ConfigError(f"an ensemble trains the Trainer's LoRA recipe (lora, lora-mean), not {method}")
            made = ensemble(scratch, drawn, members, schedule=schedule)
        elif method in ("lora", "lora-mean", *curves.FIXED_STEPS):
            made = train_and_score(scratch, drawn, "lora", schedule=schedule, probe_head=method == "lora-lpft",
                                   quiet=True)[0]
        elif method == "setfit":
            made = curves.train_setfit(drawn, scratch)
        elif method == "full-finetune":
            made = baselines.full_finetune(drawn, scratch, schedule=schedule, quiet=True)
        else:
            made = baselines.RUNS[method](drawn, scratch)
    made["config"]["output_root"] = config.output_root
    return made


MEMBER_SEEDS = 1000  # member k of an ensemble trains with seed config.seed + k * MEMBER_SEEDS (member 0: config's run)


def ensemble(config: Config, splits, members: int, schedule: dict | None = None, save_to: Path | None = None) -> dict:
    """members LoRA runs of config on splits["train"], differing only in their training seed, scored on splits["test"]
    together: each example gets the class of highest mean probability over the members (Wang et al. 2023, "LoRA
    ensembles for large language model fine-tuning"). The record is member 0's with the ensemble's predictions, the
    members' summed training time, "recipe": the number of members, train.members: each member's test accuracy.
    save_to: a folder for the members' adapters (member-0, member-1, ...), which multitask.Tasks serves from one base:
    the members' mean probability predicts as the record does (docs/data-efficiency.md)."""
    labels, test = data.labels_of(splits), splits["test"]
    made, probabilities = [], []
    for k in range(members):
        scored = train_and_score(config.replace(seed=config.seed + k * MEMBER_SEEDS), splits, "lora",
                                 schedule=schedule, probabilities=True, quiet=True,
                                 save_to=None if save_to is None else Path(save_to) / f"member-{k}")[0]
        probabilities.append(scored.pop("probabilities"))
        made.append(scored)
    first = made[0]
    seconds = sum(m["train"]["seconds"] for m in made)
    train = {**first["train"], "seconds": round(seconds, 1), "examples_per_second": round(
        members * len(splits["train"]) * first["train"]["epochs"] / seconds, 2), "history": [],
        "members": [m["metrics"]["accuracy"] for m in made]}
    resources = {"peak_memory_mb": max(m["resources"]["peak_memory_mb"] for m in made),
                 "saved_mb": sum(m["resources"]["saved_mb"] for m in made)}
    settings = config.budget(len(splits["train"]), len(labels))  # as each member's record keeps them
    predictions = np.mean(probabilities, axis=0).argmax(-1)
    scored = record(first["run"], first["kind"], settings, labels, "test", np.array(test["label"]), predictions,
                    first["params"], train, resources)
    return {**scored, "recipe": {"members": members}}
