"""Notebook 08's recipe grid read from its records alone (no torch): each recipe's scores over its seeds, the
attention kernel it trained with, its cost on the CPU bench, each comparison a group makes (stats.paired) as a row
or a sentence, and the blocks docs/which-lora.md renders from them (lora_ft.report)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from . import stats
from .grids import DEFAULT_RECIPE as DEFAULT
from .grids import GROUPS, REFERENCE, comparisons
from .report_curves import _and, markdown_table
from .results import records, settings

LR_REFERENCE = REFERENCE["learning-rate"]  # the learning-rate cell with the default's rate and alpha/r
COMPARISONS = {group: comparisons(group) for group in GROUPS}  # notebook 08's, by group
DIVERGED = 0.5  # a seed below this test accuracy collapsed (predicting one class scores less on the tweets)
NONE_YET = "no recipe recorded yet (`python -m lora_ft recipes`)"


def recipe_runs(results: Path) -> dict[str, list[dict]]:
    """Each recorded recipe's records, seed 42 first, from results/recipes/ (refused where seeds differ)."""
    folder = Path(results) / "recipes"
    return {path.stem: records(folder, path.stem) for path in sorted(folder.glob("*.json")) if path.stem != "speed"}


def speeds(results: Path) -> dict[str, dict]:
    """Each recipe's examples/s and peak memory on the CPU bench (bash benchmarks/recipe_speeds.sh), if measured."""
    path = Path(results) / "recipes" / "speed.json"
    return json.loads(path.read_text())["recipes"] if path.exists() else {}


def minutes(found: list[dict], timed: dict) -> float:
    """The budget's minutes at the bench's examples/s (the examples a run processed, as plots.recipe_speed)."""
    processed = statistics.fmean(r["train"]["examples_per_second"] * r["train"]["seconds"] for r in found)
    return processed / timed["examples_per_second"] / 60


def kernel(record: dict) -> str:
    """The attention kernel a run trained with: as its train section records it, else its setting (before it: sdpa)."""
    return record["train"].get("attention") or settings(record)["attention"]


def kernels(found: list[dict]) -> str:  # a recipe's kernels over its seeds: one, unless its seeds differ
    return ", ".join(sorted({kernel(r) for r in found}))


def mean(runs: dict, name: str, metric: str = "accuracy") -> float:
    return statistics.fmean(r["metrics"][metric] for r in runs[name])


def spread_text(records: list[dict], metric: str = "accuracy") -> str:
    """mean ± std over records' seeds ("0.8077 ± 0.0010"), or "0.8077 (one seed)"."""
    values = [r["metrics"][metric] for r in records]
    return stats.mean_std(stats.spread(values)) if len(values) > 1 else f"{values[0]:.4f} (one seed)"


def score(runs: dict, name: str, metric: str = "accuracy") -> str:  # spread_text, or "not yet run"
    return spread_text(runs[name], metric) if name in runs else "not yet run"


def compare(runs: dict, a: str, b: str, metric: str = "accuracy") -> stats.Paired | None:
    """a against b, paired by the seeds both have (stats.paired); None while either is not yet run."""
    if a not in runs or b not in runs:
        return None
    return stats.paired(stats.by_seed(runs[a], metric), stats.by_seed(runs[b], metric), a, b, metric)


def seed_list(keys) -> str:  # "42-44", or "42, 45"
    keys = sorted(keys)
    consecutive = len(keys) > 2 and keys == list(range(keys[0], keys[-1] + 1))
    return f"{keys[0]}-{keys[-1]}" if consecutive else ", ".join(map(str, keys))


def paired_text(p: stats.Paired) -> str:
    """"+1.12 ± 0.16 points paired over seeds 42-44 (ahead on 3 of 3), beyond the spread"; a's side of a - b."""
    if p.n < 2:
        return f"{p.amount} points on seed {p.keys[0]} alone ({p.verdict})"
    return f"{p.amount} points paired over seeds {seed_list(p.keys)} (ahead on {p.wins} of {p.n}), {p.verdict}"


def outcome(p: stats.Paired) -> str:
    """Where a stands against b by the rule: "ahead" or "behind" beyond the spread, else "level"."""
    return "level" if not p.beyond else "ahead" if p.difference > 0 else "behind"


def not_run(names) -> str:  # "a and b not yet run (`the command that runs them`)"
    names = list(dict.fromkeys(names))
    return f"{_and(names)} not yet run (`python -m lora_ft recipes --names {','.join(names)}`)"


def collapsed(runs: dict, name: str) -> int:  # how many of name's seeds fell below DIVERGED
    return sum(r["metrics"]["accuracy"] < DIVERGED for r in runs[name])


