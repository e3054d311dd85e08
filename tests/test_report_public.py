"""docs/public-benchmarks.md and the README's line quote results/public/ through lora_ft.report_public."""

import copy
import dataclasses
import json
import math
import subprocess
import sys

import pytest

from lora_ft import report, report_public, stats
from lora_ft.config import ROOT

RESULTS = ROOT / "results"


def committed(name: str) -> dict:
    made = report_public.record(RESULTS, name)
    if made is None:
        pytest.skip(f"no results/public/{name}.json yet: run benchmarks/public_data.py")
    return made


def test_the_module_needs_no_torch():
    code = "import lora_ft.report_public, sys; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT).stdout.strip() == "False"


def test_the_blocks_are_registered_and_placed():
    assert report_public.BLOCKS.items() <= report.BLOCKS.items()
    assert "<!-- report:public-line -->" in (ROOT / "README.md").read_text(encoding="utf-8")
    doc = (ROOT / "docs" / "public-benchmarks.md").read_text(encoding="utf-8")
    placed = [name for name in report_public.BLOCKS if f"<!-- report:{name} -->" in doc]
    assert placed == [name for name in report_public.BLOCKS if name != "public-line"]


def test_the_table_shows_each_records_accuracy_sizes_and_the_published_figures():
    rows = {row.split(" | ")[0].removeprefix("| "): row for row in report_public.public_table(RESULTS).splitlines()
            if row.startswith("| ") and not row.startswith("| data set")}
    assert rows, "no benchmark rows"
    for name, row in rows.items():
        made, (what, published, _) = committed(name), report_public.PUBLISHED[name]
        cells = row.strip("| ").split(" | ")
        assert cells[1] == f"{made['data']['splits']['train']:,} / {made['n_examples']:,}"  # the whole test split
        assert cells[2] == f"{round(made['metrics']['accuracy'], 3):.3f} {what}"
        assert (float(cells[3]), float(cells[4])) == (report_public.TARGETS[name], published)


def test_the_sampling_error_is_the_binomial_standard_error():
    assert report_public.sampling_error(0.5, 100) == pytest.approx(0.05)
    assert report_public.sampling_error(1.0, 872) == 0.0
    made = committed("sst2")
    p, n = made["metrics"]["accuracy"], made["n_examples"]
    assert report_public.error_points(made) == pytest.approx(100 * math.sqrt(p * (1 - p) / n))
    shown = f"{report_public.error_points(made):.1f} points on SST-2's {n:,} sentences"
    assert shown in report_public.public_table(RESULTS)


def test_the_correct_count_is_the_confusion_matrix_diagonal_and_agrees_with_accuracy():
    made = committed("sst2")
    assert report_public.correct(made) == round(made["metrics"]["accuracy"] * made["n_examples"])
    assert f"{report_public.correct(made):,} of {made['n_examples']:,} sentences" in report_public.sst2(RESULTS)


def test_level_is_within_twice_the_sampling_error_of_the_published_figure():
    made = copy.deepcopy(committed("emotion"))  # 2,000 test examples: one sampling error is about 0.6 points
    published, n = report_public.PUBLISHED["emotion"][1], made["n_examples"]
    verdicts = {}
    for points in (-3.0, -1.0, 0.0, 1.0, 3.0):
        made["metrics"]["accuracy"] = accuracy = published + points / 100
        verdicts[points] = report_public.level(made, "emotion")
        error = math.sqrt(accuracy * (1 - accuracy) / n)
        assert verdicts[points] == (abs(accuracy - published) <= stats.THRESHOLD * error)
    assert verdicts == {-3.0: False, -1.0: True, 0.0: True, 1.0: True, 3.0: False}


def test_the_weakest_class_is_named_with_its_scores():
    made = committed("emotion")
    per_class = made["metrics"]["per_class"]
    weakest = min(per_class, key=lambda label: per_class[label]["f1"])
    text = report_public.emotion(RESULTS)
    assert f"*{weakest}*" in text and f"F1 {per_class[weakest]['f1']:.2f}" in text
    assert f"({per_class[weakest]['support']:,} test tweets" in text


def test_validation_at_an_epoch_is_the_nearest_validation():
    made = {"train": {"history": [{"loss": 0.5, "epoch": 0.95}, {"eval_accuracy": 0.80, "epoch": 0.96},
                                  {"eval_accuracy": 0.70, "epoch": 1.06}, {"eval_accuracy": 0.90, "epoch": 2.0}]}}
    assert report_public.validation_at(made, 1) == 0.80 and report_public.validation_at(made, 2) == 0.90


def test_missing_records_say_not_yet_run_instead_of_failing(tmp_path):
    made = {name: function(tmp_path) for name, function in report_public.BLOCKS.items()}
    assert all("not yet run" in text for text in made.values()), made
    assert "benchmarks/public_data.py sst2" in made["public-sst2"]
    (tmp_path / "public").mkdir()  # one benchmark run, the others not
    (tmp_path / "public" / "imdb.json").write_text(json.dumps(committed("imdb")))
    table = report_public.public_table(tmp_path)
    assert "| imdb |" in table and "| sst2 |" not in table and "SST-2: not yet run" in table
    assert "IMDb (" in report_public.public_line(tmp_path)


def test_the_changed_settings_are_the_records_against_configs_defaults():
    imdb, said = committed("imdb"), report_public.changes(RESULTS)
    default = {f.name: f.default for f in dataclasses.fields(report_public.Config)}  # not small mode's
    for key in ("max_length", "truncation"):
        if imdb["config"][key] != default[key]:
            assert f"{key} {imdb['config'][key]} instead of {default[key]}" in said
    if all(committed(name)["config"]["epochs"] != default["epochs"] for name in report_public.PUBLISHED):
        assert f"epochs {imdb['config']['epochs']:g} instead of {default['epochs']:g} on all" in said
    assert f"({said})" in report_public.public_line(RESULTS)
