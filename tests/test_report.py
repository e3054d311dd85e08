"""README.md and docs/ quote the records: every marked block is what lora_ft.report makes of results/."""

import json

import pytest

from lora_ft import report
from lora_ft.config import ROOT


def test_every_marked_block_matches_the_records():
    assert report.stale() == [], "run `python -m lora_ft.report` and commit the documents it rewrites"


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
    report.SERVING_TOLERANCE points of its accuracy (otherwise predict should offer it, issue 27)."""
    best, _ = report.fastest_serving(ROOT / "results")
    assert best["path"] == "bf16"
