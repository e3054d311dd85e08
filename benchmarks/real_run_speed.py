"""Why a real training run is slower than throughput.py's bench, and what padding to a multiple of 8 changes.

    python benchmarks/real_run_speed.py                        # LoRA and full fine-tuning, pad 8 and none (~12 min)
    python benchmarks/real_run_speed.py --train-size 320 --runs lora --pads 8 --bench-steps 2

Each run trains as `python -m lora_ft train` does (run.train_and_score: length-grouped batches, bf16 where the CPU
computes it, validation 10 times an epoch on the fixed 1,000-tweet sample, a checkpoint each time) on --train-size
tweets for one epoch, in a fresh process, and reports per window of 50 steps the median step time and the
process's resident memory; then the whole run's examples/s, the time in steps, in validations and in the rest
(checkpoints). Last, throughput.py's bench times the same recipes (20 steps drawn from a full epoch), so the real
run's steps can be compared with the bench's on the same day and machine. Writes results/speed/real-run.json, which
docs/speed.md shows (python -m lora_ft.report).

The finding (docs/speed.md): padding each batch only to its longest text gives up to 64 batch shapes; on a CPU
every new shape makes oneDNN build and keep new bf16 kernels, so memory grows through the first epoch and steps
slow down, more for LoRA, whose small adapter products add shapes of their own. pad_to_multiple_of=8 leaves 8.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from lora_ft import data, report, run, training
from lora_ft.config import FULL_FINETUNE_LEARNING_RATE, ROOT, Config
from lora_ft.io import write_json_atomic
from lora_ft.measure import rss
from lora_ft.modeling import add_lora, load_tokenizer
from lora_ft.run import meta

WINDOW = 50  # steps per reported window
BENCH = {"lora": "project", "full-finetune": "full-finetune"}  # throughput.py's name for each run
OUTPUT = ROOT / "results" / "speed" / "real-run.json"  # docs/speed.md's table (lora_ft.report)


class StepClock(TrainerCallback):
    """Each step's seconds, and the resident memory at the end of every WINDOW-th step."""

    def __init__(self):
        self.seconds, self.memory = [], []

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self.start)
        if state.global_step % WINDOW == 0:
            self.memory.append(round(rss() / 2**20))


def one_run(kind: str, pad: int | None, train_size: int) -> dict:
    """Train kind ("lora" or "full-finetune") as the CLI does, with the clock on; its timings."""
    splits, prepared = data.load_prepared()
    splits["train"] = data.subsample(splits["train"], train_size, prepared.split_seed)
    config = prepared.replace(epochs=1.0, pad_to_multiple_of=pad, smoke=False,
                              **({"learning_rate": FULL_FINETUNE_LEARNING_RATE} if kind == "full-finetune" else {})
                              ).budget(len(splits["train"]))  # the batch size and epochs the run takes
    clock, build = StepClock(), training.build_trainer

    def clocked(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(clock)
        return trainer

    training.build_trainer = clocked  # the run's own Trainer, with the clock added
    record, _ = run.train_and_score(config, splits, kind=kind, adapters=add_lora if kind == "lora" else None,
                                    quiet=True)
    steps = clock.seconds
    validations = [entry["eval_runtime"] for entry in record["train"]["history"] if "eval_runtime" in entry]
    windows = [steps[first:first + WINDOW] for first in range(0, len(steps) - WINDOW + 1, WINDOW)]
    return {"kind": kind, "pad": pad, "steps": len(steps), "seconds": record["train"]["seconds"],
            "examples_per_second": record["train"]["examples_per_second"],
            "step_examples_per_second": config.batch_size / statistics.median(steps[2:]),
            "in_steps": sum(steps), "in_validations": sum(validations), "validations": len(validations),
            "window_ms": [round(1000 * statistics.median(w)) for w in windows], "window_mb": clock.memory,
            "accuracy": record["metrics"]["accuracy"]}


def bench(recipes: list[str], steps: int) -> dict:
    """throughput.py's figures for recipes (medians of 3 runs of steps steps)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import throughput  # a sibling script, not a package

    config = Config(smoke=False)
    splits = data.prepare(config)
    config = config.budget(len(splits["train"]))  # the batch size the whole split trains with
    labels, tokenizer = data.labels_of(splits), load_tokenizer(config.model)
    return {name: statistics.median(throughput.time_recipe(name, splits, tokenizer, config, labels, steps, 2)
                                    ["examples_per_second"] for _ in range(3)) for name in recipes}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-size", type=int, default=9600, help="training tweets (one epoch, batch 32)")
    parser.add_argument("--runs", default="lora,full-finetune", help="comma-separated: lora, full-finetune")
    parser.add_argument("--pads", default="none,8", help="pad_to_multiple_of values, comma-separated (none: off)")
    parser.add_argument("--bench-steps", type=int, default=20, help="steps per bench run (0: no bench)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # kind:pad, run in this process (the child's job)
    args = parser.parse_args(argv)
    if args.one:
        kind, pad = args.one.split(":")
        print(json.dumps(one_run(kind, None if pad == "none" else int(pad), args.train_size)))
        return 0
    rows = []
    for kind in args.runs.split(","):
        for pad in args.pads.split(","):  # a fresh process each: memory and kernels start from nothing
            done = subprocess.run([sys.executable, __file__, "--one", f"{kind}:{pad}", "--train-size",
                                   str(args.train_size)], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{kind} pad {pad}: {rows[-1]}", flush=True)
    measured = bench(sorted({BENCH[row["kind"]] for row in rows}), args.bench_steps) if args.bench_steps else {}
    write_json_atomic(OUTPUT, {"runs": rows, "bench": measured, "bench_steps": args.bench_steps,
                               "train_size": args.train_size, "meta": meta(Config(smoke=False))})
    print(f"wrote {OUTPUT.relative_to(ROOT)}\n\n{report.real_run_table(ROOT / 'results')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
