"""Numbers in README.md and docs/ rendered from the records: the text between `<!-- report:NAME -->` and
`<!-- /report:NAME -->` is what BLOCKS[NAME] makes of results/. `python -m lora_ft.report` rewrites every block;
tests/test_report.py fails when the committed text differs from what the records give. No torch needed."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

from . import report_curves, report_emotion, report_public, report_recipes, report_search, report_speed, stats
from .config import ROOT
from .io import atomic_file
from .report_curves import markdown_table
from .results import read, read_json, records

SERVING_WAYS = {"adapters": "one base + an adapter per task", "merged": "a merged model per task",
                "full": "a fully fine-tuned model per task"}  # benchmarks/serving_tasks.py's ways, as shown


def serving_frame(reports: list[dict]) -> pd.DataFrame:
    """serving_tasks.py's reports as rows: way, tasks, memory held and while classifying, load time, rows/s."""
    return pd.DataFrame([{"way": r["way"], "tasks": len(r["tasks"]), "held_mb": r["held_memory_mb"],
                          "working_mb": r["working_memory_mb"], "load_s": r["load_seconds"],
                          "rows_per_s": r["rows_per_second"], "mixed_rows_per_s": r.get("mixed_rows_per_second")}
                         for r in reports])


def serving_table(results: Path) -> str:
    """Notebook 09's serving measurements (results/tasks/serving.json) as a table."""
    reports = read_json(results, "tasks/serving.json")["reports"]
    rows = [[SERVING_WAYS[r["way"]], len(r["tasks"]), f"{r['held_memory_mb']:.0f}", f"{r['working_memory_mb']:.0f}",
             f"{r['load_seconds']:.1f}", f"{r['rows_per_second']:.0f}",
             f"{r['mixed_rows_per_second']:.0f}" if "mixed_rows_per_second" in r else "-"]
            for r in sorted(reports, key=lambda r: (list(SERVING_WAYS).index(r["way"]), len(r["tasks"])))]
    return markdown_table("set-up | tasks | memory held (MB) | while classifying (MB) | load (s) | rows/s | "
                          "rows/s, tasks mixed", "lrrrrrr", rows)


def task_table(results: Path) -> str:
    """Notebook 09's tasks: LoRA and full fine-tuning on each, test accuracy and training time."""
    rows = []
    for path in sorted((results / "tasks").glob("*-lora.json")):
        lora, full = read(path), read(path.with_name(path.name.replace("-lora", "-full-finetune")))
        rows.append([lora["run"].removesuffix("-lora"), len(lora["labels"]),
                     f"{lora['config']['train_size']:,} / {lora['n_examples']:,}",
                     *(f"{r['metrics']['accuracy']:.4f}" for r in (lora, full)),
                     *(f"{r['train']['seconds']:.0f}" for r in (lora, full))])
    return markdown_table("task | classes | train / test examples | LoRA accuracy | full fine-tuning | "
                          "LoRA train (s) | full train (s)", "lrrrrrr", rows)


def serving_line(results: Path) -> str:
    """The README's line on notebook 09."""
    reports = read_json(results, "tasks/serving.json")["reports"]
    most = max(len(r["tasks"]) for r in reports)
    at = {r["way"]: r for r in reports if len(r["tasks"]) == most}
    agree = sum(a == b for a, b in zip(at["adapters"]["predicted"], at["merged"]["predicted"]))
    return (f"one process serving {most} tasks from one base and {most} adapters holds "
            f"{at['adapters']['held_memory_mb']:.0f} MB of models against {at['merged']['held_memory_mb']:.0f} MB "
            f"for {most} merged models ({agree:,} of {len(at['merged']['predicted']):,} test predictions the same), "
            f"and classifies {at['adapters']['rows_per_second']:.0f} rows/s against the merged models' "
            f"{at['merged']['rows_per_second']:.0f}")


