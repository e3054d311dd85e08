"""The grids as data, without torch: notebook 08's recipes (each a name and the settings it changes), the groups and
comparisons notebook 08 makes of them, and notebook 07's learning-curve methods, with the rule for which LoRA recipe
speaks for LoRA at a point. lora_ft.experiments runs them; lora_ft.report_recipes and report_curves render their
records."""

from __future__ import annotations

from .config import LEARNING_RATE, TARGET_SETS

CURVE_METHODS = ("lora", "lora-mean", "lora-small", "lora-lpft", "setfit", "full-finetune", "linear-probe",
                 "tfidf-logreg")
LORA_RECIPES = ("lora", "lora-mean", "lora-small", "lora-lpft")  # the LoRA recipes among them


def speaks_for_lora(ran: list[str], pair) -> str:
    """Of the LoRA recipes that ran at a learning-curve point (best mean first), the one that speaks for LoRA there:
    the default, unless another leads it beyond the spread (pair(a, b): their stats.Paired); a higher mean alone is
    no evidence (the best of several noisy means is biased upward)."""
    if "lora" not in ran:
        return ran[0]
    return next((m for m in ran if m != "lora" and (p := pair(m, "lora")).beyond and p.difference > 0), "lora")


RECIPE_BUDGET = {"epochs": 2.0, "batch_size": 32, "train_size": None, "early_stopping_patience": 0}  # final weights
# what every recipe starts from, fixed here so that the grid's records stay valid when Config's defaults change;
# the grid first ran with the model's own attention kernel ("sdpa"), recipes added after attention="auto" came in
# keep the kernel they ran with (AUTO: "eager" on a bf16 CPU), and the "kernel" group measures what that changes
RECIPE_BASE = {"target_modules": TARGET_SETS["all-linear"], "r": 8, "alpha": 16.0, "learning_rate": LEARNING_RATE,
               "dropout": 0.0, "method": "lora", "loraplus_lr_ratio": None, "base_dropout": None, "attention": "sdpa"}
AUTO = {"attention": "auto"}
RECIPES = {  # name: settings that differ from RECIPE_BASE; the groups are notebook 08's questions
    # which layers get adapters
    "query-value": {"target_modules": TARGET_SETS["query-value"]},
    "attention": {"target_modules": TARGET_SETS["attention"]},
    "all-linear": {},
    # learning rate x alpha/r on all linear layers (alpha/r scales the update, so it acts on the step size too)
    **{f"all-linear-lr{lr:g}-ratio{ratio}": {"learning_rate": lr, "alpha": 8.0 * ratio}
       for lr in (3e-4, 1e-3, 3e-3) for ratio in (1, 2)},
    # peft's variants, each one setting away from all-linear LoRA (same budget and learning rate)
    **{f"all-linear-{method}": {"method": method} for method in ("dora", "rslora", "pissa")},
    "all-linear-ia3": {"method": "ia3", **AUTO},
    "all-linear-vera": {"method": "vera", "r": 256, "alpha": 512.0, **AUTO},
    # IA3's own paper trains its scales faster than LoRA's learning rate (T-Few: 3e-3); 1e-2 to see where that ends
    **{f"all-linear-ia3-lr{lr:g}": {"method": "ia3", "learning_rate": lr, **AUTO} for lr in (3e-3, 1e-2)},
    "all-linear-loraplus16": {"loraplus_lr_ratio": 16.0},
    # LoRA+ at the default rate puts B 16x higher (1.6e-2), where it diverged: the same ratio on a fifth of the rate
    "all-linear-loraplus16-lr0.0002": {"loraplus_lr_ratio": 16.0, "learning_rate": LEARNING_RATE / 5, **AUTO},
    # speed knobs: the pretrained model's own dropout off (torch.compile loses on CPU: benchmarks/throughput.py)
    "all-linear-dropout0": {"base_dropout": 0.0},
    "query-value-dropout0": {"target_modules": TARGET_SETS["query-value"], "base_dropout": 0.0, **AUTO},
    # the attention kernel: the default recipe with the kernel "auto" picks on a bf16 CPU, against sdpa above
    "all-linear-dropout0-eager": {"base_dropout": 0.0, "attention": "eager"},
    # the budget itself: a third epoch (learning rate stretched over three) shows what two leave on the table
    "query-value-3epochs": {"target_modules": TARGET_SETS["query-value"], "epochs": 3.0, **AUTO},
    "all-linear-3epochs": {"epochs": 3.0, **AUTO},
}
GROUPS = {
    "targets": ("query-value", "attention", "all-linear"),
    "learning-rate": tuple(name for name in RECIPES if name.startswith("all-linear-lr")),
    "variants": ("all-linear", *(f"all-linear-{v}" for v in ("dora", "rslora", "pissa", "vera", "ia3", "ia3-lr0.003",
                                                             "ia3-lr0.01", "loraplus16", "loraplus16-lr0.0002"))),
    "speed": ("query-value", "query-value-dropout0", "all-linear", "all-linear-dropout0", "all-linear-dropout0-eager"),
    "budget": ("query-value", "query-value-3epochs", "all-linear", "all-linear-3epochs"),
    "kernel": ("all-linear-dropout0", "all-linear-dropout0-eager"),
}
# each group's recipes against its reference (default: all-linear), or PAIRS' comparisons where each changes another
REFERENCE = {"targets": "query-value", "learning-rate": "all-linear-lr0.001-ratio2"}
PAIRS = {
    "speed": (("query-value-dropout0", "query-value"), ("all-linear-dropout0", "all-linear"),
              ("query-value-dropout0", "all-linear-dropout0-eager")),  # the fastest recipe against the default
    "budget": (("query-value-3epochs", "query-value"), ("all-linear-3epochs", "all-linear")),
    "kernel": (("all-linear-dropout0-eager", "all-linear-dropout0"),),
}


def comparisons(group: str) -> tuple[tuple[str, str], ...]:
    """(recipe, what it is compared with) for each comparison notebook 08 makes in group."""
    if group in PAIRS:
        return PAIRS[group]
    reference = REFERENCE.get(group, "all-linear")
    return tuple((name, reference) for name in GROUPS[group] if name != reference)


DEFAULT_RECIPE = "all-linear-dropout0-eager"  # the recipe with Config's defaults as they resolve on a bf16 CPU
