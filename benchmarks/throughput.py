"""Training and inference throughput, side by side: the common tutorial recipe, this project's, full fine-tuning.

    python benchmarks/throughput.py --profile       # everything, 3 repeats (about 20 minutes on 2 CPU cores)
    python benchmarks/throughput.py --recipes fixed-128,project --repeats 1 --steps 2 --budget 64 --eval-size 64
    python benchmarks/throughput.py --recipes project,project+dropout0,full-finetune,full-finetune+dropout0
    bash benchmarks/recipe_speeds.sh    # notebook 08's speeds: --which, a process per recipe

Every recipe trains the same model on the same tweets with the same Trainer for a fixed number of steps:
  fixed-128, fixed-512  the common tutorial recipe: every text padded to max_length, random batches, LoRA, fp32
  project-dropout       this project's batching, fp32, with dropout 0.1 on the adapters' input (its earlier default)
  project-fp32          this project's batching: dynamic padding, length-grouped batches, max_length 64; fp32
  project               this project's recipe: that batching in the precision "auto" picks (bf16 on hardware with it)
  previous-default      the project's recipe before notebook 08 chose its default: adapters on query and value only,
                        the pretrained model's own dropout (0.1) on, PyTorch's fused attention (sdpa)
  full-finetune         the project's recipe, every weight trained
  <recipe>+<knob>...    project or full-finetune with speed knobs (KNOBS), e.g. project+dropout0+compile:
                        dropout0 turns off the pretrained model's own dropout (base_dropout=0); compile runs the model
                        through torch.compile, its batches padded to multiples of 8 tokens so that shapes repeat;
                        sdpa and eager pick the attention implementation (attention=..., default "auto": eager
                        when training in bf16 on a CPU)
All LoRA recipes use the project's adapter settings (r 8 on every linear layer, no adapter dropout unless named).
--which NAME,... (or all) also times notebook 08's recipes (lora_ft.grids.RECIPES) the same way and writes their
examples/s and peak memory on this machine to results/recipes/speed.json, which notebook 08 reads: its accuracy
grid may run elsewhere (on a GPU), its speeds are this CPU's. With --recipes "" only those are timed, and each
run updates its recipes' entries (same steps and repeats), so a process per recipe measures each one's own peak
memory (what benchmarks/recipe_speeds.sh does).
Reported per recipe (medians of the repeats): examples/s, tokens/s (padded positions the model computes, and
real tokens), the ratio to fixed-128, achieved GFLOP/s against the matrix-product peak measured here for the
recipe's precision,
and the peak resident memory above the start; the warm-up steps' time (where compiling happens) and, for compiled
recipes, the graphs compiled. FLOPs are estimated as 2 x non-embedding weights x positions
for a forward pass, twice that again for the backward pass of full fine-tuning (input and weight gradients),
once again for LoRA (input gradients only: the frozen weights get none).
Then fixed-128 and project train on the same --budget tweets for one epoch and are scored on the same validation
tweets (a faster recipe must not cost accuracy), and the project's model is served unmerged and merged into the
base (bf16 too where the hardware computes it), timed and scored the same way. The last lines check the targets.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback, default_data_collator
from transformers.trainer_pt_utils import get_length_grouped_indices

from lora_ft import Config, data, experiments, grids, training
from lora_ft.config import ROOT
from lora_ft.io import write_json_atomic
from lora_ft.measure import measure
from lora_ft.modeling import add_lora, load_tokenizer, model_for_training
from lora_ft.run import meta

# Speed knobs a recipe name may add after "+": Config settings, the same for LoRA and full fine-tuning
KNOBS = {"dropout0": dict(base_dropout=0.0), "compile": dict(compile=True, pad_to_multiple_of=8),
         "sdpa": dict(attention="sdpa"), "eager": dict(attention="eager")}
KNOBBED = tuple(f"{recipe}+{knobs}" for knobs in ("dropout0", "sdpa", "dropout0+sdpa", "compile", "dropout0+compile")
                for recipe in ("project", "full-finetune"))
RECIPES = ("fixed-128", "fixed-512", "project-dropout", "project-fp32", "project", "previous-default", "full-finetune",
           *KNOBBED)
OUTPUT = ROOT / "results" / "speed" / "throughput.json"  # docs/speed.md's share-of-peak table (lora_ft.report)
PREVIOUS_DEFAULT = dict(target_modules=("query", "value"), base_dropout=None, attention="sdpa")
FP32 = ("fixed-128", "fixed-512", "project-dropout", "project-fp32")  # the others train in the precision "auto" picks


def matmul_peak(dtype=torch.float32, size: int = 2048, repeats: int = 10) -> float:
    """Best GFLOP/s of a size x size matrix product in dtype on this machine, with torch's threads."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
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


