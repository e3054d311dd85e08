"""LoRA across model families on tiny random models; adapter-loading errors; QLoRA and precision checks."""

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from safetensors.torch import load_file
from transformers import AutoModel, GPT2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from lora_ft import Config, ConfigError, data, training
from lora_ft.adapters import load_adapter, save_adapter
from lora_ft.config import DEFAULT_MODEL
from lora_ft.modeling import add_lora, load_model, load_tokenizer
from lora_ft.training import build_trainer, predict_logits, resolve_precision, training_arguments

LABELS = ["negative", "neutral", "positive"]
TEXTS = [
    ("I hate waiting on hold for hours", 0), ("worst flight ever", 0),
    ("the flight leaves at noon", 1), ("gate 12 is in terminal B", 1),
    ("loved the crew, great trip", 2), ("amazing service, thank you", 2),
]
ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=128)
DECODER = dict(ENCODER, num_key_value_heads=2)
BERT_LINEAR = ["query", "key", "value", "dense"]  # dense: attention.output, intermediate and output (not the pooler)
DECODER_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# family: config class, its sizes, the LoRA targets expected (every linear layer outside the head, by last name),
# the layers trained in full (the head)
FAMILIES = {
    "bert": (transformers.BertConfig, ENCODER, BERT_LINEAR, {"classifier", "pooler"}),
    "distilbert": (transformers.DistilBertConfig,
                   dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128),
                   ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"], {"classifier", "pre_classifier"}),
    # RoBERTa and MPNet count positions from the pad id: [PAD] is 0 in the BERT tokenizer used here
    "roberta": (transformers.RobertaConfig, dict(ENCODER, pad_token_id=0), BERT_LINEAR, {"classifier"}),
    "deberta-v2": (transformers.DebertaV2Config, ENCODER, ["query_proj", "key_proj", "value_proj", "dense"],
                   {"classifier", "pooler"}),
    "albert": (transformers.AlbertConfig, dict(ENCODER, embedding_size=16),
               ["embedding_hidden_mapping_in", "query", "key", "value", "dense", "ffn", "ffn_output"],
               {"classifier", "pooler"}),
    "electra": (transformers.ElectraConfig, dict(ENCODER, embedding_size=32), BERT_LINEAR, {"classifier"}),
    "mpnet": (transformers.MPNetConfig, dict(ENCODER, pad_token_id=0), ["q", "k", "v", "o", "dense"], {"classifier"}),
    "gpt2": (transformers.GPT2Config, dict(n_embd=32, n_layer=2, n_head=2, n_positions=128),
             ["c_attn", "c_proj", "c_fc"], {"score"}),
    "llama": (transformers.LlamaConfig, DECODER, DECODER_LINEAR, {"score"}),
    "qwen2": (transformers.Qwen2Config, DECODER, DECODER_LINEAR, {"score"}),
    "mistral": (transformers.MistralConfig, DECODER, DECODER_LINEAR, {"score"}),
}
DECODERS = {"gpt2", "llama", "qwen2", "mistral"}


def byte_tokenizer():
    """A byte-level BPE tokenizer (GPT-2's kind, no merges) with an eos token and, like GPT-2's, no pad token."""
    symbols = ["<|endoftext|>", *bytes_to_unicode().values()]
    return GPT2Tokenizer(vocab={s: i for i, s in enumerate(symbols)}, merges=[])


def save_tiny_model(family: str, folder) -> str:
    """A random 2-layer, 32-wide model of family (no head, like a hub checkpoint) and its tokenizer, saved."""
    config_class, sizes, _, _ = FAMILIES[family]
    if family in DECODERS:
        tokenizer = byte_tokenizer()
        assert tokenizer.pad_token is None  # load_tokenizer and load_model must supply it
        ids = dict(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=None)
    else:
        tokenizer, ids = load_tokenizer(DEFAULT_MODEL), {}
    torch.manual_seed(0)
    model = AutoModel.from_config(config_class(vocab_size=len(tokenizer), **sizes, **ids))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def tiny_config(folder: str, root, **changes) -> Config:
    return Config(model=folder, output_root=str(root), smoke=True, learning_rate=1e-2, batch_size=4, warmup=0.0,
                  early_stopping_patience=0, max_length=32, **{"contrastive": False, **changes})  # the Trainer's


def tokenized_splits(tokenizer) -> DatasetDict:
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    split = Dataset.from_dict({"text": [t for t, _ in TEXTS], "label": [y for _, y in TEXTS]}, features=features)
    return data.tokenize(DatasetDict(train=split, validation=split, test=split), tokenizer, max_length=32)


