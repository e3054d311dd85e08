"""Save, check, reload and merge the adapters a run trained: the folder a task ships as."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch
from peft import PeftModel
from peft.utils import ModulesToSaveWrapper
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import FINGERPRINT, Config
from .errors import ConfigError, listed
from .io import replace_dir_atomic, restore_backup, write_json_atomic
from .modeling import limit_tokenizer, load_model, public_name

# Names of what adapters add and train: LoRA and its variants (lora_A, lora_B, DoRA's lora_magnitude_vector), VeRA's
# scaling vectors, IA3's scales, and the head's trained copies
ADAPTER_MARKERS = ("lora_", "vera_lambda", "ia3_l", "modules_to_save")

# What save_adapter writes and load_adapter needs; weights load from safetensors only (pickle can run code)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "labels.json", "lora_ft_config.json")


def save_adapter(model, tokenizer, config: Config, labels: list[str], target: Path, fingerprint: dict | None = None):
    """Adapter weights (safetensors), tokenizer, class names, the config and fingerprint that made them, swapped in
    atomically (write_adapter)."""
    replace_dir_atomic(lambda tmp: write_adapter(model, tokenizer, config, labels, tmp, fingerprint), target)


def write_adapter(model, tokenizer, config: Config, labels: list[str], folder: Path, fingerprint: dict | None = None):
    """save_adapter's files, written into folder: PiSSA and OLoRA as the plain LoRA they amount to on the unchanged
    base. The base is named by public_name (peft writes this machine's path); peft's empty card is dropped (the train
    step writes card.py's)."""
    model.save_pretrained(folder)
    if getattr(model, "initial_adapter", None) is not None:
        _as_plain_lora(model, folder)
    (folder / "README.md").unlink(missing_ok=True)
    adapter_config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = public_name(config.model)
    write_json_atomic(folder / "adapter_config.json", adapter_config)
    tokenizer.save_pretrained(folder)
    limit_tokenizer(folder, config.max_length)
    write_json_atomic(folder / "lora_ft_config.json", config.as_json())
    write_json_atomic(folder / "labels.json", list(labels))
    if fingerprint is not None:
        write_json_atomic(folder / FINGERPRINT, fingerprint)


def _as_plain_lora(model, folder: Path) -> None:
    """Rewrite the PiSSA or OLoRA adapter saved in folder as a plain LoRA adapter on the unchanged base weights W.

    They train B A on W_res = W - s B0 A0 (s = alpha / r), so they learned W_res + s B A - W = s [B, -B0] [A; A0]:
    a LoRA of rank 2r, same scale. (peft 0.21.2's path_initial_model_for_weight_conversion drops the head's weights.)
    """
    weights = folder / "adapter_model.safetensors"
    state = load_file(str(weights))
    for name, initial in model.initial_adapter.items():
        if "lora_A" in name:
            state[name] = torch.cat([state[name], initial], dim=0)
        elif "lora_B" in name:
            state[name] = torch.cat([state[name], -initial], dim=1)
    save_file(state, str(weights), metadata={"format": "pt"})
    settings = copy.deepcopy(model.peft_config["default"])
    settings.r, settings.lora_alpha, settings.init_lora_weights = 2 * settings.r, 2 * settings.lora_alpha, True
    settings.inference_mode = True
    settings.save_pretrained(str(folder))


def load_adapter(path: Path, config: Config, labels: list[str], merge: bool = False):
    """A fresh base model with the adapter save_adapter wrote on top (optionally merged into its weights)."""
    path = Path(path)
    check_adapter(path, config, labels)
    base = load_model(config.model, labels, config.seed, config.trust_remote_code, config.quantize_4bit,
                      pooling=config.pooling)
    try:
        model = PeftModel.from_pretrained(base, str(path))
    except RuntimeError as error:  # "size mismatch for ...": the weights were not made with these settings
        reason = " ".join(str(error).split())[:200]
        raise ConfigError(f"the adapter weights in {path} do not fit its own settings ({reason}): save the adapter "
                          "again with save_adapter, or copy the whole folder again") from None
    model.eval()
    return merge_and_unload(model) if merge else model


def merge_and_unload(model):
    """The adapters folded into the base weights and the trained head put in place: a plain transformers model. The
    head goes first: peft 0.21.2's VeRA and IA3 unloading fails on a saved module with no weight of its own, such as
    BERT's pooler (huggingface/peft#3213)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.modules_to_save[module.active_adapter])
    return model.merge_and_unload()


def check_adapter(path: Path, config: Config, labels: list[str]) -> None:
    """Raise a ConfigError naming the problem and the fix unless path holds a whole, readable adapter for config."""
    restore_backup(path)
    if not path.is_dir():
        raise ConfigError(f"no adapter folder at {path}: train and save one with save_adapter (notebook 03), "
                          "or pass the folder that holds it")
    if not (path / "adapter_model.safetensors").exists() and (path / "adapter_model.bin").exists():
        raise ConfigError(f"the adapter at {path} has its weights only as adapter_model.bin (pickle, which can run "
                          "code when loaded); adapters load from safetensors only: save it again with save_adapter")
    missing = [name for name in ADAPTER_FILES if not (path / name).is_file()]
    if missing:
        raise ConfigError(f"the adapter folder {path} is incomplete, {missing} missing: save_adapter writes "
                          f"{list(ADAPTER_FILES)}; save it again with save_adapter, or copy the whole folder")
    trained_on = _read_adapter_json(path / "lora_ft_config.json").get("model")
    if trained_on != config.model:
        raise ConfigError(f"the adapter at {path} was trained on base model {trained_on!r}, not config.model="
                          f"{config.model!r}: set model={trained_on!r}, or load an adapter trained on "
                          f"{config.model!r}")
    saved_labels = _read_adapter_json(path / "labels.json")
    if saved_labels != list(labels):
        raise ConfigError(f"the adapter at {path} was trained for {len(saved_labels)} labels {saved_labels}, not the "
                          f"{len(labels)} given {list(labels)}: pass its labels (its labels.json) in that order")
    rank = _read_adapter_json(path / "adapter_config.json").get("r")
    try:
        weights = load_file(str(path / "adapter_model.safetensors"))
    except SafetensorError as error:
        raise ConfigError(f"the adapter weights {path / 'adapter_model.safetensors'} are corrupt or truncated "
                          f"({error}): save the adapter again with save_adapter, or copy the folder again") from None
    # the files must agree with the weights: an edited labels.json or rank would fail to load, or mislabel silently
    ranks = {tensor.shape[0] for name, tensor in weights.items() if "lora_A" in name}
    heads = sorted(name for name in weights  # the classifier itself: not DistilBERT's pre_classifier
                   if name.endswith(".weight") and re.search(r"(^|\.)(classifier|score)\.", name))
    rows = weights[heads[-1]].shape[0] if heads else len(labels)  # the last head layer scores the classes
    trained_rank = 2 * config.r if config.method in ("pissa", "olora") else config.r  # saved as rank-2r LoRA
    if ranks and ranks != {rank, trained_rank} or rows != len(labels):
        raise ConfigError(f"the adapter at {path} does not agree with its own files (weights of rank {listed(ranks)} "
                          f"for {rows} classes; adapter_config.json r={rank}, lora_ft_config.json r={trained_rank}, "
                          f"labels.json {len(labels)} classes): save the adapter again with save_adapter, "
                          "or copy the whole folder again")


def _read_adapter_json(file: Path):
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{file} is corrupt ({error}): save the adapter again with save_adapter") from None


def frozen_snapshot(model) -> dict[str, torch.Tensor]:
    """CPU copies (training may move the model) of the pretrained weights that LoRA must leave untouched."""
    return {name: p.detach().to("cpu", copy=True) for name, p in _base_parameters(model)}


def changed_base_weights(model, snapshot: dict[str, torch.Tensor]) -> list[str]:
    """Names of pretrained tensors that differ from the snapshot (empty when LoRA kept them frozen)."""
    return [name for name, p in _base_parameters(model) if not torch.equal(p.detach().cpu(), snapshot[name])]


def _base_parameters(model):
    return [(n, p) for n, p in model.named_parameters() if not any(marker in n for marker in ADAPTER_MARKERS)]
