"""Seeds: a recorded run repeated with other seeds keeps its settings and splits, lands beside the original, is
skipped once done, and is summarised; records made with other settings are refused."""

import json

import numpy as np
import pytest

from lora_ft import Config, baselines, experiments, pipeline, results
from lora_ft.config import ROOT
from lora_ft.errors import ConfigError

TINY = dict(smoke=False, train_size=48, eval_size=30, epochs=1.0, batch_size=8, max_length=32,
            early_stopping_patience=0, contrastive=False)  # the Trainer's recipe, whose history shows each seed


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    config = Config(output_root=str(root), **TINY)
    splits = pipeline.prepare(config, log=lambda _: None)
    for run in ("majority", "pretrained-baseline"):
        results.write(baselines.RUNS[run](splits, config), config.paths.results)
    pipeline.train(config, log=lambda _: None)
    return root


def test_seeds_rerun_with_the_same_settings_and_splits(root):
    prepared = (root / "data" / "prepared" / "config.json").read_text()
    lines = []
    summaries = experiments.seeds(["majority", "pretrained-baseline", "lora"], seeds=(43,),
                                  results_dir=root / "results", log=lines.append)
    assert (root / "data" / "prepared" / "config.json").read_text() == prepared  # seed 43 is no new default
    for run in ("majority", "pretrained-baseline", "lora"):
        first, other = (results.read(results.path_of(root / "results", run, seed)) for seed in (42, 43))
        assert other["meta"]["seed"] == 43 and other["config"]["seed"] == 43
        assert results.settings(other) == results.settings(first)
        assert summaries[run]["n"] == 2 and summaries[run]["seeds"] == [42, 43]
        accuracy = summaries[run]["metrics"]["accuracy"]
        values = [first["metrics"]["accuracy"], other["metrics"]["accuracy"]]
        assert accuracy["min"] == min(values) and accuracy["max"] == max(values)
        assert accuracy["mean"] == pytest.approx(np.mean(values)) and accuracy["std"] == pytest.approx(
            np.std(values, ddof=1))
        assert json.loads((root / "results" / "summaries" / f"{run}.json").read_text()) == summaries[run]
    majority = [results.read(results.path_of(root / "results", "majority", s)) for s in (42, 43)]
    assert majority[0]["confusion_matrix"] == majority[1]["confusion_matrix"]  # no randomness to vary
    lora = [results.read(results.path_of(root / "results", "lora", s)) for s in (42, 43)]
    assert lora[0]["train"]["history"] != lora[1]["train"]["history"]  # another initialisation and order
    assert (root / "model" / "seeds" / "seed43" / "lora-adapter" / "adapter_config.json").is_file()
    assert json.loads((root / "model" / "lora-adapter" / "lora_ft_config.json").read_text())["seed"] == 42


def test_seeds_already_done_are_skipped(root):
    experiments.seeds(["majority"], seeds=(43,), results_dir=root / "results", log=lambda _: None)
    path = results.path_of(root / "results", "majority", 43)
    stamp = path.stat().st_mtime_ns
    lines = []
    experiments.seeds(["majority"], seeds=(43,), results_dir=root / "results", log=lines.append)
    assert path.stat().st_mtime_ns == stamp and lines == ["1 already done, skipped"]


def test_records_made_with_other_settings_are_refused_then_redone(root):
    experiments.seeds(["majority"], seeds=(44,), results_dir=root / "results", log=lambda _: None)
    path = results.path_of(root / "results", "majority", 44)
    record = json.loads(path.read_text())
    record["config"]["learning_rate"] = 0.5
    path.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"'majority' with seeds \[44\] were made with other settings .*"
                                          r"differ in \['learning_rate'\].*`python -m lora_ft seeds --runs majority`"):
        experiments.summarize(root / "results", "majority")
    summary = experiments.seeds(["majority"], seeds=(44,), results_dir=root / "results",
                                log=lambda _: None)["majority"]
    assert 44 in summary["seeds"]
    assert results.read(path)["config"]["learning_rate"] == Config().learning_rate


def test_a_run_without_its_seed_42_record_is_an_error(root):
    with pytest.raises(ConfigError, match="no record .*full-finetune.json.* run the notebook or CLI step"):
        experiments.seeds(["full-finetune"], seeds=(43,), results_dir=root / "results")


def test_splits_follow_split_seed_not_seed():
    assert "split_seed" in Config().data_settings() and "seed" not in Config().data_settings()
    assert Config(seed=43).paths.model == Config().paths.model / "seeds" / "seed43"


@pytest.mark.parametrize(("folder", "command"), [("results", "seeds --runs lora"), ("recipes", "recipes --names lora"),
                                                 ("curves", "curves")])
def test_the_command_that_adds_seeds_is_the_one_that_wrote_the_records(folder, command, tmp_path):
    assert experiments.rerun_command(tmp_path / folder, "lora") == f"python -m lora_ft {command}"


def test_an_unknown_run_is_refused_before_anything_runs(root):
    with pytest.raises(ConfigError, match="no step re-runs 'curve-lora-n8' with another seed: choose from"):
        experiments.seeds(["curve-lora-n8"], seeds=(43,), results_dir=root / "results")


def test_every_committed_extra_seed_is_finished():
    """Planning `python -m lora_ft seeds` over the committed records (no training) finds every seed done: the
    records of results/seeds/ still hold their seed-42 record's settings, and the summaries stay as committed."""
    folder = ROOT / "results"
    runs = [run for run in results.load_all(folder) if run in experiments.SEEDED or run.startswith("sweep-")]
    config, grid = experiments.seed_grid(runs, (43, 44), folder)
    todo, done = experiments.plan(grid, config, folder)
    assert todo == [] and len(done) == len(list((folder / "seeds").glob("*.json")))
    for run in runs:
        committed = json.loads((folder / "summaries" / f"{run}.json").read_text())
        found = experiments.records(folder, run)
        assert committed["seeds"] == [r["meta"]["seed"] for r in found]
        assert committed["metrics"]["accuracy"]["mean"] == pytest.approx(
            np.mean([r["metrics"]["accuracy"] for r in found]))
