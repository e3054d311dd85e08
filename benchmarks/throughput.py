"""Training throughput, side by side: the reference projects' recipe against this project's, and full fine-tuning.

    python benchmarks/throughput.py                 # all recipes, 3 repeats (about 15 minutes on 2 CPU cores)
    python benchmarks/throughput.py --repeats 1 --steps 5

Every recipe trains the same model on the same tweets with the same Trainer for a fixed number of steps:
  fixed-128, fixed-512  the reference projects: every text padded to max_length, random batches, LoRA, fp32
  project               this project: dynamic padding, length-grouped batches, max_length 64, LoRA, fp32
  full-finetune         the project's batching, every weight trained
Reported per recipe (medians of the repeats): examples/s, tokens/s (padded positions the model computes, and
real tokens), the ratio to fixed-128, achieved GFLOP/s against the fp32 matrix-product peak measured here,
and the peak resident memory above the start. FLOPs are estimated as 2 x non-embedding weights x positions
for a forward pass, twice that again for the backward pass of full fine-tuning (input and weight gradients),
once again for LoRA (input gradients only: the frozen weights get none).
With --accuracy, fixed-128 and project also train on the same 2,000 tweets for one epoch and are scored on
the same 1,000 validation tweets: a faster recipe must not cost accuracy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback, default_data_collator

from lora_ft import Config, data, training
from lora_ft.baselines import measure
from lora_ft.modeling import add_lora, load_model, load_tokenizer

RECIPES = ("fixed-128", "fixed-512", "project", "full-finetune")


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of a size x size matrix product on this machine, with torch's threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def recipe_data(name: str, splits, tokenizer, config: Config, size: int):
    """The training examples as the recipe feeds them: fixed-length padded, or as prepared (dynamic padding)."""
    train = data.subsample(splits["train"], size, config.seed)
    if not name.startswith("fixed-"):
        return train
    length = int(name.split("-")[1])
    return train.select_columns(["text", "label"]).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=length, padding="max_length"), batched=True)


def trainer_for(name: str, train, config: Config, labels, tokenizer, output_dir: Path, **overrides):
    model = load_model(config.model, labels, config.seed)
    if name != "full-finetune":
        model = add_lora(model, config)
    fixed = name.startswith("fixed-")
    trainer = training.build_trainer(
        config.replace(early_stopping_patience=0), model, tokenizer, {"train": train, "validation": train},
        output_dir, save_strategy="no", load_best_model_at_end=False, logging_strategy="no", disable_tqdm=True,
        train_sampling_strategy="random" if fixed else "group_by_length", **overrides)
    if fixed:
        trainer.data_collator = default_data_collator  # already padded to max_length: batch as they are
    return trainer


def time_recipe(name: str, splits, tokenizer, config: Config, labels, steps: int, warmup: int) -> dict:
    train = recipe_data(name, splits, tokenizer, config, (steps + warmup) * config.batch_size)
    step_times, batches = [], []

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_times.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(name, train, config, labels, tokenizer, Path(tmp), eval_strategy="no",
                              max_steps=steps + warmup)
        collate = trainer.data_collator

        def counted(features):  # positions computed (padding included) and real tokens, per batch
            batch = collate(features)
            batches.append((batch["attention_mask"].numel(), int(batch["attention_mask"].sum())))
            return batch

        trainer.data_collator = counted
        trainer.add_callback(StepClock())
        model = trainer.model
        with measure() as memory:
            trainer.train()
    positions = [n for n, _ in batches[warmup:steps + warmup]]
    real = [n for _, n in batches[warmup:steps + warmup]]
    seconds = sum(step_times[warmup:])
    weights = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n and "lora_" not in n)
    flops = 2 * weights * sum(positions) * (3 if name == "full-finetune" else 2)
    return {"examples_per_second": steps * config.batch_size / seconds, "tokens_per_second": sum(positions) / seconds,
            "real_tokens_per_second": sum(real) / seconds, "gflops": flops / seconds / 1e9,
            "peak_memory_mb": memory["peak_memory_mb"]}


def accuracy(name: str, splits, tokenizer, config: Config, labels, train_size: int, eval_size: int) -> float:
    budget = {"train": data.subsample(splits["train"], train_size, config.seed),
              "validation": data.subsample(splits["validation"], eval_size, config.seed)}
    train = recipe_data(name, {"train": budget["train"]}, tokenizer, config, train_size)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(name, train, config.replace(epochs=1.0), labels, tokenizer, Path(tmp), eval_strategy="no")
        trainer.train()
        logits = training.predict_logits(trainer.model, tokenizer, budget["validation"], config.eval_batch_size)
    return float((logits.argmax(-1) == np.array(budget["validation"]["label"])).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {RECIPES}")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per recipe; medians are reported")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run (after 2 warm-up steps)")
    parser.add_argument("--accuracy", action="store_true", help="also check accuracy on a fixed budget")
    args = parser.parse_args(argv)
    recipes = args.recipes.split(",")
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}: choose from {RECIPES}")

    config = Config(smoke=False)
    splits = data.prepare(config)
    labels, tokenizer = data.labels_of(splits), load_tokenizer(config.model)
    peak = matmul_peak()
    print(f"{torch.get_num_threads()} threads; fp32 matrix-product peak {peak:,.0f} GFLOP/s; batch {config.batch_size}, "
          f"{args.steps} timed steps x {args.repeats} repeats per recipe\n")
    rows = {}
    for name in recipes:
        runs = [time_recipe(name, splits, tokenizer, config, labels, args.steps, warmup=2) for _ in range(args.repeats)]
        rows[name] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    base = rows.get("fixed-128")
    print("| recipe | examples/s | x fixed-128 | tokens/s (computed) | real tokens/s | GFLOP/s | % of peak | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        ratio = f"{row['examples_per_second'] / base['examples_per_second']:.2f}" if base else "-"
        print(f"| {name} | {row['examples_per_second']:.1f} | {ratio} | {row['tokens_per_second']:,.0f} | "
              f"{row['real_tokens_per_second']:,.0f} | {row['gflops']:.0f} | {100 * row['gflops'] / peak:.0f}% | "
              f"{row['peak_memory_mb']:,.0f} |")
    if args.accuracy:
        scores = {name: accuracy(name, splits, tokenizer, config, labels, 2000, 1000) for name in ("fixed-128", "project")}
        print(f"\nsame budget (2,000 tweets, 1 epoch), validation accuracy on 1,000: "
              + ", ".join(f"{name} {score:.4f}" for name, score in scores.items())
              + f"; difference {100 * (scores['project'] - scores['fixed-128']):+.2f} pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
