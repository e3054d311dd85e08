"""Batch prediction at scale: `python -m lora_ft predict --input/--output` on large CSVs, timed and measured.

    python benchmarks/predict_file.py                          # 10,000 and 100,000 rows, the trained adapter in model/
    python benchmarks/predict_file.py --rows 2000 --adapter smoke/model/lora-adapter --out /tmp/predict-file.json

For each size, writes a CSV of that many synthetic tweets (the corpus's texts repeated, with an id column and every
500th text blank), runs the CLI on it in a child process of its own, and records rows in and out, whether the ids come
back in the same order, the blank rows left unlabelled, wall time (model loading included), rows/s and the child's
peak resident memory, which must not grow with the file: hence two sizes. The record goes to
results/speed/predict-file.json (docs/speed.md's table, lora_ft.report).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from lora_ft import Config, sources
from lora_ft.config import ROOT
from lora_ft.io import write_json_atomic
from lora_ft.run import meta

OUTPUT = ROOT / "results" / "speed" / "predict-file.json"
BLANK_EVERY = 500  # every 500th text is blank: its row must come back, unlabelled, in its place


def write_input(path: Path, rows: int) -> None:
    """rows tweets from the corpus, repeated as needed, streamed to path; every 500th text is blank."""
    texts = pd.read_csv(sources.tweets_path(), encoding="latin-1")["text"].astype(str).tolist()
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for i in range(rows):
            writer.writerow([i, "" if i % BLANK_EVERY == BLANK_EVERY - 1 else texts[i % len(texts)]])


def measure_one(rows: int, adapter: Path, work: Path) -> dict:
    """One size, its predict in a fresh child process (so the peak memory is that child's alone)."""
    source, target = work / f"input-{rows}.csv", work / f"predictions-{rows}.csv"
    write_input(source, rows)
    command = [sys.executable, "-m", "lora_ft", "predict", "--adapter", str(adapter), "--input", str(source),
               "--output", str(target)]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    out = pd.read_csv(target, keep_default_na=False)
    blank = out["text"].eq("")
    return {"rows": rows, "rows_out": len(out), "same_order": out["id"].tolist() == list(range(rows)),
            "blank_rows": int(blank.sum()), "blank_rows_unlabelled": bool(out.loc[blank, "label"].eq("").all()),
            "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds, 1),
            "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000", help="comma-separated sizes (default 10000,100000)")
    parser.add_argument("--adapter", type=Path, default=ROOT / "model" / "lora-adapter", help="adapter folder")
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"the record (default {OUTPUT.relative_to(ROOT)})")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # (internal) one size, its result on stdout
    args = parser.parse_args()
    if not (args.adapter / "adapter_config.json").is_file():
        sys.exit(f"no adapter in {args.adapter}: train one (python -m lora_ft train) or pass --adapter")
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure_one(args.one, args.adapter, Path(tmp))))
        return
    runs = []
    for rows in (int(n) for n in args.rows.split(",")):
        done = subprocess.run([sys.executable, __file__, "--one", str(rows), "--adapter", str(args.adapter)],
                              check=True, capture_output=True, text=True)
        runs.append(json.loads(done.stdout.splitlines()[-1]))
        r = runs[-1]
        print(f"{rows:,} rows: {r['rows_out']:,} out, same order {r['same_order']}, {r['seconds']:.1f} s "
              f"(model loading included), {r['rows_per_second']:,.0f} rows/s, peak {r['peak_memory_mb']:,.0f} MB")
    write_json_atomic(args.out, {"adapter": str(args.adapter.resolve().relative_to(ROOT))
                                 if args.adapter.resolve().is_relative_to(ROOT) else str(args.adapter),
                                 "runs": runs, "meta": meta(Config(smoke=False))})


if __name__ == "__main__":
    main()