def comparison_rows(runs: dict, pairs) -> list[dict]:
    """Each (recipe, reference) of pairs as a row: scores, the paired difference in accuracy and its verdict."""
    rows = []
    for a, b in pairs:
        p = compare(runs, a, b)
        rows.append({"recipe": a, "attention": kernels(runs[a]) if a in runs else "-",
                     "seeds": len(runs.get(a, ())), "accuracy": score(runs, a), "macro-F1": score(runs, a, "f1_macro"),
                     "against": b, "its accuracy": score(runs, b), "difference (points)": p.amount if p else "-",
                     "ahead on": f"{p.wins} of {p.n}" if p else "-", "verdict": p.verdict if p else "not yet run"})
    return rows


def markdown(rows: list[dict]) -> str:
    """rows as a Markdown table, the columns of names aligned left, of numbers right."""
    head = list(rows[0])
    align = "".join("l" if k in ("group", "recipe", "attention", "against", "verdict") else "r" for k in head)
    return markdown_table(" | ".join(head), align, ([row[k] for k in head] for row in rows))


def recipe_table(results: Path) -> str:
    """docs/which-lora.md: every comparison of every group, paired by seed."""
    runs = recipe_runs(results)
    rows = [{"group": group, **row} for group, pairs in COMPARISONS.items() for row in comparison_rows(runs, pairs)]
    return markdown(rows)


def recipe_costs(results: Path) -> str:
    """docs/which-lora.md: each recorded recipe's trained weights, adapter size, and speed and memory on the bench."""
    runs, timed = recipe_runs(results), speeds(results)
    rows = []
    for name in dict.fromkeys(n for pairs in COMPARISONS.values() for a, b in pairs for n in (b, a) if n in runs):
        found, bench = runs[name], timed.get(name)
        rows.append({"recipe": name, "trainable weights": f"{found[0]['params']['trainable']:,}",
                     "adapter (MB)": f"{statistics.fmean(r['resources']['saved_mb'] for r in found):.2f}",
                     "CPU examples/s": f"{bench['examples_per_second']:.1f}" if bench else "not timed",
                     "minutes for the budget": f"{minutes(found, bench):.1f}" if bench else "-",
                     "CPU peak memory (MB)": f"{bench['peak_memory_mb']:,.0f}" if bench else "-"})
    return markdown(rows) if rows else NONE_YET


def recipe_grid(results: Path) -> str:
    """docs/which-lora.md's line on the grid: recipes, runs and seeds, where they trained, what the CPU would take."""
    runs, timed = recipe_runs(results), speeds(results)
    if not runs:
        return NONE_YET
    usual = Counter(len(found) for found in runs.values()).most_common(1)[0][0]
    other = "".join(f", {len(found)} for {name}" for name, found in runs.items() if len(found) != usual)
    records = [r for found in runs.values() for r in found]
    devices = Counter(r["meta"]["device"] for r in records)
    cpu_hours = sum(r["train"]["seconds"] for r in records if r["meta"]["device"].startswith("cpu")) / 3600
    line = (f"{len(runs)} recipes recorded, {len(records)} runs ({usual} seed{'s' * (usual > 1)} each{other}); "
            "trained " + ", ".join(f"{n} on {device}" for device, n in devices.most_common())
            + f", {cpu_hours:.1f} hours of training on the CPU")
    each = {name: minutes(found, timed[name]) for name, found in runs.items() if name in timed}
    if not each:
        return line + "; no recipe timed on the CPU bench yet"
    quick, slow = min(each, key=each.get), max(each, key=each.get)
    total = sum(each[name] * len(runs[name]) for name in each) / 60
    untimed = [name for name in runs if name not in timed]
    return (line + f". At the CPU bench's speeds one run of the budget takes {each[quick]:.1f} ({quick}) to "
            f"{each[slow]:.1f} minutes ({slow}) on the bench's CPU, {total:.1f} hours for every run recorded"
            + (f" ({', '.join(untimed)} not timed)" if untimed else ""))


def kernel_sentence(runs: dict) -> str:
    """The kernel group's verdict: the default recipe with eager attention against the same with sdpa."""
    a, b = COMPARISONS["kernel"][0]
    p = compare(runs, a, b)
    if p is None:
        return f"the kernel comparison waits for its runs: {not_run(n for n in (a, b) if n not in runs)}"
    return (f"every linear layer without the model's dropout scored {score(runs, a)} with {kernels(runs[a])} "
            f"attention ({a}) against {score(runs, b)} with {kernels(runs[b])} ({b}): {paired_text(p)} by the "
            "project's rule")


