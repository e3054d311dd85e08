"""The same runs with other seeds, and their spread: one mechanism for the notebooks, the CLI and the benchmarks.

The notebooks run each recipe once, with seed 42, and write results/<run>.json. `add` re-runs a recorded run with
the settings its record holds and only the seed changed (head and adapter initialisation, training order; the
splits stay fixed: they follow split_seed), writing results/seeds/<run>.seed<k>.json, and `summarize` writes
results/summaries/<run>.json: mean, standard deviation, min, max and n of each metric over the seeds.
A seed whose record exists with the same settings is skipped, so an interrupted `add` continues where it stopped.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from . import results
from .config import DEFAULT_SEED, SEEDS, Config
from .errors import ConfigError
from .io import write_json_atomic

METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
COSTS = (("train", "seconds"), ("train", "examples_per_second"), ("resources", "peak_memory_mb"))


def add(runs=None, seeds=SEEDS[1:], results_dir: Path | None = None, log=print) -> dict[str, dict]:
    """Re-run each recorded run (results/<run>.json; None: all that can be) with each seed, then summarize it;
    summaries by run."""
    results_dir = Path(results_dir) if results_dir is not None else Config().paths.results
    runs = known_runs(results_dir) if runs is None else runs
    summaries = {}
    for run in runs:
        reference = _reference(results_dir, run)
        wanted = results.settings(reference)
        for seed in seeds:
            if seed == reference["meta"]["seed"]:
                continue
            if results.finished(results.path_of(results_dir, run, seed), wanted) is not None:
                log(f"{run} seed {seed}: already done, skipped")
                continue
            config = Config(**{**reference["config"], "smoke": reference["meta"]["smoke"]}).replace(
                seed=seed, output_root=str(results_dir.parent))
            log(f"{run} seed {seed}: running")
            record = rerun(reference, config, log)
            results.write(record, results_dir)
            log(f"{run} seed {seed}: accuracy {record['metrics']['accuracy']:.4f}, "
                f"macro-F1 {record['metrics']['f1_macro']:.4f}")
        summaries[run] = summarize(results_dir, run)
    return summaries


def known_runs(results_dir: Path) -> list[str]:
    """The runs recorded in results_dir (the notebooks' seed) that `rerun` can repeat."""
    from .pipeline import BASELINES, SAME_BUDGET

    known = (*BASELINES, "lora", *SAME_BUDGET)
    return [run for run in results.load_all(results_dir) if run in known or run.startswith("sweep-")]


def rerun(reference: dict, config: Config, log=print) -> dict:
    """The record of reference's run trained and tested again with config (its settings, another seed)."""
    from . import data, pipeline, sweep
    from .modeling import load_tokenizer

    run = reference["run"]
    splits, prepared = data.load_prepared(config.paths)
    differ = [k for k, v in prepared.data_settings().items() if k != "train_size" and v != config.data_settings()[k]]
    if differ:  # a record's training subsample (sweep, same budget) is drawn from the prepared train split below
        raise ConfigError(f"the prepared data in {config.paths.data} differs from the data {run!r} was recorded on "
                          f"(in {differ}): prepare that data again (notebook 01) or re-run {run!r} itself first")
    splits["train"] = data.subsample(splits["train"], config.train_size, config.split_seed)
    if run in pipeline.BASELINES:
        return pipeline.BASELINES[run](splits, config)
    if run == "lora":
        return pipeline.train(config, log=log, write=False)
    if run in pipeline.SAME_BUDGET:
        return pipeline.same_budget(config, splits, runs=(run,), write=False)[run][1]
    if run.startswith("sweep-"):
        tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
        return sweep.train_run(config, splits, tokenizer, run)
    raise ConfigError(f"no recipe re-runs {run!r} with another seed: choose from the notebooks' runs "
                      f"({', '.join([*pipeline.BASELINES, 'lora', *pipeline.SAME_BUDGET, 'sweep-...'])})")


def records(results_dir: Path, run: str) -> list[dict]:
    """The run's records over all seeds, the notebooks' seed first; all must share their settings."""
    reference = _reference(results_dir, run)
    found = [reference] + [results.read(p) for p in sorted((Path(results_dir) / "seeds").glob(f"{run}.seed*.json"))
                           if p.name.removeprefix(f"{run}.seed").removesuffix(".json").isdigit()]
    wanted = results.settings(reference)
    stale = [r["meta"]["seed"] for r in found if results.settings(r) != wanted]
    if stale:
        differ = {k for r in found for k, v in results.settings(r).items() if v != wanted[k]}
        raise ConfigError(f"the records of {run!r} with seeds {stale} were made with other settings than "
                          f"{results.path_of(results_dir, run)} (they differ in {sorted(differ)}): run "
                          f"`{rerun_command(results_dir, run)}` to redo them")
    return found


def summarize(results_dir: Path, run: str) -> dict:
    """Mean, standard deviation (n - 1), min and max over the run's seeds, written to results/summaries/<run>.json."""
    found = records(results_dir, run)
    summary = {"run": run, "kind": found[0]["kind"], "n": len(found), "seeds": [r["meta"]["seed"] for r in found],
               "metrics": {name: spread([r["metrics"][name] for r in found]) for name in METRICS}}
    for section, name in COSTS:
        values = [r[section][name] for r in found if name in r.get(section, {})]
        if len(values) == len(found):
            summary.setdefault(section, {})[name] = spread(values)
    write_json_atomic(Path(results_dir) / "summaries" / f"{run}.json", summary)
    return summary


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def rerun_command(results_dir: Path, run: str) -> str:
    """The command that adds seeds to run's records in results_dir: notebook 08's recipes and notebook 07's curves
    have their own steps, every other run `seeds`."""
    step = {"recipes": f"recipes --names {run}", "curves": "curves"}.get(Path(results_dir).name, f"seeds --runs {run}")
    return f"python -m lora_ft {step}"


def compare(name_a: str, a: list[float], name_b: str, b: list[float], what: str = "accuracy",
            command: str = "python -m lora_ft seeds") -> str:
    """A sentence on a - b in points, which calls the difference real only when it is larger than the spread: more
    than twice its standard error from the seeds (sqrt(s_a^2 / n_a + s_b^2 / n_b)), else "within noise". command is
    the one that adds seeds to these runs (rerun_command)."""
    difference = 100 * (statistics.fmean(a) - statistics.fmean(b))
    said = f"{name_a} vs {name_b}: {difference:+.1f} points of {what}"
    if min(len(a), len(b)) < 2:
        return (f"{said} (n = {min(len(a), len(b))} seed: no spread to judge it by yet; `{command}` adds seeds "
                f"{', '.join(map(str, SEEDS[1:]))})")
    error = 100 * (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5
    verdict = "larger than the spread" if abs(difference) > 2 * error else "within noise"
    return f"{said} (standard error {error:.1f}, {len(a)} and {len(b)} seeds), {verdict}"


def _reference(results_dir: Path, run: str) -> dict:
    path = results.path_of(results_dir, run)
    if not path.exists():
        raise ConfigError(f"no record {path} to take the settings from: run the notebook or CLI step that writes "
                          f"{run!r} first (seed {DEFAULT_SEED})")
    return results.read(path)
