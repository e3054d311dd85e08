import math

import pytest

from lora_ft import Config, ConfigError
from lora_ft.config import BATCH_SIZE, MIN_STEPS, SMALL_BATCH_SIZE, SMOKE_LIMITS, smoke_from_env
from lora_ft.io import write_json_atomic


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"r": 0}, "r="),
        ({"r": 2.5}, "r="),
        ({"alpha": 0}, "alpha="),
        ({"learning_rate": -1e-4}, "learning_rate="),
        ({"epochs": 0}, "epochs="),
        ({"batch_size": 0}, "batch_size="),
        ({"max_length": -1}, "max_length="),
        ({"dropout": 1.0}, "dropout="),
        ({"validation_fraction": 0.0}, "validation_fraction="),
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, "leaves no training data"),
        ({"train_size": 0}, "train_size="),
        ({"labels": ["negative"]}, "labels="),
        ({"labels": ["a", "a"]}, "labels="),
        ({"target_modules": []}, "target_modules"),
        ({"early_stopping_patience": -1}, "early_stopping_patience="),
    ],
)
def test_bad_values_are_rejected_with_the_setting_named(changes, named):
    with pytest.raises(ConfigError, match=named) as error:
        Config(smoke=False, **changes)
    assert ": " in str(error.value)  # problem, then the fix


def test_defaults_are_valid_and_replace_validates():
    config = Config(smoke=False)
    assert config.replace(r=16).r == 16
    with pytest.raises(ConfigError, match="r="):
        config.replace(r=-4)
    with pytest.raises(ConfigError, match="unknown setting"):
        config.replace(rank=4)


def test_small_mode_shrinks_but_never_grows():
    small = Config(smoke=True)
    assert {name: getattr(small, name) for name in SMOKE_LIMITS} == SMOKE_LIMITS
    assert Config(smoke=True, train_size=10).train_size == 10
    assert small.paths.base.name == "smoke" and Config(smoke=False).paths.base != small.paths.base


def test_smoke_switch_reads_the_environment(monkeypatch):
    monkeypatch.setenv("LORA_FT_SMOKE", "1")
    assert smoke_from_env() and Config().smoke
    monkeypatch.setenv("LORA_FT_SMOKE", "0")
    assert not Config().smoke
    monkeypatch.setenv("LORA_FT_SMOKE", "maybe")
    with pytest.raises(ConfigError, match="LORA_FT_SMOKE"):
        Config()


def test_saved_config_round_trips(tmp_path):
    config = Config(smoke=False, labels=("negative", "positive"), target_modules=("query",), r=4)
    write_json_atomic(tmp_path / "config.json", config.as_json())
    assert Config.load(tmp_path / "config.json", smoke=False) == config
    with pytest.raises(ConfigError, match="no saved configuration"):
        Config.load(tmp_path / "missing.json")


@pytest.mark.parametrize("root", ["", "  "])
def test_empty_output_root_is_refused(root):
    with pytest.raises(ConfigError, match="output_root is empty"):
        Config(output_root=root)


@pytest.mark.parametrize("examples", [1, 24, 48, 96, 100, 300, 384, 1536, 1599, 29747])
def test_the_budget_rule_trains_at_least_min_steps_and_leaves_large_data_alone(examples):
    config = Config(smoke=False)
    budget = config.budget(examples)
    steps = math.ceil(budget.epochs * math.ceil(examples / budget.batch_size))  # the Trainer's count
    if math.ceil(examples / BATCH_SIZE) * config.epochs >= MIN_STEPS:  # enough data: the settings as they were
        assert (budget.batch_size, budget.epochs) == (BATCH_SIZE, config.epochs)
    else:  # little data: smaller batches, and min_steps steps where two epochs of them are fewer
        assert budget.batch_size == SMALL_BATCH_SIZE
        assert steps == max(MIN_STEPS, math.ceil(examples / SMALL_BATCH_SIZE) * config.epochs)
    assert budget.budget(examples) == budget  # applying it again changes nothing


def test_the_budget_rule_keeps_a_batch_size_given_and_refuses_an_empty_split():
    budget = Config(smoke=False, batch_size=8).budget(40)  # 5 batches an epoch: 20 epochs for 100 steps
    assert (budget.batch_size, budget.epochs) == (8, 20.0)
    assert Config(smoke=False, min_steps=1).budget(40) == Config(smoke=False, min_steps=1, batch_size=BATCH_SIZE,
                                                                   contrastive=False, pooling="cls")
    with pytest.raises(ConfigError, match="the training split is empty"):
        Config(smoke=False).budget(0)
    with pytest.raises(ConfigError, match="min_steps="):
        Config(smoke=False, min_steps=0)
