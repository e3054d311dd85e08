"""Can a LoRA recipe lead SetFit beyond the spread on the tweets at 128 examples per class? A search, honest about
selection, in rounds (lora_ft.report_search.ROUNDS). Round one: each candidate changes one thing in lora-mean (one
pairs a lower rate with a longer budget), the learning curves' LoRA recipe with the head on the mean of the tokens and
the best LoRA test mean at 128 per class; round two: the changes of round one's four best validation means, two at a
time (not two ranks); round three: adapters on fewer layers; round four: ensembles of round one's choice (r16 runs
that differ in their training seed, their class probabilities averaged: lora_ft.experiments.ensemble). Every
candidate is scored on the VALIDATION split, on the learning curves' three draws; each round's choice, the candidate
that leads lora-mean beyond the spread there by the most (among that round and the ones before it), is then scored
once on the TEST split, on the same draws, and compared with the committed SetFit, lora-mean and lora draws of
notebook 07 (results/curves/). Choosing on validation keeps the choice among the candidates out of the test score:
the best of many noisy test means would be biased upward.

    python benchmarks/search_128.py        # all rounds: under an hour on 2 CPU cores; finished runs are skipped

Records and summaries go to results/search-128/validation/ and results/search-128/test/ (lora_ft.experiments'
naming); docs/data-efficiency.md renders them (lora_ft.report_search).
"""

from __future__ import annotations

import sys

from datasets import DatasetDict

from lora_ft import curves, data, experiments
from lora_ft.config import ROOT
from lora_ft.report_search import BASELINE, CANDIDATES, FOLDER, PER_CLASS, chosen, recipe, settings

RESULTS = ROOT / "results" / FOLDER


def grid(config, classes: int, train_examples: int) -> list[experiments.Experiment]:
    base = curves.changes(config, BASELINE, PER_CLASS, classes, train_examples)  # the curve point's settings
    return [experiments.Experiment(name, {**base, **settings(changes)}, seed, recipe=recipe(changes),
                                   examples=PER_CLASS * classes, classes=classes)
            for name, changes in CANDIDATES.items() for seed in curves.draw_seeds(PER_CLASS)]


def main() -> int:
    splits, config = data.load_prepared()
    if config.smoke:
        print("skipped: the search needs the full prepared data (LORA_FT_SMOKE=0, notebook 01 in full)")
        return 0
    points = grid(config, len(data.labels_of(splits)), len(splits["train"]))

    def trainer(split: str):  # a learning-curve point's training (experiments.train_point), scored on split
        def train(point: experiments.Experiment, settings) -> dict:
            drawn = DatasetDict({"train": data.sample_per_class(splits["train"], PER_CLASS, point.seed),
                                 "validation": splits["validation"], "test": splits[split]})
            members = (point.recipe or {}).get("members", 1)
            return {**experiments.train_point(BASELINE, drawn, settings, members), "run": point.name, "split": split}
        return train

    experiments.run(points, config, RESULTS / "validation", trainer("validation"))
    picks = chosen(ROOT / "results")
    print(f"chosen on validation, round by round: {', '.join(picks)}")
    tested = [p for p in points if p.name in picks and p.name != BASELINE]
    experiments.run(tested, config, RESULTS / "test", trainer("test"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
