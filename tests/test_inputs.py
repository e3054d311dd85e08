"""A user's own file read as written (issue 31): label strings pandas takes for missing, duplicate header names,
labels mixing ids and names, swapped columns, a folder without split files and a tiny eval_size each give the right
classes or one line naming the problem and its fix, before anything is written."""

import json

import pytest

from lora_ft import Config, DataError, cli, data, sources
from lora_ft.modeling import load_tokenizer

NA_LIKE = ["None", "NA", "null", "N/A", "nan", "NaN", "NULL", "#N/A", "<NA>", "n/a", "-nan"]  # pandas' missing marks


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(Config().model)


def write_csv(path, labels, per_class=12, sep=","):
    """per_class distinct texts of each label, under the header text<sep>label."""
    lines = [f"a text about {label} number {i}{sep}{label}" for label in labels for i in range(per_class)]
    path.write_text(f"text{sep}label\n" + "\n".join(lines) + "\n")
    return str(path)


def prepare(tokenizer, dataset, tmp_path, **settings):
    config = Config(smoke=False, dataset=dataset, output_root=str(tmp_path / "out"), **settings)
    return data.prepare(config, tokenizer), config


# ---- case 1: a label pandas would read as missing is a label ----

def test_yes_no_none_labels_are_three_classes(tmp_path, tokenizer):
    splits, config = prepare(tokenizer, write_csv(tmp_path / "answers.csv", ["yes", "no", "None"]), tmp_path)
    assert data.labels_of(splits) == ["None", "no", "yes"]
    report = json.loads((config.paths.data / "report.json").read_text())
    assert report["missing"] == 0 and report["kept"] == 36
    for example in splits["test"]:  # every text kept its own label
        assert f"about {data.labels_of(splits)[example['label']]} number" in example["text"]


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
@pytest.mark.parametrize("word", NA_LIKE)
def test_na_like_label_strings_are_read_as_written(tmp_path, word, suffix, sep):
    path = write_csv(tmp_path / f"labels{suffix}", ["good", word], per_class=3, sep=sep)
    frame, _ = sources.load_frame(Config(dataset=path))
    cleaned, report = data.clean(frame)
    assert report["missing"] == 0 and sorted(cleaned["label"].unique()) == sorted(["good", word])
    assert data.label_names(cleaned, None, None) == sorted(["good", word])


def test_na_like_texts_are_kept_and_an_empty_label_cell_is_still_missing(tmp_path):
    path = tmp_path / "cells.csv"
    path.write_text("text,label\nNA,pos\nnull,neg\nfine,\nok,pos\n")
    cleaned, report = data.clean(sources.load_frame(Config(dataset=str(path)))[0])
    assert report["missing"] == 1 and cleaned["text"].tolist() == ["NA", "null", "ok"]


def test_numeric_labels_stay_class_ids_and_names_stay_names(tmp_path, tokenizer):
    path = tmp_path / "ids.csv"
    path.write_text("text,label\n" + "".join(f"class {y} text {i},{y}\n" for y in range(3) for i in range(12)))
    splits, _ = prepare(tokenizer, str(path), tmp_path)
    assert data.labels_of(splits) == ["0", "1", "2"]
    assert all(example["text"].startswith(f"class {example['label']} ") for example in splits["train"])
    splits, _ = prepare(tokenizer, write_csv(tmp_path / "names.csv", ["nan", "zero", "one"]), tmp_path)
    assert data.labels_of(splits) == ["nan", "one", "zero"]  # "nan" is a name, not a number


# ---- case 3: duplicate header names ----

@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_duplicate_header_names_are_refused_with_their_names(tmp_path, tokenizer, suffix, sep):
    path = tmp_path / f"twice{suffix}"
    path.write_text(sep.join(["text", "label", "text", "id", "id"]) + "\n"
                    + "".join(sep.join([str(i), "pos" if i % 2 else "neg", f"real text {i}", "1", "2"]) + "\n"
                              for i in range(40)))
    with pytest.raises(DataError, match=r"columns \['id', 'text'\] more than once in its header: rename them"):
        prepare(tokenizer, str(path), tmp_path)
    assert not (tmp_path / "out").exists()


# ---- case 4: labels mixing numbers and names ----

def test_labels_mixing_numbers_and_names_are_refused_with_examples_of_each(tmp_path, tokenizer):
    csv = write_csv(tmp_path / "mixed.csv", ["0", "negative", "1", "positive"])
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"text {i}", "label": [0, "negative", 1][i % 3]})
                               for i in range(36)))
    for dataset in (csv, str(jsonl)):
        with pytest.raises(DataError, match=r"labels mix numbers \[.*0.*1.*\] and names \['negative'.*\]: write"):
            prepare(tokenizer, dataset, tmp_path)
    assert not (tmp_path / "out").exists()


