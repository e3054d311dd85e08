"""docs/speed.md's blocks on where the speed comes from, rendered from benchmarks/throughput.py's run of the common
tutorial recipe against this project's (results/speed/padding-bench.json; its command is in the page)."""

from __future__ import annotations

import json
from pathlib import Path

BENCH = "speed/padding-bench.json"


def _bench(results: Path) -> dict:
    return json.loads((Path(results) / BENCH).read_text(encoding="utf-8"))


def _ratio(rows: dict, a: str, b: str) -> float:
    return rows[a]["examples_per_second"] / rows[b]["examples_per_second"]


def padding_table(results: Path) -> str:
    """The training recipes (examples/s, padded positions against real tokens, share of the peak, memory), then the
    ways of serving the project's model trained on the same budget."""
    made = _bench(results)
    rows, peaks = made["recipes"], made["peaks"]
    lines = ["| recipe | precision | examples/s | x fixed-128 | tokens/s (computed) | real tokens/s | GFLOP/s | "
             "% of peak | peak MB |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['precision']} | {row['examples_per_second']:.1f} | "
                     f"{_ratio(rows, name, 'fixed-128'):.2f} | {row['tokens_per_second']:,.0f} | "
                     f"{row['real_tokens_per_second']:,.0f} | {row['gflops']:.0f} | {row['share_of_peak']:.0%} | "
                     f"{row['peak_memory_mb']:,.0f} |")
    served = made["inference"]
    first = next(iter(served))
    lines += ["", f"| inference ({made['same_budget']['validation']:,} validation tweets) | examples/s | x {first} | "
              "accuracy | change (pt) |", "|---|---:|---:|---:|---:|"]
    for name, row in served.items():
        lines.append(f"| {name} | {row['examples_per_second']:.1f} | {_ratio(served, name, first):.2f} | "
                     f"{row['accuracy']:.4f} | {100 * (row['accuracy'] - served[first]['accuracy']):+.2f} |")
    peak = ", ".join(f"{dtype} {value:,.0f} GFLOP/s" for dtype, value in peaks.items())
    return "\n".join(lines) + (f"\n\nMedians of {made['repeats']} repeats of {made['steps']} steps; matrix-product "
                               f"peak measured in the same run: {peak}; {made['meta']['device']}.")


def padding_line(results: Path) -> str:
    """What the tables show: the project's recipe against fixed-128, LoRA against full fine-tuning, and serving."""
    made = _bench(results)
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
    made = _bench(results)
    rows, served = made["recipes"], made["inference"]
    positions = rows["fixed-128"]["tokens_per_second"] / rows["fixed-128"]["real_tokens_per_second"]
    names = list(served)
    return (f"padding each batch to its longest text in length-grouped batches, "
            f"{_ratio(rows, 'project-fp32', 'fixed-128'):.2f}x (fixed-128 computes {positions:.1f} positions per real "
            f"token); bf16 autocast on top, {_ratio(rows, 'project', 'project-fp32'):.2f}x; no dropout on the "
            f"adapters' input, {_ratio(rows, 'project-fp32', 'project-dropout'):.2f}x in fp32; for inference, "
            + "; ".join(f"{b} {_ratio(served, b, a):.2f}x {a}" for a, b in zip(names, names[1:])))


BLOCKS = {"padding-table": padding_table, "padding-line": padding_line, "padding-factors": padding_factors}