def epoch_batches(name: str, splits, tokenizer, config: Config, count: int):
    """count batches, in order, as a recipe meets them in an epoch over the whole training split.

    Length grouping is only as good as the pool it sorts: the Trainer sorts mega-batches of 50 batches, so the
    project's batches are drawn at random from the grouped order of a full epoch, not grouped from a small sample.
    """
    if name.startswith("fixed-"):  # random batches, every one padded alike
        return recipe_data(name, splits, tokenizer, config, count * config.batch_size)
    train, size = splits["train"], config.batch_size
    lengths = [len(ids) for ids in train["input_ids"]]
    order = get_length_grouped_indices(lengths, size, generator=torch.Generator().manual_seed(config.seed))
    batches = [order[first:first + size] for first in range(0, len(order) - size + 1, size)]
    drawn = np.random.default_rng(config.seed).choice(len(batches), count, replace=False)
    return train.select([index for batch in drawn for index in batches[batch]])


def known_knobs(name: str) -> bool:
    """Whether name is project or full-finetune with speed knobs of KNOBS (in any combination)."""
    recipe, *knobs = name.split("+")
    return recipe in ("project", "full-finetune") and bool(knobs) and all(knob in KNOBS for knob in knobs)


def recipe_precision(name: str, config: Config) -> str:
    return "fp32" if name in FP32 else training.resolve_precision(config.precision)


def recipe_config(name: str, config: Config) -> tuple[str, Config]:
    """The recipe without its knobs, and config with the knobs' settings."""
    if name.startswith("which:"):  # notebook 08's recipe: its settings on the project's batching and precision
        return "project", experiments.recipe(name.removeprefix("which:"), config.seed).settings(config)
    recipe, *knobs = name.split("+")
    if recipe == "previous-default":
        recipe, config = "project", config.replace(**PREVIOUS_DEFAULT)
    for knob in knobs:
        config = config.replace(**KNOBS[knob])
    return recipe, config


def trainer_for(name: str, train, config: Config, labels, tokenizer, output_dir: Path, **overrides):
    recipe, config = recipe_config(name, config)
    model = model_for_training(config, labels)
    if recipe != "full-finetune":
        model = add_lora(model, config.replace(dropout=0.1) if recipe == "project-dropout" else config)
    config = config.replace(precision=recipe_precision(recipe, config))
    fixed = name.startswith("fixed-")
    trainer = training.build_trainer(
        config.replace(early_stopping_patience=0), model, tokenizer, {"train": train, "validation": train},
        output_dir, save_strategy="no", load_best_model_at_end=False, logging_strategy="no", disable_tqdm=True,
        **{"eval_strategy": "no", "train_sampling_strategy": "random" if fixed else "group_by_length", **overrides})
    if fixed:
        trainer.data_collator = default_data_collator  # already padded to max_length: batch as they are
    return trainer


def time_recipe(name: str, splits, tokenizer, config: Config, labels, steps: int, warmup: int) -> dict:
    train = epoch_batches(name, splits, tokenizer, config, steps + warmup)
    step_times, batches = [], []

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():  # a GPU runs the step's kernels after the call returns: wait for them
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(name, train, config, labels, tokenizer, Path(tmp), eval_strategy="no",
                              max_steps=steps + warmup, train_sampling_strategy="sequential")  # batches as drawn
        collate = trainer.data_collator

        def counted(features):  # positions computed (padding included) and real tokens, per batch
            batch = collate(features)
            batches.append((batch["attention_mask"].numel(), int(batch["attention_mask"].sum())))
            return batch

        trainer.data_collator = counted
        trainer.add_callback(StepClock())
        model = trainer.model
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        with measure() as memory:
            trainer.train()
    positions = [n for n, _ in batches[warmup:steps + warmup]]
    real = [n for _, n in batches[warmup:steps + warmup]]
    seconds = sum(step_times[warmup:])
    weights = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n and "lora_" not in n)
    flops = 2 * weights * sum(positions) * (3 if name.startswith("full-finetune") else 2)
    return {"examples_per_second": steps * config.batch_size / seconds, "tokens_per_second": sum(positions) / seconds,
            "real_tokens_per_second": sum(real) / seconds, "gflops": flops / seconds / 1e9,
            "peak_memory_mb": memory["peak_memory_mb"], "warmup_seconds": sum(step_times[:warmup]),
            "compiled_graphs": torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs}