def test_na_like_labels_beside_class_ids_are_refused_not_dropped(tmp_path, tokenizer):
    with pytest.raises(DataError, match=r"labels mix numbers \['1', '2'\] and names \['NA'\]"):
        prepare(tokenizer, write_csv(tmp_path / "ids.csv", ["1", "2", "NA"]), tmp_path)


# ---- case 8: swapped columns, a folder without split files, a tiny eval_size ----

def swapped(path, rows=60):
    path.write_text("label,text\n" + "".join(f"a unique text number {i},{['pos', 'neg', 'neu'][i % 3]}\n"
                                             for i in range(rows)))
    return str(path)


def test_swapped_text_and_label_columns_say_so(tmp_path, tokenizer):
    with pytest.raises(DataError, match="label column looks like text: it holds 60 distinct values in 60 rows.*swap"):
        prepare(tokenizer, swapped(tmp_path / "swapped.csv"), tmp_path)


def test_more_labels_than_a_class_could_use_hint_at_a_text_column(tmp_path, tokenizer):
    path = tmp_path / "texts.csv"
    path.write_text("text,label\n" + "".join(f"id {i},a unique sentence number {i}\n" for i in range(30)))
    with pytest.raises(DataError, match=r"30 distinct labels in 30 rows: a text column\?\)$"):
        prepare(tokenizer, str(path), tmp_path)


@pytest.mark.parametrize("offline", [False, True])
def test_a_folder_without_split_files_names_the_files_it_expects(tmp_path, monkeypatch, offline):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    folder = tmp_path / "mine"
    folder.mkdir()
    for contents in ({}, {"notes.md": "not data"}):
        for name, text in contents.items():
            (folder / name).write_text(text)
        with pytest.raises(DataError, match=r"holds no train, validation or test file: name them train.<suffix>, "
                                            r"validation.<suffix> \(or val, dev\) and test.<suffix>") as error:
            sources.load_frame(Config(dataset=str(folder)))
        assert "HF_HUB_OFFLINE" not in str(error.value) and "network" not in str(error.value)


def test_a_folder_with_one_data_file_still_loads_as_the_training_split(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    write_csv(folder / "reviews.csv", ["pos", "neg"], per_class=3)
    frame, _ = sources.load_frame(Config(dataset=str(folder)))
    assert len(frame) == 6 and set(frame["split"]) == {"train"}


@pytest.mark.parametrize("size, fix", [(1, "set eval_size to at least 3"), (4, "set eval_size to at most 3")])
def test_an_eval_size_a_stratified_split_cannot_have_names_eval_size(tmp_path, tokenizer, size, fix):
    with pytest.raises(DataError, match=f"^eval_size of {size} .*: {fix}") as error:
        prepare(tokenizer, write_csv(tmp_path / "small.csv", ["a", "b", "c"], per_class=20), tmp_path, eval_size=size)
    assert "train_size" not in str(error.value) and "should be" not in str(error.value)  # no scikit-learn wording
    assert not (tmp_path / "out").exists()


# ---- through the command line: exit 0 with the right classes, or exit 2, one line, nothing written ----

def test_the_cli_prepares_na_like_labels_and_refuses_bad_files_before_writing(tmp_path, capsys):
    root = tmp_path / "root"
    dataset = write_csv(tmp_path / "answers.csv", ["yes", "no", "None"])
    assert cli.main(["prepare", f"dataset={dataset}", f"output_root={root}"]) == 0
    assert json.loads((root / "data" / "prepared" / "report.json").read_text())["labels"] == ["None", "no", "yes"]
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    (tmp_path / "twice.csv").write_text("text,label,text\n" + "".join(f"{i},x,t {i}\n" for i in range(30)))
    mixed = write_csv(tmp_path / "mixed.csv", ["0", "negative"])
    (tmp_path / "empty").mkdir()
    for words in ([f"dataset={tmp_path / 'twice.csv'}"], [f"dataset={mixed}"], [f"dataset={tmp_path / 'empty'}"],
                  [f"dataset={swapped(tmp_path / 'swapped.csv')}"], [f"dataset={dataset}", "eval_size=1"]):
        capsys.readouterr()
        assert cli.main(["prepare", *words, f"output_root={root}"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
        assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
