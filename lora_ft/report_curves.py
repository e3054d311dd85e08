"""The learning curves (notebook 07, docs/data-efficiency.md) in tables and words from the records, without torch: each
public function takes the results folder and returns Markdown for the doc's report blocks (BLOCKS) or notebook 07.
Verdicts are stats.paired's over shared draws; sentences whose points have no records (small mode) are left out."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from . import results, stats
from .grids import CURVE_METHODS as METHODS
from .grids import LORA_RECIPES as LORAS  # the LoRA recipes
from .grids import speaks_for_lora

# lora_ft.curves' methods (curves imports torch; tests/test_report_curves.py checks that the two agree)
EMBEDDINGS = ("linear-probe", "setfit")  # the sentence-embedding methods
GOAL = 32  # the project's bar for LoRA with few labels: within SetFit's spread (mean - std) at this n per class


class Curves:
    """A folder's learning-curve records by point (method, n per class; n None: the whole train split)."""

    def __init__(self, folder: Path, metric: str = "accuracy"):
        self.metric, self.points = metric, {}
        for path in [*sorted(Path(folder).glob("curve-*.json")), *sorted(Path(folder).glob("seeds/curve-*.json"))]:
            made = results.read(path)
            self.points.setdefault((made["curve"]["method"], made["curve"]["per_class"]), []).append(made)

    def has(self, n, *methods) -> bool:
        return all((m, n) in self.points for m in methods)

    def grid(self, *methods) -> list:  # the n where all of methods ran, smallest first, the whole split last
        return sorted({n for _, n in self.points if self.has(n, *methods)}, key=_order)

    def at(self, n, among=METHODS) -> list[str]:  # those of among that ran at n, best mean first
        return sorted((m for m in among if (m, n) in self.points), key=lambda m: -self.mean(m, n))

    def spread(self, method: str, n, metric: str | None = None) -> dict:
        return stats.spread(r["metrics"][metric or self.metric] for r in self.points[(method, n)])

    def mean(self, method: str, n) -> float:
        return self.spread(method, n)["mean"]

    def shown(self, method: str, n) -> str:
        return stats.mean_std(self.spread(method, n))

    def records(self) -> list[dict]:  # every point's records
        return [r for found in self.points.values() for r in found]

    def seconds(self, method: str, n) -> float:  # the median: a draw slowed by a job sharing the cores moves it little
        return statistics.median(r["train"]["seconds"] for r in self.points[(method, n)])

    def pair(self, a: str, b: str, n) -> stats.Paired:
        return stats.paired(*(stats.by_seed(self.points[(m, n)], self.metric) for m in (a, b)), a, b, self.metric)


def lora_at(c: Curves, n) -> str:  # the LoRA recipe that speaks for LoRA at n, of those that ran there
    return speaks_for_lora(c.at(n, LORAS), lambda a, b: c.pair(a, b, n))


def steps(record: dict) -> int:
    """Optimizer steps a record trained: SetFit's body steps, else the Trainer's ceil(epochs x batches per epoch)."""
    if "steps" in record["train"]:
        return record["train"]["steps"]
    batches = math.ceil(record["curve"]["train_examples"] / record["config"]["batch_size"])
    return math.ceil(round(record["config"]["epochs"] * batches, 6))


def _order(n) -> float:
    return math.inf if n is None else n


def _and(words) -> str:  # "a", "a and b", "a, b and c"
    words = list(words)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def markdown_table(head: str, align: str, rows) -> str:
    """A Markdown table: head's columns ("a | b"), align's letter per column (l: left, r: right), then rows' cells."""
    lines = [f"| {head} |", "|" + "".join("---:|" if a == "r" else "---|" for a in align)]
    return "\n".join(lines + [f"| {' | '.join(map(str, row))} |" for row in rows])


