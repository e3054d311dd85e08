"""The from-scratch LoRA against peft as the oracle, on the real default model."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lora_ft import Config
from lora_ft.lora import LoRALinear, inject_lora, lora_layers, lora_state_dict, mark_only_lora_as_trainable
from lora_ft.modeling import load_model, load_tokenizer

LABELS = ["negative", "neutral", "positive"]
TARGETS = ["query", "value"]
SENTENCES = ["the crew was lovely", "my bag is lost again", "gate 12, terminal B"]


@pytest.fixture(scope="module")
def base():
    return load_model(Config().model, LABELS, seed=0).eval()


@pytest.fixture(scope="module")
def batch():
    return load_tokenizer(Config().model)(SENTENCES, padding=True, return_tensors="pt")


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def ours_and_peft(base, r=4, alpha=8.0):
    ours = copy.deepcopy(base)
    inject_lora(ours, TARGETS, r=r, lora_alpha=alpha)
    mark_only_lora_as_trainable(ours)
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(task_type="SEQ_CLS", r=r, lora_alpha=alpha,
                                                             target_modules=TARGETS, lora_dropout=0.0))
    return ours.eval(), theirs.eval()


def test_at_initialisation_the_output_equals_the_base_model(base, batch):
    ours, _ = ours_and_peft(base)
    assert torch.equal(logits(ours, batch), logits(base, batch))


def test_logits_equal_peft_with_the_same_adapter_weights(base, batch):
    ours, theirs = ours_and_peft(base)
    torch.manual_seed(1)
    peft_weights = dict(theirs.named_parameters())
    for name, module in ours.named_modules():
        if isinstance(module, LoRALinear):
            peft_b = peft_weights[f"base_model.model.{name}.lora_B.default.weight"]
            with torch.no_grad():
                peft_b.normal_(0, 0.05)  # peft's B starts at zero too: give both the same non-zero update
                module.lora_A.copy_(peft_weights[f"base_model.model.{name}.lora_A.default.weight"])
                module.lora_B.copy_(peft_b)
    ours_logits, peft_logits = logits(ours, batch), logits(theirs, batch)
    assert not torch.allclose(ours_logits, logits(base, batch), atol=1e-3)  # the update really acts
    torch.testing.assert_close(ours_logits, peft_logits, atol=1e-5, rtol=0)


def test_merge_then_unmerge_restores_the_weights(base, batch):
    ours, _ = ours_and_peft(base)
    before = {n: p.detach().clone() for n, p in ours.named_parameters() if "base.weight" in n}
    for layer in lora_layers(ours):
        torch.nn.init.normal_(layer.lora_B, 0, 0.05)
    unmerged = logits(ours, batch)
    for layer in lora_layers(ours):
        layer.merge()
    torch.testing.assert_close(logits(ours, batch), unmerged, atol=1e-5, rtol=0)
    assert any(not torch.equal(p.cpu(), before[n].cpu()) for n, p in ours.named_parameters() if n in before)
    for layer in lora_layers(ours):
        layer.unmerge()
    for name, p in ours.named_parameters():
        if name in before:
            torch.testing.assert_close(p, before[name], atol=1e-6, rtol=0)
    ours.eval()
    assert not any(layer.merged for layer in lora_layers(ours))  # eval() never merges as a side effect


def test_trainable_count_equals_peft_and_state_holds_only_adapters_and_head(base):
    ours, theirs = ours_and_peft(base, r=8, alpha=16.0)
    trainable = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    assert trainable == theirs.get_nb_trainable_parameters()[0]
    state = lora_state_dict(ours)
    assert state and all("lora_" in name or name.startswith("classifier.") for name in state)
    assert sum(t.numel() for t in state.values()) == trainable


def test_an_unknown_target_is_a_clear_error(base):
    with pytest.raises(ValueError, match=r"target_modules \['q_proj'\] match no linear layer"):
        inject_lora(copy.deepcopy(base), ["query", "q_proj"], r=4, lora_alpha=8)
