"""Classify a file of texts (csv, tsv, jsonl or txt) chunk by chunk into a csv or jsonl file, written atomically.

Memory holds one chunk at a time, so it does not grow with the file; each output row is its input row, in order,
with the predicted label and one probability column per class added.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
from pathlib import Path

import pandas as pd

from .data import TEXT_COLUMNS, _column
from .errors import DataError

INPUTS = (".csv", ".tsv", ".jsonl", ".txt")
OUTPUTS = (".csv", ".jsonl")
CHUNK_ROWS = 2048  # rows read, classified and written at a time


@contextlib.contextmanager
def atomic_file(path: Path):
    """A new temporary file beside path to write, renamed onto path when the block succeeds, else removed.

    Created like any other file (with the user's umask), not as tempfile's private 0600 file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    tmp.touch(exist_ok=False)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename makes it the file
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def predict_file(config, source: Path, target: Path, adapter: Path | None = None, text_column: str | None = None,
                 chunk_rows: int = CHUNK_ROWS, progress: bool = True) -> dict:
    """Write target (csv or jsonl): every row of source with label and prob_<class> added, in source's order.

    A row without text (blank, missing or null) gets an empty label and empty probabilities, and is counted.
    Returns {"rows", "blank", "output"}.
    """
    from tqdm.auto import tqdm

    from .pipeline import probabilities, serving_model

    source, target = Path(source), Path(target)
    if source.suffix.lower() not in INPUTS:
        raise DataError(f"cannot read {source.name}: give a {', '.join(INPUTS)} file")
    if target.suffix.lower() not in OUTPUTS:
        raise DataError(f"cannot write {target.name}: name the output file *.csv or *.jsonl")
    if not source.is_file():
        raise DataError(f"input file {source} does not exist: check the path")
    if source.resolve() == target.resolve():
        raise DataError(f"the output {target} is the input: write the predictions to another file")
    model, tokenizer, settings, labels = serving_model(config, adapter)
    added = ["label"] + [f"prob_{label}" for label in labels]
    rows = blank = 0
    with atomic_file(target) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out, \
            tqdm(unit=" rows", desc="predict", file=sys.stderr, disable=not progress) as bar:
        columns = None
        for chunk in _chunks(source, chunk_rows):
            if columns is None:
                columns = list(chunk.columns)
                column = "text" if source.suffix.lower() == ".txt" else _column(
                    chunk, text_column, TEXT_COLUMNS, "text", source.name)
                clash = [c for c in added if c in columns]
                if clash:
                    raise DataError(f"{source.name} already has column(s) {clash}, which the predictions add: "
                                    "rename them in the input")
            elif list(chunk.columns) != columns and target.suffix.lower() == ".csv":  # one header for all rows
                chunk = _same_columns(chunk, columns, source, rows)
            texts = chunk[column].map(lambda t: "" if t is None or t != t else str(t).strip())  # t != t: NaN
            present = (texts != "").to_numpy()
            predicted = pd.DataFrame(index=chunk.index, columns=added, dtype=object)
            if present.any():
                probs = probabilities(model, tokenizer, settings, texts[present].tolist(), config.eval_batch_size)
                predicted.loc[present, "label"] = [labels[i] for i in probs.argmax(-1)]
                predicted.loc[present, added[1:]] = probs.round(6)
            _write(pd.concat([chunk, predicted], axis=1), out, target.suffix.lower(), header=rows == 0)
            rows += len(chunk)
            blank += int((~present).sum())
            bar.update(len(chunk))
        if columns is None:
            raise DataError(f"{source} has no rows: give a file with a header and at least one row")
    return {"rows": rows, "blank": blank, "output": str(target)}


def _chunks(source: Path, chunk_rows: int):
    """The rows of source, chunk_rows at a time, as frames; csv and tsv cells stay text exactly as written."""
    suffix = source.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            yield from pd.read_csv(source, sep="," if suffix == ".csv" else "\t", dtype=str, keep_default_na=False,
                                   chunksize=chunk_rows, encoding="utf-8")
            return
        with open(source, encoding="utf-8") as lines:
            records = []
            for number, line in enumerate(lines, 1):
                if suffix == ".txt":
                    records.append({"text": line.rstrip("\r\n")})
                elif line.strip():
                    records.append(_record(line, number, source))
                if len(records) == chunk_rows:
                    yield pd.DataFrame.from_records(records)
                    records = []
            if records:
                yield pd.DataFrame.from_records(records)
    except UnicodeDecodeError as error:
        raise DataError(f"{source.name} is not UTF-8 text ({error.reason} at byte {error.start}): save it as UTF-8")
    except pd.errors.ParserError as error:
        raise DataError(f"cannot parse {source.name} ({error}): check the file") from None


def _record(line: str, number: int, source: Path) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{source.name} line {number} is not JSON ({error.msg}): give one object per line") from None
    if not isinstance(record, dict):
        raise DataError(f"{source.name} line {number} is not a JSON object: give one object per line")
    return record


def _same_columns(chunk: pd.DataFrame, columns: list[str], source: Path, before: int) -> pd.DataFrame:
    """A later jsonl chunk in the csv output's columns (keys it lacks are empty); a key they lack is an error."""
    extra = [c for c in chunk.columns if c not in columns]
    if extra:
        raise DataError(f"{source.name}: records after row {before:,} have keys {extra} that the first "
                        f"{before:,} rows lack: give every record the same keys, or write a .jsonl file")
    return chunk.reindex(columns=columns)


def _write(frame: pd.DataFrame, out, suffix: str, header: bool) -> None:
    if suffix == ".csv":
        frame.to_csv(out, header=header, index=False, lineterminator="\r\n")  # quotes a text's own \r or \n
    else:  # one object per line; empty predictions are null
        frame = frame.astype(object).where(frame.notna(), None)
        for record in frame.to_dict("records"):
            out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
