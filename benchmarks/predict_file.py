"""Batch prediction at scale: `python -m lora_ft predict --input/--output` on a large CSV, timed and measured.

    python benchmarks/predict_file.py                                  # 100,000 rows, the trained adapter in model/
    python benchmarks/predict_file.py --rows 2000 --adapter smoke/model/lora-adapter

Writes a CSV of --rows synthetic tweets (the corpus's texts repeated, with an id column and every 500th text blank),
runs the CLI on it in a child process, and reports rows in and out, whether the ids come back in the same order,
wall time, rows/s and the child's peak resident memory (which must not grow with the file: run it at two sizes).
"""

from __future__ import annotations

import argparse
import csv
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def write_input(path: Path, rows: int) -> None:
    """rows tweets from the corpus, repeated as needed, streamed to path; every 500th text is blank."""
    sys.path.insert(0, str(ROOT))
    from lora_ft import sources

    texts = pd.read_csv(sources.tweets_path(), encoding="latin-1")["text"].astype(str).tolist()
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for i in range(rows):
            writer.writerow([i, "" if i % 500 == 499 else texts[i % len(texts)]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the input CSV (default 100,000)")
    parser.add_argument("--adapter", type=Path, default=ROOT / "model" / "lora-adapter", help="adapter folder")
    parser.add_argument("--workdir", type=Path, help="where the input and output go (default: a temporary folder)")
    args = parser.parse_args()
    if not (args.adapter / "adapter_config.json").is_file():
        sys.exit(f"no adapter in {args.adapter}: train one (python -m lora_ft train) or pass --adapter")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        source, target = work / "input.csv", work / "predictions.csv"
        write_input(source, args.rows)
        command = [sys.executable, "-m", "lora_ft", "predict", "--adapter", str(args.adapter), "--input", str(source),
                   "--output", str(target)]
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True)
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
        ids = pd.read_csv(target, usecols=["id"])["id"]
        print(f"rows in {args.rows:,}, rows out {len(ids):,}, same order: {ids.tolist() == list(range(args.rows))}")
        print(f"wall {seconds:.1f} s (model loading included), {args.rows / seconds:,.0f} rows/s, "
              f"peak RSS of the predict process {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
