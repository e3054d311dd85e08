import json

import numpy as np
import pandas as pd
import pytest

from lora_ft import Config, ConfigError, DataError, data, sources
from lora_ft.modeling import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(Config().model)


def test_cleaning_drops_missing_blank_duplicate_and_conflicting_texts():
    frame = pd.DataFrame({
        "text": ["good  day\r\n", "good day", None, "   ", "bad", "bad", "meh", "fine", "fine"],
        "label": ["pos", "pos", "pos", "neg", "neg", "pos", None, "pos", "pos"],
    })
    cleaned, report = data.clean(frame)
    assert report == {"rows": 9, "missing": 2, "empty": 1, "conflicting_labels": 2, "duplicates": 2, "kept": 2}
    assert sorted(cleaned["text"]) == ["fine", "good day"]


def test_cleaning_everything_away_is_a_clear_error():
    with pytest.raises(DataError, match="no usable examples"):
        data.clean(pd.DataFrame({"text": [None, " "], "label": ["a", "b"]}))


def test_label_names_follow_the_source_or_sorted_values_and_subsets():
    numeric = pd.DataFrame({"label": [10, 2, 2]})
    assert data.label_names(numeric, None, None) == ["2", "10"]  # numeric order, not string order
    assert data.label_names(numeric, {0: "a", 1: "b", 2: "c"}, None) == ["a", "b", "c"]
    strings = pd.DataFrame({"label": ["pos", "neg", "neu"]})
    assert data.label_names(strings, None, ("pos", "neg")) == ["pos", "neg"]
    with pytest.raises(DataError, match=r"labels \['happy'\] do not occur"):
        data.label_names(strings, None, ("happy", "neg"))


def test_default_corpus_loads_with_the_known_counts():
    frame, declared = sources.load_frame(Config(smoke=False))
    assert declared is None and len(frame) == 38_158
    assert frame["label"].value_counts().to_dict() == {"negative": 16_186, "neutral": 15_018, "positive": 6_954}


def test_splits_are_stratified_disjoint_and_reproducible():
    config = Config(smoke=False)
    frame, _ = sources.load_frame(config)
    cleaned, report = data.clean(frame)
    names = data.label_names(cleaned, None, None)
    splits = data.split(cleaned, names, config)
    assert sum(len(s) for s in splits.values()) == report["kept"]
    texts = {name: set(splits[name]["text"]) for name in data.SPLITS}
    assert not (texts["train"] & texts["validation"] or texts["train"] & texts["test"]
                or texts["validation"] & texts["test"])
    shares = {name: np.bincount(splits[name]["label"], minlength=3) / len(splits[name]) for name in data.SPLITS}
    for name in ("validation", "test"):
        assert np.abs(shares[name] - shares["train"]).max() < 0.005
    assert len(splits["test"]) == pytest.approx(0.1 * report["kept"], abs=2)
    again = data.split(cleaned, names, config)
    assert again["test"]["text"] == splits["test"]["text"]


def test_subsamples_keep_class_shares():
    config = Config(smoke=False, train_size=3000, eval_size=500, labels=("negative", "positive"))
    frame, _ = sources.load_frame(config)
    cleaned, _ = data.clean(frame)
    splits = data.split(cleaned, ["negative", "positive"], config)
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (3000, 500, 500)
    assert splits["train"].features["label"].names == ["negative", "positive"]
    full_share = (cleaned["label"] == "positive").sum() / cleaned["label"].isin(["negative", "positive"]).sum()
    assert np.mean(splits["train"]["label"]) == pytest.approx(full_share, abs=0.002)


def write_user_csv(path, rows_per_class=20):
    rng = np.random.default_rng(0)
    labels = ["ham", "spam", "eggs"]
    rows = [{"message": f"{label} message number {i} {rng.integers(1e9)}", "category": label}
            for label in labels for i in range(rows_per_class)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return labels


def test_user_csv_with_other_columns_and_string_labels(tmp_path, tokenizer):
    path = tmp_path / "mine.csv"
    write_user_csv(path)
    config = Config(smoke=False, dataset=str(path), text_column="message", label_column="category",
                    output_root=str(tmp_path / "out"))
    splits = data.prepare(config, tokenizer)
    assert data.labels_of(splits) == ["eggs", "ham", "spam"]
    assert {name: len(s) for name, s in splits.items()} == {"train": 48, "validation": 6, "test": 6}
    for example in splits["test"]:
        assert data.labels_of(splits)[example["label"]] in example["text"]  # every text kept its own label
        assert len(example["input_ids"]) <= config.max_length

    loaded, saved = data.load_prepared(config.paths)
    assert saved.data_settings() == config.data_settings() and loaded["test"]["text"] == splits["test"]["text"]


def test_prepared_data_is_reused_only_when_settings_match(tmp_path, tokenizer):
    path = tmp_path / "mine.csv"
    write_user_csv(path)
    config = Config(smoke=False, dataset=str(path), text_column="message", label_column="category",
                    output_root=str(tmp_path / "out"))
    data.prepare(config, tokenizer)
    report = config.paths.data / "report.json"
    stamp = report.stat().st_mtime_ns
    data.prepare(config, tokenizer)
    assert report.stat().st_mtime_ns == stamp  # reused
    data.prepare(config.replace(dropout=0.2, r=4), tokenizer)
    assert report.stat().st_mtime_ns == stamp  # not a data setting: the splits are reused...
    # ...and the prepared data keeps only what made it: a run setting is that run's alone
    assert json.loads((config.paths.data / "config.json").read_text()) == config.data_settings()
    data.prepare(config.replace(max_length=16), tokenizer)
    assert report.stat().st_mtime_ns != stamp  # a data setting changed: rebuilt


def test_bad_data_is_a_clear_error_and_writes_nothing(tmp_path, tokenizer):
    path = tmp_path / "mine.csv"
    write_user_csv(path, rows_per_class=2)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"no text column.*\['message', 'category'\].*set text_column"):
        data.prepare(Config(smoke=False, dataset=str(path), label_column="category", output_root=str(out)), tokenizer)
    with pytest.raises(DataError, match="fewer than 3 training examples"):
        data.prepare(Config(smoke=False, dataset=str(path), text_column="message", label_column="category",
                            output_root=str(out)), tokenizer)
    with pytest.raises(DataError, match="does not exist"):
        data.prepare(Config(smoke=False, dataset=str(tmp_path / "nope.csv"), output_root=str(out)), tokenizer)
    assert not out.exists()
    with pytest.raises(DataError, match="run notebooks/01"):
        data.load_prepared(Config(smoke=False, output_root=str(out)).paths)


