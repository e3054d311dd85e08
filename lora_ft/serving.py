"""Serve a trained adapter merged into its base: classify texts, classify or score a file, export the merged model."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from . import card, data, results, training
from .adapters import load_adapter
from .config import Config
from .errors import ConfigError, DataError, listed
from .io import atomic_file, check_writable, replace_dir_atomic
from .measure import folder_mb
from .modeling import count_params, limit_tokenizer, load_tokenizer, quiet_transformers
from .multitask import Tasks
from .provenance import saved_adapter
from .run import record as build_record
from .sources import LABEL_COLUMNS, TEXT_COLUMNS

INPUTS = (".csv", ".tsv", ".jsonl", ".txt")
OUTPUTS = (".csv", ".jsonl")
CHUNK_ROWS = 2048  # rows read, classified and written at a time: memory does not grow with the file
SEPARATORS = {"\t": "$'\\t' (a tab), or name the file .tsv", ";": "';'", "|": "'|'"}  # a header holding one: a hint


def predict(config: Config, texts, adapter: Path | str | None = None) -> list[tuple[str, float]]:
    """(label, probability) for each text from a saved adapter (default: config's), served by serving_model."""
    texts = _checked_texts(texts)
    model, tokenizer, trained, labels = serving_model(config, adapter)
    probs = probabilities(model, tokenizer, trained, texts, config.eval_batch_size)
    return [(labels[i], float(p[i])) for p, i in zip(probs, probs.argmax(-1))]


def predict_text(config: Config, texts, adapters: dict[str, Path | str], as_json: bool = False) -> str:
    """What predict prints: a line per text, label, probability and text; with several task adapters (one base,
    multitask.Tasks) task=label probability per task; as_json: [{text, label, score}] ({text, task: {label, score}}
    for several). {"": folder} or {} means one adapter (default: config's)."""
    if len(adapters) > 1:
        texts = _checked_texts(texts)
        tasks = Tasks(adapters, config.precision)
        probs = {name: tasks.probabilities(texts, name, config.eval_batch_size) for name in tasks.labels}
        rows = [{name: (tasks.labels[name][int(p[i].argmax())], float(p[i].max())) for name, p in probs.items()}
                for i in range(len(texts))]
    else:
        rows = [{"": answer} for answer in predict(config, texts, next(iter(adapters.values()), None))]
    if as_json:
        answers = ({name: {"label": label, "score": round(score, 4)} for name, (label, score) in row.items()}
                   for row in rows)
        return json.dumps([{"text": text, **answer.get("", answer)} for text, answer in zip(texts, answers)],
                          indent=2, ensure_ascii=False)
    lines = ("\t".join(f"{name}={label} {score:.4f}" if len(row) > 1 else f"{label}\t{score:.4f}"
                       for name, (label, score) in row.items()) for row in rows)
    return "\n".join(f"{line}\t{text}" for line, text in zip(lines, texts))


def _checked_texts(texts) -> list[str]:
    texts = list(texts)
    if not texts:
        raise DataError("no texts to classify: give them as arguments, or in a file with one text per line")
    blank = [i + 1 for i, text in enumerate(texts) if not str(text).strip()]
    if blank:
        raise DataError(f"text(s) number {listed(blank)} are blank: give texts with words in them")
    return texts


def serving_model(config: Config, adapter: Path | str | None = None):
    """(model, tokenizer, its settings, labels) from a saved adapter (default: config's), merged into the base."""
    folder = Path(adapter) if adapter is not None else config.paths.adapter
    trained, labels = saved_adapter(folder)
    tokenizer = load_tokenizer(str(folder), trust_remote_code=trained.trust_remote_code)
    model = load_adapter(folder, trained, labels, merge=True)
    # bf16 unless fp32/fp16 is asked: ~3x unmerged fp32's examples/s, same predictions (benchmarks/throughput.py)
    bf16 = config.precision in ("auto", "bf16") and training.bf16_native()
    if bf16 and not trained.quantize_4bit:  # a 4-bit base keeps its own compute dtype
        model = model.to(torch.bfloat16)
    return model, tokenizer, trained, labels


def probabilities(model, tokenizer, trained: Config, texts: list[str], batch_size: int) -> np.ndarray:
    """Class probabilities of texts (rows) under the tokenization the model was trained with."""
    inputs = data.tokenize(Dataset.from_dict({"text": texts}), tokenizer, trained.max_length, trained.truncation)
    logits = training.predict_logits(model, tokenizer, inputs, batch_size)
    return torch.from_numpy(logits).float().softmax(-1).numpy()


def predict_file(config: Config, source: Path, target: Path, adapter: Path | str | None = None,
                 text_column: str | None = None, delimiter: str | None = None, encoding: str | None = None,
                 chunk_rows: int = CHUNK_ROWS, progress: bool = True, log=print) -> dict:
    """Write target (csv or jsonl): every row of source, in order, with its predicted label and prob_<class> added
    (empty for a row without text); a file with the adapter's label column gets "predicted" instead and is scored into
    results/scored/. Every check precedes any write. Returns {"rows", "blank", "output"} (+ "record", "metrics")."""
    source, target = _checked_files(source, target)
    folder = Path(adapter) if adapter is not None else config.paths.adapter
    trained, labels = saved_adapter(folder, output_root=config.output_root, eval_batch_size=config.eval_batch_size)
    chunks, columns, text = _open(source, chunk_rows, delimiter, encoding, text_column)
    label = next((c for c in (trained.label_column, *LABEL_COLUMNS) if c in columns and c != text), None)
    added = ["predicted" if label else "label"] + [f"prob_{name}" for name in labels]
    clash = [c for c in added if c in columns]
    if clash:
        raise DataError(f"{source.name} already has column(s) {clash}, which the predictions add: "
                        "rename them in the input")
    if label is not None:  # every label of the file checked before the first row is written
        _check_labels(_chunks(source, chunk_rows, delimiter, encoding), text, label, labels, source)
    model, tokenizer, _, _ = serving_model(config, folder)

    def classify(texts: list[str]) -> pd.DataFrame:
        probs = probabilities(model, tokenizer, trained, texts, config.eval_batch_size)
        predicted = [labels[i] for i in probs.argmax(-1)]
        return pd.DataFrame({added[0]: predicted, **dict(zip(added[1:], probs.round(6).T))})

    rows, blank, pairs = _stream(source, chunks, columns, text, added, classify, target, progress, label)
    references, predictions = ([labels.index(name) for name in names] for names in zip(*pairs)) if pairs else ([], [])
    summary = {"rows": rows, "blank": blank, "output": str(target)}
    log(f"{rows:,} rows classified -> {target}")
    if blank:
        log(f"warning: {blank:,} rows have no text; their {added[0]} and probabilities are empty")
    if label is not None:
        record = _scored_record(trained, folder, labels, source, references, predictions, model)
        path = results.write(record, config.paths.results / "scored")
        metrics = record["metrics"]
        unlabelled = rows - blank - len(references)
        log(f"{record['run']}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['f1_macro']:.4f} on "
            f"{len(references):,} labelled rows of {source.name} -> {path}"
            + (f" ({unlabelled:,} rows without a label not scored)" if unlabelled else ""))
        summary.update(record=str(path), metrics=metrics)
    return summary


def predict_file_tasks(config: Config, source: Path, target: Path, adapters: dict[str, Path | str],
                       text_column: str | None = None, delimiter: str | None = None, encoding: str | None = None,
                       chunk_rows: int = CHUNK_ROWS, progress: bool = True, log=print) -> dict:
    """predict_file with several task adapters on one base model (multitask.Tasks) in one pass over source: every row
    gets <task>_label and <task>_prob_<class> for each task; nothing is scored. Returns {"rows", "blank", "output"}."""
    source, target = _checked_files(source, target)
    tasks = Tasks(adapters, config.precision)  # every adapter checked, and all on one base, before any row is read
    chunks, columns, text = _open(source, chunk_rows, delimiter, encoding, text_column)
    added = [column for name, labels in tasks.labels.items()
             for column in (f"{name}_label", *(f"{name}_prob_{label}" for label in labels))]
    clash = [c for c in added if c in columns]
    if clash:
        raise DataError(f"{source.name} already has column(s) {clash}, which the predictions add: "
                        "rename them in the input, or name the tasks otherwise (--adapter NAME=DIR)")

    def classify(texts: list[str]) -> pd.DataFrame:
        frame = {}
        for name, labels in tasks.labels.items():
            probs = tasks.probabilities(texts, name, config.eval_batch_size)
            frame[f"{name}_label"] = [labels[i] for i in probs.argmax(-1)]
            frame.update({f"{name}_prob_{label}": column for label, column in zip(labels, probs.round(6).T)})
        return pd.DataFrame(frame)

    rows, blank, _ = _stream(source, chunks, columns, text, added, classify, target, progress)
    log(f"{rows:,} rows classified for {len(tasks.labels)} tasks ({listed(list(tasks.labels))}) -> {target}")
    if blank:
        log(f"warning: {blank:,} rows have no text; their predictions are empty")
    return {"rows": rows, "blank": blank, "output": str(target)}


def _open(source: Path, chunk_rows: int, delimiter: str | None, encoding: str | None, text_column: str | None):
    """(its chunks, the first's columns, the text column) of a file to classify."""
    chunks = _chunks(source, chunk_rows, delimiter, encoding)
    first = next(chunks, None)
    if first is None or first.empty:
        raise DataError(f"{source.name} has no rows: give a file with at least one text to classify")
    columns = list(first.columns)
    text = "text" if source.suffix.lower() == ".txt" else _text_column(columns, text_column, source, delimiter)
    return itertools.chain([first], chunks), columns, text


def _stream(source: Path, chunks, columns: list, text: str, added: list[str], classify, target: Path, progress: bool,
            label: str | None = None) -> tuple[int, int, list[tuple[str, str]]]:
    """Write every row to target atomically, in order, with the added columns classify(texts) fills (empty without
    text). Returns rows, blank rows, (label, added[0]) per labelled row."""
    rows, blank, pairs = 0, 0, []
    with atomic_file(target) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out, \
            tqdm(unit=" rows", desc="predict", file=sys.stderr, disable=not progress) as bar:
        for chunk in chunks:
            if list(chunk.columns) != columns and target.suffix.lower() == ".csv":  # one header for all rows
                extra = [c for c in chunk.columns if c not in columns]
                if extra:
                    raise DataError(f"{source.name}: records after row {rows:,} have keys {extra} that the first "
                                    f"{rows:,} rows lack: give every record the same keys, or write a .jsonl file")
                chunk = chunk.reindex(columns=columns)  # keys a later jsonl record lacks are empty
            texts = _cells(chunk, text)
            present = (texts != "").to_numpy()
            predicted = pd.DataFrame(index=chunk.index, columns=added, dtype=object)
            if present.any():
                predicted.loc[present, added] = classify(texts[present].tolist())[added].to_numpy(dtype=object)
            if label is not None:
                gold = _cells(chunk, label)
                scored = present & (gold != "").to_numpy()
                pairs += zip(gold[scored], predicted.loc[scored, added[0]])
            _write(pd.concat([chunk, predicted], axis=1), out, target.suffix.lower(), header=rows == 0)
            rows += len(chunk)
            blank += int((~present).sum())
            bar.update(len(chunk))
    return rows, blank, pairs


def export(config: Config, adapter: Path | str | None = None, output: Path | str | None = None, log=print) -> Path:
    """Merge a saved adapter (default: config's) into its base and save a plain transformers model with its tokenizer
    and model card (default: model/lora-merged/), which transformers.pipeline("text-classification") serves."""
    folder = Path(adapter) if adapter is not None else config.paths.adapter
    target = Path(output) if output is not None else config.paths.merged
    trained, labels = saved_adapter(folder, output_root=config.output_root)
    if trained.quantize_4bit:
        raise ConfigError(f"the adapter at {folder} sits on a 4-bit base, which cannot be merged into full weights: "
                          "train without quantize_4bit to export a merged model")
    if trained.pooling == "mean":
        raise ConfigError(f"the adapter at {folder} reads the mean of the token vectors (pooling={trained.pooling}), "
                          "which transformers' BERT head cannot express, so a merged plain transformers model would "
                          f"read the pooler instead and mislabel: serve it with `python -m lora_ft predict --adapter "
                          f"{folder}` (merged in memory), or train with pooling=cls to export")
    _check_export_target(target, folder)
    check_writable(target.parent)
    tokenizer = load_tokenizer(str(folder), trust_remote_code=trained.trust_remote_code)
    model = load_adapter(folder, trained, labels, merge=True)

    def build(tmp: Path):
        with quiet_transformers():  # no "Writing model shards" bar (a widget in a notebook)
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        limit_tokenizer(tmp, trained.max_length)
        card.write(card.for_adapter(trained, labels, folder, merged=True), tmp)

    training.on_main_process(replace_dir_atomic, build, target)
    training.on_main_process(log, f"merged model saved in {target} ({folder_mb(target)} MB)")
    return target


def _checked_files(source: Path | str, target: Path | str) -> tuple[Path, Path]:
    source, target = Path(source), Path(target)
    if source.suffix.lower() not in INPUTS:
        raise DataError(f"cannot read {source.name}: give a {', '.join(INPUTS)} file")
    if target.suffix.lower() not in OUTPUTS:
        raise DataError(f"cannot write {target.name}: name the output file *.csv or *.jsonl")
    if not source.is_file():
        raise DataError(f"input file {source} does not exist: check the path")
    if target.is_dir():
        raise DataError(f"the output {target} is a folder: name a *.csv or *.jsonl file to write")
    if source.resolve() == target.resolve():
        raise DataError(f"the output {target} is the input: write the predictions to another file")
    return source, target


def _text_column(columns: list, wanted: str | None, source: Path, delimiter: str | None) -> str:
    """The column holding the texts: the one named, else the first usual name (sources.TEXT_COLUMNS) present."""
    found = next((c for c in TEXT_COLUMNS if c in columns), None) if wanted is None else wanted
    if found in columns:
        return found
    hint = _separator_hint("".join(map(str, columns)), _separator(source, delimiter))
    what = f"no column {wanted!r}" if wanted else f"no column with a usual text name {list(TEXT_COLUMNS)}"
    raise DataError(f"no text column in {source.name}{hint}" if hint else f"{what} in {source.name} (its columns: "
                    f"{listed(columns)}): pass --text-column with the column that holds the texts")


def _check_labels(chunks, text: str, label: str, labels: list[str], source: Path) -> None:
    """Refuse a file whose label column holds classes the adapter does not know, or no label beside a text."""
    unknown, scorable = set(), 0
    for chunk in chunks:
        gold, texts = _cells(chunk, label), _cells(chunk, text)
        unknown.update(set(gold[gold != ""]) - set(labels))
        scorable += int(((gold != "") & (texts != "")).sum())
    if unknown:
        raise DataError(f"column {label!r} of {source.name} holds labels the adapter does not know: "
                        f"{listed(sorted(unknown))} (it knows {listed(labels)}): write them as the adapter's class "
                        f"names, or rename the column if it holds no labels (then the file is only classified)")
    if not scorable:
        raise DataError(f"no row of {source.name} has both a text and a label in column {label!r}: fill in the "
                        "labels to score the file, or rename the column to only classify it")


def _scored_record(trained: Config, folder: Path, labels: list[str], source: Path, references, predictions,
                   model) -> dict:
    """The record of a scored file: the adapter's settings, and its training from its own record where there is one."""
    own = card.own_record(trained, folder)
    if own is not None:
        params, train, resources = own["params"], own["train"], own.get("resources")
    else:  # an adapter without its record (copied, or its results/ elsewhere): how it trained is not known here
        params, train, resources = count_params(model), dict.fromkeys(results.REQUIRED_TRAIN) | {"history": []}, None
    scored = build_record(f"scored-{source.stem}", "lora", trained, labels, "file", np.array(references),
                          np.array(predictions), params, train, resources)
    return scored | {"dataset": str(source)}  # what was scored; its "config" stays the adapter's, data set included


def _check_export_target(target: Path, adapter: Path) -> None:
    """Refuse to replace anything but an earlier export: a file, the adapter, or a folder of other files."""
    if target.exists() and not target.is_dir():
        raise ConfigError(f"the export target {target} is a file: give --output a folder to write the merged model "
                          "into (a new one, or an earlier export, which is replaced)")
    if target.resolve() == adapter.resolve() or target.resolve() in adapter.resolve().parents:
        raise ConfigError(f"exporting into {target} would replace the adapter in {adapter}: give --output another "
                          "folder")
    if target.is_dir() and any(target.iterdir()) and not (target / "config.json").is_file():
        raise ConfigError(f"{target} holds files that are not a merged model (it has no config.json), and the export "
                          "would replace them: give --output a new folder, or one an earlier export wrote")


def _separator(source: Path, delimiter: str | None) -> str:
    return delimiter or ("\t" if source.suffix.lower() == ".tsv" else ",")


def _separator_hint(header: str, separator: str) -> str:
    """A message's end naming another separator that header holds (a tab-separated file named .csv), else ""."""
    found = next((s for s in SEPARATORS if s in header and s != separator), None)
    name = "tab" if found == "\t" else repr(found)
    return "" if found is None else (f", which looks {name}-separated (its header holds {found!r}): "
                                     f"pass delimiter={SEPARATORS[found]}")


def _cells(chunk: pd.DataFrame, column: str) -> pd.Series:
    """A column's cells as stripped text; "" where there is none (a missing key, null, NaN: t != t)."""
    if column not in chunk:
        return pd.Series("", index=chunk.index, dtype=object)
    return chunk[column].map(lambda t: "" if t is None or t != t else str(t).strip())


def _chunks(source: Path, chunk_rows: int, delimiter: str | None, encoding: str | None):
    """The rows of source, chunk_rows at a time, as frames; csv and tsv cells stay text exactly as written."""
    suffix, encoding = source.suffix.lower(), encoding or "utf-8"
    try:
        if suffix in (".csv", ".tsv"):
            sep = _separator(source, delimiter)
            header = pd.read_csv(source, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False,
                                 encoding=encoding).iloc[0].tolist()
            twice = sorted({name for name in header if header.count(name) > 1})
            if twice:  # pandas would rename the second "text" to "text.1" and classify the first
                raise DataError(f"{source.name} names column(s) {listed(twice)} more than once in its header: rename "
                                "them so that each column has its own name")
            with pd.read_csv(source, sep=sep, dtype=str, keep_default_na=False, chunksize=chunk_rows,
                             encoding=encoding) as reader:
                yield from reader
            return
        with open(source, encoding=encoding) as lines:
            records = ({"text": line.rstrip("\r\n")} if suffix == ".txt" else _record(line, number, source)
                       for number, line in enumerate(lines, 1) if suffix == ".txt" or line.strip())
            while chunk := list(itertools.islice(records, chunk_rows)):
                yield pd.DataFrame.from_records(chunk)
    except pd.errors.EmptyDataError:
        raise DataError(f"{source.name} is empty: give a file with a header row and at least one row") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{source.name} is not {encoding} text ({error.reason} at byte {error.start}): save it as "
                        "UTF-8, or pass its encoding (e.g. encoding=latin-1)") from None
    except pd.errors.ParserError as error:
        with open(source, encoding=encoding, errors="replace") as lines:
            hint = _separator_hint(lines.readline(), _separator(source, delimiter))
        raise DataError(f"cannot parse {source.name}{hint}" if hint else f"cannot parse {source.name} ({error}): "
                        "check the file, or pass its delimiter") from None


def _record(line: str, number: int, source: Path) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{source.name} line {number} is not JSON ({error.msg}): give one object per line") from None
    if not isinstance(record, dict):
        raise DataError(f"{source.name} line {number} is not a JSON object: give one object per line")
    return record


def _write(frame: pd.DataFrame, out, suffix: str, header: bool) -> None:
    if suffix == ".csv":
        frame.to_csv(out, header=header, index=False, lineterminator="\r\n")  # quotes a text's own \r or \n
    else:  # one object per line; empty predictions are null
        frame = frame.astype(object).where(frame.notna(), None)
        for row in frame.to_dict("records"):
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
