"""LoRA behaviour on the real default model: reload, merge, frozen base weights, targets."""

from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from safetensors.torch import load_file
from transformers import DataCollatorWithPadding, Trainer

from lora_ft import Config, ConfigError, data
from lora_ft.adapters import changed_base_weights, frozen_snapshot, load_adapter, save_adapter
from lora_ft.modeling import add_lora, count_params, load_model, load_tokenizer, lora_targets
from lora_ft.training import build_trainer, input_casts_off, predict_logits, release, train

LABELS = ["negative", "neutral", "positive"]
TEXTS = [
    ("I hate waiting on hold for hours", 0), ("terrible service, lost my bag", 0), ("worst flight ever", 0),
    ("the flight leaves at noon", 1), ("gate 12 is in terminal B", 1), ("the car drives itself", 1),
    ("loved the crew, great trip", 2), ("amazing service, thank you", 2), ("best airline, landed early", 2),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = Config(smoke=True, output_root=str(tmp_path_factory.mktemp("run")), learning_rate=5e-2,
                    epochs=2.0, batch_size=3, early_stopping_patience=0)
    tokenizer = load_tokenizer(config.model)
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    split = Dataset.from_dict({"text": [t for t, _ in TEXTS], "label": [y for _, y in TEXTS]}, features=features)
    splits = data.tokenize(DatasetDict(train=split, validation=split, test=split), tokenizer, config.max_length)
    base_logits = predict_logits(load_model(config.model, LABELS, config.seed), tokenizer, splits["test"])

    model = add_lora(load_model(config.model, LABELS, config.seed), config)
    snapshot = frozen_snapshot(model)
    lora_b_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    train_info = train(build_trainer(config, model, tokenizer, splits))
    save_adapter(model, tokenizer, config, LABELS, config.paths.adapter)
    return dict(config=config, tokenizer=tokenizer, splits=splits, model=model, snapshot=snapshot,
                lora_b_before=lora_b_before, base_logits=base_logits, train_info=train_info)


def test_training_moved_the_adapters_but_not_the_pretrained_weights(setup):
    model = setup["model"]
    before = setup["lora_b_before"]  # compared on the CPU: training may have moved the model to a GPU
    moved = [n for n, p in model.named_parameters() if "lora_B" in n and not torch.equal(p.cpu(), before[n].cpu())]
    assert len(moved) == len(before) > 0  # B left zero: the model really trained
    assert changed_base_weights(model, setup["snapshot"]) == []
    assert len(setup["train_info"]["history"]) >= 2


def test_disabling_the_adapter_gives_back_the_base_model(setup):
    model, tokenizer, test = setup["model"], setup["tokenizer"], setup["splits"]["test"]
    adapted = predict_logits(model, tokenizer, test)
    with model.disable_adapter():
        base = predict_logits(model, tokenizer, test)
    assert not np.allclose(adapted, setup["base_logits"], atol=1e-3)
    np.testing.assert_allclose(base, setup["base_logits"], atol=1e-5)


def test_saved_adapter_reloads_to_identical_logits(setup):
    config, tokenizer, test = setup["config"], setup["tokenizer"], setup["splits"]["test"]
    files = {f.name for f in config.paths.adapter.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "lora_ft_config.json", "labels.json"} <= files
    reloaded = load_adapter(config.paths.adapter, config, LABELS)
    np.testing.assert_allclose(predict_logits(reloaded, tokenizer, test),
                               predict_logits(setup["model"], tokenizer, test), atol=1e-6)


def test_merged_model_predicts_like_the_adapter_model(setup):
    config, tokenizer, test = setup["config"], setup["tokenizer"], setup["splits"]["test"]
    merged = load_adapter(config.paths.adapter, config, LABELS, merge=True)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    adapter_logits = predict_logits(setup["model"], tokenizer, test)
    merged_logits = predict_logits(merged, tokenizer, test)
    np.testing.assert_allclose(merged_logits, adapter_logits, atol=1e-4)
    assert (merged_logits.argmax(-1) == adapter_logits.argmax(-1)).all()


@pytest.mark.parametrize("patience", [0, 100], ids=["final-weights", "best-checkpoint"])
def test_the_final_weights_are_tested_unless_early_stopping_restores_the_best(setup, patience, tmp_path):
    # 9 examples in batches of 3 for 2 epochs: 6 steps, each validated and checkpointed
    config = setup["config"].replace(smoke=False, output_root=str(tmp_path), epochs=2.0, evaluations_per_epoch=3,
                                     min_steps=1, early_stopping_patience=patience)
    model = add_lora(load_model(config.model, LABELS, config.seed), config)
    trainer = build_trainer(config, model, setup["tokenizer"], setup["splits"], disable_tqdm=True,
                            save_total_limit=None)  # keep every checkpoint to compare with
    train(trainer)
    assert trainer.args.load_best_model_at_end == (patience > 0) and trainer.state.global_step == 6
    kept = trainer.state.best_model_checkpoint if patience else str(config.paths.checkpoints / "checkpoint-6")
    saved = load_file(str(Path(kept) / "adapter_model.safetensors"))
    trained = {n.replace(".default", ""): p for n, p in model.named_parameters() if "lora_" in n}
    assert trained and set(trained) <= set(saved)
    for name, value in trained.items():
        torch.testing.assert_close(value.detach(), saved[name], rtol=0, atol=0)


def test_default_targets_and_budget_and_unknown_target():
    model = load_model(Config().model, LABELS, seed=0)
    # every linear layer outside the head; "dense" alone would also hit the pooler, which trains in full
    assert lora_targets(model, None) == ["query", "key", "value", "output.dense", "intermediate.dense"]
    with pytest.raises(ConfigError, match=r"target_modules \['q_proj'\] are not linear layers of bert: choose from"):
        lora_targets(model, ("q_proj",))
    params = count_params(add_lora(model, Config(smoke=False)))
    assert 0 < params["trainable"] <= 0.025 * params["total"]  # adapters 1.4%, the pooler and classifier 0.7%


@pytest.mark.parametrize("scored_first", [False, True], ids=["fresh", "scored-before-training"])
def test_training_runs_in_the_precision_asked_even_after_scoring(setup, scored_first, tmp_path):
    """A Trainer marks the model it scores as prepared; the next one then skipped mixed precision (a silent 1.5x
    slowdown). Every training step must run its matrix products in bf16, and prediction after it in fp32."""
    config, tokenizer, splits = setup["config"], setup["tokenizer"], setup["splits"]
    model = add_lora(load_model(config.model, LABELS, config.seed), config)
    if scored_first:
        predict_logits(model, tokenizer, splits["test"])
    seen = []
    layer = model.get_submodule("base_model.model.bert.encoder.layer.0.attention.self.query.base_layer")
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    trainer = build_trainer(config.replace(precision="bf16"), model, tokenizer, splits, tmp_path, max_steps=2,
                            eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    trainer.train()
    assert seen and set(seen) == {torch.bfloat16}
    seen.clear()
    predict_logits(model, tokenizer, splits["test"])
    handle.remove()
    assert set(seen) == {torch.float32}



def test_training_under_autocast_skips_peft_input_casts_with_the_same_gradients(setup, tmp_path):
    """Under bf16 autocast peft's cast of an adapted layer's bf16 input to the adapters' fp32 is undone by autocast at
    once: the same loss and gradients to the bit without it, and the Trainer trains without it (and restores it)."""
    config, tokenizer, splits = setup["config"], setup["tokenizer"], setup["splits"]
    model = add_lora(load_model(config.model, LABELS, config.seed), config)
    batch = DataCollatorWithPadding(tokenizer)(splits["train"].remove_columns("text").to_list())
    dtypes, grads, losses = set(), {}, {}
    name, adapter = next((n, m) for n, m in model.named_modules() if n.endswith("output.dense.lora_A.default"))
    layer = model.get_submodule(name.rsplit(".lora_A", 1)[0])  # the adapted layer that holds the switch
    hook = adapter.register_forward_pre_hook(lambda module, inputs: dtypes.add(inputs[0].dtype))
    for cast in (True, False):
        model.zero_grad()
        with input_casts_off(model, active=not cast), torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        losses[cast] = loss.item()
        grads[cast] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    hook.remove()
    assert dtypes == {torch.float32, torch.bfloat16}  # the input reached the adapter cast, then as it was
    assert losses[True] == losses[False] and len(grads[True]) > 70
    assert all(torch.equal(grads[True][n], grads[False][n]) for n in grads[True])

    enabled = []
    hook = adapter.register_forward_pre_hook(lambda module, inputs: enabled.append(layer.cast_input_dtype_enabled))
    train(build_trainer(config.replace(precision="bf16"), model, tokenizer, splits, tmp_path, max_steps=1,
                        eval_strategy="no", save_strategy="no"))
    hook.remove()
    release(model)
    assert enabled and not any(enabled) and layer.cast_input_dtype_enabled


def test_validation_with_weights_cast_once_scores_the_same(setup, tmp_path):
    """A bf16 validation holds the linear weights as bf16 copies (what autocast made of them on every call): the
    same loss and scores as casting per call, and the same fp32 tensors back afterwards."""
    config, tokenizer, splits, model = setup["config"], setup["tokenizer"], setup["splits"], setup["model"]
    trainer = build_trainer(config.replace(precision="bf16"), model, tokenizer, splits, tmp_path, eval_strategy="no")
    before = dict(model.named_parameters())
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    seen = []
    hooks = [linear[i].register_forward_pre_hook(lambda module, inputs: seen.append(module.weight.dtype))
             for i in (0, -1)]  # a frozen weight and the trained head
    cast_once = trainer.evaluate()
    weights_seen, seen[:] = set(seen), []
    per_call = Trainer.evaluate(trainer)  # the Trainer's own: autocast casts every weight on every call
    for hook in hooks:
        hook.remove()
    release(model)
    assert weights_seen == {torch.bfloat16} and set(seen) == {torch.float32} and len(linear) > 30
    for metric in ("eval_loss", "eval_accuracy", "eval_f1_macro"):
        assert cast_once[metric] == per_call[metric]
    assert dict(model.named_parameters()) == before  # the very tensors, fp32, after
