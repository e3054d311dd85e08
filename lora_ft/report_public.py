"""The public benchmarks (benchmarks/public_data.py, docs/public-benchmarks.md) in tables and words from their records
in results/public/, without torch: each block function takes the results folder and returns Markdown for a report
block (BLOCKS). The published figures and the targets are not records: they are the named constants below."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from . import results, stats
from .config import Config
from .report_curves import _and, markdown_table

# The reference figures in ../shared/datasets/README.md: (what is scored, published accuracy, reference run)
PUBLISHED = {
    "emotion": ("test accuracy", 0.931, "distilbert-base-uncased, full fine-tuning"),
    "sst2": ("dev accuracy", 0.913, "distilbert-base-uncased, full fine-tuning"),
    "imdb": ("test accuracy", 0.928, "distilbert-base-uncased, full fine-tuning on all 25k reviews"),
}
TARGETS = {"emotion": 0.92, "sst2": 0.89, "imdb": 0.85}  # the accuracy each benchmark set out to reach
REFERENCE_WEIGHTS = 66e6  # distilbert-base-uncased (Sanh et al. 2019), every weight trained in the published runs
IMDB_TRAIN = 25_000  # reviews in IMDb's whole train split, which the published figure trains on
NAMES = {"emotion": "emotion", "sst2": "SST-2", "imdb": "IMDb"}  # as the prose names them
UNITS = {"emotion": "tweets", "sst2": "sentences", "imdb": "reviews"}  # what one example is
# the training settings a benchmark may change from Config's defaults, as changes() names them
CHANGED = ("epochs", "batch_size", "learning_rate", "r", "alpha", "max_length", "truncation", "base_dropout",
           "early_stopping_patience")


def record(results_dir: Path, name: str) -> dict | None:
    """name's record (results/public/<name>.json), or None while the benchmark is not yet run."""
    path = Path(results_dir) / "public" / f"{name}.json"
    return results.read(path) if path.exists() else None


def recorded(results_dir: Path) -> dict[str, dict]:  # the records there are, by name, in PUBLISHED's order
    return {name: made for name in PUBLISHED if (made := record(results_dir, name))}


def not_run(name: str | None = None) -> str:
    """What a block says while its record is missing: the command that makes it."""
    if name is None:
        return "not yet run (`python3 benchmarks/public_data.py` writes results/public/<name>.json)"
    return f"not yet run (`python3 benchmarks/public_data.py {name}` writes results/public/{name}.json)"


def sampling_error(accuracy: float, n: int) -> float:
    """One run's binomial standard error of an accuracy on n test examples: sqrt(p (1 - p) / n)."""
    return math.sqrt(accuracy * (1 - accuracy) / n)


def error_points(made: dict) -> float:  # a record's sampling error, in points of accuracy
    return 100 * sampling_error(made["metrics"]["accuracy"], made["n_examples"])


def correct(made: dict) -> int:
    """The test examples classified right: the confusion matrix's diagonal."""
    return sum(row[i] for i, row in enumerate(made["confusion_matrix"]))


def validation_at(made: dict, epoch: float) -> float:
    """Validation accuracy at the validation nearest to epoch (the Trainer's history)."""
    checks = [entry for entry in made["train"]["history"] if "eval_accuracy" in entry]
    return min(checks, key=lambda entry: abs(entry["epoch"] - epoch))["eval_accuracy"]


def last_epoch_change(made: dict) -> float:
    """Points of validation accuracy gained (or lost) over the last epoch."""
    end = made["config"]["epochs"]
    return 100 * (validation_at(made, end) - validation_at(made, end - 1))


def validation_size(made: dict) -> int:
    """How many held-out training examples each validation scored (a fixed sample when the split is larger)."""
    held_out, sample = made["data"]["splits"]["validation"], made["config"]["validation_sample"]
    return held_out if sample is None else min(held_out, sample)


def level(made: dict, name: str) -> bool:
    """Whether the accuracy is within stats.THRESHOLD sampling errors of the published figure."""
    return abs(made["metrics"]["accuracy"] - PUBLISHED[name][1]) <= stats.THRESHOLD * error_points(made) / 100


def within(side: str = "within") -> str:  # "within twice one run's sampling error": the rule level() applies
    return f"{side} {'twice' if stats.THRESHOLD == 2 else f'{stats.THRESHOLD:g} times'} one run's sampling error"


