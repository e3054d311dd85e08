"""LoRA on public benchmarks (emotion, SST-2, IMDb), from their offline copies in ../shared/datasets.

    python benchmarks/public_data.py                 # emotion, sst2 and imdb in turn (about 20 minutes on 2 CPU cores)
    python benchmarks/public_data.py emotion imdb    # some of them
    python benchmarks/public_data.py --shared DIR    # the copies elsewhere

Each run goes through the same steps as the notebooks (pipeline.train: prepare, train, test), with its data,
adapter and checkpoints under runs/public/<name>/ (git-ignored); its results record is copied to
results/public/<name>.json. The table printed at the end sets each figure beside the published reference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lora_ft import Config, pipeline
from lora_ft.config import ROOT, TARGET_SETS
from lora_ft.io import write_json_atomic
from lora_ft.report_public import table  # beside PUBLISHED and TARGETS, as docs/public-benchmarks.md shows it

# Settings per benchmark; everything else is the project's default recipe (MiniLM-L6, fp32, CPU).
BENCHMARKS = {
    "emotion": dict(  # 16k / 2k / 2k tweets-like sentences, six classes in the hub's id order
        dataset="emotion", labels=("sadness", "joy", "love", "anger", "fear", "surprise"),
        target_modules=TARGET_SETS["all-linear"], epochs=3.0),
    "sst2": dict(  # movie-review phrases; evaluated on the 872-sentence dev split (test labels are hidden)
        dataset="sst2", labels=("0", "1"), target_modules=TARGET_SETS["all-linear"], epochs=3.0),
    "imdb": dict(  # 2k / 2k full reviews, median ~230 tokens: the first and last tokens are kept (see README)
        dataset="imdb", labels=("0", "1"), max_length=256, truncation="head+tail",
        target_modules=TARGET_SETS["all-linear"], epochs=3.0, batch_size=16),
}


def run(name: str, shared: Path) -> dict:
    settings = dict(BENCHMARKS[name], dataset=str(shared / BENCHMARKS[name]["dataset"]))
    config = Config(smoke=False, output_root=str(ROOT / "runs" / "public" / name), **settings)
    record = pipeline.train(config)[0]
    record["data"] = json.loads((config.paths.data / "report.json").read_text())  # what cleaning kept, split sizes
    write_json_atomic(ROOT / "results" / "public" / f"{name}.json", record)
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="name",
                        help=f"benchmarks to run, of {list(BENCHMARKS)} (default: all)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "datasets",
                        help="folder holding the offline copies (default: ../shared/datasets)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}: choose from {list(BENCHMARKS)}")
    if not args.shared.is_dir():
        print(f"no offline benchmark copies at {args.shared}: pass --shared DIR", file=sys.stderr)
        return 2
    records = {name: run(name, args.shared) for name in args.names or BENCHMARKS}
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