def real_run_table(results: Path) -> str:
    """benchmarks/real_run_speed.py's runs (results/speed/real-run.json): the real run's steps against the bench."""
    made = read_json(results, "speed/real-run.json")
    bench = {"lora": made["bench"].get("project"), "full-finetune": made["bench"].get("full-finetune")}
    rows = []
    for r in made["runs"]:
        versus = bench[r["kind"]]
        rows.append([r["kind"], "longest text" if r["pad"] is None else f"multiple of {r['pad']}",
                     f"{r['examples_per_second']:.1f}", f"{r['step_examples_per_second']:.1f}",
                     *(["-", "-"] if versus is None else
                       [f"{versus:.1f}", f"{r['step_examples_per_second'] / versus:.0%}"]),
                     f"{r['in_steps']:.0f}", f"{r['in_validations']:.0f} ({r['validations']})",
                     f"{r['seconds'] - r['in_steps'] - r['in_validations']:.0f}",
                     ", ".join(f"{mb:,}" for mb in r["window_mb"]), f"{r['accuracy']:.4f}"])
    return markdown_table("run | batches padded to | examples/s, whole run | examples/s, steps | bench's examples/s | "
                          "steps / bench | s in steps | s in validations | s else | memory every 50 steps (MB) | "
                          "accuracy", "llrrrrrrrlr", rows)


def validation_cost(results: Path) -> str:
    """What the validations of the committed LoRA run cost."""
    lora = read(results / "lora.json")
    times = validation_times(lora)
    return (f"{sum(times) / len(times):.1f} s each in the committed LoRA run, so its {len(times)} validations add "
            f"{sum(times):.0f} s, {sum(times) / lora['train']['seconds']:.0%} of its {lora['train']['seconds']:.0f} s")


def validation_bench(results: Path) -> str:
    """benchmarks/validation_cost.py's run: seconds per validation each way, against full fine-tuning's (cast once)."""
    found = read_json(results, "speed/validation.json")
    seconds = {row["way"]: row["seconds"] for row in found["rows"]}
    full = seconds["full fine-tuning, weights cast once"]
    same = "the same loss, accuracy and macro-F1" if found["same_scores"] else "**different scores**"
    head = f"validation of {found['validation_examples']:,} tweets (median of {found['rows'][0]['runs']})"
    return (markdown_table(f"{head} | seconds | against full fine-tuning, cast once", "lrr",
                           [[way, f"{s:.2f}", f"{s / full:.2f}x"] for way, s in seconds.items()])
            + f"\n\nEach model's two passes gave {same}.")


def validation_times(record: dict) -> list[float]:
    """The seconds of each of a run's validations (the Trainer's eval_runtime)."""
    return [entry["eval_runtime"] for entry in record["train"]["history"] if "eval_runtime" in entry]


def default_speed(results: Path) -> str:
    """The committed runs' speeds (notebooks 02, 03): LoRA against full fine-tuning, their steps against the bench."""
    runs = {"LoRA": read(results / "lora.json"), "full": read(results / "full-finetune.json")}
    measured = read_json(results, "speed/throughput.json")
    days = {k: r["meta"]["created"][:10] for k, r in {**runs, "bench": measured}.items()}
    speed = {k: r["train"]["examples_per_second"] for k, r in runs.items()}
    times = {k: validation_times(r) for k, r in runs.items()}
    checks = {k: sum(t) / len(t) for k, t in times.items()}
    steps = {k: speed[k] * r["train"]["seconds"] / (r["train"]["seconds"] - sum(times[k])) for k, r in runs.items()}
    benched = {k: measured["recipes"][name]["examples_per_second"]
               for k, name in (("LoRA", "project"), ("full", "full-finetune"))}
    return (f"LoRA trained at {speed['LoRA']:.1f} examples/s against full fine-tuning's {speed['full']:.1f} "
            f"({speed['LoRA'] / speed['full']:.2f}x; {runs['LoRA']['train']['seconds']:.0f} s against "
            f"{runs['full']['train']['seconds']:.0f} s for the same 2 epochs, validations included); a LoRA "
            f"validation on {runs['LoRA']['config']['validation_sample']:,} tweets took {checks['LoRA']:.1f} s, full "
            f"fine-tuning's {checks['full']:.1f} s ({checks['LoRA'] / checks['full']:.2f}x); their steps alone "
            f"(validations' time left out) at {steps['LoRA']:.1f} and {steps['full']:.1f} examples/s, "
            f"{steps['LoRA'] / benched['LoRA']:.0%} and {steps['full'] / benched['full']:.0%} of the bench's "
            f"{benched['LoRA']:.1f} and {benched['full']:.1f}, measured " + (
                "the same day" if len(set(days.values())) == 1 else
                f"on {days['bench']} (the LoRA run on {days['LoRA']}, full fine-tuning on {days['full']})"))


