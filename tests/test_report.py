"""README.md and docs/ quote the records: every marked block is what lora_ft.report makes of results/."""

import json

import pytest

from lora_ft import report, report_recipes
from lora_ft.config import ROOT


def test_every_marked_block_matches_the_records():
    assert report.stale() == [], "run `python -m lora_ft.report` and commit the documents it rewrites"


def test_the_readmes_weight_counts_are_the_records():
    """The README's LoRA arithmetic (typed in its prose, between formulas) against results/lora.json and
    full-finetune.json: adapters + head + pooler = the trainable weights, and both shares of them."""
    lora, full = (json.loads((ROOT / "results" / f"{run}.json").read_text()) for run in ("lora", "full-finetune"))
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    trainable, total, own = lora["params"]["trainable"], lora["params"]["total"], full["params"]["total"]
    head, pooler, adapters = 384 * 3 + 3, 384 * 384 + 384, 6 * (4 * 8 * 768 + 2 * 8 * 1920)
    assert adapters + head + pooler == trainable
    assert f"hold {adapters:,} weights" in text and f"(384 x 3 + 3 = {head:,})" in text
    assert f"(384 x 384 + 384 = {pooler:,})" in text
    assert f"**{trainable:,} of {total:,} weights trainable ({100 * trainable / total:.2f}%)**" in text
    assert f"the model's own {own:,} weights" in text and f"trainable share is {100 * trainable / own:.2f}%" in text


def test_every_block_is_used_somewhere():
    text = "".join(path.read_text(encoding="utf-8") for path in report.documents())
    assert [name for name in report.BLOCKS if f"<!-- report:{name} -->" not in text] == []


def test_a_block_is_rendered_from_the_records_and_the_rest_is_kept(tmp_path):
    (tmp_path / "tasks").mkdir()
    reports = [{"way": way, "tasks": ["a", "b"][:n], "held_memory_mb": held * n, "working_memory_mb": 99.0,
                "load_seconds": 0.25, "rows_per_second": 120.0, "predicted": [0, 1, 1]}
               for way, held in (("adapters", 10.0), ("merged", 50.0), ("full", 50.0)) for n in (1, 2)]
    (tmp_path / "tasks" / "serving.json").write_text(json.dumps({"reports": reports}))
    text = "before <!-- report:serving-line -->stale<!-- /report:serving-line --> after\n"
    made = report.render(text, tmp_path)
    assert made.startswith("before <!-- report:serving-line -->one process serving 2 tasks")
    assert "holds 20 MB of models against 100 MB for 2 merged models (3 of 3 test predictions the same)" in made
    assert made.endswith("<!-- /report:serving-line --> after\n")
    assert report.render(made, tmp_path) == made
    with pytest.raises(KeyError, match="no report block 'nothing'"):
        report.render("<!-- report:nothing -->x<!-- /report:nothing -->", tmp_path)


def test_documents_are_the_readme_and_the_docs():
    assert report.documents()[0] == ROOT / "README.md" and len(report.documents()) > 5


def test_predict_serves_the_fastest_path_within_the_accuracy_tolerance():
    """benchmarks/serving_onnx.py's record: no ONNX Runtime path is both faster than predict's bf16 model and within
    report.SERVING_TOLERANCE points of its accuracy (otherwise predict should offer it)."""
    best, _ = report.fastest_serving(ROOT / "results")
    assert best["path"] == "bf16"


def test_notebook_minutes_come_from_the_cells_timings(tmp_path):
    cells = [{"cell_type": "markdown", "metadata": {}},
             {"cell_type": "code", "metadata": {"execution": {"iopub.execute_input": "2026-12-06T07:00:00.000Z",
                                                              "shell.execute_reply": "2026-12-06T07:01:00.000Z"}}},
             {"cell_type": "code", "metadata": {"execution": {"iopub.execute_input": "2026-12-06T07:01:00.000Z",
                                                              "shell.execute_reply": "2026-12-06T07:04:30.000Z"}}}]
    notebook = tmp_path / "01_x.ipynb"
    notebook.write_text(json.dumps({"cells": cells}))
    assert report.notebook_minutes(notebook) == pytest.approx(4.5)
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "metadata": {}}]}))
    assert report.notebook_minutes(notebook) is None  # never executed: no time to show


def test_the_fastest_serving_path_within_the_tolerance_is_chosen(tmp_path):
    (tmp_path / "speed").mkdir()
    paths = [{"path": "bf16", "rows_per_second": 300.0, "accuracy": 0.8000},
             {"path": "onnx-int8", "rows_per_second": 500.0, "accuracy": 0.7985},  # -0.15 points: within
             {"path": "faster-still", "rows_per_second": 900.0, "accuracy": 0.7900}]  # -1.00 points: not
    (tmp_path / "speed" / "serving-onnx.json").write_text(json.dumps({"paths": paths}))
    best, fastest = report.fastest_serving(tmp_path)
    assert (best["path"], fastest["path"]) == ("onnx-int8", "faster-still")
    assert "changes the accuracy by -1.00 points" in report.onnx_verdict(tmp_path)


def test_the_recipe_blocks_render_before_any_recipe_is_run(tmp_path):
    """docs/which-lora.md's blocks say what is not yet run instead of failing while the grid is re-run."""
    blocks = ("recipe-grid", "recipe-table", "recipe-costs", "recipe-findings", "kernel-verdict", "which-lora-line",
              "targets-line", "recipes-hours")
    made = {name: report.render(f"<!-- report:{name} -->\nx\n<!-- /report:{name} -->", tmp_path) for name in blocks}
    assert "not yet run" in made["kernel-verdict"] and "no recipe recorded yet" in made["recipe-costs"]
    verdicts = [line for line in made["recipe-table"].splitlines() if line.endswith("| not yet run |")]
    assert len(verdicts) == sum(map(len, report_recipes.COMPARISONS.values()))  # a row per comparison
    assert "**The default's headline run**: not yet run" in made["recipe-findings"]
    assert "not yet run" in made["targets-line"] and "not yet timed" in made["recipes-hours"]


def test_the_which_lora_line_quotes_the_rule_on_the_records():
    runs = report_recipes.recipe_runs(ROOT / "results")
    line = report_recipes.which_lora_line(ROOT / "results")
    for a, b in (("all-linear", "query-value"), ("query-value-dropout0", "query-value")):
        p = report_recipes.compare(runs, a, b)
        assert (report_recipes.paired_text(p) if p else "not yet run") in line
    rivals = [p for a, b in report_recipes.COMPARISONS["variants"] + report_recipes.COMPARISONS["learning-rate"]
              if (p := report_recipes.compare(runs, a, b))]
    if rivals and not any(report_recipes.outcome(p) == "ahead" for p in rivals):
        assert "none beats it beyond the spread" in line


def test_the_headline_seeds_name_every_seed_and_the_runs_with_fewer():
    said = report.headline_seeds(ROOT / "results")
    seeds = {run: [r["meta"]["seed"] for r in report.over_seeds(ROOT / "results", run)] for run in report.HEADLINE}
    every = sorted(set().union(*seeds.values()))
    assert said.startswith(f"seeds {report_recipes.seed_list(every)}")
    assert all((f"{report.HEADLINE[run]}: " in said) == (sorted(found) != every) for run, found in seeds.items())
