"""One base model serving several task adapters: each task alone, or rows of different tasks in one forward pass.

peft mixes the tasks' LoRA weights on the one base (per-row `adapter_names`), not their heads (tasks differ in classes;
BERT's pooler, a dense layer and tanh, is no plain nn.Linear): each head module is a TaskHeads, a copy per task."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from peft.utils import set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn

from . import data, training
from .adapters import check_adapter
from .config import HEAD_LAYERS, PAD_TO_MULTIPLE_OF, Config
from .errors import ConfigError, DataError, listed
from .modeling import load_model, load_tokenizer, model_skeleton
from .provenance import saved_adapter

PREFIX = "base_model.model."  # how peft names the model's own modules in a saved adapter


class TaskHeads(nn.Module):
    """One module of the classification head in a copy per task; `rows` (a task per row) mixes tasks in a batch, else
    every row goes to `task`. Outputs as wide as the widest task's, the rest NaN (each task reads its own classes)."""

    def __init__(self, copies: dict[str, nn.Module]):
        super().__init__()
        self.copies = nn.ModuleDict(copies)
        self.task, self.rows = None, None

    def forward(self, x, *args, **kwargs):
        if self.rows is None:
            return self.copies[self.task](x, *args, **kwargs)
        parts = [(index, self.copies[task](x[index], *args, **kwargs)) for task, index in _groups(self.rows).items()]
        width = max(out.shape[-1] for _, out in parts)
        mixed = x.new_full((len(self.rows), *parts[0][1].shape[1:-1], width), float("nan"))
        for index, out in parts:
            mixed[index, ..., :out.shape[-1]] = out
        return mixed


class Tasks:
    """Task adapters ({name: folder} that train saved) on one base model, loaded once; precision as serving's."""

    def __init__(self, adapters: dict[str, Path | str], precision: str = "auto"):
        folders = _check_names(adapters)
        saved = {name: saved_adapter(folder) for name, folder in folders.items()}
        for name, (trained, labels) in saved.items():
            check_adapter(folders[name], trained, labels)
        first = _same_base(saved)
        self.settings = {name: trained for name, (trained, _) in saved.items()}
        self.labels = {name: labels for name, (_, labels) in saved.items()}
        self.tokenizer = load_tokenizer(str(next(iter(folders.values()))), trust_remote_code=first.trust_remote_code)
        bf16 = precision in ("auto", "bf16") and training.bf16_native()  # as serving.serving_model: same speed-up
        base = load_model(first.model, self.labels[next(iter(saved))], first.seed, first.trust_remote_code,
                          dtype=torch.bfloat16 if bf16 else None,  # loaded as served: no fp32 copy on the way
                          pooling=first.pooling)
        self.model = None  # the first _add wraps base
        heads = {name: self._add(name, folder, base) for name, folder in folders.items()}
        self.heads = _install_heads(self.model, heads, first, self.labels)
        self.model.eval()
        if bf16:  # the adapters and heads too
            self.model.to(torch.bfloat16)

    def _add(self, name: str, folder: Path, base) -> dict[str, dict[str, torch.Tensor]]:
        """Load a task's LoRA weights into the shared model; return its head's weights by module path."""
        settings = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        if settings.get("peft_type") != "LORA" or settings.get("use_dora"):
            method = "DoRA" if settings.get("use_dora") else settings.get("peft_type")
            raise ConfigError(f"the adapter {name!r} ({folder}) is {method}: one forward pass mixes LoRA adapters "
                              "only (peft), so serve it on its own with predict --adapter, or train it with "
                              "method=lora")
        wrapped = settings.get("modules_to_save") or []
        weights = load_file(str(folder / "adapter_model.safetensors"))
        head = _head_weights(weights, wrapped)
        lora = {key: value for key, value in weights.items() if "lora_" in key}
        config = LoraConfig.from_pretrained(str(folder))
        config.modules_to_save, config.task_type, config.inference_mode = None, None, True  # heads: TaskHeads
        if self.model is None:
            self.model = PeftModel(base, config, adapter_name=name)
        else:
            self.model.add_adapter(name, config)
        loaded = set_peft_model_state_dict(self.model, lora, adapter_name=name)
        strays = [key for key in loaded.unexpected_keys if "lora_" in key]
        if strays:
            raise ConfigError(f"the adapter {name!r} ({folder}) has weights for layers the base model lacks "
                              f"({listed(strays, 3)}): it was not trained on this base; serve it on its own")
        return head

    def logits(self, texts: list[str], tasks: str | list[str], batch_size: int = 128) -> list[np.ndarray]:
        """Each text's logits under its task: tasks names one task for all texts (the adapter set as peft's active
        one), or one task per text (rows of different tasks mixed in each forward pass)."""
        per_row = [tasks] * len(texts) if isinstance(tasks, str) else list(tasks)
        if len(per_row) != len(texts):
            raise DataError(f"{len(texts)} texts but {len(per_row)} task names: give one task per text, or one name")
        unknown = sorted(set(per_row) - set(self.labels))
        if unknown:
            raise ConfigError(f"no adapter named {listed(unknown)}: the tasks served are {listed(list(self.labels))}")
        inputs = self._tokenize(texts, per_row)
        order = np.argsort([len(ids) for ids in inputs], kind="stable")  # similar lengths together: little padding
        out = [None] * len(texts)
        one = per_row[0] if isinstance(tasks, str) else None
        if one is not None:
            self.model.set_adapter(one)
        try:
            with torch.inference_mode():
                for first in range(0, len(order), batch_size):
                    rows = order[first:first + batch_size].tolist()
                    batch = self.tokenizer.pad([inputs[i] for i in rows], pad_to_multiple_of=PAD_TO_MULTIPLE_OF,
                                               return_tensors="pt")
                    mixed = {} if one is not None else {"adapter_names": [per_row[i] for i in rows]}
                    for heads in self.heads:
                        heads.task, heads.rows = one, mixed.get("adapter_names")
                    logits = self.model(**batch, **mixed).logits.float().numpy()
                    for i, row in zip(rows, logits):
                        out[i] = row[:len(self.labels[per_row[i]])]
        finally:  # no routing left behind for a later forward pass
            for heads in self.heads:
                heads.task, heads.rows = None, None
        return out

    def probabilities(self, texts: list[str], task: str, batch_size: int = 128) -> np.ndarray:
        """Class probabilities (rows: texts) of one task."""
        return torch.from_numpy(np.stack(self.logits(texts, task, batch_size))).softmax(-1).numpy()

    def _tokenize(self, texts: list[str], per_row: list[str]) -> list[dict]:
        """Each text tokenized as its task's adapter was trained (max_length, truncation)."""
        inputs = [None] * len(texts)
        for task, index in _groups(per_row).items():
            trained = self.settings[task]
            done = data.tokenize(Dataset.from_dict({"text": [texts[i] for i in index]}), self.tokenizer,
                                 trained.max_length, trained.truncation)
            columns = [c for c in done.column_names if c in self.tokenizer.model_input_names]
            for i, row in zip(index, done.select_columns(columns)):
                inputs[i] = row
        return inputs


