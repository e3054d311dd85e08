"""Serving a saved adapter on a file (predict --input/--output): every row kept, in order, with its columns; empty
texts get an explicit empty prediction; a labelled file is scored into a results record; every problem is one line
before anything is written; the output is written atomically; and report_to reaches the Trainer."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from test_model_families import LABELS, save_tiny_model, tiny_config, tokenized_splits

from lora_ft import ConfigError, DataError, cli, results, serving
from lora_ft.adapters import save_adapter
from lora_ft.modeling import add_lora, load_model, load_tokenizer
from lora_ft.serving import predict_file
from lora_ft.training import build_trainer, trackers

TEXTS = ["I hate waiting on hold for hours", "the flight leaves at noon", "loved the crew, great trip",
         "gate 12 is in terminal B", "worst flight ever", "amazing service, thank you", "ok then"]
PROBS = [f"prob_{label}" for label in LABELS]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """An untrained tiny BERT adapter (random head: distinct predictions) and a config that serves it in fp32."""
    tmp = tmp_path_factory.mktemp("serving")
    config = tiny_config(save_tiny_model("bert", tmp / "base"), tmp, precision="fp32")
    model = add_lora(load_model(config.model, LABELS, config.seed), config)
    save_adapter(model, load_tokenizer(config.model), config, LABELS, config.paths.adapter)
    return config


def expected(config, texts) -> list[tuple[str, float]]:
    return serving.predict(config, texts)


def test_csv_rows_keep_order_columns_and_get_label_and_probabilities(adapter, tmp_path):
    texts = TEXTS[:3] + ["", "   ", "a line break\rinside", "and\nanother"] + TEXTS[3:]
    source = tmp_path / "in.csv"
    pd.DataFrame({"id": [f"{i:03d}" for i in range(len(texts))], "text": texts, "note": ["x"] * len(texts)}).to_csv(
        source, index=False, lineterminator="\r\n")  # "\n" would leave the text's own "\r" unquoted
    summary = predict_file(adapter, source, tmp_path / "out.csv", chunk_rows=2, progress=False)
    assert summary == {"rows": len(texts), "blank": 2, "output": str(tmp_path / "out.csv")}

    out = pd.read_csv(tmp_path / "out.csv", dtype={"id": str}, keep_default_na=False)
    assert list(out.columns) == ["id", "text", "note", "label", *PROBS]
    assert out["id"].tolist() == [f"{i:03d}" for i in range(len(texts))]  # same rows, same order, cells as written
    blank = out["text"].str.strip() == ""
    assert (out.loc[blank, ["label", *PROBS]] == "").all().all()  # an explicit empty prediction, not a shifted row
    kept = out[~blank]
    want = expected(adapter, kept["text"].tolist())
    assert kept["label"].tolist() == [label for label, _ in want]
    probs = kept[PROBS].astype(float).to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(probs.max(1), [score for _, score in want], atol=1e-5)


def test_jsonl_keeps_values_and_marks_missing_texts_null(adapter, tmp_path):
    source = tmp_path / "in.jsonl"
    rows = [{"id": 1, "text": TEXTS[0]}, {"id": 2}, {"id": 3, "text": None}, {"id": 4, "text": TEXTS[1], "extra": 5}]
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = predict_file(adapter, source, tmp_path / "out.jsonl", chunk_rows=3, progress=False)
    assert summary["rows"] == 4 and summary["blank"] == 2
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == [1, 2, 3, 4]
    assert out[1]["label"] is None and out[2][PROBS[0]] is None
    assert out[3]["extra"] == 5 and "extra" not in out[0]  # each record as it came
    assert [out[0]["label"], out[3]["label"]] == [label for label, _ in expected(adapter, TEXTS[:2])]


def test_later_records_with_new_keys_are_an_error_for_a_csv_output(adapter, tmp_path):
    source = tmp_path / "in.jsonl"
    records = [{"text": t, **({"late": 1} if i == 3 else {})} for i, t in enumerate(TEXTS)]
    source.write_text("\n".join(json.dumps(r) for r in records))
    with pytest.raises(DataError, match=r"records after row 2 have keys \['late'\] that the first 2 rows lack"):
        predict_file(adapter, source, tmp_path / "out.csv", chunk_rows=2, progress=False)


def test_text_file_lines_are_rows_blank_lines_included(adapter, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text(f"{TEXTS[0]}\n\n{TEXTS[1]}\n")
    predict_file(adapter, source, tmp_path / "out.csv", progress=False)
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert out["text"].tolist() == [TEXTS[0], "", TEXTS[1]] and out["label"].tolist()[1] == ""


def test_a_failure_midway_leaves_the_previous_output_and_no_temporary_file(adapter, tmp_path):
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join([json.dumps({"text": t}) for t in TEXTS[:3]] + ["{not json"]))
    target.write_text("previous\n")
    with pytest.raises(DataError, match="in.jsonl line 4 is not JSON"):
        predict_file(adapter, source, target, chunk_rows=2, progress=False)
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


def test_input_with_a_prediction_column_is_an_error(adapter, tmp_path):
    source = tmp_path / "in.csv"
    pd.DataFrame({"text": TEXTS[:2], "prob_neutral": ["a", "b"]}).to_csv(source, index=False)
    with pytest.raises(DataError, match=r"already has column\(s\) \['prob_neutral'\], which the predictions add"):
        predict_file(adapter, source, tmp_path / "out.csv", progress=False)


def test_a_labelled_file_is_scored_beside_its_labels(adapter, tmp_path):
    """Your own held-out file: its columns kept, the prediction beside the label, and a results record whose
    metrics are those of the adapter's predictions for the same texts."""
    gold = [LABELS[i % 3] for i in range(len(TEXTS))]
    source = tmp_path / "held-out.csv"
    frame = pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS, "label": gold})
    frame.loc[len(frame)] = [99, "no label for this one", ""]  # classified, not scored
    frame.to_csv(source, index=False)
    lines = []
    summary = predict_file(adapter, source, tmp_path / "out.csv", progress=False, log=lines.append)

    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert list(out.columns) == ["id", "text", "label", "predicted", *PROBS]
    assert out["label"].tolist() == [*gold, ""]
    want = [label for label, _ in expected(adapter, [*TEXTS, "no label for this one"])]
    assert out["predicted"].tolist() == want
    accuracy = np.mean([p == g for p, g in zip(want, gold)])

    path = adapter.paths.results / "scored" / "scored-held-out.json"
    record = results.read(path)
    assert summary["record"] == str(path)
    assert record["run"] == "scored-held-out" and record["split"] == "file" and record["n_examples"] == len(TEXTS)
    assert record["metrics"]["accuracy"] == pytest.approx(accuracy)
    matrix = np.zeros((3, 3), int)
    for g, p in zip(gold, want):
        matrix[LABELS.index(g), LABELS.index(p)] += 1
    assert record["confusion_matrix"] == matrix.tolist()
    assert record["dataset"] == str(source) and record["config"]["model"] == adapter.model
    assert lines[-1].startswith(f"scored-held-out: accuracy {accuracy:.4f}, macro-F1 ")
    assert "(1 rows without a label not scored)" in lines[-1]


