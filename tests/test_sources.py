"""Every kind of source through the one loading path: hub presets (offline, from folders laid out like hub
repositories), local formats and split layouts, and the offline copies of the public benchmarks."""

import time

import pandas as pd
import pytest
from datasets import ClassLabel, Dataset, Features, Value
from datasets import load_dataset as real_load_dataset

from lora_ft import Config, ConfigError, DataError, data, hub, sources
from lora_ft.config import ROOT
from lora_ft.modeling import load_model, load_tokenizer

SHARED = ROOT.parent / "shared" / "datasets"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(),
    reason=f"the offline benchmark copies are not at {SHARED} (only the development setup has them)")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(Config().model)


def prepared(tokenizer, tmp_path, **settings):
    config = Config(smoke=False, output_root=str(tmp_path / "out"), **settings)
    splits = data.prepare(config, tokenizer)
    report = (config.paths.data / "report.json").read_text()
    return splits, report


# ---- hub presets, served offline from local folders laid out like the hub repositories ----

def hub_split(columns: dict, label_feature, n: int, values: list, text_column="text", first=0) -> Dataset:
    """n rows per label value, numbered from first; columns maps extra column names to their Value features."""
    rows = {name: [] for name in [text_column, *columns, "label_col"]}
    for value in values:
        for i in range(first, first + n):
            rows[text_column].append(f"{text_column} {value} example {i}")
            for name in columns:
                rows[name].append(f"{name} {value} {i}")
            rows["label_col"].append(value)
    features = Features({text_column: Value("string"), **columns, "label_col": label_feature})
    return Dataset.from_dict(rows, features=features)


def hub_layout(folder, splits: dict[str, Dataset], label: str):
    """The files `push_to_hub` writes: data/<split>-00000-of-00001.parquet, features kept in the metadata."""
    for name, split in splits.items():
        split.rename_column("label_col", label).to_parquet(str(folder / "data" / f"{name}-00000-of-00001.parquet"))
    return folder


def hub_copies(root):
    binary = ClassLabel(names=["neg", "pos"])
    polarity = ClassLabel(names=["negative", "positive"])
    emotions = ClassLabel(names=["sadness", "joy", "love", "anger", "fear", "surprise"])
    return {
        "stanfordnlp/imdb": hub_layout(root / "imdb", {
            "train": hub_split({}, binary, 10, [0, 1], first=100), "test": hub_split({}, binary, 4, [0, 1]),
            "unsupervised": hub_split({}, binary, 6, [-1])}, "label"),
        "stanfordnlp/sentiment140": hub_layout(root / "s140", {
            "train": hub_split({"user": Value("string")}, Value("int32"), 10, [0, 4], first=100),
            "test": hub_split({"user": Value("string")}, Value("int32"), 4, [0, 2, 4])}, "sentiment"),
        "fancyzhx/amazon_polarity": hub_layout(root / "amazon", {
            "train": hub_split({"content": Value("string")}, polarity, 10, [0, 1], "title", 100),
            "test": hub_split({"content": Value("string")}, polarity, 4, [0, 1], "title")}, "label"),
        "dair-ai/emotion": hub_layout(root / "emotion", {
            name: hub_split({}, emotions, n, list(range(6)), first=100 * i)
            for i, (name, n) in enumerate((("train", 10), ("validation", 3), ("test", 4)))},
            "label"),
        "stanfordnlp/sst2": hub_layout(root / "sst2", {
            "train": hub_split({"idx": Value("string")}, polarity, 10, [0, 1], "sentence", 100),
            "validation": hub_split({"idx": Value("string")}, polarity, 4, [0, 1], "sentence"),
            "test": hub_split({"idx": Value("string")}, polarity, 3, [-1], "sentence")}, "label"),
    }


PRESET_EXPECTED = {  # class names in id order, split sizes, one test text
    "stanfordnlp/imdb": (["neg", "pos"], {"test": 8}, "text 1 example 0"),
    "stanfordnlp/sentiment140": (["negative", "positive"], {"test": 8}, "text 4 example 0"),  # neutral left out
    "fancyzhx/amazon_polarity": (["negative", "positive"], {"test": 8}, "title 1 example 0. content 1 0"),
    "dair-ai/emotion": (["sadness", "joy", "love", "anger", "fear", "surprise"], {"validation": 18, "test": 24},
                        "text 5 example 203"),
    "stanfordnlp/sst2": (["negative", "positive"], {"test": 8}, "sentence 1 example 2"),  # test = hub validation
}


@pytest.fixture(scope="module")
def fake_hub(tmp_path_factory):
    return hub_copies(tmp_path_factory.mktemp("hub"))