def test_wrong_encoding_is_a_clear_error(tmp_path, tokenizer):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9 au lait,pos\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid utf-8.*set encoding"):
        sources.load_frame(Config(smoke=False, dataset=str(path)))
    frame, _ = sources.load_frame(Config(smoke=False, dataset=str(path), encoding="latin-1"))
    assert frame["text"][0] == "café au lait"


def test_max_length_beyond_the_models_limit_is_refused_before_anything_is_written(tmp_path, tokenizer):
    config = Config(smoke=False, max_length=4096, output_root=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="max_length=4096 is beyond the 512 tokens.*at most 512"):
        data.prepare(config, tokenizer)
    assert not (tmp_path / "out").exists()


def write_csv(path, rows):
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return str(path)


def test_single_class_is_refused(tmp_path, tokenizer):
    dataset = write_csv(tmp_path / "one.csv", [(f"text number {i}", "positive") for i in range(30)])
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"a single class, \['positive'\]: a classifier needs at least two"):
        data.prepare(Config(smoke=False, dataset=dataset, output_root=str(out)), tokenizer)
    assert not out.exists()


def test_label_spellings_are_stripped(tmp_path, tokenizer, caplog):
    spellings = {"positive": ["positive", "positive ", " positive"],
                 "negative": ["negative", "\tnegative", "negative "],
                 "Negative": ["Negative"]}  # whitespace is never meant; case may be, so it is kept and reported
    rows = [(f"{name} text {i}", spelling) for name, forms in spellings.items() for i in range(12)
            for spelling in [forms[i % len(forms)]]]
    config = Config(smoke=False, dataset=write_csv(tmp_path / "spelled.csv", rows), output_root=str(tmp_path / "out"))
    with caplog.at_level("WARNING", logger="lora_ft"):
        splits = data.prepare(config, tokenizer)
    assert data.labels_of(splits) == ["Negative", "negative", "positive"]
    assert "differ only in case" in caplog.text and "['Negative', 'negative']" in caplog.text
    report = (config.paths.data / "report.json").read_text()
    assert '"labels_differing_only_in_case"' in report


def test_text_column_equal_to_label_column_is_refused_in_one_short_line(tmp_path):
    rows = [("a much longer text that would be listed in full " * 4 + str(i), "x") for i in range(200)]
    config = Config(smoke=False, dataset=write_csv(tmp_path / "same.csv", rows), text_column="text",
                    label_column="text")
    with pytest.raises(DataError, match="text_column and label_column are both 'text'") as error:
        sources.load_frame(config)
    assert len(str(error.value)) < 300


def test_messages_cap_the_values_they_list(tmp_path, tokenizer):
    rows = [(f"text {i}", f"class {i}") for i in range(40)]  # forty classes of one example each
    config = Config(smoke=False, dataset=write_csv(tmp_path / "many.csv", rows), output_root=str(tmp_path / "out"))
    with pytest.raises(DataError, match=r"fewer than 3 training examples") as error:
        data.prepare(config, tokenizer)
    assert "... 35 more" in str(error.value) and len(str(error.value)) < 300


def test_tsv_named_csv_suggests_the_delimiter(tmp_path):
    path = tmp_path / "tabs.csv"
    path.write_text("text\tlabel\ngreat flight\tpositive\nlost my bag\tnegative\n")
    with pytest.raises(DataError, match=r"set delimiter='\\t'"):
        sources.load_frame(Config(smoke=False, dataset=str(path)))
    frame, _ = sources.load_frame(Config(smoke=False, dataset=str(path), delimiter="\t"))
    assert list(frame["label"]) == ["positive", "negative"]
