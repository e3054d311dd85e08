"""Seeds: a recorded run repeated with other seeds keeps its settings and splits, lands beside the original, is
skipped once done, and is summarised; records made with other settings are refused."""

import json

import numpy as np
import pytest

from lora_ft import Config, pipeline, results, seeds
from lora_ft.errors import ConfigError

TINY = dict(smoke=False, train_size=48, eval_size=30, epochs=1.0, batch_size=8, max_length=32,
            early_stopping_patience=0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    config = Config(output_root=str(root), **TINY)
    splits = pipeline.prepare(config, log=lambda _: None)
    for run in ("majority", "pretrained-baseline"):
        results.write(pipeline.BASELINES[run](splits, config), config.paths.results)
    pipeline.train(config, log=lambda _: None)
    return root


def test_seeds_rerun_with_the_same_settings_and_splits(root):
    prepared = (root / "data" / "prepared" / "config.json").read_text()
    lines = []
    summaries = seeds.add(["majority", "pretrained-baseline", "lora"], seeds=(43,), results_dir=root / "results",
                          log=lines.append)
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
    seeds.add(["majority"], seeds=(43,), results_dir=root / "results", log=lambda _: None)
    path = results.path_of(root / "results", "majority", 43)
    stamp = path.stat().st_mtime_ns
    lines = []
    seeds.add(["majority"], seeds=(43,), results_dir=root / "results", log=lines.append)
    assert path.stat().st_mtime_ns == stamp and lines == ["majority seed 43: already done, skipped"]


def test_records_made_with_other_settings_are_refused_then_redone(root):
    seeds.add(["majority"], seeds=(44,), results_dir=root / "results", log=lambda _: None)
    path = results.path_of(root / "results", "majority", 44)
    record = json.loads(path.read_text())
    record["config"]["learning_rate"] = 0.5
    path.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"'majority' with seeds \[44\] were made with other settings .*"
                                          r"differ in \['learning_rate'\].*`python -m lora_ft seeds --runs majority`"):
        seeds.summarize(root / "results", "majority")
    summary = seeds.add(["majority"], seeds=(44,), results_dir=root / "results", log=lambda _: None)["majority"]
    assert 44 in summary["seeds"]
    assert results.read(path)["config"]["learning_rate"] == Config().learning_rate


def test_a_run_without_its_seed_42_record_is_an_error(root):
    with pytest.raises(ConfigError, match="no record .*full-finetune.json.* run the notebook or CLI step"):
        seeds.add(["full-finetune"], seeds=(43,), results_dir=root / "results")


def test_splits_follow_split_seed_not_seed():
    assert "split_seed" in Config().data_settings() and "seed" not in Config().data_settings()
    assert Config(seed=43).paths.model == Config().paths.model / "seeds" / "seed43"


@pytest.mark.parametrize(("folder", "command"), [("results", "seeds --runs lora"), ("recipes", "recipes --names lora"),
                                                 ("curves", "curves")])
def test_the_command_that_adds_seeds_is_the_one_that_wrote_the_records(folder, command, tmp_path):
    assert seeds.rerun_command(tmp_path / folder, "lora") == f"python -m lora_ft {command}"
    said = seeds.compare("a", [0.8], "b", [0.7], command=seeds.rerun_command(tmp_path / folder, "lora"))
    assert said.startswith("a vs b: +10.0 points of accuracy (n = 1 seed") and f"`python -m lora_ft {command}`" in said