def onnx_table(results: Path) -> str:
    """benchmarks/serving_onnx.py's paths (results/speed/serving-onnx.json): speed, memory, size, accuracy."""
    made = read_json(results, "speed/serving-onnx.json")
    first = made["paths"][0]
    rows = [[r["path"], f"{r['load_seconds']:.1f}", f"{r['rows_per_second']:,.0f}",
             f"{r['rows_per_second'] / first['rows_per_second']:.2f}", f"{r['peak_memory_mb']:,.0f}",
             f"{r['model_mb']:.1f}", f"{r['accuracy']:.4f}", f"{100 * (r['accuracy'] - first['accuracy']):+.2f}",
             f"{r['same_predictions']:.2%}"] for r in made["paths"]]
    return markdown_table(f"path | load (s) | rows/s | x {first['path']} | peak memory (MB) | model on disk (MB) | "
                          f"test accuracy | change (points) | predictions as {first['path']}", "lrrrrrrrr", rows)


def notebook_minutes(notebook: Path) -> float | None:
    """How long a committed notebook's run took: first cell started to last cell answered (nbconvert's timings)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    timings = [cell.get("metadata", {}).get("execution", {}) for cell in cells if cell["cell_type"] == "code"]
    starts = [t["iopub.execute_input"] for t in timings if "iopub.execute_input" in t]
    ends = [t["shell.execute_reply"] for t in timings if "shell.execute_reply" in t]
    if not starts or not ends:
        return None
    start, end = (datetime.fromisoformat(stamp.replace("Z", "+00:00")) for stamp in (min(starts), max(ends)))
    return (end - start).total_seconds() / 60


def notebook_table(results: Path) -> str:
    """Minutes of each committed notebook's run, and their sum."""
    minutes = {p.name[:2]: notebook_minutes(p) for p in sorted((results.parent / "notebooks").glob("[0-9]*.ipynb"))}
    shown = {name: m for name, m in minutes.items() if m is not None}
    return markdown_table(f"notebook | {' | '.join(shown)} | all", "l" + "r" * (len(shown) + 1),
                          [["minutes", " | ".join(f"{m:.1f}" for m in shown.values()), f"{sum(shown.values()):.1f}"]])


def slow_cells(results: Path) -> str:
    """The README's line on the notebooks' two trainings: their seconds and peak memory."""
    full, lora = read(results / "full-finetune.json"), read(results / "lora.json")
    peaks = sorted(r["resources"]["peak_memory_mb"] / 1000 for r in (full, lora))
    return (f"The slow cells are full fine-tuning in 02 ({full['train']['seconds']:.0f} s) and LoRA in 03 "
            f"({lora['train']['seconds']:.0f} s); training peaks at {peaks[0]:.1f} to {peaks[1]:.1f} GB of memory "
            "above the loaded libraries")