@pytest.mark.parametrize("name", sorted(PRESET_EXPECTED))
def test_hub_presets_know_columns_labels_and_splits(name, fake_hub, monkeypatch, tmp_path, tokenizer):
    asked = []
    monkeypatch.setattr(hub, "reachable", lambda: True)
    monkeypatch.setattr(sources, "load_dataset",
                        lambda repo: asked.append(repo) or real_load_dataset(str(fake_hub[repo])))
    labels, sizes, text = PRESET_EXPECTED[name]
    splits, _ = prepared(tokenizer, tmp_path, dataset=name.split("/")[-1] if name.endswith("imdb") else name)
    assert asked == [name]  # the short name "imdb" resolves to the preset's repository
    assert data.labels_of(splits) == labels
    assert {s: len(splits[s]) for s in sizes} == sizes
    assert text in splits["test"]["text"]
    stored = {(row["text"].split()[1], labels[row["label"]]) for row in splits["test"]}  # texts carry the stored value
    expected = {"0": "negative", "4": "positive"} if name.endswith("sentiment140") else dict(enumerate(labels))
    assert stored == {(str(value), label) for value, label in expected.items()}


def test_a_local_folder_laid_out_like_a_hub_repository_takes_the_hub_path(fake_hub, tmp_path, tokenizer):
    splits, report = prepared(tokenizer, tmp_path, dataset=str(fake_hub["dair-ai/emotion"]))
    assert data.labels_of(splits)[:2] == ["sadness", "joy"]  # names from the parquet's ClassLabel feature
    assert (len(splits["validation"]), len(splits["test"])) == (18, 24)


def test_label_ids_outside_the_declared_classes_are_a_clear_error():
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 7]})
    with pytest.raises(DataError, match=r"label values \[7\] are outside the declared classes.*labels="):
        data.to_names(frame, {0: "neg", 1: "pos"})
    assert data.to_names(frame.iloc[:2], {0: "neg", 1: "pos"}).tolist() == ["neg", "pos"]


