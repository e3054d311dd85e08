"""Serve several tasks three ways, each way and task count in a fresh process, on the same texts (notebook 09):

  adapters  one base model with every task's LoRA adapter on it (lora_ft.multitask.Tasks)
  merged    one merged model per task (what `train` exports to model/lora-merged/)
  full      one fully fine-tuned model per task

    python benchmarks/serving_tasks.py --plan PLAN.json --out RESULTS.json

PLAN.json: {"texts": FILE.jsonl (one {"task", "text"} per line), "tasks": {task: {"adapter": DIR, "merged": DIR,
"full": DIR}}, "counts": [1, 2, 3], "precisions": ["bf16", "fp32"]}; the first k tasks make a count of k; precision
"auto" (the default) is bf16 where the CPU has it, as `predict` serves. Each process reports the memory its models and
their tokenizer add to a process that has imported torch (resident): held once loaded, and working once every row is
classified (with a batch's activations, the same for every way); its load time; rows/s with each task's rows batched
apart, and for "adapters" with the tasks' rows mixed in every batch; and each row's predicted class, which the
notebook compares between the ways. The driver writes RESULTS.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from lora_ft import Config, serving, training
from lora_ft.measure import release_freed_memory, rss
from lora_ft.modeling import load_tokenizer, quiet_transformers
from lora_ft.multitask import Tasks
from lora_ft.provenance import saved_adapter

WAYS = ("adapters", "merged", "full")


def serve(way: str, folders: dict[str, str], adapters: dict[str, str], texts: list[dict], batch_size: int,
          precision: str = "auto") -> dict:
    """One way of serving, in this process: what it costs and what it predicts (each row's class index). Texts are
    tokenized as each task's adapter was trained (its saved settings); every way loads one tokenizer (one base)."""
    config = Config(precision=precision)
    bf16 = config.precision in ("auto", "bf16") and training.bf16_native()
    torch.set_num_threads(torch.get_num_threads())  # the pools start now, not inside the timed load
    release_freed_memory()
    before, start = rss(), time.perf_counter()
    if way == "adapters":
        tasks = Tasks(folders, config.precision)
    else:  # one base model: one tokenizer, as Tasks loads
        tokenizer, models = load_tokenizer(next(iter(adapters.values()))), {}
        for name, folder in folders.items():
            with quiet_transformers():
                models[name] = AutoModelForSequenceClassification.from_pretrained(
                    folder, dtype=torch.bfloat16 if bf16 else torch.float32).eval()
    load_seconds = time.perf_counter() - start
    release_freed_memory()
    held = rss() - before  # bf16 weights are copies, so resident once loaded
    trained = {name: saved_adapter(folder)[0] for name, folder in adapters.items()}

    by_task = {}
    for i, row in enumerate(texts):
        by_task.setdefault(row["task"], []).append(i)
    predicted = [None] * len(texts)
    start = time.perf_counter()
    for name, rows in by_task.items():
        batch = [texts[i]["text"] for i in rows]
        if way == "adapters":
            probs = tasks.probabilities(batch, name, batch_size)
        else:
            probs = serving.probabilities(models[name], tokenizer, trained[name], batch, batch_size)
        for i, p in zip(rows, probs.argmax(-1).tolist()):
            predicted[i] = p
    seconds = time.perf_counter() - start
    release_freed_memory()
    report = {"way": way, "tasks": list(folders), "precision": "bf16" if bf16 else "fp32", "rows": len(texts),
              "load_seconds": round(load_seconds, 2),
              "held_memory_mb": round(held / 1e6, 1), "working_memory_mb": round((rss() - before) / 1e6, 1),
              "rows_per_second": round(len(texts) / seconds, 1),
              "predicted": predicted}
    if way == "adapters":  # the same rows, each batch mixing the tasks (rows in a shuffled order)
        order = np.random.default_rng(0).permutation(len(texts))
        start = time.perf_counter()
        logits = tasks.logits([texts[i]["text"] for i in order], [texts[i]["task"] for i in order], batch_size)
        report["mixed_rows_per_second"] = round(len(texts) / (time.perf_counter() - start), 1)
        mixed = [None] * len(texts)
        for i, row in zip(order, logits):
            mixed[i] = int(row.argmax())
        report["mixed_predicted"] = mixed
    return report


def drive(plan: dict, batch_size: int) -> list[dict]:
    """Every way at every task count, each in a fresh process of this script."""
    rows = [json.loads(line) for line in Path(plan["texts"]).read_text(encoding="utf-8").splitlines() if line]
    reports = []
    for precision, count in ((p, c) for p in plan.get("precisions", ["auto"]) for c in plan["counts"]):
        names = list(plan["tasks"])[:count]
        for way in WAYS:
            folders = {name: plan["tasks"][name]["adapter" if way == "adapters" else way] for name in names}
            texts = [row for row in rows if row["task"] in names]
            adapters = {name: plan["tasks"][name]["adapter"] for name in names}
            job = json.dumps({"way": way, "folders": folders, "adapters": adapters, "texts": texts,
                              "batch_size": batch_size, "precision": precision})
            done = subprocess.run([sys.executable, __file__, "--one"], input=job, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{way} with {count} task(s) failed:\n{done.stderr[-3000:]}")
            report = json.loads(done.stdout.splitlines()[-1])
            print(f"{precision} {way:>8} x {count}: +{report['held_memory_mb']:.0f} MB held, "
                  f"+{report['working_memory_mb']:.0f} MB classifying, load {report['load_seconds']:.1f} s, "
                  f"{report['rows_per_second']:.0f} rows/s", file=sys.stderr)
            reports.append(report)
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, help="the plan (see above)")
    parser.add_argument("--out", type=Path, help="where to write the reports, as JSON")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--one", action="store_true", help="(internal) serve one way, job as JSON on stdin")
    args = parser.parse_args()
    if args.one:
        job = json.loads(sys.stdin.read())
        print(json.dumps(serve(job["way"], job["folders"], job["adapters"], job["texts"], job["batch_size"],
                               job["precision"])))
        return
    plan = json.loads(args.plan.read_text(encoding="utf-8"))
    reports = drive(plan, args.batch_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"batch_size": args.batch_size, "reports": reports}, indent=1) + "\n")


if __name__ == "__main__":
    main()