def layers_named(model, marker: str) -> set[str]:
    """Last names of the layers whose parameters sit under marker ("lora_A", "modules_to_save")."""
    return {name.split("." + marker)[0].rsplit(".", 1)[-1] for name, _ in model.named_parameters() if marker in name}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def trained(request, tmp_path_factory):
    """One family through the public API: load, add LoRA, one training step, save the adapter."""
    family = request.param
    tmp = tmp_path_factory.mktemp(family)
    config = tiny_config(save_tiny_model(family, tmp / "base"), tmp)
    tokenizer = load_tokenizer(config.model)
    splits = tokenized_splits(tokenizer)
    model = add_lora(load_model(config.model, LABELS, config.seed), config)
    lora_b_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    trainer = build_trainer(config, model, tokenizer, splits, tmp / "checkpoints", max_steps=1, eval_strategy="no",
                            save_strategy="no", load_best_model_at_end=False)
    loss = trainer.train().training_loss
    save_adapter(model, tokenizer, config, LABELS, config.paths.adapter)
    return dict(family=family, config=config, tokenizer=tokenizer, splits=splits, model=model,
                lora_b_before=lora_b_before, loss=loss)


def test_adapters_on_the_family_targets_and_only_lora_and_head_train(trained):
    model, (_, _, targets, head) = trained["model"], FAMILIES[trained["family"]]
    assert layers_named(model, "lora_A") == set(targets)
    assert not [n for n, _ in model.named_parameters() if "lora_" in n and {"pooler", "classifier", "score"} & set(
        n.split("."))]  # "dense" names BERT's pooler too: the head must get no adapter
    assert layers_named(model, "modules_to_save") == head
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)


def test_model_and_tokenizer_share_a_pad_token_decoders_their_eos(trained):
    tokenizer, model = trained["tokenizer"], trained["model"]
    if trained["family"] in DECODERS:
        assert tokenizer.pad_token == tokenizer.eos_token
    assert tokenizer.pad_token_id is not None and model.config.pad_token_id == tokenizer.pad_token_id


def test_one_step_moves_every_lora_b(trained):
    model, before = trained["model"], trained["lora_b_before"]
    assert np.isfinite(trained["loss"])
    moved = [n for n, p in model.named_parameters() if "lora_B" in n and not torch.equal(p.cpu(), before[n].cpu())]
    assert len(moved) == len(before) > 0


def test_reloaded_adapter_gives_the_same_logits(trained):
    config, tokenizer, model = trained["config"], trained["tokenizer"], trained["model"]
    test = trained["splits"]["test"]
    reloaded = predict_logits(load_adapter(config.paths.adapter, config, LABELS), tokenizer, test)
    np.testing.assert_allclose(reloaded, predict_logits(model, tokenizer, test), atol=1e-6)
    with model.disable_adapter():
        assert not np.allclose(reloaded, predict_logits(model, tokenizer, test), atol=1e-4)  # the adapter counts


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return save_tiny_model("gpt2", tmp_path_factory.mktemp("gpt2") / "base")


def test_unknown_target_names_it_and_lists_the_layers(gpt2, tmp_path):
    model = load_model(gpt2, LABELS, seed=0)
    with pytest.raises(ConfigError, match=r"target_modules \['nonexistent'\] are not linear layers of gpt2: "
                                          r"choose from \[.*'c_attn'"):
        add_lora(model, tiny_config(gpt2, tmp_path, target_modules=("nonexistent",)))