def train_on_budget(name: str, splits, tokenizer, config: Config, labels, train_size: int):
    """The model a recipe trains on the same train_size tweets in one epoch."""
    train = recipe_data(name, {"train": data.subsample(splits["train"], train_size, config.seed)}, tokenizer, config,
                        train_size)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(name, train, config.replace(epochs=1.0), labels, tokenizer, Path(tmp))
        trainer.train()
    return trainer.model.eval()


def accuracy(model, tokenizer, dataset, batch_size: int) -> float:
    logits = training.predict_logits(model, tokenizer, dataset, batch_size)
    return float((logits.argmax(-1) == np.array(dataset["label"])).mean())


def inference(model, tokenizer, dataset, batch_size: int, repeats: int) -> dict[str, dict]:
    """examples/s (median of repeats) and accuracy of each way to serve the trained LoRA model."""
    merged = copy.deepcopy(model).merge_and_unload().eval()
    ways = {
        "unmerged fp32, dataset order": (model, partial(training.predict_logits, by_length=False)),
        "unmerged fp32, length-sorted batches": (model, training.predict_logits),
        "merged fp32, length-sorted batches": (merged, training.predict_logits),
    }
    if training.bf16_native():
        ways["merged bf16, length-sorted batches"] = (copy.deepcopy(merged).to(torch.bfloat16),
                                                      training.predict_logits)
    rows = {}
    for name, (served, predict) in ways.items():
        predict(served, tokenizer, dataset.select(range(batch_size)), batch_size)  # warm up
        seconds, logits = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            logits = predict(served, tokenizer, dataset, batch_size)
            seconds.append(time.perf_counter() - start)
        correct = logits.astype(np.float32).argmax(-1) == np.array(dataset["label"])
        rows[name] = {"examples_per_second": len(dataset) / statistics.median(seconds),
                      "accuracy": float(correct.mean())}
    return rows


# Operators by kind, for the shares of a step's time (self CPU time); the rest is "other"
OPERATORS = {"matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
             "copies and casts": ("aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous"),
             "adds and scales": ("aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::sum", "aten::div",
                                 "aten::div_", "aten::addcmul_", "aten::addcdiv_", "aten::lerp_", "aten::sqrt")}


def shares(events) -> dict[str, float]:
    """Each kind of operator's share of the self CPU time of profiled events (torch.profiler key averages)."""
    total = sum(event.self_cpu_time_total for event in events)
    found = {kind: sum(e.self_cpu_time_total for e in events if e.key in names) / total
             for kind, names in OPERATORS.items()}
    return {**found, "other": 1 - sum(found.values())}