def _at(ns, notes: dict | None = None) -> str:
    """ "at 8 (note) and 32 per class and with the whole split (note)" for ns (None: the whole split)."""
    notes = notes or {}
    show = [f"{n}{f' ({notes[n]})' if n in notes else ''}" for n in ns if n is not None]
    words = [f"at {_and(show)} per class"] if show else []
    return " and ".join(words + ([f"with the whole split{f' ({notes[None]})' if None in notes else ''}"]
                                 if None in ns else []))


def _versus(p: stats.Paired) -> str:
    """a against b, worded by the verdict: "a leads b (+4.49 ± 1.42 points, a ahead in 4 of 5, beyond the spread)"."""
    said = f"({p.amount} points, {p.a} ahead in {p.wins} of {p.n}, {p.verdict})"
    if not p.beyond:
        return f"{p.a} and {p.b} are level {said}" if p.verdict == "noise" else f"{p.a} against {p.b} {said}"
    return f"{p.a} {'leads' if p.difference > 0 else 'trails'} {p.b} {said}"


def _across(pairs: dict) -> str:
    """a against b over several n, grouped by verdict: "ahead beyond the spread at 8 (+3.88 ± 1.01) ...; level..."."""
    groups = {}
    for n, p in pairs.items():
        key = ("ahead beyond the spread" if p.difference > 0 else "behind beyond the spread") if p.beyond else \
            "level (noise)" if p.verdict == "noise" else p.verdict
        groups.setdefault(key, {})[n] = p.amount
    return "; ".join(f"{key} {_at(list(found), found)}" for key, found in groups.items())


def _sized(c: Curves, *methods) -> list:
    return [n for n in c.grid(*methods) if n is not None]


def _device(c: Curves) -> str:
    return _and(sorted({r["meta"]["device"] for r in c.records()}))


def _days(found) -> str:
    days = sorted({r["meta"]["created"][:10] for r in found})
    return f"on {days[0]}" if len(days) == 1 else f"between {days[0]} and {days[-1]}"


def _few(c: Curves) -> str | None:
    small, said = [n for n in _sized(c) if n <= GOAL], []
    for n in small:
        embeddings, lora = c.at(n, EMBEDDINGS), [lora_at(c, n)] if c.at(n, LORAS) else []
        if embeddings and lora:
            pairs = [c.pair(*embeddings[:2], n)] if len(embeddings) > 1 else []
            pairs += [c.pair(m, lora[0], n) for m in embeddings]
            named = "; ".join(f"{m} {c.shown(m, n)}" for m in embeddings + lora)
            said.append(f"At {n} per class ({named}): {'; '.join(map(_versus, pairs))}.")
    if not said:
        return None
    stds = {n: [100 * c.spread(m, n)["std"] for m in c.at(n)] for n in small}
    text = (f"**Few labels ({_and(map(str, small))} per class): the sentence-embedding methods against LoRA (the "
            f"default, or a recipe that leads it beyond the spread).** {' '.join(said)} Standard deviations over the "
            "draws, whatever the method: "
            f"{'; '.join(f'{min(s):.1f} to {max(s):.1f} points at {n} per class' for n, s in stds.items())}.")
    lora = c.at(GOAL, LORAS)[:1]
    if c.has(GOAL, "setfit") and lora:
        short = 100 * (c.mean("setfit", GOAL) - c.spread("setfit", GOAL)["std"] - c.mean(lora[0], GOAL))
        text += (f" A LoRA recipe within SetFit's spread (mean - std) at {GOAL} per class: " +
                 (f"not reached, {lora[0]} is {short:.1f} points below its lower edge." if short > 0 else
                  f"reached by {lora[0]}."))
    return text