def peak_share_table(results: Path) -> str:
    """throughput.py's recipes (results/speed/throughput.json): speed, share of the peak, where a step's time goes."""
    made = read_json(results, "speed/throughput.json")
    kinds = list(next(iter(made["profile"].values()), {}))
    rows = []
    for name, r in made["recipes"].items():
        profiled = made["profile"].get(name)
        rows.append([name, r["precision"], f"{r['examples_per_second']:.1f}", f"{r['gflops']:.0f}",
                     f"{r['share_of_peak']:.0%}", *(f"{profiled[k]:.0%}" if profiled else "-" for k in kinds),
                     f"{r['peak_memory_mb']:,.0f}"])
    head = " | ".join(["recipe | precision | examples/s | GFLOP/s | % of peak", *kinds, "peak MB"])
    peaks = ", ".join(f"{dtype} {value:,.0f} GFLOP/s" for dtype, value in made["peaks"].items())
    return (markdown_table(head, "ll" + "r" * (4 + len(kinds)), rows)
            + f"\n\nMatrix-product peak measured in the same run: {peaks}.")


def peak_share_line(results: Path) -> str:
    """LoRA's step against full fine-tuning's: share of the peak, and of the step's time in matrix products."""
    made = read_json(results, "speed/throughput.json")
    lora, full = made["recipes"]["project"], made["recipes"]["full-finetune"]
    line = (f"LoRA's step ran at {lora['share_of_peak']:.0%} of the {lora['precision']} matrix-product peak, full "
            f"fine-tuning's at {full['share_of_peak']:.0%} ({lora['examples_per_second']:.1f} against "
            f"{full['examples_per_second']:.1f} examples/s)")
    if {"project", "full-finetune"} <= set(made["profile"]):
        mine, theirs = made["profile"]["project"], made["profile"]["full-finetune"]
        line += (f"; matrix products took {mine['matrix products']:.0%} of a LoRA step's time against "
                 f"{theirs['matrix products']:.0%} of full fine-tuning's, copies and casts "
                 f"{mine['copies and casts']:.0%} against {theirs['copies and casts']:.0%} "
                 f"({mine['copies and casts'] / theirs['copies and casts']:.1f}x)")
    return line


SERVING_TOLERANCE = 0.2  # points of test accuracy a faster serving path may cost: a few of 3,719 test tweets


def fastest_serving(results: Path) -> tuple[dict, dict]:
    """serving_onnx.py's fastest path within SERVING_TOLERANCE points of the first (predict's), and the fastest."""
    paths = read_json(results, "speed/serving-onnx.json")["paths"]
    close = [p for p in paths if abs(100 * (p["accuracy"] - paths[0]["accuracy"])) <= SERVING_TOLERANCE]
    return max(close, key=lambda p: p["rows_per_second"]), max(paths, key=lambda p: p["rows_per_second"])


def onnx_verdict(results: Path) -> str:
    best, fastest = fastest_serving(results)
    paths = read_json(results, "speed/serving-onnx.json")["paths"]
    change = 100 * (fastest["accuracy"] - paths[0]["accuracy"])
    return (f"the fastest path within {SERVING_TOLERANCE} points of {paths[0]['path']}'s test accuracy is "
            f"{best['path']} ({best['rows_per_second']:,.0f} rows/s); the fastest of all, {fastest['path']} "
            f"({fastest['rows_per_second']:,.0f} rows/s), changes the accuracy by {change:+.2f} points")


# The README's headline runs (notebooks 02 and 03, seeds 42-44), as the table names them
HEADLINE = {"majority": "majority class", "pretrained-baseline": "untrained model",
            "tfidf-logreg": "TF-IDF + logistic regression", "linear-probe": "linear probe, frozen encoder",
            "full-finetune": "full fine-tuning", "lora": "LoRA, r = 8, every linear layer"}


over_seeds = records  # a run's records: the notebooks' seed (results/run.json), then results/seeds/run.seed*.json