def table(records: dict[str, dict]) -> str:
    """The records beside the published figures and the targets, with train time and speed."""
    rows = []
    for name, made in records.items():
        what, published, reference = PUBLISHED[name]
        train, sizes = made["train"], made["data"]["splits"]
        rows.append([name, f"{sizes['train']:,} / {sizes['test']:,}", f"{made['metrics']['accuracy']:.3f} {what}",
                     f"{TARGETS[name]:.2f}", f"{published:.3f}", reference,
                     f"{train['seconds'] / 60:.0f} min ({train['examples_per_second']:.0f} ex/s)"])
    return markdown_table("data set | train / test examples | LoRA (MiniLM-L6) | target | published | reference | "
                          "train time", "lllllll", rows)


def public_table(results_dir: Path) -> str:
    """The table of the benchmarks run so far, then their time together and each one's sampling error."""
    found = recorded(results_dir)
    if not found:
        return "No public benchmark recorded yet: " + not_run()
    first = next(iter(found.values()))
    minutes = sum(made["train"]["seconds"] for made in found.values()) / 60
    errors = _and(f"{error_points(made):.1f} points on {NAMES[name]}'s {made['n_examples']:,} {UNITS[name]}"
                  for name, made in found.items())
    missing = [name for name in PUBLISHED if name not in found]
    return "\n".join([
        table(found), "",
        f"Training took {minutes:.0f} minutes for {_and(found)} together, one after the other on "
        f"{first['meta']['device']} with nothing else running, validations included. One run's sampling error on "
        f"these test sets (binomial, sqrt(p (1 - p) / n)): {errors}."
        + "".join(f" {NAMES[name]}: {not_run(name)}." for name in missing)])


def recipe(results_dir: Path) -> str:
    """The recipe's settings and trainable share, from the first record there is."""
    if (made := next(iter(recorded(results_dir).values()), None)) is None:
        return not_run()
    config, params = made["config"], made["params"]
    return (f"r {config['r']}, alpha {config['alpha']:g}: {params['trainable'] / 1e6:.2f}M trainable weights, "
            f"{params['trainable'] / params['total']:.1%} of the model; learning rate {config['learning_rate']:g}")


def emotion(results_dir: Path) -> str:
    """docs/public-benchmarks.md's emotion bullet: accuracy against the published figure, the weakest class."""
    if (made := record(results_dir, "emotion")) is None:
        return not_run("emotion")
    metrics = made["metrics"]
    per_class = metrics["per_class"]
    weakest = min(per_class, key=lambda label: per_class[label]["f1"])
    rarest = min(per_class, key=lambda label: per_class[label]["support"])
    scores = per_class[weakest]
    points = 100 * (metrics["accuracy"] - PUBLISHED["emotion"][1])
    return (f"{made['config']['epochs']:g} epochs: {metrics['accuracy']:.3f} test accuracy, {abs(points):.1f} points "
            f"{'under' if points < 0 else 'over'} the published {PUBLISHED['emotion'][1]:.3f} of DistilBERT fully "
            f"fine-tuned with {REFERENCE_WEIGHTS / made['params']['total']:.0f}x the weights, "
            f"{within('within' if level(made, 'emotion') else 'beyond')} "
            f"({error_points(made):.1f} points); macro-F1 {metrics['f1_macro']:.3f}, the weakest class *{weakest}*"
            f"{', also the rarest' if weakest == rarest else ''} ({scores['support']:,} test tweets: "
            f"F1 {scores['f1']:.2f}, precision {scores['precision']:.2f}, recall {scores['recall']:.2f})")


def sst2(results_dir: Path) -> str:
    """docs/public-benchmarks.md's SST-2 bullet: the target, dev accuracy, the data it trained on."""
    if (made := record(results_dir, "sst2")) is None:
        return not_run("sst2")
    accuracy, target, sizes = made["metrics"]["accuracy"], TARGETS["sst2"], made["data"]["splits"]
    margin, error = 100 * (accuracy - target), error_points(made)
    line = (f"{'reaches' if margin >= 0 else 'falls short of'} the {target:.2f} target: {accuracy:.3f} dev accuracy "
            f"({correct(made):,} of {made['n_examples']:,} sentences, macro-F1 {made['metrics']['f1_macro']:.3f}) "
            f"after {made['config']['epochs']:g} epochs on all {sizes['train']:,} training phrases left after "
            f"cleaning, {sizes['validation']:,} held out for validation")
    if abs(margin) < error:
        line += (f". The {abs(margin):.1f} points {'above' if margin >= 0 else 'below'} the target are inside one "
                 f"run's sampling error ({error:.1f} points): the verdict holds for this seed, not as a measured mean")
    return line