def _crossing(c: Curves) -> str | None:
    said = {}  # by the n where each recipe first lies above, the earliest first
    for lora in LORAS:
        for n in c.grid(lora):
            here = c.at(n, EMBEDDINGS)
            if here and all(c.mean(lora, n) > c.mean(m, n) for m in here):
                missing = [m for m in EMBEDDINGS if m not in here]
                said[(_order(n), lora)] = (f"{lora} {_at([n])}: {'; '.join(_versus(c.pair(lora, m, n)) for m in here)}"
                                           + (f" ({_and(missing)} not run there)" if missing else ""))
                break
        else:
            if any(c.grid(lora, m) for m in EMBEDDINGS):
                said[(math.inf, lora)] = f"{lora} never does"
    if not said:
        return None
    ahead = [f"{m} {_at([n])} ({p.amount})" for m in LORAS for n in c.grid(m, "setfit")
             if (p := c.pair(m, "setfit", n)).beyond and p.difference > 0]
    setfit = (f"ahead of SetFit beyond the spread: {_and(ahead)}" if ahead else
              "none of these LoRA recipes leads SetFit beyond the spread at any n both ran")
    if c.grid("setfit"):
        setfit += f" (SetFit ran up to {_at(c.grid('setfit')[-1:]).removeprefix('at ')})"
    return ("**Where a LoRA recipe's mean first lies above both sentence-embedding methods'**: "
            f"{'; '.join(said[key] for key in sorted(said))}; {setfit}.")


def _recipes(c: Curves) -> str | None:
    if not (shared := c.grid("lora-small", "lora")):
        return None
    n = shared[-1]
    return (f"**The small-data recipe against the project's (lora-small vs lora)**: "
            f"{_across({n: c.pair('lora-small', 'lora', n) for n in shared})}. {_at([n]).capitalize()}: "
            f"{_timed(c, 'lora-small', 'lora', n)}.")


def _timed(c: Curves, a: str, b: str, n) -> str:
    """a's training time against b's at n (medians over the draws), with their batch sizes and validations."""
    first, second = (c.points[(m, n)][0] for m in (a, b))
    checks = [sum("eval_loss" in e for e in r["train"]["history"]) for r in (first, second)]
    return (f"{a} trains in {c.seconds(a, n) / c.seconds(b, n):.2f} times {b}'s time (median {c.seconds(a, n):.0f} s "
            f"against {c.seconds(b, n):.0f} s; batch {first['config']['batch_size']} against "
            f"{second['config']['batch_size']}; {checks[0]} against {checks[1]} validations)")


def _pooling(c: Curves) -> str | None:
    if not (shared := c.grid("lora-mean", "lora")):
        return None
    embedded = [f"{_versus(c.pair('lora-mean', m, n))} {_at([n])}" for n in shared for m in EMBEDDINGS if c.has(n, m)]
    pooler = [n for n in shared if not c.points[("lora", n)][0]["config"].get("contrastive")]  # lora's Trainer runs
    return (f"**The head on the mean of the tokens (lora-mean, pooling=mean) against the pooler's (lora, where it "
            f"trains with the Trainer)**: {_across({n: c.pair('lora-mean', 'lora', n) for n in pooler})}" +
            (f"; against the sentence-embedding methods, which read the same mean: {'; '.join(embedded)}" if embedded
             else "") + ".")


def _lpft(c: Curves) -> str | None:
    if not (shared := c.grid("lora-lpft", "lora-small")):
        return None
    pairs = {n: c.pair("lora-lpft", "lora-small", n) for n in shared}
    helped = [n for n, p in pairs.items() if p.beyond and p.difference > 0]
    loss = {n: max([e["loss"] for e in r["train"]["history"] if "loss" in e][-1]
                   for m in ("lora-lpft", "lora-small") for r in c.points[(m, n)]) for n in shared}
    fit = [n for n in shared if loss[n] < 0.01]
    return (f"**LP-FT (lora-lpft) against lora-small**: {_across(pairs)}; its mean is below lora-small's at "
            f"{sum(p.difference < 0 for p in pairs.values())} of {len(pairs)} n, and ahead beyond the spread "
            + (_at(helped) if helped else "nowhere") + "." +
            (f" {_at(fit).capitalize()} the last logged training loss of every draw is at most "
             f"{max(loss[n] for n in fit):.0e} with either start: the drawn examples are fit whatever the head "
             "started from." if fit else ""))