def headline_table(results: Path) -> str:
    """Accuracy and macro-F1 (mean ± std over the seeds), trained weights, seed 42's training time and size."""
    rows = []
    for run, name in HEADLINE.items():
        found = over_seeds(results, run)
        first = found[0]
        trainable, total = first["params"]["trainable"], first["params"]["total"]
        weights = (f"({trainable / 1e6:.1f}M)" if run == "pretrained-baseline"  # what a full fine-tune would train
                   else f"{trainable:,} ({trainable / total:.2%})" if run == "lora" else f"{trainable:,}")
        seconds = (first.get("train") or {}).get("seconds")
        rows.append([name, *(stats.mean_std(stats.spread([r["metrics"][m] for r in found]))
                             for m in ("accuracy", "f1_macro")),
                     weights, "-" if seconds is None else f"{seconds:.0f}", f"{first['resources']['saved_mb']:g}"])
    return markdown_table("run | accuracy | macro-F1 | trainable weights | train time (s) | saved (MB)", "lrrrrr",
                          rows)


def lora_vs_full(results: Path) -> str:
    """LoRA against full fine-tuning, paired by seed, in accuracy and macro-F1, with the verdict of stats.paired."""
    lora, full = over_seeds(results, "lora"), over_seeds(results, "full-finetune")
    accuracy, f1 = (stats.paired(stats.by_seed(lora, m), stats.by_seed(full, m), "LoRA", "full fine-tuning", m)
                    for m in ("accuracy", "f1_macro"))
    seeds = f"{min(accuracy.keys)}-{max(accuracy.keys)}"
    verdicts = (f"{accuracy.verdict} in both" if accuracy.verdict == f1.verdict
                else f"{accuracy.verdict} in accuracy, {f1.verdict} in macro-F1")
    return (f"{accuracy.amount} points of accuracy and {f1.amount} of macro-F1, paired over seeds {seeds} (LoRA ahead "
            f"on {accuracy.wins} of {accuracy.n} in accuracy): {verdicts} by the project's rule")


def recipe_findings(results: Path) -> str:
    """docs/which-lora.md's findings: notebook 08's summary, with the headline LoRA run over its seeds."""
    found = over_seeds(results, "lora") if (results / "lora.json").exists() else None
    return report_recipes.findings(report_recipes.recipe_runs(results), report_recipes.speeds(results), found)


def headline_seeds(results: Path) -> str:
    """The seeds the headline table's spreads are over, and the runs that have fewer."""
    seeds = {run: sorted(r["meta"]["seed"] for r in over_seeds(results, run)) for run in HEADLINE}
    every = sorted(set().union(*seeds.values()))
    fewer = [f"{HEADLINE[run]}: {report_recipes.seed_list(found)}" for run, found in seeds.items() if found != every]
    return f"seeds {report_recipes.seed_list(every)}" + (f" ({'; '.join(fewer)})" if fewer else "")


def adapter_size(results: Path) -> str:
    """docs/model-card.md: the committed run's adapter folder on disk (results/lora.json)."""
    return f"{read(results / 'lora.json')['resources']['saved_mb']:.1f} MB in the committed run"


def padded_positions(results: Path) -> str:
    """docs/speed.md: positions the bench's LoRA steps computed beyond the real tokens (results/speed/)."""
    lora = read_json(results, "speed/throughput.json")["recipes"]["project"]
    return f"{lora['tokens_per_second'] / lora['real_tokens_per_second'] - 1:.0%} more positions than real tokens"


def gpu_table(results: Path) -> str:
    """docs/scaling.md: the default LoRA run on a GPU (results/gpu/lora-h100.json)."""
    made = read(results / "gpu/lora-h100.json")
    train, metrics, validations = made["train"], made["metrics"], len(validation_times(made))
    cells = ["LoRA, bf16 autocast", made["meta"]["device"], f"{metrics['accuracy']:.4f}", f"{metrics['f1_macro']:.4f}",
             f"{train['seconds']:.1f} s, {train['examples_per_second']:.1f} examples/s with its {validations} "
             "validations", f"{made['resources']['peak_gpu_memory_mb']:.0f} MB"]
    return markdown_table(f"run (seed {made['meta']['seed']}, default data and settings) | device | test accuracy | "
                          "macro-F1 | training | peak GPU memory", "llrrlr", [cells])