def test_conv1d_layers_can_be_chosen(gpt2, tmp_path):
    model = add_lora(load_model(gpt2, LABELS, seed=0), tiny_config(gpt2, tmp_path, target_modules=("c_attn", "c_fc")))
    assert layers_named(model, "lora_A") == {"c_attn", "c_fc"}


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A real (untrained) tiny BERT adapter saved by save_adapter, and the config that made it."""
    tmp = tmp_path_factory.mktemp("adapter")
    config = tiny_config(save_tiny_model("bert", tmp / "base"), tmp)
    model = add_lora(load_model(config.model, LABELS, config.seed), config)
    save_adapter(model, load_tokenizer(config.model), config, LABELS, config.paths.adapter)
    return config


@pytest.fixture
def broken(adapter, tmp_path):
    """A copy of the adapter folder for a test to break."""
    return shutil.copytree(adapter.paths.adapter, tmp_path / "adapter")


def test_missing_adapter_folder(adapter, tmp_path):
    with pytest.raises(ConfigError, match="no adapter folder at .*: train and save one with save_adapter"):
        load_adapter(tmp_path / "nowhere", adapter, LABELS)


@pytest.mark.parametrize("missing", ["adapter_model.safetensors", "adapter_config.json", "labels.json"])
def test_partial_adapter_folder(adapter, broken, missing):
    (broken / missing).unlink()
    with pytest.raises(ConfigError, match=rf"is incomplete, \['{missing}'\] missing: .* save it again with save_"):
        load_adapter(broken, adapter, LABELS)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_adapter_weights(adapter, broken, damage):
    weights = broken / "adapter_model.safetensors"
    content = weights.read_bytes()
    weights.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"\x89not a safetensors file" * 20)
    with pytest.raises(ConfigError, match="adapter_model.safetensors are corrupt or truncated .*: save the adapter"):
        load_adapter(broken, adapter, LABELS)


def test_pickle_only_adapter_is_refused(adapter, broken):
    weights = broken / "adapter_model.safetensors"
    torch.save(load_file(str(weights)), broken / "adapter_model.bin")
    weights.unlink()
    with pytest.raises(ConfigError, match=r"only as adapter_model.bin \(pickle.*\); adapters load from safetensors"):
        load_adapter(broken, adapter, LABELS)


def test_adapter_for_other_labels(adapter):
    with pytest.raises(ConfigError, match=r"trained for 3 labels \['negative', 'neutral', 'positive'\], not the 2"):
        load_adapter(adapter.paths.adapter, adapter, ["negative", "positive"])


def test_adapter_for_another_base_model(adapter):
    other = adapter.replace(model="no/such-model")  # checked before loading: an unknown name never reaches the hub
    with pytest.raises(ConfigError, match=r"trained on base model '.*base', not config.model='no/such-model': set"):
        load_adapter(adapter.paths.adapter, other, LABELS)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_quantize_4bit_without_cuda_stops_before_loading():
    with pytest.raises(ConfigError, match="quantize_4bit needs a CUDA GPU .* this machine has no CUDA device: "
                                          "set quantize_4bit=False"):
        load_model("no/such-model", LABELS, seed=0, quantize_4bit=True)


def test_quantize_4bit_without_bitsandbytes(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # find_spec answers None: not installed
    with pytest.raises(ConfigError, match="needs bitsandbytes, which is not installed: pip install bitsandbytes"):
        load_model("no/such-model", LABELS, seed=0, quantize_4bit=True)


def test_a_quantized_base_model_is_scored_without_a_trainer(tmp_path, monkeypatch):
    """transformers' Trainer refuses a quantized model without adapters even to predict (QLoRA's pretrained baseline):
    predict_logits scores one with plain forward passes, which give the Trainer's logits, in the dataset's order."""
    config = tiny_config(save_tiny_model("bert", tmp_path / "base"), tmp_path)
    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model, LABELS, config.seed)
    test = tokenized_splits(tokenizer)["test"]
    expected = predict_logits(model, tokenizer, test, batch_size=3)
    model.is_quantized = True  # as from_pretrained marks a 4-bit model
    monkeypatch.setattr(training, "Trainer", None)  # any use of it would fail
    np.testing.assert_allclose(predict_logits(model, tokenizer, test, batch_size=3), expected, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
                    reason="QLoRA needs a CUDA GPU and bitsandbytes")
def test_qlora_step_on_a_4bit_base(tmp_path):
    import bitsandbytes as bnb

    config = tiny_config(save_tiny_model("llama", tmp_path / "base"), tmp_path, quantize_4bit=True)
    tokenizer = load_tokenizer(config.model)
    base = load_model(config.model, LABELS, config.seed, quantize_4bit=True)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in base.modules())
    assert not isinstance(base.score, bnb.nn.Linear4bit)  # the head trains in full
    assert np.isfinite(predict_logits(base, tokenizer, tokenized_splits(tokenizer)["test"])).all()  # the "before"
    model = add_lora(base, config)
    lora_b_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    trainer = build_trainer(config, model, tokenizer, tokenized_splits(tokenizer), tmp_path / "checkpoints",
                            max_steps=1, eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    assert np.isfinite(trainer.train().training_loss)
    assert all(not torch.equal(p, lora_b_before[n]) for n, p in model.named_parameters() if "lora_B" in n)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the choices on a machine without CUDA")
@pytest.mark.parametrize("native", [True, False], ids=["cpu-with-bf16", "cpu-without-bf16"])
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_precision_on_cpu(precision, native, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "bf16_native", lambda: native)
    args = training_arguments(Config(precision=precision), tmp_path, 1000)
    expected = {"auto": "bf16" if native else "fp32"}.get(precision, precision)
    assert resolve_precision(precision) == expected
    assert (args.bf16, args.fp16) == (expected == "bf16", False)
    assert args.use_cpu == (expected == "bf16")  # the Trainer runs bf16 on a CPU only as autocast, when told to


def test_bf16_detection_matches_the_cpu():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU's flags")
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else None
    if flags is None:
        pytest.skip("no /proc/cpuinfo on this system to compare with")
    assert training.bf16_native() == bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is possible with CUDA")
def test_fp16_without_cuda_is_a_config_error(tmp_path):
    expected = r"precision='fp16' needs a CUDA GPU .*: set precision='auto' \((bf16|fp32) here\)"
    with pytest.raises(ConfigError, match=expected):
        training_arguments(Config(precision="fp16"), tmp_path, 1000)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_precision_on_a_gpu(tmp_path):
    expected = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    args = training_arguments(Config(), tmp_path, 1000)
    assert resolve_precision("auto") == expected and (args.bf16, args.fp16) == (expected == "bf16", expected == "fp16")
