"""What one validation costs, LoRA against full fine-tuning, with the weights cast to bf16 once per validation and
on every call.

    python benchmarks/validation_cost.py                 # 5 rounds of the three on the 1,000-tweet sample (~3 min)
    python benchmarks/validation_cost.py --rounds 1

Each round validates, in turn, the default LoRA model and the fully fine-tuned one, each through the project's
Trainer (training.build_trainer: under bf16 autocast, the linear weights held as bf16 copies for the pass,
training.weights_as) and through transformers' own Trainer.evaluate (autocast casts every weight on every call), on
the fixed validation sample the runs score. The adapters get small random B matrices (seeded) so that their
products change the scores. Reports the median seconds per validation and whether each model's two passes gave the
same loss and scores; writes results/speed/validation.json, which docs/speed.md shows (python -m lora_ft.report).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial

import torch
from transformers import Trainer

from lora_ft import data, report, training
from lora_ft.config import FULL_FINETUNE_LEARNING_RATE, ROOT
from lora_ft.io import write_json_atomic
from lora_ft.modeling import add_lora, load_tokenizer, model_for_training
from lora_ft.run import meta

OUTPUT = ROOT / "results" / "speed" / "validation.json"  # docs/speed.md's validation-bench block (lora_ft.report)
SCORES = ("eval_loss", "eval_accuracy", "eval_f1_macro")


def trainers(splits, config, tokenizer) -> dict:
    """A bf16 Trainer per way of validating, each on its own model as the runs build it."""
    labels = data.labels_of(splits)
    torch.manual_seed(config.seed)
    lora = add_lora(model_for_training(config, labels), config)
    for name, weight in lora.named_parameters():
        if "lora_B" in name:  # B starts at zero: small random values make the adapters count
            torch.nn.init.normal_(weight, std=0.02)
    full = model_for_training(config.replace(learning_rate=FULL_FINETUNE_LEARNING_RATE), labels)
    quiet = dict(eval_strategy="no", disable_tqdm=True, report_to="none")
    return {"lora": training.build_trainer(config, lora, tokenizer, splits, **quiet),
            "full-finetune": training.build_trainer(config, full, tokenizer, splits, **quiet)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="validations of each way (after one warm-up each)")
    args = parser.parse_args(argv)
    splits, config = data.load_prepared()
    config = config.replace(precision="bf16", smoke=False)
    built = trainers(splits, config, load_tokenizer(config.model))
    ways = {}
    for kind, name in (("lora", "LoRA"), ("full-finetune", "full fine-tuning")):
        ways[f"{name}, weights cast once"] = built[kind].evaluate
        ways[f"{name}, cast on every call"] = partial(Trainer.evaluate, built[kind])  # transformers' own
    seconds, scores = {way: [] for way in ways}, {}
    for round_ in range(args.rounds + 1):  # round 0 warms up oneDNN's kernels for each
        for way, validate in ways.items():
            found = validate()
            if round_:
                seconds[way].append(found["eval_runtime"])
            scores[way] = {k: found[k] for k in SCORES}
    rows = [{"way": way, "seconds": statistics.median(times), "runs": len(times)} for way, times in seconds.items()]
    same = all(scores[f"{name}, weights cast once"] == scores[f"{name}, cast on every call"]
               for name in ("LoRA", "full fine-tuning"))
    write_json_atomic(OUTPUT, {"rows": rows, "same_scores": same, "scores": scores,
                               "validation_examples": min(config.validation_sample, len(splits["validation"])),
                               "meta": meta(config)})
    print(f"wrote {OUTPUT.relative_to(ROOT)}\n\n{report.validation_bench(ROOT / 'results')}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
