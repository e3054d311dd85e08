"""LoRA variants (Config.method, LoRA+) and the speed settings (base_dropout, compile, pad_to_multiple_of) on a tiny
random BERT: each trains, saves, reloads and merges to the same logits, and counts its weights right."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_model_families import FAMILIES, LABELS, save_tiny_model, tiny_config, tokenized_splits
from transformers import AutoModelForSequenceClassification

from lora_ft import Config, ConfigError, baselines
from lora_ft.adapters import changed_base_weights, frozen_snapshot, load_adapter, save_adapter
from lora_ft.cli import parse_overrides
from lora_ft.config import METHODS
from lora_ft.modeling import (
    add_lora,
    add_lora_from_scratch,
    count_params,
    load_model,
    load_tokenizer,
    model_for_training,
    set_base_dropout,
)
from lora_ft.training import build_trainer, predict_logits, train

R = 4
QUERY_VALUE = ("query", "value")  # the adapted layers here (the default, all linear layers, mixes widths)
TARGETS = 4  # query and value in each of the 2 layers of the tiny BERT, each 32 -> 32
WIDTH = 32
HEAD = (WIDTH * 3 + 3) + (WIDTH * WIDTH + WIDTH)  # classifier and pooler, trained in full
# Trainable weights besides the head, per method, on TARGETS layers of WIDTH inputs and outputs
ADAPTER_WEIGHTS = {
    "lora": TARGETS * R * 2 * WIDTH, "rslora": TARGETS * R * 2 * WIDTH, "pissa": TARGETS * R * 2 * WIDTH,
    "olora": TARGETS * R * 2 * WIDTH,
    "dora": TARGETS * (R * 2 * WIDTH + WIDTH),  # and a magnitude per output
    "vera": TARGETS * (R + WIDTH),  # a scale per rank (d) and per output (b); A and B are frozen and shared
    "ia3": TARGETS * WIDTH,  # a scale per output
}
VARIANTS = [(method, None) for method in METHODS] + [("lora", 16.0)]  # the last: LoRA+


def variant_id(variant):
    method, ratio = variant
    return method if ratio is None else f"{method}+"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_model("bert", tmp_path_factory.mktemp("bert") / "base")


@pytest.fixture(scope="module")
def splits(base):
    return tokenized_splits(load_tokenizer(base))


def step_trainer(config, model, splits, folder, steps=2, **overrides):
    settings = dict(max_steps=steps, eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    return build_trainer(config, model, load_tokenizer(config.model), splits, folder, **{**settings, **overrides})


@pytest.fixture(scope="module", params=VARIANTS, ids=variant_id)
def trained(request, base, splits, tmp_path_factory):
    """Two training steps of one variant, saved with save_adapter."""
    method, ratio = request.param
    tmp = tmp_path_factory.mktemp(variant_id(request.param))
    config = tiny_config(base, tmp, method=method, r=R, loraplus_lr_ratio=ratio, target_modules=QUERY_VALUE)
    model = add_lora(load_model(config.model, LABELS, config.seed), config)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    snapshot = frozen_snapshot(model)
    trainer = step_trainer(config, model, splits, tmp / "checkpoints")
    trainer.train()
    tokenizer = load_tokenizer(config.model)
    save_adapter(model, tokenizer, config, LABELS, config.paths.adapter)
    return dict(config=config, model=model, trainer=trainer, before=before, snapshot=snapshot,
                logits=predict_logits(model, tokenizer, splits["test"]))


def test_training_moves_every_trained_tensor_and_no_pretrained_one(trained):
    model, before = trained["model"], trained["before"]
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p.cpu(), before[n].cpu())]
    assert len(moved) == len(before) > 0
    assert changed_base_weights(model, trained["snapshot"]) == []


def test_reloaded_adapter_gives_the_same_logits(trained, splits):
    config = trained["config"]
    reloaded = load_adapter(config.paths.adapter, config, LABELS)
    logits = predict_logits(reloaded, load_tokenizer(config.model), splits["test"])
    np.testing.assert_allclose(logits, trained["logits"], atol=1e-5)
    with reloaded.disable_adapter():  # the adapter and head count: without them the logits differ
        without = predict_logits(reloaded, load_tokenizer(config.model), splits["test"])
    assert not np.allclose(without, logits, atol=1e-3)


def test_merged_model_gives_the_same_logits(trained, splits):
    config = trained["config"]
    merged = load_adapter(config.paths.adapter, config, LABELS, merge=True)
    assert not any("lora_" in n or "vera_" in n or "ia3_" in n for n, _ in merged.named_parameters())
    logits = predict_logits(merged, load_tokenizer(config.model), splits["test"])
    np.testing.assert_allclose(logits, trained["logits"], atol=1e-5)


def test_trainable_weights_are_the_head_and_the_method_s_own(trained):
    config, model = trained["config"], trained["model"]
    pretrained = count_params(load_model(config.model, LABELS, config.seed))["total"]
    expected = HEAD + ADAPTER_WEIGHTS[config.method]
    assert count_params(model) == {"trainable": expected, "total": pretrained + expected}


def test_the_saved_settings_hold_the_method(trained):
    config = trained["config"]
    saved = json.loads((config.paths.adapter / "lora_ft_config.json").read_text())
    assert (saved["method"], saved["loraplus_lr_ratio"]) == (config.method, config.loraplus_lr_ratio)
    assert Config.load(config.paths.adapter / "lora_ft_config.json").method == config.method


@pytest.mark.parametrize("method", ["pissa", "olora"])
def test_pissa_and_olora_are_saved_as_a_plain_lora_of_twice_the_rank_with_the_head(method, base, tmp_path):
    config = tiny_config(base, tmp_path, method=method, r=R, target_modules=QUERY_VALUE)
    model = add_lora(load_model(config.model, LABELS, config.seed), config)
    pretrained = load_model(config.model, LABELS, config.seed)
    query = "bert.encoder.layer.0.attention.self.query"
    residual = model.get_submodule(f"base_model.model.{query}").base_layer.weight
    assert not torch.allclose(residual, pretrained.get_submodule(query).weight)  # training starts from W - s B0 A0
    save_adapter(model, load_tokenizer(config.model), config, LABELS, config.paths.adapter)
    settings = json.loads((config.paths.adapter / "adapter_config.json").read_text())
    assert (settings["r"], settings["lora_alpha"], settings["init_lora_weights"]) == (2 * R, 2 * config.alpha, True)
    weights = load_file(str(config.paths.adapter / "adapter_model.safetensors"))
    assert weights[f"base_model.model.{query}.lora_A.weight"].shape == (2 * R, WIDTH)
    assert all(any(f".{head}." in name for name in weights) for head in ("classifier", "pooler"))  # peft drops them
    # untrained, B A - B0 A0 = 0: the reloaded model is the pretrained one with the (same seeded) head
    reloaded = load_adapter(config.paths.adapter, config, LABELS, merge=True)
    torch.testing.assert_close(reloaded.get_submodule(query).weight, pretrained.get_submodule(query).weight)


def test_loraplus_gives_b_ratio_times_a_s_learning_rate(trained):
    config, optimizer = trained["config"], trained["trainer"].optimizer
    if config.loraplus_lr_ratio is None:
        pytest.skip("LoRA+ only")
    rates = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            rates[id(p)] = group["initial_lr"]
    model = trained["model"]
    a = {rates[id(p)] for n, p in model.named_parameters() if "lora_A" in n}
    b = {rates[id(p)] for n, p in model.named_parameters() if "lora_B" in n}
    assert a == {config.learning_rate} and b == {config.learning_rate * config.loraplus_lr_ratio}


@pytest.mark.parametrize("variant", [("lora", 16.0), ("pissa", None)], ids=variant_id)
def test_resumed_run_ends_where_an_uninterrupted_one_does(variant, base, splits, tmp_path):
    """The LoRA+ optimizer's state and groups, and PiSSA's residual base, come back from a checkpoint."""
    method, ratio = variant
    config = tiny_config(base, tmp_path, method=method, r=R, loraplus_lr_ratio=ratio, target_modules=QUERY_VALUE)

    def run(folder, resume=None):
        model = add_lora(load_model(config.model, LABELS, config.seed), config)
        trainer = step_trainer(config, model, splits, folder, steps=3, save_strategy="steps", save_steps=1,
                               save_total_limit=None)
        train(trainer, resume)
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    whole = run(tmp_path / "whole")
    resumed = run(tmp_path / "resumed", str(tmp_path / "whole" / "checkpoint-1"))
    assert whole.keys() == resumed.keys()
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("changes, message", [
    (dict(method="adalora"), r"method='adalora' is unknown: set it to one of \('lora', 'dora'"),
    (dict(method="vera", loraplus_lr_ratio=16.0), r"LoRA\+ .* method='vera' has none: set loraplus_lr_ratio=None"),
    (dict(loraplus_lr_ratio=0.0), r"loraplus_lr_ratio=0.0 is invalid: set it to a positive number"),
    (dict(method="pissa", quantize_4bit=True), r"on a 4-bit base the saved plain LoRA adapter would not reload "
                                               r"exactly: set quantize_4bit=False"),
    (dict(base_dropout=1.0), r"base_dropout=1.0 is out of range: set it in \[0, 1\)"),
    (dict(pad_to_multiple_of=0), r"pad_to_multiple_of=0 is invalid: set it to a positive integer"),
])
def test_invalid_settings_name_the_fix(changes, message):
    with pytest.raises(ConfigError, match=message):
        Config(**changes)


def test_the_from_scratch_lora_refuses_other_methods(base, tmp_path):
    with pytest.raises(ConfigError, match="from-scratch LoRA implements method='lora' only, not 'dora': set"):
        add_lora_from_scratch(load_model(base, LABELS, 0), tiny_config(base, tmp_path, method="dora"))


def test_the_new_settings_from_the_command_line():
    words = ["method=dora", "loraplus_lr_ratio=16", "base_dropout=0", "compile=true", "pad_to_multiple_of=8"]
    assert parse_overrides(words) == dict(method="dora", loraplus_lr_ratio=16.0, base_dropout=0.0, compile=True,
                                          pad_to_multiple_of=8)
    assert parse_overrides(["loraplus_lr_ratio=None", "base_dropout=None"]) == dict(loraplus_lr_ratio=None,
                                                                                    base_dropout=None)


# base_dropout


def dropouts(model) -> dict[str, float]:
    """p of every dropout layer of the pretrained model (the head's are outside it)."""
    return {name: module.p for name, module in model.base_model.named_modules()
            if isinstance(module, torch.nn.Dropout)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_base_dropout_zero_reaches_every_dropout_of_each_family(family):
    config_class, sizes, _, _ = FAMILIES[family]
    settings = config_class(vocab_size=100, num_labels=3, **sizes)
    set_base_dropout(settings, 0.0)
    model = AutoModelForSequenceClassification.from_config(settings)
    assert set(dropouts(model).values()) <= {0.0}
    for name in ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop"):  # functional, in attention
        assert getattr(settings, name, 0.0) == 0.0


def test_base_dropout_zero_makes_the_encoder_deterministic_in_training_and_keeps_the_head_s(base, splits):
    batch = load_tokenizer(base)(["the flight leaves at noon", "worst flight ever"], padding=True, return_tensors="pt")
    for base_dropout, same in ((None, False), (0.0, True)):
        model = load_model(base, LABELS, 0, base_dropout=base_dropout).train()
        first, second = (model.bert(**batch).last_hidden_state for _ in range(2))
        assert torch.equal(first, second) == same
        assert model.dropout.p == 0.1  # the head's dropout is the model's own either way


def test_full_fine_tuning_takes_the_same_base_dropout(base, splits, tmp_path):
    config = tiny_config(base, tmp_path, base_dropout=0.0, loraplus_lr_ratio=16.0, epochs=1.0)
    record = baselines.full_finetune(splits, config)
    saved = json.loads((config.paths.model / "full-finetune" / "config.json").read_text())
    dropout = (saved["hidden_dropout_prob"], saved["attention_probs_dropout_prob"], saved["classifier_dropout"])
    assert dropout == (0, 0, 0.1)
    assert record["config"]["base_dropout"] == 0.0 and record["config"]["loraplus_lr_ratio"] is None


# compile and bucketed padding


def test_pad_to_multiple_of_buckets_the_batch_lengths(base, splits, tmp_path):
    config = tiny_config(base, tmp_path, pad_to_multiple_of=8)
    trainer = step_trainer(config, load_model(base, LABELS, 0), splits, tmp_path)
    features = [{k: row[k] for k in ("input_ids", "attention_mask", "label")} for row in splits["train"]]
    longest = max(len(row["input_ids"]) for row in features)
    width = trainer.data_collator(features)["input_ids"].shape[1]
    assert width % 8 == 0 and longest <= width < longest + 8


def test_padding_to_a_multiple_trains_the_same_weights(base, splits, tmp_path):
    """pad_to_multiple_of is among the settings that change no trained weight (config.NOT_TRAINED): the positions it
    adds are masked, so with the pretrained model's dropout off (the default) training ends at the same weights."""
    trained = []
    for pad in (None, 8):
        config = tiny_config(base, tmp_path, pad_to_multiple_of=pad, r=R)
        model = add_lora(model_for_training(config, LABELS), config)
        train(step_trainer(config, model, splits, tmp_path / f"pad{pad}", steps=4))
        trained.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    assert trained[0].keys() == trained[1].keys()
    for name, weight in trained[0].items():
        torch.testing.assert_close(trained[1][name], weight, atol=1e-6, rtol=1e-5, msg=name)


def test_compiled_training_counts_its_graphs_and_predicts_like_the_uncompiled_model(base, splits, tmp_path):
    """compile through the Trainer; the eager backend keeps the test quick (inductor takes minutes on CPU)."""
    config = tiny_config(base, tmp_path, compile=True, pad_to_multiple_of=8, base_dropout=0.0, r=R)
    model = add_lora(load_model(config.model, LABELS, config.seed, base_dropout=0.0), config)
    info = train(step_trainer(config, model, splits, tmp_path / "checkpoints", torch_compile_backend="eager"))
    assert info["compiled_graphs"] >= 1
    plain = add_lora(load_model(config.model, LABELS, config.seed, base_dropout=0.0), config.replace(compile=False))
    train(step_trainer(config.replace(compile=False), plain, splits, tmp_path / "plain"))
    tokenizer = load_tokenizer(config.model)
    np.testing.assert_allclose(predict_logits(model, tokenizer, splits["test"]),
                               predict_logits(plain, tokenizer, splits["test"]), atol=1e-5)
    assert "compiled_graphs" not in train(step_trainer(config.replace(compile=False), plain, splits, tmp_path / "p2"))