KERNEL_SPEEDS = ("all-linear", "all-linear-dropout0", "all-linear-dropout0-eager")  # dropout on/off, sdpa/eager


def kernel_speeds(results: Path) -> str:
    """The CPU bench's speeds (results/recipes/speed.json) of KERNEL_SPEEDS, as a table."""
    timed, runs = speeds(results), recipe_runs(results)
    rows = []
    for name in KERNEL_SPEEDS:
        dropout = settings(runs[name][0])["base_dropout"]
        rows.append([name, kernel(runs[name][0]), "the model's own" if dropout is None else f"{dropout:g}",
                     f"{timed[name]['examples_per_second']:.1f}", f"{timed[name]['peak_memory_mb']:,.0f}"])
    return markdown_table("recipe | attention | model dropout | examples/s | peak MB", "llrrr", rows)


def kernel_verdict(results: Path) -> str:
    return kernel_sentence(recipe_runs(results))


def _verdict(runs: dict, a: str, b: str) -> str:  # a against b as paired_text, or what is not yet run
    p = compare(runs, a, b)
    return paired_text(p) if p else not_run(n for n in (a, b) if n not in runs)


def _against(runs: dict, a: str, b: str) -> str:
    return f"{a} against {b}: {_verdict(runs, a, b)}"


def findings(runs: dict, timed: dict, headline: list[dict] | None) -> str:
    """What the grid found, one bullet per question, verdicts by the rule; headline: the default's headline records."""
    qv, d = "query-value-dropout0", DEFAULT
    p = compare(runs, qv, d)
    if p is None:
        default = f"**Every linear layer or query/value**: {not_run(n for n in (qv, d) if n not in runs)}."
    else:
        then = {"behind": "so the default keeps every linear layer", "level": "so on this budget the extra weights "
                "buy no accuracy beyond the spread", "ahead": "so query/value is the better choice on these records"}
        weights = runs[d][0]["params"]["trainable"] / runs[qv][0]["params"]["trainable"]
        default = (f"**Every linear layer** ({d}: the default's settings, trained without validations) scores "
                   f"{score(runs, d)}, query/value with the same settings {score(runs, qv)}; "
                   f"{_against(runs, qv, d)}: {then[outcome(p)]}, for "
                   f"{weights:.1f}x the trainable weights. With the model's dropout on, "
                   f"{_against(runs, 'all-linear', 'query-value')}.")
    lr = list(dict.fromkeys(a for pair in COMPARISONS["learning-rate"] for a in pair if a in runs))
    if lr:
        best = max(lr, key=lambda name: mean(runs, name))
        broke = [f"{name} on {k} of {len(runs[name])} seeds" for name in lr if (k := collapsed(runs, name))]
        behind = [p for p in (compare(runs, a, b) for a, b in COMPARISONS["learning-rate"]) if p and p.beyond]
        rate = (f"**The learning rate**: of the {len(lr)} cells recorded, {best} has the best mean "
                f"({score(runs, best)})" + (f", and {len(behind)} of the others are behind it beyond the spread"
                                            if best == LR_REFERENCE else f"; {_against(runs, LR_REFERENCE, best)}")
                + (f"; training collapsed for {', '.join(broke)}" if broke else "") + ".")
    else:
        rate = f"**The learning rate**: {not_run(a for pair in COMPARISONS['learning-rate'] for a in pair)}."
    pairs = [(a, compare(runs, a, b)) for a, b in COMPARISONS["variants"]]
    ahead = [a for a, p in pairs if p and outcome(p) == "ahead"]
    shown = [f"{a} {p.amount} ({p.verdict}" + (f", collapsed on {collapsed(runs, a)} of {p.n} seeds)" if collapsed(
        runs, a) else ")") for a, p in pairs if p]
    absent = [a for a, p in pairs if not p]
    so_far = " recorded so far" if absent else ""
    variants = ("**peft's variants**: " + not_run(absent) + "." if not shown else
                (f"**None of peft's variants{so_far} beats plain LoRA (all-linear) beyond the spread**" if not ahead
                 else f"**{', '.join(ahead)} beat{'s' if len(ahead) == 1 else ''} plain LoRA beyond the spread**")
                + f", in points paired by seed: {'; '.join(shown)}" + (f"; {not_run(absent)}" if absent else "") + ".")
    fast = {name: t["examples_per_second"] for name, t in timed.items() if name in runs}
    bench = ""
    if fast:
        top, bottom = max(fast, key=fast.get), min(fast, key=fast.get)
        versus = f", {fast[top] / fast[d]:.2f}x {d}'s {fast[d]:.1f}" if d in fast else f"; {d} not yet timed"
        bench = (f" On the CPU bench {top} trains fastest ({fast[top]:.1f} examples/s{versus}) and {bottom} "
                 f"slowest ({fast[bottom]:.1f}).")
    speed = ("**The model's dropout off**, on every linear layer: "
             f"{_against(runs, 'all-linear-dropout0', 'all-linear')}; on query/value: "
             f"{_against(runs, qv, 'query-value')}.{bench}")
    budget = (f"**A third epoch**, on every linear layer: {_against(runs, 'all-linear-3epochs', 'all-linear')}; on "
              f"query/value: {_against(runs, 'query-value-3epochs', 'query-value')}.")
    kernel = f"**The attention kernel**: {kernel_sentence(runs)}."
    if headline:
        seeds = seed_list(r["meta"]["seed"] for r in headline)
        head = (f"**The default's headline run** (notebook 03, seed{'s' * (len(headline) > 1)} {seeds}) scores an "
                f"accuracy of {spread_text(headline)} and a macro-F1 of {spread_text(headline, 'f1_macro')}: the "
                "numbers the README and notebook 04 quote. The grid's numbers are its own runs on the same budget "
                "without validations, each compared only with the grid's. The default's accuracy is this one "
                f"(results/summaries/lora.json); the grid's figure for {d} is the same recipe trained without "
                "validations, not a second accuracy for the default. Validations set no weight, yet a run "
                "without them ends at other weights (checked on a small run in fp32; why is open): the grid's "
                f"{d} against the headline run, "
                f"{_verdict({**runs, 'headline': headline}, d, 'headline')}.")
    else:
        head = "**The default's headline run**: not yet run (notebook 03 writes results/lora.json)."
    return "\n".join(f"- {line}" for line in (default, rate, variants, speed, budget, kernel, head))


