"""A grid of LoRA configurations on one budget: one results file per run, finished runs skipped."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from .config import Config

TARGET_SETS = {  # peft matches a target against the end of each module name
    "query-value": ("query", "value"),
    "attention": ("query", "key", "value", "attention.output.dense"),
    "all-linear": ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"),
}


# The one sweep grid: notebook 06's, and the defaults of pipeline.sweep and `python -m lora_ft sweep`.
GRID = {
    "ranks": (1, 4, 8, 16),  # LoRA ranks, on each of "targets"
    "alpha_ratios": (1, 2),  # alpha / r: each run gets alpha = ratio * r
    "targets": ("query-value",),  # target sets that get every rank x alpha/r
    "extra_targets": ("attention", "all-linear"),  # target sets run once more, at EXTRA_POINT
    "train_size": 4000,  # stratified training subsample per run: a budget ten runs can afford on 2 CPU cores
    "epochs": 1.0,  # passes over it
}
EXTRA_POINT = (8, 2)  # (r, alpha / r) of the extra target sets


def grid(ranks=GRID["ranks"], alpha_ratios=GRID["alpha_ratios"], targets=GRID["targets"],
         extra_targets=GRID["extra_targets"], extra=()) -> list[dict]:
    """Settings for every rank x alpha/r on each target set, then each extra target set at EXTRA_POINT, then extra
    (r, ratio, targets) points."""
    points = [(r, ratio, t) for t in targets for r, ratio in itertools.product(ranks, alpha_ratios)]
    extra = [(*EXTRA_POINT, t) for t in extra_targets] + list(extra)
    points += [p for p in extra if p not in points]
    return [{"r": r, "alpha": float(r * ratio), "target_modules": TARGET_SETS[t], "_targets": t}
            for r, ratio, t in points]


def run_name(point: dict) -> str:
    return f"sweep-{point['_targets']}-r{point['r']}-alpha{point['alpha']:g}"


def point_settings(config: Config, point: dict) -> Config:
    """A grid point's settings: config with its r, alpha and targets, and no early stopping (a fixed budget)."""
    return config.replace(early_stopping_patience=0, **{k: v for k, v in point.items() if not k.startswith("_")})


def run(config: Config, splits, tokenizer, points: list[dict], log=print) -> dict[str, dict]:
    """Train and test each point (skipping those whose results file has the same config); records by run."""
    from . import results  # here, not above: the CLI reads GRID for --help without loading torch
    from .io import on_main_process

    records = {}
    for point in points:
        name = run_name(point)
        settings = point_settings(config, point)
        saved = results.finished(results.path_of(settings.paths.results, name, settings.seed),
                                 results.config_settings(settings))
        if saved is not None:
            log(f"{name}: already done, skipped")
            records[name] = saved
            continue
        record = train_run(settings, splits, tokenizer, name)
        on_main_process(results.write, record, settings.paths.results)
        records[name] = record
        log(f"{name}: accuracy {record['metrics']['accuracy']:.4f}, macro-F1 {record['metrics']['f1_macro']:.4f}, "
            f"{record['params']['trainable']:,} trainable, {record['train']['seconds']:.0f} s")
    return records


def train_run(settings: Config, splits, tokenizer, name: str) -> dict:
    """One grid point's record: settings trained on splits["train"] for a fixed budget, then tested, with the peak
    memory from loading to the end of training (comparable between runs that each start a fresh process, as
    `python -m lora_ft recipes` does) and the size of the adapter folder it would save."""
    import numpy as np

    from . import results
    from .baselines import folder_mb, measure
    from .modeling import add_lora, count_params, model_for_training, save_adapter
    from .training import build_trainer, predict_logits, train

    labels = splits["train"].features["label"].names
    test = splits["test"]
    with measure() as resources:
        model = add_lora(model_for_training(settings, labels), settings)
        # a fixed budget with nothing to choose between: no per-epoch validation, no checkpoints
        trainer = build_trainer(settings, model, tokenizer, splits, output_dir=settings.paths.model / "sweep" / name,
                                eval_strategy="no", save_strategy="no", load_best_model_at_end=False,
                                disable_tqdm=True)
        info = train(trainer)
    with tempfile.TemporaryDirectory() as tmp:
        save_adapter(model, tokenizer, settings, labels, Path(tmp) / "adapter")
        resources["saved_mb"] = folder_mb(Path(tmp) / "adapter")
    logits = predict_logits(model, tokenizer, test, settings.eval_batch_size)
    record = results.build(name, "lora", settings, labels, "test", np.array(test["label"]), logits.argmax(-1),
                           count_params(model), info, resources)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    record["predictions"] = logits.argmax(-1).tolist()  # per test example, for the error analysis
    record["confidence"] = np.round(probabilities.max(-1), 4).tolist()
    return record