def _full(c: Curves, majority: dict | None) -> str | None:
    if not (shared := c.grid("full-finetune", "lora")):
        return None
    worst = [n for n in _sized(c, "full-finetune") if c.at(n)[-1] == "full-finetune"]
    rate = c.points[("full-finetune", shared[0])][0]["config"]["learning_rate"]
    text = f"**Full fine-tuning (learning rate {rate:g})**"
    if worst:
        text += (f": the lowest mean of all methods {_at(worst)} ({c.shown('full-finetune', worst[0])} at {worst[0]}"
                 + (f", the majority class {majority['metrics'][c.metric]:.4f}" if majority else "") + ")")
    return text + f"; against lora {_across({n: c.pair('full-finetune', 'lora', n) for n in shared})}."


def _tfidf(c: Curves) -> str | None:
    ns = [n for n in c.grid("tfidf-logreg") if len(c.at(n)) > 1]
    gaps = [100 * (c.mean(next(m for m in c.at(n) if m != "tfidf-logreg"), n) - c.mean("tfidf-logreg", n))
            for n in ns]
    if not gaps:
        return None
    text = ("**TF-IDF + logistic regression**: " +
            (f"{min(gaps):.1f} to {max(gaps):.1f} points behind the best method at every n" if min(gaps) > 0 else
             f"from {max(gaps):.1f} points behind the best method to {-min(gaps):.1f} ahead of the rest"))
    if probe := c.grid("tfidf-logreg", "linear-probe"):
        text += "; against the linear probe " + _across({n: c.pair("tfidf-logreg", "linear-probe", n) for n in probe})
    if sized := _sized(c, "tfidf-logreg"):
        times = [c.seconds("tfidf-logreg", n) for n in sized]
        text += f"; {min(times):.1f} to {max(times):.1f} s of training per draw up to {sized[-1]} per class"
    text += f", {c.seconds('tfidf-logreg', None):.0f} s with the whole split" if c.has(None, "tfidf-logreg") else ""
    return text + " (choosing C on the validation split included)."


def _cost(c: Curves) -> str | None:
    parts = [f"{m} {min(t):.0f} to {max(t):.0f} s up to {_sized(c, m)[-1]} per class"
             for m in ("lora-small", "linear-probe") if (t := [c.seconds(m, n) for n in _sized(c, m)])]
    if _sized(c, "setfit"):
        times = [f"{c.seconds('setfit', n):.0f} s at {n}" for n in _sized(c, "setfit")]
        parts.append(f"setfit {_and(times)} per class (its pairs grow with n)")
    if not parts:
        return None
    both = _sized(c, "setfit", "lora-small")[-1:]
    return (f"**Cost** (median training time per draw, {_device(c)}): {'; '.join(parts)}." +
            "".join(f" At {n} per class setfit takes {c.seconds('setfit', n) / c.seconds('lora-small', n):.0f} "
                    "times lora-small's time." for n in both))


def _table(c: Curves, cell) -> str:
    """Method by n, cell(method, n) in each point that ran, "-" elsewhere."""
    ns = sorted({n for _, n in c.points}, key=_order)
    shown = " | ".join(f"{'all' if n is None else n}{' per class' * (i == 0)}" for i, n in enumerate(ns))
    rows = [[m, *(cell(m, n) if c.has(n, m) else "-" for n in ns)] for m in METHODS if c.grid(m)]
    return markdown_table(f"method | {shown}", "l" + "r" * len(ns), rows)