def targets_line(results: Path) -> str:
    """docs/data-and-models.md: every linear layer against query and value alone, paired by seed."""
    return _verdict(recipe_runs(results), "all-linear", "query-value")


def _said(runs: dict, a: str, b: str) -> str:  # a against b as paired_text, or "not yet run"
    p = compare(runs, a, b)
    return paired_text(p) if p else "not yet run"


def which_lora_line(results: Path) -> str:
    """The README's line on notebook 08: targets, variants and learning rates, dropout, a third epoch, by the rule."""
    runs, timed = recipe_runs(results), speeds(results)
    if not runs:
        return NONE_YET
    text = f"every linear layer against the LoRA paper's query and value: {_said(runs, 'all-linear', 'query-value')}"
    if {"all-linear", "query-value"} <= set(runs):
        weights = [runs[name][0]["params"]["trainable"] for name in ("all-linear", "query-value")]
        text += f", for {weights[0] / weights[1]:.1f}x the trainable weights"
    rivals = [p for a, b in COMPARISONS["variants"] + COMPARISONS["learning-rate"] if (p := compare(runs, a, b))]
    ahead = [p.a for p in rivals if outcome(p) == "ahead"]
    text += (f"; of the {len(rivals)} recipes of peft's variants and other learning rates recorded against it, "
             + (f"{', '.join(ahead)} beat{'s' * (len(ahead) == 1)} it" if ahead else "none beats it")
             + f" beyond the spread and {sum(outcome(p) == 'behind' for p in rivals)} are behind it")
    fast = ""
    if {"query-value-dropout0", "query-value"} <= set(timed):
        ratio = timed["query-value-dropout0"]["examples_per_second"] / timed["query-value"]["examples_per_second"]
        fast = f", at {ratio:.2f}x its examples/s on the CPU bench"
    return (text + f"; the model's dropout off, on query/value: {_said(runs, 'query-value-dropout0', 'query-value')}"
            f"{fast}; on every linear layer: {_said(runs, 'all-linear-dropout0', 'all-linear')}; a third epoch, on "
            f"query/value: {_said(runs, 'query-value-3epochs', 'query-value')}; on every linear layer: "
            f"{_said(runs, 'all-linear-3epochs', 'all-linear')}")


def recipes_hours(results: Path) -> str:
    """The README: what the recorded recipe runs take at the CPU bench's speeds."""
    runs, timed = recipe_runs(results), speeds(results)
    each = {name: found for name, found in runs.items() if name in timed}
    if not each:
        return "not yet timed (`bash benchmarks/recipe_speeds.sh`)"
    hours = sum(minutes(found, timed[name]) * len(found) for name, found in each.items()) / 60
    timed_runs, recorded = sum(map(len, each.values())), sum(map(len, runs.values()))
    return f"{hours:.1f} hours for {timed_runs} of the grid's {recorded} recorded runs at the CPU bench's speeds"
