"""pooling="mean": the head reads the masked mean of the token vectors (how all-MiniLM-L6-v2 was trained to be read)
in place of BERT's pooler; it trains, saves, reloads and merges with the same logits, and refuses what would
silently read the pooler instead (a plain transformers export, one base shared with pooler-reading adapters)."""

import json
import shutil

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from lora_ft import Config, ConfigError, data
from lora_ft.adapters import load_adapter
from lora_ft.modeling import MeanPooler, add_lora, load_model, load_tokenizer
from lora_ft.multitask import Tasks
from lora_ft.run import NO_VALIDATION, train_and_score
from lora_ft.serving import export
from lora_ft.training import embed, predict_logits
from tests.test_lora import LABELS, TEXTS
from tests.test_model_families import save_tiny_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A mean-pooled LoRA run through the one run function, its adapter saved: (config, tokenizer, splits, model)."""
    root = tmp_path_factory.mktemp("mean")
    config = Config(smoke=True, output_root=str(root), learning_rate=5e-2, epochs=2.0, batch_size=3, min_steps=1,
                    early_stopping_patience=0, pooling="mean", contrastive=False)  # the Trainer's steps
    tokenizer = load_tokenizer(config.model)
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    split = Dataset.from_dict({"text": [t for t, _ in TEXTS], "label": [y for _, y in TEXTS]}, features=features)
    splits = data.tokenize(DatasetDict(train=split, validation=split, test=split), tokenizer, config.max_length)
    record, model = train_and_score(config, splits, schedule=NO_VALIDATION, save_to=config.paths.adapter,
                                    quiet=True)
    assert record["config"]["pooling"] == "mean"
    return config, tokenizer, splits, model.eval()


def test_the_head_reads_the_masked_mean_that_the_encoder_was_trained_for(trained):
    config, tokenizer, splits, _ = trained
    model = load_model(config.model, LABELS, config.seed, pooling="mean").eval()
    assert isinstance(model.base_model.pooler, MeanPooler)
    assert not any("pooler" in name for name, _ in model.named_parameters())  # nothing of it to train or save
    pooled = embed(model.base_model, tokenizer, splits["test"], pooling="pooler")  # what the classifier reads
    plain = embed(load_model(config.model, LABELS, config.seed).base_model, tokenizer, splits["test"], pooling="mean")
    np.testing.assert_allclose(pooled, plain, atol=1e-5)


def test_padding_does_not_move_the_mean(trained):
    """One text alone and in a batch with a longer text: the same logits (the mask reaches the pooler)."""
    _, tokenizer, _, model = trained
    short, longer = "worst flight ever", "the flight leaves at noon and the crew was lovely, thank you all so much"
    with torch.no_grad():
        alone = model(**tokenizer([short], return_tensors="pt")).logits
        padded = model(**tokenizer([short, longer], padding=True, return_tensors="pt")).logits[:1]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


def test_training_trains_the_classifier_and_adapters_only(trained):
    _, _, _, model = trained
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable) and any("classifier" in n for n in trainable)
    assert not any("pooler" in n for n in trainable)


def test_the_saved_adapter_reloads_and_merges_to_the_same_logits(trained):
    config, tokenizer, splits, model = trained
    saved = json.loads((config.paths.adapter / "lora_ft_config.json").read_text())
    assert saved["pooling"] == "mean"
    logits = predict_logits(model, tokenizer, splits["test"])
    reloaded = load_adapter(config.paths.adapter, config, LABELS)
    np.testing.assert_allclose(predict_logits(reloaded, tokenizer, splits["test"]), logits, atol=1e-6)
    merged = load_adapter(config.paths.adapter, config, LABELS, merge=True)
    assert isinstance(merged.base_model.pooler, MeanPooler)
    np.testing.assert_allclose(predict_logits(merged, tokenizer, splits["test"]), logits, atol=1e-4)
    # the same adapter on a pooler-reading base scores differently: the setting is not cosmetic
    misread = load_adapter(config.paths.adapter, config.replace(pooling="cls"), LABELS)
    assert not np.allclose(predict_logits(misread, tokenizer, splits["test"]), logits, atol=1e-3)


def test_a_plain_transformers_export_is_refused_with_what_serves_it(trained, tmp_path):
    config, _, _, _ = trained
    with pytest.raises(ConfigError, match=r"pooling=mean.*python -m lora_ft predict --adapter"):
        export(config, output=tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_mean_pooled_tasks_share_a_base_and_give_what_each_gives_alone(trained, tmp_path):
    config, tokenizer, splits, model = trained
    twin = tmp_path / "twin"
    shutil.copytree(config.paths.adapter, twin)
    tasks = Tasks({"sentiment": config.paths.adapter, "twin": twin}, precision="fp32")
    texts = [t for t, _ in TEXTS]
    expected = predict_logits(model, tokenizer, splits["test"])
    for name in ("sentiment", "twin"):
        np.testing.assert_allclose(np.stack(tasks.logits(texts, name)), expected, atol=1e-5)


def test_adapters_that_pool_differently_do_not_share_a_base(trained, tmp_path):
    config, _, _, _ = trained
    other = tmp_path / "pooler-reading"
    shutil.copytree(config.paths.adapter, other)
    settings = json.loads((other / "lora_ft_config.json").read_text())
    (other / "lora_ft_config.json").write_text(json.dumps({**settings, "pooling": "cls"}))
    with pytest.raises(ConfigError, match="different poolings"):
        Tasks({"mean": config.paths.adapter, "cls": other})


def test_a_model_without_a_pooler_and_an_unknown_pooling_are_refused(tmp_path):
    base = save_tiny_model("distilbert", tmp_path / "distilbert")
    with pytest.raises(ConfigError, match="pooling='mean' .*replaces the pooler.*set pooling='cls'"):
        add_lora(load_model(base, LABELS, 0, pooling="mean"), Config(smoke=True, model=base))
    with pytest.raises(ConfigError, match=r"pooling='max' is unknown: set pooling to one of \['cls', 'mean'\]"):
        Config(pooling="max")