def curves_table(results_dir: Path, metric: str = "accuracy") -> str:
    """What the grid's records are (how many, when, hours of training), then each point's mean ± std over the draws."""
    c = Curves(Path(results_dir) / "curves", metric)
    found = c.records()
    trained = [r for r in found if "reused_from" not in r]
    reused = sorted({r["curve"]["method"] for r in found if "reused_from" in r})
    draws = {}
    for n in c.grid():
        draws.setdefault(max(len(c.points[(m, n)]) for m in c.at(n)), []).append(n)
    return (f"{len(found)} records over {len(c.points)} points, made {_days(trained)}, device {_device(c)}: "
            f"{sum(r['train']['seconds'] for r in trained) / 3600:.1f} hours of training (the records' "
            "`train.seconds`; loading the model and scoring the test split come on top)"
            + (f", with {_and(reused)} reused at \"all\" from the headline runs' records" if reused else "")
            + f". Test {metric}, mean ± std over the draws "
            f"({'; '.join(f'{k} draws {_at(ns)}' for k, ns in draws.items())}), on the whole test split of "
            f"{found[0]['n_examples']:,} examples:\n\n{_table(c, c.shown)}")


def curves_takeaways(results_dir: Path, metric: str = "accuracy") -> str:
    """The grid's takeaways as a Markdown list, each verdict stats.paired's by draw."""
    c = Curves(Path(results_dir) / "curves", metric)
    majority = Path(results_dir) / "majority.json"  # notebook 02's majority-class record
    said = [f"- {line}" for line in (_few(c), _crossing(c), _recipes(c), _pooling(c), _lpft(c), _full(
        c, results.read(majority) if majority.exists() else None), _tfidf(c), _cost(c)) if line]
    return "\n".join(said) or "- (no learning-curve records to compare: run `python -m lora_ft curves`)"


def _switch(c: Curves) -> tuple | None:
    """(first n where LoRA's mean tops both embedding methods', or None; the n below; who leads LoRA beyond the spread
    at all of those; those where both embedding methods ran), or None where no n has both kinds."""
    if not (sized := [n for n in _sized(c) if c.at(n, LORAS) and c.at(n, EMBEDDINGS)]):
        return None
    cross = next((n for n in sized if c.mean(lora_at(c, n), n) > c.mean(c.at(n, EMBEDDINGS)[0], n)), None)
    below = [n for n in sized if cross is None or n < cross]
    leads = [m for m in EMBEDDINGS if below and all(c.has(n, m) and (p := c.pair(m, lora_at(c, n), n)).beyond
                                                    and p.difference > 0 for n in below)]
    return cross, below, leads, [n for n in below if c.has(n, *EMBEDDINGS)]


def curves_recommendation(results_dir: Path, metric: str = "accuracy") -> str:
    """Which method for how many labels, from the comparisons the takeaways give."""
    c = Curves(Path(results_dir) / "curves", metric)
    if (switch := _switch(c)) is None:
        return "(no LoRA recipe and sentence-embedding method share a point: nothing to recommend from)"
    (cross, below, leads, both), text = switch, "**Recommendation**: "
    if below:
        text += (f"{f'below {cross}' if cross else f'up to {below[-1]}'} labelled examples per class, " +
                 (f"{_and(leads)}, ahead of LoRA beyond the spread at every n there" if leads else
                  "no method leads LoRA beyond the spread at every n there, so the default serves there too"))
        if both:
            share = [c.seconds("linear-probe", n) / c.seconds("setfit", n) for n in both]
            text += (f" (linear-probe against setfit "
                     f"{_across({n: c.pair('linear-probe', 'setfit', n) for n in both})}; the probe trains in "
                     f"{min(share):.0%} to {max(share):.0%} of SetFit's time)")
        text += ". "
    if cross is not None:
        lora = lora_at(c, cross)
        text += (f"From {cross} per class on, {lora} ("
                 f"{'; '.join(_versus(c.pair(lora, m, cross)) for m in c.at(cross, EMBEDDINGS))}). ")
    if c.has(None, "lora", "lora-small"):
        p, faster = c.pair("lora", "lora-small", None), c.seconds("lora", None) < c.seconds("lora-small", None)
        text += (f"With the whole split, {_versus(p)}, and {_timed(c, 'lora', 'lora-small', None)}: " +
                 ("lora-small stays ahead. " if p.beyond and p.difference < 0 else
                  "the project's default recipe does as well in less time. " if faster else
                  "the project's default recipe does as well. "))
    return text + ("Caveat: the probe chose C on the validation split, labels a user with few would not have; "
                   "SetFit and the LoRA recipes used none.")


