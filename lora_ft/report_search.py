"""benchmarks/search_128.py's search for a LoRA recipe that leads SetFit on the tweets at 128 examples per class: the
candidates (data), the choice on the validation split, and docs/data-efficiency.md's report block, without torch.
Verdicts are stats.paired's over the learning curves' draws."""

from __future__ import annotations

from pathlib import Path

from . import results, stats
from .report_curves import _days, _versus

PER_CLASS = 128
FOLDER = "search-128"  # under results/: validation/ (the choice) and test/ (the chosen candidate)
BASELINE = "lora-mean"  # the learning curves' LoRA recipe with the best mean at 128 per class
# each candidate: one change from lora-mean's settings (a longer budget, another rate, rank at alpha/r = 2, or
# regularizer; lr5e-4-steps200 pairs a lower rate with a longer budget)
CANDIDATES = {
    BASELINE: {},
    "steps200": {"min_steps": 200},
    "steps300": {"min_steps": 300},
    "lr2e-3": {"learning_rate": 2e-3},
    "lr5e-4-steps200": {"learning_rate": 5e-4, "min_steps": 200},
    "r16": {"r": 16, "alpha": 32.0},
    "r32": {"r": 32, "alpha": 64.0},
    "base-dropout": {"base_dropout": None},  # the pretrained model's own dropout (0.1) on
    "lora-dropout0.1": {"dropout": 0.1},
    "weight-decay0.1": {"weight_decay": 0.1},
}
COMPARED = ("setfit", BASELINE, "lora")  # notebook 07's draws at PER_CLASS the chosen candidate is paired with


def _records(folder: Path, name: str) -> list[dict]:
    return results.records(folder, name) if results.path_of(folder, name).exists() else []


def _scores(folder: Path, name: str) -> dict:
    return stats.by_seed(_records(folder, name))


def _pick(ran: dict) -> str:
    """Of the candidates' validation scores by draw, the one that leads lora-mean beyond the spread by the most."""
    base = ran.get(BASELINE)
    leads = [(p.difference, name) for name, scores in ran.items() if name != BASELINE and scores and base
             and (p := stats.paired(scores, base)).beyond and p.difference > 0]
    return max(leads)[1] if leads else BASELINE


def chosen(results_dir: Path) -> str:
    """The candidate that leads lora-mean beyond the spread on the validation split by the most, else lora-mean."""
    folder = Path(results_dir) / FOLDER / "validation"
    return _pick({name: _scores(folder, name) for name in CANDIDATES})


def search_table(results_dir: Path) -> str:
    """The candidates on validation against lora-mean, then the chosen one on test against notebook 07's draws."""
    root = Path(results_dir) / FOLDER
    made = {name: _records(root / "validation", name) for name in CANDIDATES}
    if not all(made.values()):
        return "(the search has not run: `python benchmarks/search_128.py`)"
    ran = {name: stats.by_seed(found) for name, found in made.items()}
    base = ran[BASELINE]
    found = [r for records in made.values() for r in records]
    rows = [f"{len(base)} draws of {PER_CLASS} per class (the learning curves' draws), made {_days(found)}: "
            f"validation accuracy on {found[0]['n_examples']:,} examples, mean ± std over the draws, and each "
            f"candidate against {BASELINE} paired over them:", "",
            f"| candidate | change from {BASELINE} | validation accuracy | against {BASELINE} (points) | ahead in |",
            "|---|---|---|---|---:|"]
    for name, changes in CANDIDATES.items():
        change = ", ".join(f"{k}={v}" for k, v in changes.items()) or "(none)"
        cell = "-" if name == BASELINE else f"{(p := stats.paired(ran[name], base)).amount}, {p.verdict}"
        wins = "-" if name == BASELINE else f"{p.wins} of {p.n}"
        rows.append(f"| {name} | {change} | {stats.mean_std(stats.spread(ran[name].values()))} | {cell} | {wins} |")
    pick = _pick(ran)
    test = _scores(root / "test", pick) if pick != BASELINE else {}
    if pick == BASELINE:
        rows += ["", f"No candidate leads {BASELINE} beyond the spread on validation, so {BASELINE}'s test draws in "
                 "notebook 07 stand for the search."]
        return "\n".join(rows)
    if not test:
        return "\n".join(rows + ["", f"Chosen: {pick}; its test draws have not run."])
    curves = Path(results_dir) / "curves"
    drawn = {m: _scores(curves, f"curve-{m}-n{PER_CLASS}") for m in COMPARED}
    if not all(drawn.values()):
        return "\n".join(rows + ["", f"Chosen: {pick}; notebook 07's draws at {PER_CLASS} per class are missing."])
    versus = [stats.paired(test, drawn[m], pick, m) for m in COMPARED]
    setfit = versus[0]
    draws = ", ".join(f"{d:+.2f} on draw {k}" for k, d in zip(setfit.keys, setfit.differences))
    found = ("leads SetFit beyond the spread" if setfit.beyond and setfit.difference > 0
             else "does not lead SetFit beyond the spread")
    rows += ["", f"Chosen on validation: **{pick}** (the largest lead beyond the spread). On the test split, the same "
             f"draws: {stats.mean_std(stats.spread(test.values()))}; " + "; ".join(_versus(p) for p in versus) + ".",
             "", f"**What it shows.** The best candidate the validation split could pick {found} at {PER_CLASS} per "
             f"class on the tweets: against SetFit, draw by draw, {draws} points. Its lead over {BASELINE}, "
             f"{stats.paired(ran[pick], base).amount} points on validation, is {versus[1].amount} on test "
             f"({versus[1].verdict})."]
    return "\n".join(rows)


BLOCKS = {"search-128": search_table}
