"""SetFit's published few-shot result on dair-ai emotion, replicated, with this project's LoRA on the same draws.

    python benchmarks/setfit_emotion.py                          # 8 and 64 per class, 10 draws, SetFit and LoRA
    python benchmarks/setfit_emotion.py --per-class 8 --draws 1  # one draw, to try it (a few minutes)
    python benchmarks/setfit_emotion.py --shared DIR             # the offline copies elsewhere

The SetFit paper (Tunstall et al. 2022) reports all-MiniLM-L6-v2 on emotion at 8 examples per class as 39.1 +- 4.7
test accuracy over 10 training draws. Its protocol (huggingface/setfit, scripts/setfit/run_fewshot.py and
setfit.data.create_fewshot_splits): draw i takes n examples of each class from the train split with
setfit.data.create_samples (pandas sample, random_state i, i = 0..9), trains the body on 20 contrastive pairs per
sentence and iteration, batch 16, one epoch, then fits a logistic regression head, and scores the whole test split.
Here the same sampling runs on the train split as lora_ft.data loads it from ../shared/datasets/emotion (byte copies
of the standard splits; cleaning drops a few duplicates), each draw trains with seed 42 + i, and the methods are
lora_ft.curves' (setfit: the recipe above; lora-small and lora: this project's). Records and summaries go to
results/public/setfit-emotion/ (lora_ft.curves naming), finished draws are skipped; data and scratch under
runs/public/setfit-emotion/ (git-ignored).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lora_ft import Config, curves, experiments, pipeline
from lora_ft.config import DEFAULT_SEED, ROOT

LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")  # the hub's id order
PUBLISHED = {8: (0.391, 0.047)}  # SetFit paper, all-MiniLM-L6-v2, emotion test accuracy: mean, std over 10 draws
RESULTS = ROOT / "results" / "public" / "setfit-emotion"


def setfit_sample(split, n: int, seed: int):
    """The published draw: setfit.data.create_samples with random_state seed - 42 (SetFit's seeds 0..9)."""
    from setfit.data import create_samples  # optional dependency, needed only for this draw

    frame = split.select_columns(["label"]).to_pandas().assign(row=range(len(split)))
    return split.select(sorted(create_samples(frame, n, seed - DEFAULT_SEED)["row"].tolist()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", default="8,64", help="examples per class (default 8,64)")
    parser.add_argument("--draws", type=int, default=10, help="training draws per point (default 10, as published)")
    parser.add_argument("--methods", default="setfit,lora-small,lora", help="lora_ft.curves methods")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "datasets",
                        help="folder holding the offline copies (default: ../shared/datasets)")
    args = parser.parse_args(argv)
    if not (args.shared / "emotion").is_dir():
        print(f"skipped: no offline copy of emotion at {args.shared / 'emotion'} (pass --shared DIR)")
        return 0
    # max_length 256 as run_fewshot.py's max_seq_length; emotion's sentences are short, so it rarely binds
    config = Config(smoke=False, dataset=str(args.shared / "emotion"), labels=LABELS, max_length=256,
                    output_root=str(ROOT / "runs" / "public" / "setfit-emotion"))
    pipeline.prepare(config)
    per_class = tuple(int(n) for n in args.per_class.split(","))
    summaries = experiments.learning_curves(config, tuple(args.methods.split(",")), per_class, args.draws,
                                            results_dir=RESULTS, sample=setfit_sample)
    print(curves.table(summaries).to_markdown(index=False))
    for n, (mean, std) in PUBLISHED.items():
        summary = summaries.get(curves.run_name("setfit", n))
        if summary:
            accuracy = summary["metrics"]["accuracy"]
            print(f"SetFit at {n} per class: {accuracy['mean']:.3f} ± {accuracy['std']:.3f} over {summary['n']} "
                  f"draws; published {mean:.3f} ± {std:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
