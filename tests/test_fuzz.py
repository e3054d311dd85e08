"""Malformed files and settings, generated: every outcome is success or the package's own one-line error, and a
failure leaves an existing output root byte for byte as it was."""

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lora_ft import Config, DataError, LoraFtError, cli, data, sources
from lora_ft.modeling import load_tokenizer


def fast(examples: int):
    """A fixed set of generated examples (derandomized: the same in every run), no per-example deadline."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))

junk = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(["", " ", "NaN", "null", "1", "-1", "2.5", '"', ",", ";", "\t", "|", "\n"]),
)
GOOD_LABELS = ["pos", "neg", "neu", " pos", "neg "]  # surrounding whitespace is stripped
BAD_LABELS = ["POS", "", "1", "0", "-1", "2.5", "NaN"]


def rows(label_pool, with_junk: bool):
    """Rows of a file: text and label; with_junk mixes in rows with a cell too many or too few, or junk cells."""
    good = st.builds(lambda text, label: [text, label], st.from_regex(r"[a-z ]{1,20}", fullmatch=True),
                     st.sampled_from(label_pool))
    return st.lists(st.one_of(good, st.lists(junk, max_size=3)) if with_junk else good, min_size=24, max_size=60)


headers = st.sampled_from([["text", "label"]] * 4 + [["sentence", "sentiment"], ["a", "b"], ["text", "text"],
                                                      ["text"], ["label", "text", "extra"], [],
                                                      ["text", "label", "text"], ["label", "text", "label"]])


@st.composite
def data_files(draw):
    """(suffix, bytes) of a small text-classification file, often malformed."""
    suffix = draw(st.sampled_from([".csv", ".csv", ".tsv", ".txt", ".json", ".jsonl"]))
    header = draw(headers)
    pool = GOOD_LABELS + (BAD_LABELS if not draw(st.integers(0, 3)) else [])
    drawn = draw(rows(pool, with_junk=not draw(st.integers(0, 3))))
    rows_ = [[f"{r[0]} {i}", *r[1:]] if r else r for i, r in enumerate(drawn)]  # distinct texts
    if suffix in (".json", ".jsonl"):
        records = [dict(zip(header or ["text", "label"], r)) for r in rows_]
        if not draw(st.integers(0, 4)):
            records = draw(st.sampled_from([{"text": "a", "label": 1}, [1, 2], "text", None]))
        text = ("\n".join(json.dumps(r) for r in records) if suffix == ".jsonl" and isinstance(records, list)
                else json.dumps(records))
    else:
        separator = {".csv": ",", ".tsv": "\t"}.get(suffix, ";")
        if not draw(st.integers(0, 4)):
            separator = draw(st.sampled_from([",", "\t", ";", "|"]))
        text = "\n".join(([separator.join(header)] if header else []) + [separator.join(r) for r in rows_])
    raw = text.encode(draw(st.sampled_from(["utf-8"] * 4 + ["latin-1", "utf-16"])), errors="replace")
    if not draw(st.integers(0, 4)):  # cut off mid-file
        raw = raw[:draw(st.integers(0, len(raw)))]
    return suffix, raw


SETTINGS = {
    "text_column": st.sampled_from(["text", "label", "sentence", "nope"]),
    "label_column": st.sampled_from(["label", "text", "sentiment", "nope"]),
    "delimiter": st.sampled_from([",", "\t", ";", "|", "x"]),
    "encoding": st.sampled_from(["utf-8", "latin-1", "utf-16", "no-such-codec"]),
    "labels": st.sampled_from([("pos", "neg"), ("neg", "neu"), ("a", "b"), ("pos", "pos")]),
    "train_size": st.sampled_from([5, 20, 40, 0]),
    "eval_size": st.sampled_from([3, 10]),
    "max_length": st.sampled_from([8, 32, 64, 513]),
}
# none (half the files) or one setting, so that well-formed files often load
data_settings = st.one_of(st.just({}), st.sampled_from(sorted(SETTINGS)).flatmap(
    lambda name: SETTINGS[name].map(lambda value: {name: value})))


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(Config().model)


@pytest.fixture(scope="module")
def prepared_root(tmp_path_factory, tokenizer):
    """An output root holding prepared data, and every file in it with its bytes."""
    folder = tmp_path_factory.mktemp("fuzz")
    source = folder / "good.csv"
    source.write_text("text,label\n" + "".join(f"example number {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40)))
    root = folder / "root"
    data.prepare(Config(smoke=False, dataset=str(source), output_root=str(root)), tokenizer)
    return root, snapshot(root)


class Snapshot(dict):
    """Every file under a folder with its bytes (shown short in hypothesis's reports)."""

    def __repr__(self):
        return f"<{len(self)} files>"


def snapshot(root) -> Snapshot:
    return Snapshot({str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})


def assert_one_line(error: LoraFtError) -> None:
    message = str(error)
    assert message and "\n" not in message and len(message) < 600, message


@fast(100)
@given(file=data_files(), changes=data_settings)
def test_malformed_data_files_load_or_fail_with_one_line(prepared_root, tokenizer, tmp_path_factory, file, changes):
    root, before = prepared_root
    suffix, raw = file
    path = tmp_path_factory.mktemp("file") / f"data{suffix}"
    path.write_bytes(raw)
    try:
        config = Config(smoke=False, dataset=str(path), output_root=str(root), **changes)
        splits = data.prepare(config, tokenizer)
    except LoraFtError as error:
        assert_one_line(error)
        assert snapshot(root) == before
        return
    assert len(data.labels_of(splits)) >= 2 and all(len(splits[name]) > 0 for name in data.SPLITS)
    shutil.rmtree(root)  # put the root back for the next example
    for name, content in before.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)


