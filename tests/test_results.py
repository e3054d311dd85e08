import json

import numpy as np
import pytest

from lora_ft import Config, LoraFtError, plots, results
from lora_ft.config import ROOT
from lora_ft.io import replace_dir_atomic, write_json_atomic
from lora_ft.run import record as run_record

LABELS = ["negative", "neutral", "positive"]


def record(run="lora", kind="lora", resources=None):
    references = np.array([0, 1, 2, 2, 1, 0])
    trained = kind == "lora" or kind in results.TRAINED_KINDS
    train_section = {"seconds": 1.0, "examples_per_second": 6.0, "epochs": 1.0, "history": []} if trained else None
    return run_record(run, kind, Config(smoke=True), LABELS, "test", references, np.array([0, 1, 2, 1, 1, 0]),
                      {"trainable": 10, "total": 1000}, train_section, resources)


def test_records_round_trip_and_match_the_contract(tmp_path):
    for kind in ("majority", "lora"):
        results.write(record(kind, kind), tmp_path)
    loaded = results.load_all(tmp_path)
    assert sorted(loaded) == ["lora", "majority"]
    lora = loaded["lora"]
    assert lora["metrics"]["accuracy"] == pytest.approx(5 / 6)
    assert lora["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 1, 1]]
    assert lora["meta"]["smoke"] is True and lora["meta"]["versions"]["torch"]
    assert "train" not in loaded["majority"]


def test_incomplete_records_are_refused_and_not_written(tmp_path):
    broken = record()
    del broken["train"]
    with pytest.raises(LoraFtError, match=r"lacks \['train'\]"):
        results.write(broken, tmp_path)
    broken = record()
    broken["n_examples"] = 7
    with pytest.raises(LoraFtError, match="confusion matrix"):
        results.write(broken, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "run.json"
    write_json_atomic(path, {"good": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"good": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind


def test_a_failed_folder_build_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "adapter"
    replace_dir_atomic(lambda tmp: (tmp / "weights").write_text("v1"), target)

    def crash(tmp):
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed mid-save")

    with pytest.raises(RuntimeError):
        replace_dir_atomic(crash, target)
    assert (target / "weights").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_committed_results_come_from_a_full_run():
    committed = list((ROOT / "results").glob("*.json"))
    if not committed:
        pytest.skip("no committed results/ yet: run the notebooks in full mode")
    records = results.load_all(ROOT / "results")
    assert {"majority", "pretrained-baseline", "lora"} <= set(records)
    assert not any(r["meta"]["smoke"] for r in records.values())


def test_committed_public_benchmark_records_are_full_runs_on_the_published_splits():
    committed = {path.stem: json.loads(path.read_text()) for path in (ROOT / "results" / "public").glob("*.json")}
    if not committed:
        pytest.skip("no results/public/ yet: run benchmarks/public_data.py")
    test_sizes = {"emotion": 2_000, "sst2": 872, "imdb": 2_000}  # the published test (SST-2: dev) splits, whole
    for name, record in committed.items():
        results.validate(record)
        assert not record["meta"]["smoke"] and record["n_examples"] == test_sizes[name]


def test_the_comparison_orders_runs_and_leaves_out_costs_a_record_lacks():
    def cost(peak, saved):
        return {"peak_memory_mb": peak, "saved_mb": saved}

    records = {"lora": record(resources=cost(850.0, 1.6)), "majority": record("majority", "majority", cost(0.1, 0.0)),
               "full-finetune": record("full-finetune", "full-finetune", cost(1000.0, 91.6)),
               "tfidf-logreg": record("tfidf-logreg", "tfidf-logreg")}  # from before records carried resources
    table = plots.summary_table(records).set_index("run")
    assert table.index.tolist() == ["majority", "tfidf-logreg", "full-finetune", "lora"]  # cheapest first, LoRA last
    assert table.loc["lora", "saved (MB)"] == 1.6 and table.loc["tfidf-logreg", "saved (MB)"] == "-"
    assert "peak memory (MB)" not in table  # measured in different process states: not comparable between runs
    assert table.loc["lora", "accuracy"] == round(records["lora"]["metrics"]["accuracy"], 4)  # one seed: its value
    again = dict(records["lora"], meta={**records["lora"]["meta"], "seed": 43},
                 metrics={**records["lora"]["metrics"], "accuracy": records["lora"]["metrics"]["accuracy"] + 0.02})
    spread = plots.summary_table(records, {"lora": [records["lora"], again]}).set_index("run")
    assert spread.loc["lora", "seeds"] == 2 and " ± 0.0141" in spread.loc["lora", "accuracy"]

    fig = plots.accuracy_against_cost(records)
    # trained runs only, against what they train and how long they took (tests/test_plots.py: every seed)
    assert [ax.get_xlabel() for ax in fig.axes] == ["trainable weights", "training time (s)"]
    assert [t.get_text() for t in fig.axes[1].texts] == ["tfidf-logreg", "full-finetune", "lora"]
    plots.plt.close(fig)
