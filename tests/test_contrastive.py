"""Few labels (Config.contrastive): below CONTRASTIVE_BELOW examples per class the default trains the adapters on
pairs of texts, as SetFit trains its body, and sets the head from a logistic regression on the mean-pooled tokens;
what it saves is an ordinary mean-pooled adapter, which reloads and merges to the same logits."""

import importlib.util
import json

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from sklearn.linear_model import LogisticRegression

from lora_ft import Config, ConfigError, card, cli, contrastive, data
from lora_ft.adapters import load_adapter
from lora_ft.config import CONTRASTIVE_BELOW, CONTRASTIVE_MAX_STEPS, SMALL_BATCH_SIZE
from lora_ft.modeling import load_tokenizer
from lora_ft.run import train_and_score
from lora_ft.training import embed, predict_logits
from tests.test_lora import LABELS, TEXTS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The default run on nine texts of three classes (a contrastive one), its adapter saved:
    (config, tokenizer, splits, model, record)."""
    root = tmp_path_factory.mktemp("contrastive")
    config = Config(smoke=True, output_root=str(root), min_steps=4)
    tokenizer = load_tokenizer(config.model)
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    split = Dataset.from_dict({"text": [t for t, _ in TEXTS], "label": [y for _, y in TEXTS]}, features=features)
    splits = data.tokenize(DatasetDict(train=split, validation=split, test=split), tokenizer, config.max_length)
    record, model = train_and_score(config, splits, save_to=config.paths.adapter, quiet=True)
    return config, tokenizer, splits, model.eval(), record


def test_the_budget_rule_trains_contrastively_below_the_threshold_only():
    default = Config(smoke=False)
    few = default.budget(3 * (CONTRASTIVE_BELOW - 1), classes=3)
    assert (few.contrastive, few.pooling, few.batch_size, few.epochs) == (True, "mean", SMALL_BATCH_SIZE, 2.0)
    assert few.budget(3 * (CONTRASTIVE_BELOW - 1), classes=3) == few  # applying it twice changes nothing
    enough = default.budget(3 * CONTRASTIVE_BELOW, classes=3)
    assert (enough.contrastive, enough.pooling) == (False, "cls")
    assert default.budget(24).contrastive is False  # classes unknown: callers with large splits
    assert default.replace(contrastive=False).budget(24, 3).pooling == "cls"
    assert default.replace(pooling="cls").budget(24, 3).contrastive is False  # the pooler asked for: the Trainer's
    assert default.replace(contrastive=True).budget(30_000, 3).contrastive is True  # asked for at any size
    assert default.untrained().contrastive is False and default.untrained().pooling == "cls"
    with pytest.raises(ConfigError, match="contrastive training shapes the mean.*set pooling=mean"):
        Config(contrastive=True, pooling="cls")


def test_the_pairs_phase_is_setfits_size_with_a_cap():
    eight_per_class = Config(smoke=False).budget(24, classes=3)
    assert contrastive.plan(24, eight_per_class) == {"iterations": 20, "pairs": 960, "steps": 60}  # SetFit's
    assert contrastive.plan(3_000, eight_per_class)["steps"] == CONTRASTIVE_MAX_STEPS
    assert contrastive.plan(24, Config(smoke=True, min_steps=4).budget(24, 3))["steps"] == 4  # small mode


def test_the_run_trains_the_adapters_and_sets_the_head_from_a_probe(trained):
    config, tokenizer, splits, model, record = trained
    assert (record["config"]["contrastive"], record["config"]["pooling"]) == (True, "mean")
    assert (record["train"]["steps"], record["train"]["pairs"]) == (4, 4 * SMALL_BATCH_SIZE)
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: the pairs moved it
    encoder = model.get_base_model().base_model
    train, test = splits["train"], splits["test"]
    probe = LogisticRegression(C=1.0, max_iter=5000, random_state=config.seed)
    probe.fit(embed(encoder, tokenizer, train), np.asarray(train["label"]))
    expected = probe.predict(embed(encoder, tokenizer, test))
    np.testing.assert_array_equal(predict_logits(model, tokenizer, test).argmax(-1), expected)


def test_the_saved_adapter_reloads_and_merges_to_the_same_logits(trained):
    config, tokenizer, splits, model, record = trained
    logits = predict_logits(model, tokenizer, splits["test"])
    trained_settings = config.budget(len(splits["train"]), len(LABELS))
    reloaded = load_adapter(config.paths.adapter, trained_settings, LABELS)
    np.testing.assert_allclose(predict_logits(reloaded, tokenizer, splits["test"]), logits, atol=1e-6)
    merged = load_adapter(config.paths.adapter, trained_settings, LABELS, merge=True)
    np.testing.assert_allclose(predict_logits(merged, tokenizer, splits["test"]), logits, atol=1e-4)


def test_a_resume_and_a_missing_setfit_are_refused_with_the_fix(trained, tmp_path, monkeypatch):
    config, _, splits, _, _ = trained
    with pytest.raises(ConfigError, match="keeps no checkpoints to resume: run it again without --resume"):
        train_and_score(config, splits, resume_from=tmp_path, quiet=True)
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "setfit" else found(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'setfit>=1.1', or set contrastive=false"):
        train_and_score(config, splits, quiet=True)


def test_the_model_card_says_how_it_trained(trained):
    config, _, splits, _, record = trained
    settings = config.budget(len(splits["train"]), len(LABELS))
    text = str(card.for_adapter(settings, LABELS, config.paths.adapter, record))
    assert "the adapters trained on pairs of texts" in text and "pairs in 4 steps" in text
    assert "reads the mean of the last layer's token vectors" in text  # and how to load it


def test_train_on_few_labels_from_the_command_line_serves_and_drops_a_stale_merged_model(tmp_path, capsys):
    root = tmp_path / "run"
    settings = ["smoke=true", "train_size=48", "eval_size=32", f"output_root={root}"]
    assert cli.main(["prepare", *settings]) == 0
    stale = root / "model" / "lora-merged"  # an earlier run's export, which the new adapter would contradict
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    assert cli.main(["train", *settings]) == 0
    said = capsys.readouterr().out
    assert "few labels" in said and "no merged model" in said and f"removed {stale}" in said and not stale.exists()
    saved = json.loads((root / "model" / "lora-adapter" / "lora_ft_config.json").read_text())
    assert (saved["contrastive"], saved["pooling"]) == (True, "mean")
    assert cli.main(["predict", *settings, "worst flight ever"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in ("negative", "neutral", "positive")