def test_labels_the_adapter_does_not_know_are_refused_before_anything_is_written(adapter, tmp_path):
    source = tmp_path / "in.jsonl"
    rows = [{"text": t, "sentiment": "positive"} for t in TEXTS] + [{"text": "x", "sentiment": 1},
                                                                     {"text": "y", "sentiment": "Positive"}]
    source.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"column 'sentiment' of in.jsonl holds labels the adapter does not know: "
                                        r"\['1', 'Positive'\] \(it knows \['negative', 'neutral', 'positive'\]\)"):
        predict_file(adapter, source, tmp_path / "out.jsonl", chunk_rows=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


@pytest.mark.parametrize("content,problem", [
    ("", "in.csv is empty: give a file with a header row and at least one row"),
    ("id,text\r\n", "in.csv has no rows: give a file with at least one text to classify"),
    ("text,label,text\n1,positive,great\n", r"in.csv names column\(s\) \['text'\] more than once in its header"),
])
def test_an_empty_header_only_or_ambiguous_csv_is_one_line_and_writes_nothing(adapter, tmp_path, capsys, content,
                                                                              problem):
    source = tmp_path / "in.csv"
    source.write_text(content)
    argv = ["predict", "--adapter", str(adapter.paths.adapter), f"output_root={tmp_path}", "precision=fp32"]
    assert cli.main([*argv, "--input", str(source), "--output", str(tmp_path / "out" / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and re.search(problem, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_a_tab_separated_csv_gets_the_delimiter_hint_and_reads_with_delimiter_and_encoding(adapter, tmp_path, capsys):
    source = tmp_path / "in.csv"
    rows = "".join(f"{i}\t{t} caf\u00e9\n" for i, t in enumerate(TEXTS))
    source.write_bytes(f"id\ttext\n{rows}".encode("latin-1"))
    argv = ["predict", "--adapter", str(adapter.paths.adapter), f"output_root={tmp_path}", "precision=fp32",
            "--input", str(source), "--output", str(tmp_path / "out.csv")]
    hint = "which looks tab-separated (its header holds '\\t'): pass delimiter=$'\\t' (a tab), or name the file .tsv"
    assert cli.main(argv) == 2  # a text's comma splits its row: pandas cannot parse it
    assert f"error: cannot parse in.csv, {hint}\n" == capsys.readouterr().err
    commaless = tmp_path / "commaless.csv"
    commaless.write_text(source.read_text(encoding="latin-1").replace(",", ""))
    assert cli.main([*argv[:-4], "--input", str(commaless), "--output", str(tmp_path / "out.csv")]) == 2
    assert f"error: no text column in commaless.csv, {hint}\n" == capsys.readouterr().err
    assert cli.main([*argv, "delimiter=\t"]) == 2
    assert "in.csv is not utf-8 text" in capsys.readouterr().err
    assert cli.main([*argv, "delimiter=\t", "encoding=latin-1"]) == 0
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["text"].tolist() == [f"{t} caf\u00e9" for t in TEXTS]
    assert out["label"].tolist() == [label for label, _ in expected(adapter, out["text"].tolist())]


def test_cli_predict_input_output(adapter, tmp_path, capsys):
    source = tmp_path / "in.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(source, index=False)
    argv = ["predict", "--adapter", str(adapter.paths.adapter), f"output_root={tmp_path}", "precision=fp32"]
    assert cli.main([*argv, "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 0
    assert f"{len(TEXTS)} rows classified" in capsys.readouterr().err
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["label"].tolist() == [label for label, _ in expected(adapter, TEXTS)]
    assert cli.main([*argv, "--input", str(source)]) == 2
    assert "predict --input FILE needs --output FILE" in capsys.readouterr().err


def test_export_refuses_to_replace_a_file_the_adapter_or_a_folder_of_other_files(adapter, tmp_path, capsys):
    """export --output replaces its folder whole: anything but a new folder or an earlier export is refused, and
    left as it was (a file was once hidden as .<name>.old)."""
    argv = ["export", "--adapter", str(adapter.paths.adapter), f"output_root={tmp_path}"]
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert cli.main([*argv, "--output", str(notes)]) == 2
    assert "the export target" in capsys.readouterr().err and notes.read_text() == "mine"
    folder = tmp_path / "documents"
    (folder / "sub").mkdir(parents=True)
    assert cli.main([*argv, "--output", str(folder)]) == 2
    assert "holds files that are not a merged model" in capsys.readouterr().err and (folder / "sub").is_dir()
    with pytest.raises(ConfigError, match="would replace the adapter"):
        serving.export(adapter, output=adapter.paths.adapter.parent)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["documents", "notes.txt"]


def test_report_to_tensorboard_writes_event_files(adapter, tmp_path):
    pytest.importorskip("tensorboard")
    config = adapter.replace(output_root=str(tmp_path), report_to="tensorboard")
    tokenizer = load_tokenizer(config.model)
    model = add_lora(load_model(config.model, LABELS, config.seed), config)
    trainer = build_trainer(config, model, tokenizer, tokenized_splits(tokenizer), max_steps=2, logging_steps=1,
                            logging_strategy="steps", eval_strategy="no", save_strategy="no",
                            load_best_model_at_end=False)
    trainer.train()
    events = list((config.paths.checkpoints / "runs").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)


def test_report_to_names_must_be_known_and_installed(monkeypatch):
    assert trackers("none") == ["none"]
    with pytest.raises(ConfigError, match=r"unknown tracker\(s\) \['tensorbored'\]: choose from"):
        trackers("tensorbored")
    monkeypatch.setattr("transformers.integrations.integration_utils.get_available_reporting_integrations", list)
    with pytest.raises(ConfigError, match=r"report_to names \['mlflow'\], not installed here: pip install mlflow"):
        trackers("mlflow")
