"""LoRA from scratch, in the paper's names (Hu et al., 2021): small enough to read, tested against peft."""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update: y = W x + (alpha / r) * B A dropout(x)."""

    def __init__(self, base: nn.Linear, r: int, lora_alpha: float, lora_dropout: float = 0.0):
        super().__init__()
        if r <= 0:
            raise ValueError(f"r={r} is invalid: the rank must be a positive integer")
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.r, self.lora_alpha, self.scaling = r, lora_alpha, lora_alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))  # zero: the adapted model starts as the base
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init, as loralib and peft use
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:  # the update already lives in base.weight
            return out
        return out + (self.lora_dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (for inference); only ever called explicitly."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False


def matches(name: str, target: str) -> bool:
    """Whether the module called name is a target: its whole name, or its last dotted parts, e.g. "value" or
    "self.value" for "encoder.layer.0.attention.self.value" (peft's rule for a list of target names)."""
    return name == target or name.endswith("." + target)


def inject_lora(model: nn.Module, target_modules, r: int, lora_alpha: float, lora_dropout: float = 0.0) -> list[str]:
    """Replace every nn.Linear that matches a target ("value", "output.dense") by a LoRALinear."""
    targets = set(target_modules)
    replaced, matched = [], set()
    for name, module in list(model.named_modules()):
        hits = {t for t in targets if matches(name, t)}
        if isinstance(module, nn.Linear) and hits:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, LoRALinear(module, r, lora_alpha, lora_dropout))
            replaced.append(name)
            matched |= hits
    missing = targets - matched
    if missing:
        raise ValueError(f"target_modules {sorted(missing)} match no linear layer of the model: check their names")
    return replaced


def is_trained(name: str, head_modules=("classifier",)) -> bool:
    """Whether a parameter trains: the lora_ tensors and everything inside the (new) head modules."""
    return "lora_" in name or any(part in head_modules for part in name.split("."))


def mark_only_lora_as_trainable(model: nn.Module, head_modules=("classifier",)) -> None:
    """Freeze everything but the lora_ tensors and the head modules."""
    for name, param in model.named_parameters():
        param.requires_grad = is_trained(name, head_modules)


def lora_state_dict(model: nn.Module, head_modules=("classifier",)) -> dict[str, torch.Tensor]:
    """Only what training changed: the adapters and the head, the few MB worth saving."""
    return {name: tensor for name, tensor in model.state_dict().items() if is_trained(name, head_modules)}


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]
