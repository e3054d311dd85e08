"""Numbers in README.md and docs/ rendered from the records: the text between `<!-- report:NAME -->` and
`<!-- /report:NAME -->` is what BLOCKS[NAME] makes of results/. `python -m lora_ft.report` rewrites every block;
tests/test_report.py fails when the committed text differs from what the records give. No torch needed."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd

from .config import ROOT
from .io import atomic_file

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
    reports = json.loads((results / "tasks" / "serving.json").read_text(encoding="utf-8"))["reports"]
    rows = ["| set-up | tasks | memory held (MB) | while classifying (MB) | load (s) | rows/s | rows/s, tasks mixed |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(reports, key=lambda r: (list(SERVING_WAYS).index(r["way"]), len(r["tasks"]))):
        mixed = f"{r['mixed_rows_per_second']:.0f}" if "mixed_rows_per_second" in r else "-"
        rows.append(f"| {SERVING_WAYS[r['way']]} | {len(r['tasks'])} | {r['held_memory_mb']:.0f} | "
                    f"{r['working_memory_mb']:.0f} | {r['load_seconds']:.1f} | {r['rows_per_second']:.0f} | {mixed} |")
    return "\n".join(rows)


def task_table(results: Path) -> str:
    """Notebook 09's tasks: LoRA and full fine-tuning on each, test accuracy, training time and size."""
    rows = ["| task | classes | train / test examples | LoRA accuracy | full fine-tuning | LoRA train (s) | "
            "full train (s) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for path in sorted((results / "tasks").glob("*-lora.json")):
        lora = json.loads(path.read_text(encoding="utf-8"))
        full = json.loads(path.with_name(path.name.replace("-lora", "-full-finetune")).read_text(encoding="utf-8"))
        rows.append(f"| {lora['run'].removesuffix('-lora')} | {len(lora['labels'])} | "
                    f"{lora['config']['train_size']:,} / {lora['n_examples']:,} | {lora['metrics']['accuracy']:.4f} | "
                    f"{full['metrics']['accuracy']:.4f} | {lora['train']['seconds']:.0f} | "
                    f"{full['train']['seconds']:.0f} |")
    return "\n".join(rows)


def serving_line(results: Path) -> str:
    """The README's line on notebook 09."""
    reports = json.loads((results / "tasks" / "serving.json").read_text(encoding="utf-8"))["reports"]
    most = max(len(r["tasks"]) for r in reports)
    at = {r["way"]: r for r in reports if len(r["tasks"]) == most}
    agree = sum(a == b for a, b in zip(at["adapters"]["predicted"], at["merged"]["predicted"]))
    return (f"one process serving {most} tasks from one base and {most} adapters holds "
            f"{at['adapters']['held_memory_mb']:.0f} MB of models against {at['merged']['held_memory_mb']:.0f} MB "
            f"for {most} merged models ({agree:,} of {len(at['merged']['predicted']):,} test predictions the same), "
            f"and classifies {at['adapters']['rows_per_second']:.0f} against {at['merged']['rows_per_second']:.0f} "
            "rows/s")


BLOCKS = {"serving-table": serving_table, "task-table": task_table, "serving-line": serving_line}
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