def predict_file_table(results: Path) -> str:
    """benchmarks/predict_file.py's sizes (results/speed/predict-file.json): `predict --input` on large CSVs."""
    made = read_json(results, "speed/predict-file.json")
    rows = [[f"{r['rows']:,}", f"{r['rows_out']:,}, {'yes' if r['same_order'] else 'no'}",
             f"{r['blank_rows']:,}, {'yes' if r['blank_rows_unlabelled'] else 'no'}", f"{r['seconds']:.1f} s",
             f"{r['rows_per_second']:,.0f}", f"{r['peak_memory_mb']:,.0f} MB"] for r in made["runs"]]
    small, large = made["runs"][0], made["runs"][-1]
    grown = large["peak_memory_mb"] - small["peak_memory_mb"]
    return (markdown_table("rows | rows out, same order | blank rows left unlabelled | wall time (model loading "
                           "included) | rows/s | peak resident memory", "rllrrr", rows)
            + f"\n\n{large['rows'] / small['rows']:.0f} times the rows moved the peak by {grown:+,.0f} MB "
            f"({made['meta']['device']}).")


BLOCKS = {"serving-table": serving_table, "task-table": task_table, "serving-line": serving_line,
          "real-run-table": real_run_table, "default-speed": default_speed, "onnx-table": onnx_table,
          "headline-table": headline_table, "lora-vs-full": lora_vs_full, "onnx-verdict": onnx_verdict,
          "notebook-table": notebook_table, "slow-cells": slow_cells, "peak-share-table": peak_share_table,
          "peak-share-line": peak_share_line, "validation-cost": validation_cost, "recipe-findings": recipe_findings,
          "validation-bench": validation_bench, "predict-file-table": predict_file_table,
          "kernel-speeds": report_recipes.kernel_speeds,
          "recipe-grid": report_recipes.recipe_grid, "recipe-table": report_recipes.recipe_table,
          "recipe-costs": report_recipes.recipe_costs, "kernel-verdict": report_recipes.kernel_verdict,
          "which-lora-line": report_recipes.which_lora_line, "targets-line": report_recipes.targets_line,
          "recipes-hours": report_recipes.recipes_hours, "headline-seeds": headline_seeds,
          "curves-line": report_curves.curves_line, "curves-hours": report_curves.curves_hours,
          "search-line": report_search.search_line,
          "adapter-size": adapter_size, "padded-positions": padded_positions, "gpu-table": gpu_table,
          "setfit-published": report_emotion.setfit_published,
          **report_curves.BLOCKS, **report_emotion.BLOCKS, **report_public.BLOCKS, **report_search.BLOCKS,
          **report_speed.BLOCKS}

MARKED = re.compile(r"(<!-- report:([\w-]+) -->)(.*?)(<!-- /report:\2 -->)", re.S)


def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def render(text: str, results: Path) -> str:
    """text with every marked block made again from the records in results (a block inline stays inline)."""
    def block(match):
        if match[2] not in BLOCKS:
            raise KeyError(f"no report block {match[2]!r}: lora_ft.report.BLOCKS has {sorted(BLOCKS)}")
        made = BLOCKS[match[2]](results)
        body = f"\n{made}\n" if match[3].startswith("\n") else made
        return f"{match[1]}{body}{match[4]}"

    return MARKED.sub(block, text)


def stale(root: Path = ROOT) -> list[str]:
    """The documents whose marked blocks differ from what the records give."""
    return [str(p.relative_to(root)) for p in documents(root)
            if render(text := p.read_text(encoding="utf-8"), root / "results") != text]


def update(root: Path = ROOT) -> list[Path]:
    """Rewrite every marked block from the records; returns the documents that changed."""
    changed = []
    for path in documents(root):
        text = path.read_text(encoding="utf-8")
        made = render(text, root / "results")
        if made != text:
            with atomic_file(path) as tmp:
                tmp.write_text(made, encoding="utf-8")
            changed.append(path)
    return changed


if __name__ == "__main__":
    for path in update():
        print(f"updated {path.relative_to(ROOT)}", file=sys.stderr)