def curves_cost_table(results_dir: Path) -> str:
    """Each point's median training time per draw, in seconds (the records' train.seconds)."""
    c = Curves(Path(results_dir) / "curves")
    return _table(c, lambda m, n: f"{c.seconds(m, n):.0f}")


def curves_cost_line(results_dir: Path) -> str:
    """How SetFit's and the LoRA recipes' training grows with n, and the training time per n over every draw."""
    c, said, minutes = Curves(Path(results_dir) / "curves"), [], {}
    setfit = [r for n in _sized(c, "setfit") for r in c.points[("setfit", n)]]
    if setfit:
        per_step = [r["train"]["seconds"] / r["train"]["steps"] for r in setfit]
        pairs = sorted({r["train"]["pairs"] / r["curve"]["train_examples"] for r in setfit})
        said.append(f"SetFit's cost grows with n ({_and(f'{p:g}' for p in pairs)} sentence pairs per training "
                    f"sentence, {min(per_step):.1f} to {max(per_step):.1f} s per step of "
                    f"{setfit[0]['config']['batch_size']} pairs)")
    for m in (m for m in ("lora", "lora-small") if c.grid(m)):
        said.append(f"{m}'s optimizer steps: " + _and(f"{steps(made := c.points[(m, n)][0]):,} " + (
            "of pairs " if made["config"].get("contrastive") else "") + (
            "with the whole split" if n is None else f"at {n}") for n in c.grid(m)))
    for (_, n), found in sorted(c.points.items(), key=lambda item: _order(item[0][1])):
        minutes[n] = minutes.get(n, 0) + sum(r["train"]["seconds"] for r in found if "reused_from" not in r) / 60
    times = _and(f"{v:.0f} minutes {_at([n])}" for n, v in minutes.items())
    return "; ".join(said + [f"training time over every method and draw: {times} (reused records left out)"])


def curves_line(results: Path) -> str:
    """The README's line on notebook 07: who leads at few labels, at more, and with the whole split (by draw)."""
    c = Curves(Path(results) / "curves")
    if (switch := _switch(c)) is None:
        return "no learning-curve records yet (`python -m lora_ft curves`)"
    (cross, below, leads, both), said = switch, []
    if below:
        level = _across({n: c.pair("linear-probe", "setfit", n) for n in both})
        said.append(f"{f'below {cross}' if cross else f'up to {below[-1]}'} per class, "
                    + (f"{_and(leads)} lead{'s' * (len(leads) == 1)} LoRA beyond the spread at "
                       "every n" if leads else "no method leads LoRA beyond the spread at every n")
                    + (f" (linear-probe against setfit {level})" if both else ""))
    if cross is not None:
        lora = lora_at(c, cross)
        said.append(f"at {cross} per class {lora}'s mean tops theirs: "
                    + "; ".join(_versus(c.pair(lora, m, cross)) for m in c.at(cross, EMBEDDINGS)))
    if c.has(None, "lora"):
        said.append("with the whole split " + "; ".join(_versus(c.pair(m, "lora", None)) for m in
                                                        ("full-finetune", "lora-small") if c.has(None, m)))
    return "; ".join(said)


def curves_hours(results: Path) -> str:
    """The learning-curve grid's hours of training, from its records (the reused headline runs left out)."""
    found = [r for r in Curves(Path(results) / "curves").records() if "reused_from" not in r]
    return f"{sum(r['train']['seconds'] for r in found) / 3600:.1f} hours of training"


# docs/data-efficiency.md's report blocks (`<!-- report:NAME -->`), for lora_ft.report.BLOCKS
BLOCKS = {"curves-table": curves_table, "curves-takeaways": curves_takeaways,
          "curves-recommendation": curves_recommendation, "curves-cost-table": curves_cost_table,
          "curves-cost-line": curves_cost_line}