def test_an_unreachable_hub_fails_fast_for_data_and_models_and_says_how_to_go_local(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")
    start = time.perf_counter()
    with pytest.raises(DataError, match="Hub .* cannot be reached.*HF_HUB_OFFLINE=1.*path of a local copy"):
        sources.load_frame(Config(dataset="stanfordnlp/imdb"))
    with pytest.raises(ConfigError, match="model 'nobody/no-model' is not a local .* cannot be reached"):
        load_model("nobody/no-model", ["a", "b"], 0)
    assert time.perf_counter() - start < 10  # the libraries' own retries take 25 s (data) and 100 s (model)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # offline mode: the cache, else a clear error
    with pytest.raises(DataError, match="not in the local cache.*local file or folder"):
        sources.load_frame(Config(dataset="nobody/no-such-data"))
    with pytest.raises(ConfigError, match="cannot load the tokenizer of model 'nobody/no-model'.*local folder"):
        load_tokenizer("nobody/no-model")


# ---- local files: every format, columns named or detected, split layouts ----

ROWS = [("great; really great", "pos"), ("awful, truly", "neg"), ("fine | ok", "pos"), ("bad\tday", "neg")] * 3


def write_formats(folder) -> dict[str, str]:
    frame = pd.DataFrame(ROWS, columns=["review", "class"])
    frame.to_csv(folder / "a.csv", index=False)
    frame.to_csv(folder / "a.tsv", sep="\t", index=False)
    frame.to_json(folder / "a.json", orient="records")
    frame.to_json(folder / "a.jsonl", orient="records", lines=True)
    frame.to_parquet(folder / "a.parquet")
    (folder / "a.txt").write_text("review;class\n" + "".join(f"{t.replace(chr(9), ' ')};{y}\n" for t, y in ROWS))
    return {suffix: str(folder / f"a.{suffix}") for suffix in ("csv", "tsv", "json", "jsonl", "parquet", "txt")}


@pytest.mark.parametrize("suffix", ["csv", "tsv", "json", "jsonl", "parquet", "txt"])
def test_each_local_format_loads_the_same_examples(suffix, tmp_path):
    path = write_formats(tmp_path)[suffix]
    frame, declared = sources.load_frame(Config(dataset=path))  # review / stars are detected
    assert declared is None and len(frame) == len(ROWS)
    expected = [t.replace("\t", " ") if suffix == "txt" else t for t, _ in ROWS]
    assert frame["text"].tolist() == expected and frame["label"].tolist() == [y for _, y in ROWS]


def test_delimited_text_splits_at_the_last_separator_and_detects_headers(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("so; many; semicolons;joy\nplain;anger\nagain;joy\n")
    frame, _ = sources.load_frame(Config(dataset=str(path)))
    assert frame.to_dict("list") == {"text": ["so; many; semicolons", "plain", "again"],
                                     "label": ["joy", "anger", "joy"]}
    path.write_text("a|x\nb|y\n")
    frame, _ = sources.load_frame(Config(dataset=str(path), delimiter="|"))
    assert frame["label"].tolist() == ["x", "y"]
    path.write_text("no separator here\nnor here\n")
    with pytest.raises(DataError, match="no delimiter.*set delimiter"):
        sources.load_frame(Config(dataset=str(path)))
    path.write_text("one;a\ntwo\n")
    with pytest.raises(DataError, match=r"line\(s\) \[2\] have no ';'"):
        sources.load_frame(Config(dataset=str(path), delimiter=";"))


def test_a_folder_of_split_files_keeps_its_splits(tmp_path, tokenizer):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, n in (("train", 30), ("dev", 6), ("test", 8)):
        pd.DataFrame({"body": [f"{name} {y} {i}" for y in ("up", "down") for i in range(n // 2)],
                      "verdict": [y for y in ("up", "down") for _ in range(n // 2)]}
                     ).to_csv(folder / f"{name}.csv", index=False)
    (folder / "notes.md").write_text("not a split")
    splits, _ = prepared(tokenizer, tmp_path, dataset=str(folder), text_column="body", label_column="verdict")
    assert {s: len(splits[s]) for s in data.SPLITS} == {"train": 30, "validation": 6, "test": 8}
    assert all(t.startswith("test") for t in splits["test"]["text"])
    (folder / "dev.csv").unlink()  # train + test only: validation is carved from train, stratified
    splits, _ = prepared(tokenizer, tmp_path, dataset=str(folder), text_column="body", label_column="verdict",
                         validation_fraction=0.2)
    assert {s: len(splits[s]) for s in data.SPLITS} == {"train": 24, "validation": 6, "test": 8}
    assert all(t.startswith("train") for t in splits["validation"]["text"])


def test_training_texts_that_leak_into_held_out_splits_are_dropped():
    frame = pd.DataFrame({"text": ["a", "b", "c", "c", "d"], "label": ["x", "y", "x", "x", "y"],
                          "split": ["train", "train", "train", "test", "test"]})
    cleaned, report = data.clean(frame)
    assert report["in_held_out_splits"] == 1 and report["kept"] == 4
    assert cleaned[cleaned["split"] == "train"]["text"].tolist() == ["a", "b"]


# ---- the offline copies of the public benchmarks (../shared/datasets) ----

@needs_shared
def test_emotion_loads_with_its_published_split_sizes_and_class_counts():
    frame, _ = sources.load_frame(Config(dataset=str(SHARED / "emotion")))
    assert frame["split"].value_counts().to_dict() == {"train": 16_000, "validation": 2_000, "test": 2_000}
    train = frame[frame["split"] == "train"]["label"].value_counts().to_dict()
    assert train == {"joy": 5_362, "sadness": 4_666, "anger": 2_159, "fear": 1_937, "love": 1_304, "surprise": 572}


@needs_shared
def test_sst2_evaluates_on_its_dev_split():
    config = Config(smoke=False, dataset=str(SHARED / "sst2"))
    frame, _ = sources.load_frame(config)
    assert frame["split"].value_counts().to_dict() == {"train": 67_349, "validation": 872}
    cleaned, _ = data.clean(frame)
    cleaned = cleaned.assign(label=data.to_names(cleaned, None))
    splits = data.split(cleaned, data.label_names(cleaned, None, None), config)
    assert splits["test"].features["label"].names == ["0", "1"]
    assert len(splits["test"]) == 872 and sum(splits["test"]["label"]) == 444  # dev as published: 428 / 444


@needs_shared
def test_imdb_samples_load_balanced_without_html_breaks():
    frame, _ = sources.load_frame(Config(dataset=str(SHARED / "imdb")))
    assert frame.groupby("split")["label"].value_counts().to_dict() == {
        ("test", 0): 1_000, ("test", 1): 1_000, ("train", 0): 1_000, ("train", 1): 1_000}
    cleaned, _ = data.clean(frame)
    assert not cleaned["text"].str.contains("<br").any()


@needs_shared
def test_sentiment140_test_set_loads_as_latin1_with_three_polarities():
    path = SHARED / "sentiment140" / "testdata.manual.2009.06.14.csv"
    frame, _ = sources.load_frame(Config(dataset=str(path), encoding="latin-1"))  # polarity is detected
    assert len(frame) == 498 and frame["label"].value_counts().to_dict() == {4: 182, 0: 177, 2: 139}
    cleaned, _ = data.clean(frame)
    assert data.label_names(cleaned, None, ("0", "4")) == ["0", "4"]


def test_a_users_csv_with_its_own_column_names_and_string_labels_trains_end_to_end(tmp_path, capsys):
    from lora_ft import cli, results

    path = tmp_path / "tickets.csv"
    words = {"billing": "invoice charge refund", "outage": "down offline error", "praise": "thanks great love"}
    pd.DataFrame([{"body": f"{w} ticket {i}", "team": team} for team, w in words.items() for i in range(40)]).to_csv(
        path, index=False)
    root = tmp_path / "out"
    settings = [f"dataset={path}", "text_column=body", "label_column=team", f"output_root={root}", "epochs=1"]
    assert cli.main(["prepare", *settings]) == 0
    assert cli.main(["train", f"output_root={root}"]) == 0
    record = results.load_all(root / "results")["lora"]
    assert record["labels"] == ["billing", "outage", "praise"] and record["dataset"] == str(path)
    capsys.readouterr()
    assert cli.main(["predict", f"output_root={root}", "please refund this charge"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in words