def profile(name: str, splits, tokenizer, config: Config, labels, steps: int = 4, warmup: int = 2,
            rows: int = 12) -> tuple[str, dict[str, float]]:
    """The operators that take the time of a recipe's training steps (torch.profiler, self CPU time): a table of the
    slowest, and the share of each kind (OPERATORS)."""
    train = epoch_batches(name, splits, tokenizer, config, steps + warmup)
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

    class Window(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                profiler.start()

        def on_train_end(self, args, state, control, **kwargs):
            profiler.stop()

    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(name, train, config, labels, tokenizer, Path(tmp), eval_strategy="no",
                              max_steps=steps + warmup, train_sampling_strategy="sequential")
        trainer.add_callback(Window())
        trainer.train()
    events = profiler.key_averages()
    return events.table(sort_by="self_cpu_time_total", row_limit=rows), shares(events)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {RECIPES}")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per recipe; medians are reported")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run (after 2 warm-up steps)")
    parser.add_argument("--budget", type=int, default=2000, help="training tweets (one epoch) for the accuracy checks")
    parser.add_argument("--eval-size", type=int, default=2000, help="validation tweets the accuracy checks score")
    parser.add_argument("--which", default="", metavar="NAME,...",
                        help="notebook 08 recipes to time too (all: every one); writes results/recipes/speed.json")
    parser.add_argument("--profile", action="store_true",
                        help="print where the time of project and full-finetune steps goes")
    parser.add_argument("--out", type=Path, default=OUTPUT,
                        help=f"where the record goes (default {OUTPUT.relative_to(ROOT)}, docs/speed.md's peak table)")
    args = parser.parse_args(argv)
    recipes = [name for name in args.recipes.split(",") if name]  # none: time only the --which recipes
    unknown = [r for r in recipes if r not in RECIPES and not known_knobs(r)]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}: choose from {RECIPES}, or project/full-finetune with "
                     f"+knobs of {list(KNOBS)}")
    which = list(grids.RECIPES) if args.which == "all" else [n for n in args.which.split(",") if n]
    unknown = [name for name in which if name not in grids.RECIPES]
    if unknown:
        parser.error(f"unknown --which recipe(s) {unknown}: choose from {', '.join(grids.RECIPES)}")

    config = Config(smoke=False)
    splits = data.prepare(config)
    config = config.budget(len(splits["train"]))  # the batch size the whole split trains with (Config.budget)
    labels, tokenizer = data.labels_of(splits), load_tokenizer(config.model)
    precision = training.resolve_precision(config.precision)  # what "project" and "full-finetune" train in
    peaks = {"fp32": matmul_peak(torch.float32)}
    if training.bf16_native():
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    print(f"{torch.get_num_threads()} threads; matrix-product peak "
          + ", ".join(f"{dtype} {peak:,.0f} GFLOP/s" for dtype, peak in peaks.items())
          + f"; precision auto = {precision}; batch {config.batch_size}, {args.steps} timed steps x "
          f"{args.repeats} repeats\n")
    rows = {}
    for name in recipes:
        runs = [time_recipe(name, splits, tokenizer, config, labels, args.steps, warmup=2)
                for _ in range(args.repeats)]
        rows[name] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    if which:
        timed = {}
        for name in which:
            runs = [time_recipe(f"which:{name}", splits, tokenizer, config, labels, args.steps, warmup=2)
                    for _ in range(args.repeats)]
            timed[name] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            print(f"{name}: {timed[name]['examples_per_second']:.1f} examples/s, peak "
                  f"{timed[name]['peak_memory_mb']:,.0f} MB")
        path = experiments.recipe_folder(config) / "speed.json"
        speed = {"recipes": timed, "steps": args.steps, "repeats": args.repeats, "batch_size": config.batch_size,
                 "meta": meta(config)}
        earlier = json.loads(path.read_text()) if path.exists() else None
        if earlier and all(earlier.get(key) == speed[key] for key in ("steps", "repeats", "batch_size")):
            speed["recipes"] = {**earlier["recipes"], **timed}  # the other recipes' entries stay
        write_json_atomic(path, speed)
        print(f"wrote {path} ({', '.join(timed)}{' updated' if earlier else ''})\n")
    if not recipes:
        return 0
    base = rows.get("fixed-128")
    print("| recipe | precision | examples/s | x fixed-128 | tokens/s (computed) | real tokens/s | GFLOP/s "
          "| % of peak "
          "| peak MB | warm-up s | graphs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        dtype = recipe_precision(name.split("+")[0], config)
        ratio = f"{row['examples_per_second'] / base['examples_per_second']:.2f}" if base else "-"
        print(f"| {name} | {dtype} | {row['examples_per_second']:.1f} | {ratio} | {row['tokens_per_second']:,.0f} | "
              f"{row['real_tokens_per_second']:,.0f} | {row['gflops']:.0f} | "
              f"{100 * row['gflops'] / peaks[dtype]:.0f}% | "
              f"{row['peak_memory_mb']:,.0f} | {row['warmup_seconds']:.1f} | {row['compiled_graphs']:.0f} |")

    # accuracy on a fixed budget, and serving the project's model
    validation = data.subsample(splits["validation"], args.eval_size, config.seed)
    models = {name: train_on_budget(name, splits, tokenizer, config, labels, args.budget)
              for name in ("fixed-128", "project")}
    scores = {name: accuracy(model, tokenizer, validation, config.eval_batch_size) for name, model in models.items()}
    print(f"\nsame budget ({args.budget:,} tweets, 1 epoch), accuracy on {len(validation):,} validation tweets: "
          + ", ".join(f"{name} {score:.4f}" for name, score in scores.items()))
    served = inference(models["project"], tokenizer, validation, config.eval_batch_size, args.repeats)
    reference = served["unmerged fp32, dataset order"]
    print("\n| inference | examples/s | x unmerged fp32 | accuracy | change (pt) |\n|---|---|---|---|---|")
    for name, row in served.items():
        print(f"| {name} | {row['examples_per_second']:.1f} | "
              f"{row['examples_per_second'] / reference['examples_per_second']:.2f} | {row['accuracy']:.4f} | "
              f"{100 * (row['accuracy'] - reference['accuracy']):+.2f} |")

    print("\ntargets:")
    gap = 100 * abs(scores["project"] - scores["fixed-128"])
    if base and "project" in rows:
        speedup = rows["project"]["examples_per_second"] / base["examples_per_second"]
        _verdict(f"project recipe {speedup:.2f}x fixed-128, accuracy {gap:.2f} pt apart", speedup >= 3 and gap <= 0.5,
                 ">= 3x, within 0.5 pt")
    if "project" in rows and "full-finetune" in rows:  # the default recipe against full fine-tuning, same knobs
        speedup = rows["project"]["examples_per_second"] / rows["full-finetune"]["examples_per_second"]
        _verdict(f"LoRA {speedup:.2f}x full fine-tuning", speedup >= 1.5, ">= 1.5x")
    if "project" in rows and "previous-default" in rows:
        speedup = rows["project"]["examples_per_second"] / rows["previous-default"]["examples_per_second"]
        _verdict(f"project {speedup:.2f}x previous-default", speedup >= 1.3, ">= 1.3x")
    for knobs in sorted({name.partition("+")[2] for name in rows} - {""}):  # LoRA and full fine-tuning, same knobs
        lora, full = rows.get(f"project+{knobs}"), rows.get(f"full-finetune+{knobs}")
        if lora and full:
            speedup = lora["examples_per_second"] / full["examples_per_second"]
            _verdict(f"project+{knobs} {speedup:.2f}x full-finetune+{knobs}", speedup >= 1.5, ">= 1.5x")
        if lora and "project" in rows:
            speedup = lora["examples_per_second"] / rows["project"]["examples_per_second"]
            _verdict(f"project+{knobs} {speedup:.2f}x project", speedup >= 1.3, ">= 1.3x")
    best = max((row for name, row in served.items() if name.startswith("merged")),
               key=lambda r: r["examples_per_second"])
    speedup = best["examples_per_second"] / reference["examples_per_second"]
    change = 100 * abs(best["accuracy"] - reference["accuracy"])
    _verdict(f"merged inference {speedup:.2f}x unmerged fp32, accuracy change {change:.2f} pt",
             speedup >= 2.5 and change <= 0.2, ">= 2.5x, <= 0.2 pt")

    profiles = {}
    if args.profile:
        for name in ("project", "full-finetune"):
            table, profiles[name] = profile(name, splits, tokenizer, config, labels)
            print(f"\nwhere the time of a {name} step goes (4 steps, self CPU time):\n{table}")
    recipes_run = {name: {**row, "precision": recipe_precision(name.split("+")[0], config),
                          "share_of_peak": row["gflops"] / peaks[recipe_precision(name.split("+")[0], config)]}
                   for name, row in rows.items()}
    write_json_atomic(args.out, {"recipes": recipes_run, "peaks": peaks, "profile": profiles, "steps": args.steps,
                                 "repeats": args.repeats, "same_budget": {"budget": args.budget,
                                                                          "validation": len(validation),
                                                                          "accuracy": scores},
                                 "inference": served, "meta": meta(config)})
    print(f"\nwrote {args.out}")
    return 0


def _verdict(measured: str, reached: bool, target: str) -> None:
    print(f"  {'reached' if reached else 'NOT reached'}: {measured} (target {target})")


if __name__ == "__main__":
    sys.exit(main())