def _groups(names: list[str]) -> dict[str, list[int]]:
    """Row indices per name, in order of first appearance."""
    groups = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    return groups


def _check_names(adapters: dict[str, Path | str]) -> dict[str, Path]:
    if not adapters:
        raise ConfigError("no adapters to serve: give at least one task adapter folder")
    bad = [name for name in adapters if not re.fullmatch(r"[A-Za-z0-9_-]+", name)]
    if bad:
        raise ConfigError(f"task name(s) {listed(bad)} are not plain names: use letters, digits, - and _ "
                          "(NAME=DIR on the command line)")
    return {name: Path(folder) for name, folder in adapters.items()}


def _same_base(saved: dict[str, tuple[Config, list[str]]]) -> Config:
    """The settings of the first adapter, after checking that every adapter was trained on the same full base."""
    bases = {name: (trained.model, trained.trust_remote_code) for name, (trained, _) in saved.items()}
    if len(set(bases.values())) > 1:
        raise ConfigError("the adapters were trained on different base models ("
                          + ", ".join(f"{name}: {model!r}" for name, (model, _) in bases.items())
                          + "), and one process serves one base: serve each base's adapters in a process of its own")
    poolings = {name: trained.pooling or "cls" for name, (trained, _) in saved.items()}  # None: cls
    if len(set(poolings.values())) > 1:  # the pooling is the shared base's forward pass, not a task's head
        raise ConfigError(f"the adapters read the tokens with different poolings ({poolings}), and one forward pass "
                          "pools one way: serve each pooling's adapters in a process of its own")
    four_bit = [name for name, (trained, _) in saved.items() if trained.quantize_4bit]
    if four_bit:
        raise ConfigError(f"adapter(s) {listed(four_bit)} sit on a 4-bit base, which serving with several tasks does "
                          "not load: serve them one at a time with predict --adapter")
    return next(iter(saved.values()))[0]


def _head_weights(weights: dict[str, torch.Tensor], wrapped: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """The head's weights by module path ("bert.pooler": {"dense.weight": ...}) of the modules peft saved in full."""
    wrapped = set(wrapped) | set(HEAD_LAYERS)  # modules_to_save, and the classifier that task SEQ_CLS adds
    heads = {}
    for key, tensor in weights.items():
        parts = key.removeprefix(PREFIX).split(".")
        cut = next((i for i, part in enumerate(parts) if part in wrapped), None)
        if cut is not None and "lora_" not in key:
            heads.setdefault(".".join(parts[:cut + 1]), {})[".".join(parts[cut + 1:])] = tensor
    return heads


def _install_heads(model, heads: dict[str, dict], first: Config, labels: dict[str, list[str]]) -> list[TaskHeads]:
    """A TaskHeads in place of each head module a task trained: a task's own copy, else the base's (no classifier)."""
    inner, installed = model.base_model.model, []
    for path in sorted({path for head in heads.values() for path in head}):
        original, copies = inner.get_submodule(path), {}
        for task, head in heads.items():
            if path in head:
                copies[task] = _head_copy(first, path, head[path], len(labels[task]), task)
            elif path.rsplit(".", 1)[-1] in HEAD_LAYERS:
                raise ConfigError(f"the adapter {task!r} saved no {path!r}, the classifier the others' heads "
                                  "use: its head does not fit this base; serve it on its own")
            else:
                copies[task] = original
        parent, _, child = path.rpartition(".")
        installed.append(TaskHeads(copies))
        setattr(inner.get_submodule(parent), child, installed[-1])
    return installed


def _head_copy(first: Config, path: str, state: dict[str, torch.Tensor], labels: int, task: str) -> nn.Module:
    """The head module at path of the base built for `labels` classes, with a task's trained weights."""
    module = model_skeleton(first.model, first.trust_remote_code, num_labels=labels).get_submodule(path)
    module = module.to_empty(device="cpu")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        reason = " ".join(str(error).split())[:200]
        raise ConfigError(f"the head {path!r} of adapter {task!r} does not fit the base model's ({reason}): it was "
                          "not trained on this base; serve it on its own") from None
    return module.eval()