NA_LIKE = ["None", "NA", "null", "N/A", "nan", "NaN", "#N/A", "<NA>", "n/a"]  # pandas' default missing marks
NAMES = ["yes", "no", "pos", "neg"]
IDS = ["0", "1", "2", "10"]


@fast(60)
@given(labels=st.lists(st.sampled_from(NA_LIKE + NAMES + IDS), min_size=2, max_size=5, unique=True),
       sep=st.sampled_from([",", "\t"]))
def test_label_strings_are_read_as_written_and_ids_never_mix_with_names(tmp_path_factory, labels, sep):
    """No label string is read as missing; labels all ids or all names load as those classes; a mix is refused."""
    path = tmp_path_factory.mktemp("labels") / ("data.csv" if sep == "," else "data.tsv")
    path.write_text(f"text{sep}label\n" + "".join(f"text {i} of {label}{sep}{label}\n"
                                                  for label in labels for i in range(3)))
    cleaned, report = data.clean(sources.load_frame(Config(dataset=str(path)))[0])
    assert report["missing"] == 0 and report["kept"] == 3 * len(labels)
    ids = [label for label in labels if label in IDS]
    if ids and len(ids) < len(labels):
        with pytest.raises(DataError, match="labels mix numbers .* and names"):
            data.label_names(cleaned, None, None)
    else:
        expected = sorted(labels, key=int) if ids else sorted(labels)
        assert data.label_names(cleaned, None, None) == expected


values = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),
                   st.sampled_from(["None", "null", "true", "False", "0", "-1", "1e-3", "nan", "inf", "a,b", ",", "",
                                    "1" * 400, "0.5", "2"]))
words = st.lists(st.one_of(
    st.builds(lambda name, value: f"{name}={value}", st.sampled_from([*cli.FIELDS, "rank", "", " r"]), values),
    st.text(max_size=8)), max_size=5)


@fast(200)
@given(words=words)
def test_malformed_settings_parse_or_fail_with_one_line(words):
    try:
        Config(**cli.parse_overrides(words))
    except LoraFtError as error:
        assert_one_line(error)


@fast(150)
@given(text=st.one_of(st.text(max_size=60), st.sampled_from(["r: [1, 2]", "1: 2", "r: 2024-01-01", "labels: {a: 1}",
                                                            "- r", "r: .inf", "{", "r: !!binary aGVsbG8=", "~"])),
       suffix=st.sampled_from([".yaml", ".json"]))
def test_malformed_config_files_read_or_fail_with_one_line(tmp_path_factory, text, suffix):
    path = tmp_path_factory.mktemp("settings") / f"run{suffix}"
    path.write_text(text, encoding="utf-8")
    try:
        Config(**cli.read_config_file(path))
    except LoraFtError as error:
        assert_one_line(error)


NUMERIC = ("r", "alpha", "learning_rate", "epochs", "batch_size", "max_length", "seed", "split_seed", "dropout",
           "warmup", "weight_decay", "evaluations_per_epoch", "validation_fraction", "base_dropout")
extreme = st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf"), -1, 0, -1e-9, 1e20, 10**20, 2**31,
                                     True]), st.floats(allow_nan=True, allow_infinity=True), st.integers())


@fast(300)
@given(name=st.sampled_from(NUMERIC), value=extreme)
def test_numeric_settings_are_finite_and_bounded_or_refused_with_one_line(name, value):
    """nan, inf, negative and huge values: refused when the Config is built, never saved or trained with."""
    try:
        config = Config(**{name: value})
    except LoraFtError as error:
        assert str(error).count(":") >= 1 and "\n" not in str(error)
        return
    made = getattr(config, name)
    assert isinstance(made, (int, float)) and made == made and abs(made) != float("inf")
    assert config.r <= 4096 and config.max_length >= 8 and 0 <= config.seed < 2**32 and config.epochs <= 1000
