"""docs/speed.md's blocks on where the speed comes from, rendered from benchmarks/throughput.py's run of the common
tutorial recipe against this project's (results/speed/padding-bench.json; its command is in the page)."""

from __future__ import annotations

from pathlib import Path

from .config import PAD_TO_MULTIPLE_OF
from .report_curves import markdown_table
from .results import read, read_json

BENCH = "speed/padding-bench.json"


def _ratio(rows: dict, a: str, b: str) -> float:
    return rows[a]["examples_per_second"] / rows[b]["examples_per_second"]


def padding_table(results: Path) -> str:
    """The training recipes (speed, padded positions, share of the peak, memory), then the ways of serving."""
    made = read_json(results, BENCH)
    rows, served = made["recipes"], made["inference"]
    first = next(iter(served))
    training = markdown_table(
        "recipe | precision | examples/s | x fixed-128 | tokens/s (computed) | real tokens/s | GFLOP/s | % of peak | "
        "peak MB", "llrrrrrrr",
        [[name, row["precision"], f"{row['examples_per_second']:.1f}", f"{_ratio(rows, name, 'fixed-128'):.2f}",
          f"{row['tokens_per_second']:,.0f}", f"{row['real_tokens_per_second']:,.0f}", f"{row['gflops']:.0f}",
          f"{row['share_of_peak']:.0%}", f"{row['peak_memory_mb']:,.0f}"] for name, row in rows.items()])
    serving = markdown_table(
        f"inference ({made['same_budget']['validation']:,} validation tweets) | examples/s | x {first} | accuracy | "
        "change (pt)", "lrrrr",
        [[name, f"{row['examples_per_second']:.1f}", f"{_ratio(served, name, first):.2f}", f"{row['accuracy']:.4f}",
          f"{100 * (row['accuracy'] - served[first]['accuracy']):+.2f}"] for name, row in served.items()])
    peak = ", ".join(f"{dtype} {value:,.0f} GFLOP/s" for dtype, value in made["peaks"].items())
    return (f"{training}\n\n{serving}\n\nMedians of {made['repeats']} repeats of {made['steps']} steps; "
            f"matrix-product peak measured in the same run: {peak}; {made['meta']['device']}.")


def padding_line(results: Path) -> str:
    """What the tables show: the project's recipe against fixed-128, LoRA against full fine-tuning, and serving."""
    made = read_json(results, BENCH)
    rows, served, accuracy = made["recipes"], made["inference"], made["same_budget"]["accuracy"]
    first, fastest = next(iter(served)), max(served, key=lambda name: served[name]["examples_per_second"])
    gap, budget = 100 * (accuracy["project"] - accuracy["fixed-128"]), made["same_budget"]["budget"]
    return (f"this project's recipe trained {_ratio(rows, 'project', 'fixed-128'):.2f}x as many examples/s as "
            f"fixed-128, and on the same budget ({budget:,} tweets, one epoch, one seed) scored "
            f"{accuracy['project']:.4f} against {accuracy['fixed-128']:.4f} ({gap:+.2f} points); LoRA trained "
            f"{_ratio(rows, 'project', 'full-finetune'):.2f}x as many examples/s as full fine-tuning; and the "
            f"{fastest} way served {_ratio(served, fastest, first):.2f}x the examples/s of the {first} way, "
            f"accuracy {100 * (served[fastest]['accuracy'] - served[first]['accuracy']):+.2f} points")


def padding_factors(results: Path) -> str:
    """Each of the recipe's choices as a factor of examples/s, from the same run."""
    made = read_json(results, BENCH)
    rows, served = made["recipes"], made["inference"]
    positions = rows["fixed-128"]["tokens_per_second"] / rows["fixed-128"]["real_tokens_per_second"]
    names = list(served)
    return (f"padding each batch to its longest text (rounded up to a multiple of {PAD_TO_MULTIPLE_OF}) in "
            f"length-grouped batches, {_ratio(rows, 'project-fp32', 'fixed-128'):.2f}x (fixed-128 computes "
            f"{positions:.1f} positions per real token); bf16 autocast on top, "
            f"{_ratio(rows, 'project', 'project-fp32'):.2f}x; no dropout on the adapters' input, "
            f"{_ratio(rows, 'project-fp32', 'project-dropout'):.2f}x in fp32; for inference, "
            + "; ".join(f"{b} {_ratio(served, b, a):.2f}x {a}" for a, b in zip(names, names[1:])))


def compile_line(results: Path) -> str:
    """torch.compile against eager mode (results/speed/compile-bench.json), and whether the headline run repays it."""
    made = read_json(results, "speed/compile-bench.json")
    eager, compiled = made["recipes"]["project"], made["recipes"]["project+compile"]
    ratio = _ratio(made["recipes"], "project+compile", "project")
    saved = 1 / eager["examples_per_second"] - 1 / compiled["examples_per_second"]  # seconds per example
    headline = read(Path(results) / "lora.json")["train"]
    # examples the headline run processed, to the hundred (its rate is per second of the Trainer's own clock)
    trained = round(headline["examples_per_second"] * headline["seconds"], -2)
    compiling = compiled["warmup_seconds"] - eager["warmup_seconds"]
    if saved <= 0:
        paid = "it never pays its compiling back"
    else:
        longer = compiling / saved > trained
        verdict = ("so on the default run compiling costs more than it saves; runs past that many examples gain from "
                   "`compile=true`" if longer else "so even the default run gains from `compile=true`")
        paid = (f"its compiling is paid back after about {compiling / saved:,.0f} training examples, against some "
                f"{trained:,.0f} in the headline run: {verdict}")
    return (f"compiled, the default recipe stepped at {compiled['examples_per_second']:.1f} examples/s against eager "
            f"mode's {eager['examples_per_second']:.1f} ({ratio:.2f}x), after {compiled['warmup_seconds']:.0f} s of "
            f"warm-up steps spent compiling {compiled['compiled_graphs']:.0f} graphs (eager: "
            f"{eager['warmup_seconds']:.1f} s; {made['steps']} timed steps, {made['meta']['device']}): {paid}")


def headline_steps(results: Path) -> str:
    """The optimizer steps of the headline LoRA run (results/lora.json): its last logged step."""
    steps = max(entry["step"] for entry in read(Path(results) / "lora.json")["train"]["history"])
    return f"{steps:,}"


def real_run_validation_share(results: Path) -> str:
    """The share of benchmarks/real_run_speed.py's LoRA runs (results/speed/real-run.json) spent validating."""
    shares = sorted(r["in_validations"] / r["seconds"] for r in read_json(results, "speed/real-run.json")["runs"]
                    if r["kind"] == "lora")
    return f"{shares[0]:.0%} to {shares[-1]:.0%} of the time" if len(shares) > 1 else f"{shares[0]:.0%} of the time"


BLOCKS = {"padding-table": padding_table, "padding-line": padding_line, "padding-factors": padding_factors,
          "compile-line": compile_line, "headline-steps": headline_steps,
          "real-run-validation-share": real_run_validation_share}