def epochs(results_dir: Path) -> str:
    """Validation accuracy over the last epoch: SST-2's at the last two epochs' ends, the others' change."""
    found = recorded(results_dir)
    if "sst2" not in found:
        return not_run("sst2")
    made, last = found["sst2"], found["sst2"]["config"]["epochs"]
    line = (f"{validation_at(made, last - 1):.3f} after epoch {last - 1:g}, {validation_at(made, last):.3f} at the "
            f"end, on a fixed sample of {validation_size(made):,} of them")
    others = [f"{NAMES[name]}'s {last_epoch_change(m):+.1f} points" for name, m in found.items() if name != "sst2"]
    return line + (f"; over the last epoch, {_and(others)}" if others else "")


def imdb(results_dir: Path) -> str:
    """docs/public-benchmarks.md's IMDb bullet: accuracy, the data it trained on, validation over the epochs."""
    if (made := record(results_dir, "imdb")) is None:
        return not_run("imdb")
    sizes, config = made["data"]["splits"], made["config"]
    checks = [entry for entry in made["train"]["history"] if "eval_accuracy" in entry]
    peak = max(checks, key=lambda entry: entry["eval_accuracy"])
    return (f"{made['metrics']['accuracy']:.3f} test accuracy on the {made['n_examples']:,}-review test sample, from "
            f"{sizes['train']:,} training reviews ({sizes['validation']:,} held out for validation), "
            f"{config['epochs']:g} epochs, each review cut to {config['max_length']} tokens ({config['truncation']}); "
            f"the published {PUBLISHED['imdb'][1]:.3f} trains on all {IMDB_TRAIN:,}. Validation accuracy on the "
            f"{validation_size(made):,} held-out reviews peaked at {peak['eval_accuracy']:.2f} near epoch "
            f"{round(peak['epoch'])} and ended at {validation_at(made, config['epochs']):.2f}")


def changes(results_dir: Path) -> str:
    """Which of CHANGED the records set otherwise than Config's defaults: what they all change, then each one's."""
    found = recorded(results_dir)
    if not found:
        return not_run()
    default, was = {f.name: f.default for f in dataclasses.fields(Config)}, {}
    for name, made in found.items():  # the defaults with the batch size the budget rule picks for its split
        resolved = Config(smoke=False, epochs=made["config"]["epochs"]).budget(made["data"]["splits"]["train"])
        was[name] = {**default, "batch_size": resolved.batch_size}

    def said(name: str, keys: dict) -> str:  # "epochs 3 instead of 2, ..."
        return ", ".join(f"{key} {value:g} instead of {was[name][key]:g}" if isinstance(value, float)
                         else f"{key} {value} instead of {was[name][key]}" for key, value in keys.items())

    differ = {name: {key: made["config"][key] for key in CHANGED if made["config"][key] != was[name][key]}
              for name, made in found.items()}
    shared = {key: value for key, value in next(iter(differ.values())).items()
              if all(d.get(key) == value for d in differ.values())}
    every = {1: "", 2: " on both", 3: " on all three"}.get(len(found), " on all")
    own = [f"{NAMES[name]} also {said(name, {k: v for k, v in d.items() if k not in shared})}"
           for name, d in differ.items() if set(d) - set(shared)]
    return "; ".join([f"{said(next(iter(found)), shared)}{every}"] * bool(shared) + own) or "no setting changed"


def public_line(results_dir: Path) -> str:
    """The README's line: each benchmark's accuracy against the published figure, and which are level with it."""
    found = recorded(results_dir)
    if not found:
        return not_run()
    verdicts: dict[str, list[str]] = {}
    for name, made in found.items():
        what, published, _ = PUBLISHED[name]
        accuracy = made["metrics"]["accuracy"]
        verdict = "level" if level(made, name) else "below" if accuracy < published else "above"
        note = (f": {within()}" if verdict == "level" else
                f"; trained here on {made['data']['splits']['train']:,} reviews, there on all {IMDB_TRAIN:,}"
                if name == "imdb" else "")
        verdicts.setdefault(verdict, []).append(f"{NAMES[name]} ({accuracy:.3f} {what} against {published:.3f}{note})")
    ratio = REFERENCE_WEIGHTS / next(iter(found.values()))["params"]["total"]
    return (f"the default recipe on MiniLM ({changes(results_dir)}) against the published full fine-tuning of "
            f"DistilBERT ({ratio:.0f}x MiniLM's weights): "
            + ", ".join(f"{verdict} on {_and(items)}" for verdict, items in verdicts.items()))


BLOCKS = {"public-table": public_table, "public-recipe": recipe, "public-emotion": emotion, "public-sst2": sst2,
          "public-epochs": epochs, "public-imdb": imdb, "public-changes": changes, "public-line": public_line}
