"""benchmarks/search_128.py's search for a LoRA recipe that leads SetFit on the tweets at 128 examples per class: the
candidates (data), the choice on the validation split, and docs/data-efficiency.md's report block, without torch.
Verdicts are stats.paired's over the learning curves' draws."""

from __future__ import annotations

from pathlib import Path

from . import results, stats
from .config import TARGET_SETS
from .report_curves import _and, _days, _versus, markdown_table

PER_CLASS = 128
FOLDER = "search-128"  # under results/: validation/ (the choice) and test/ (the chosen candidate)
BASELINE = "lora-mean"  # the learning curves' LoRA recipe with the best mean at 128 per class
# round one: each candidate one change from lora-mean's settings (a longer budget, another rate, rank at alpha/r = 2,
# or regularizer; lr5e-4-steps200 pairs a lower rate with a longer budget)
FIRST = {
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
# round two, run after round one's choice fell level with SetFit on test: the changes of the four round-one
# candidates with the best validation means (r32, r16, steps300, lr2e-3), two at a time (not r16 with r32: both ranks)
PAIRS = (("r16", "steps300"), ("r32", "steps300"), ("r16", "lr2e-3"), ("r32", "lr2e-3"), ("steps300", "lr2e-3"))
SECOND = {f"{a}-{b}": {**FIRST[a], **FIRST[b]} for a, b in PAIRS}
# round three, run after round two: fewer layers with adapters, the setting round one left out (lora-mean adapts every
# linear layer outside the head; notebook 06's sweep found that set ahead of these on a training subsample)
THIRD = {name: {"target_modules": TARGET_SETS[name]} for name in ("attention", "query-value")}
# round four, run after round three: ensembles of round one's choice, the class probabilities of r16 adapters trained
# on the same draw with other seeds averaged (experiments.ensemble; "members" is a setting outside Config)
FOURTH = {f"r16-ensemble{k}": {**FIRST["r16"], "members": k} for k in (3, 5)}
ROUNDS = (FIRST, SECOND, THIRD, FOURTH)
CANDIDATES = {name: changes for candidates in ROUNDS for name, changes in candidates.items()}
COMPARED = ("setfit", BASELINE, "lora")  # notebook 07's draws at PER_CLASS the chosen candidate is paired with


def settings(changes: dict) -> dict:
    """A candidate's changes to Config."""
    return {key: value for key, value in changes.items() if key != "members"}


def recipe(changes: dict) -> dict | None:
    """A candidate's settings outside Config, which its records keep: an ensemble's number of members."""
    return {"members": changes["members"]} if "members" in changes else None


def _records(folder: Path, name: str) -> list[dict]:
    return results.records(folder, name) if results.path_of(folder, name).exists() else []


def _drawn(results_dir: Path, method: str) -> list[dict]:  # notebook 07's records of method at PER_CLASS
    return _records(Path(results_dir) / "curves", f"curve-{method}-n{PER_CLASS}")


def _pick(ran: dict) -> str:
    """Of the candidates' validation scores by draw, the one that leads lora-mean beyond the spread by the most."""
    base = ran.get(BASELINE)
    leads = [(p.difference, name) for name, scores in ran.items() if name != BASELINE and scores and base
             and (p := stats.paired(scores, base)).beyond and p.difference > 0]
    return max(leads)[1] if leads else BASELINE


def _picks(ran: dict) -> list[str]:
    """Each round's choice, among the candidates of that round and the rounds before it."""
    seen, picks = {}, []
    for candidates in ROUNDS:
        seen |= {name: ran.get(name, {}) for name in candidates}
        picks.append(_pick(seen))
    return picks


def chosen(results_dir: Path) -> list[str]:
    """Each round's choice on validation (among it and the rounds before): the candidates the test split scores."""
    folder = Path(results_dir) / FOLDER / "validation"
    return _picks({name: stats.by_seed(_records(folder, name)) for name in CANDIDATES})


def _tested(pick: str, rounds: list[int], test: dict, drawn: dict, on_validation: stats.Paired) -> list[str]:
    versus = [stats.paired(test, drawn[m], pick, m) for m in COMPARED]
    setfit = versus[0]
    draws = ", ".join(f"{d:+.2f} on draw {k}" for k, d in zip(setfit.keys, setfit.differences))
    found = ("leads SetFit beyond the spread" if setfit.beyond and setfit.difference > 0
             else "does not lead SetFit beyond the spread")
    which = f"round{'s' if len(rounds) > 1 else ''} {_and(map(str, rounds))}"
    return [f"Chosen on validation in {which}: **{pick}** (the largest lead beyond the spread). On the test "
            f"split, the same draws: {stats.mean_std(stats.spread(test.values()))}; "
            + "; ".join(_versus(p) for p in versus) + ".",
            "", f"**What it shows.** The choice of {which} {found} at {PER_CLASS} per class on the tweets: against "
            f"SetFit, draw by draw, {draws} points. Its lead over {BASELINE}, "
            f"{on_validation.amount} points on validation, is {versus[1].amount} on test "
            f"({versus[1].verdict})."]


def _change(changes: dict) -> str:
    """A candidate's changes as shown ("r=16, alpha=32.0"), a target set by its name."""
    return ", ".join(f"{key}={next((n for n, t in TARGET_SETS.items() if v == t), v)}" for key, v in changes.items())


def _pairs_add_up(versus: dict, examples: int) -> str:
    """Round two's takeaway (versus: each candidate paired with lora-mean): do two changes beat each alone?"""
    lead = {name: p.difference for name, p in versus.items()}  # mean difference: the means' order against lora-mean
    below = [f"{a}-{b}" for a, b in PAIRS if lead[f"{a}-{b}"] < min(lead[a], lead[b])]
    behind = [name for name in SECOND if lead[name] < 0]
    beyond = [name for name in behind if versus[name].beyond]
    parts = sorted({part for pair in PAIRS for part in pair})
    ahead = [name for name in parts if lead[name] > 0 and versus[name].beyond]
    said = (f"**What round 2 shows.** {len(below)} of {len(PAIRS)} pairs score below both of their changes alone, "
            f"and {len(behind)} of {len(PAIRS)} below {BASELINE} itself (validation means; behind it beyond the "
            f"spread: {_and(beyond) if beyond else 'none'})")
    if len(below) == len(PAIRS):
        led = f"of which only {_and(ahead)} led {BASELINE} beyond the spread" if ahead else \
            f"none of which led {BASELINE} beyond the spread"
        return said + (f": the changes with round 1's best validation means ({led}) do not add up at this size "
                       "(likely because each makes the adapter's update larger or longer, and two at once are too "
                       f"much for {examples:,} examples).")
    return said + "."


def _fewer_layers(versus: dict) -> str:
    """Round three's takeaway: fewer layers with adapters against lora-mean's every linear layer."""
    said = "; ".join(f"{name} {versus[name].amount} points ({versus[name].verdict})" for name in THIRD)
    behind = all(versus[name].beyond and versus[name].difference < 0 for name in THIRD)
    return (f"**What round 3 shows.** Adapters on fewer layers than {BASELINE}'s every linear layer: {said}"
            + (": every linear layer stays the set to adapt at this size, as in notebook 06's sweep." if behind
               else "."))


def _ensembles(ran: dict, made: dict, results_dir: Path) -> str:
    """Round four's takeaway: ensembles against r16 alone, r16's training-seed noise, the cost against SetFit's."""
    alone = [stats.paired(ran[name], ran["r16"], name, "r16") for name in FOURTH]
    said = "; ".join(f"{p.a} {p.amount} points ({p.verdict})" for p in alone)
    largest = max(FOURTH, key=lambda name: FOURTH[name]["members"])
    seeds = [100 * stats.spread(r["train"]["members"])["std"] for r in made[largest]]
    first = {r["meta"]["seed"]: r["train"]["members"][0] for r in made[largest]}  # r16's own seed
    again = "; ".join(f"{first[k]:.4f} against {ran['r16'][k]:.4f} on draw {k}" for k in sorted(first)
                      if k in ran["r16"])
    found = {m: _drawn(results_dir, m) for m in ("setfit", BASELINE)}
    times = ""
    if all(found.values()):
        mean = {m: stats.spread([r["train"]["seconds"] for r in records])["mean"] for m, records in found.items()}
        devices = _and(sorted({r["meta"]["device"] for records in found.values() for r in records}))
        times = (f" An ensemble of k trains k runs of r16's budget and serves k forward passes per text; SetFit's "
                 f"records took {mean['setfit'] / mean[BASELINE]:.0f} times as long to train as {BASELINE}'s at "
                 f"{PER_CLASS} per class (notebook 07's, on {devices}), and serve one.")
    return (f"**What round 4 shows.** Against r16 alone, on the same draws: {said}. With the draw fixed, one r16 "
            f"run's validation accuracy has a standard deviation of {min(seeds):.2f} to {max(seeds):.2f} points over "
            f"its training seed alone ({largest}'s members, draw by draw); averaging k runs shrinks that part of the "
            f"noise. Each ensemble's first member is r16's own run, re-made where round 4 ran: {again} (r16's "
            f"records).{times}")


def search_table(results_dir: Path) -> str:
    """The candidates on validation against lora-mean, round by round, then each round's choice on test."""
    root = Path(results_dir) / FOLDER
    made = {name: _records(root / "validation", name) for name in CANDIDATES}
    if not all(made.values()):
        missing = [k + 1 for k, candidates in enumerate(ROUNDS) if not all(made[name] for name in candidates)]
        return f"(round {missing[0]} of the search has not run: `python benchmarks/search_128.py`)"
    ran = {name: stats.by_seed(found) for name, found in made.items()}
    base = ran[BASELINE]
    versus = {name: stats.paired(scores, base) for name, scores in ran.items() if name != BASELINE}
    found = [r for records in made.values() for r in records]
    cells = []
    for k, candidates in enumerate(ROUNDS, 1):
        for name, changes in candidates.items():
            p = versus.get(name)
            cells.append([k, name, _change(changes) or "(none)", stats.mean_std(stats.spread(ran[name].values())),
                          *(("-", "-") if p is None else (f"{p.amount}, {p.verdict}", f"{p.wins} of {p.n}"))])
    examples = made[BASELINE][0]["config"]["train_size"]  # the drawn training examples
    rows = [f"{len(base)} draws of {PER_CLASS} per class (the learning curves' draws), made {_days(found)}: "
            f"validation accuracy on {found[0]['n_examples']:,} examples, mean ± std over the draws, and each "
            f"candidate against {BASELINE} paired over them:", "",
            markdown_table(f"round | candidate | change from {BASELINE} | validation accuracy | against {BASELINE} "
                           "(points) | ahead in", "rllllr", cells),
            "", _pairs_add_up(versus, examples), "", _fewer_layers(versus), "", _ensembles(ran, made, results_dir)]
    picks = _picks(ran)
    tested = [pick for pick in dict.fromkeys(picks) if pick != BASELINE]
    if not tested:
        rows += ["", f"No candidate leads {BASELINE} beyond the spread on validation, so {BASELINE}'s test draws in "
                 "notebook 07 stand for the search."]
        return "\n".join(rows)
    drawn = {m: stats.by_seed(_drawn(results_dir, m)) for m in COMPARED}
    for pick in tested:
        rounds = [k + 1 for k, p in enumerate(picks) if p == pick]
        test = stats.by_seed(_records(root / "test", pick))
        if not test:
            return "\n".join(rows + ["", f"Chosen in round {rounds[0]}: {pick}; its test draws have not run."])
        if not all(drawn.values()):
            return "\n".join(rows + ["", f"Chosen: {pick}; notebook 07's draws at {PER_CLASS} per class are missing."])
        rows += ["", *_tested(pick, rounds, test, drawn, versus[pick])]
    if len(tested) > 1:
        rows += ["", f"The test split has now scored {len(tested)} choices, one per round that changed the choice: a "
                 "lead there would be one of that many chances."]
    return "\n".join(rows)


def search_line(results_dir: Path) -> str:
    """The README's line on the search: the last round's choice against SetFit on test."""
    picks = chosen(results_dir)
    pick = picks[-1]
    if pick == BASELINE:
        return f"no candidate led {BASELINE} beyond the spread on validation"
    test = stats.by_seed(_records(Path(results_dir) / FOLDER / "test", pick))
    setfit = stats.by_seed(_drawn(results_dir, "setfit"))
    if not test or not setfit:
        return f"{pick} was chosen on validation; its test draws, or SetFit's, have not run"
    change = f"{BASELINE} with {_change(settings(CANDIDATES[pick]))}"
    members = (recipe(CANDIDATES[pick]) or {}).get("members")
    what = f"the class probabilities of {members} runs averaged, each {change}" if members else change
    looks = len({p for p in picks if p != BASELINE})
    return (f"{pick} ({what}), chosen on validation among {len(CANDIDATES) - 1} candidates in "
            f"{len(ROUNDS)} rounds, against SetFit on the same test draws: "
            f"{_versus(stats.paired(test, setfit, pick, 'setfit'))}; the test split scored {looks} "
            f"choice{'s' if looks > 1 else ''}")


BLOCKS = {"search-128": search_table}  # docs/data-efficiency.md's; the README's search_line: lora_ft.report
