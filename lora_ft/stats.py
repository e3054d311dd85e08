"""Spread over seeds and the one paired comparison behind every "beyond the spread" or "noise" verdict (the rule:
docs/results.md). Runs share their seeds or draws of training examples, so they are compared pair by pair: a
difference is beyond the spread when it is more than THRESHOLD standard errors over two or more shared pairs."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats as scipy_stats

THRESHOLD = 2.0  # a paired difference is beyond the spread when |difference| > THRESHOLD standard errors


def spread(values) -> dict:
    """Mean, standard deviation (n - 1), min, max and n of values."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values to summarise")
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def mean_std(summary: dict, digits: int = 4) -> str:
    """A spread as "mean ± std", e.g. 0.8115 ± 0.0019."""
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


@dataclass(frozen=True)
class Paired:
    """a - b over the seeds or draws both have, in points (x 100) of a metric on a 0-1 scale."""

    a: str
    b: str
    keys: tuple  # the shared seeds or draws
    differences: tuple  # a_i - b_i in points, in keys' order
    metric: str = "accuracy"

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def difference(self) -> float:
        return statistics.fmean(self.differences)

    @property
    def standard_error(self) -> float:
        return statistics.stdev(self.differences) / math.sqrt(self.n) if self.n > 1 else math.nan

    @property
    def wins(self) -> int:
        return sum(d > 0 for d in self.differences)

    @property
    def beyond(self) -> bool:
        """The project's one rule: |difference| > THRESHOLD standard errors, over two or more pairs."""
        if self.n < 2:
            return False
        if self.standard_error == 0:  # every pair differs by the same amount (e.g. two seed-free methods)
            return self.difference != 0
        return abs(self.difference) > THRESHOLD * self.standard_error

    @property
    def amount(self) -> str:
        """The difference with its standard error as text quotes it: "+0.37 ± 0.06" (no ± for one pair)."""
        return f"{self.difference:+.2f}" + (f" ± {self.standard_error:.2f}" if self.n > 1 else "")

    @property
    def verdict(self) -> str:
        return "one pair: no spread to judge by" if self.n < 2 else "beyond the spread" if self.beyond else "noise"

    @property
    def p_value(self) -> float:
        """Two-sided p of Student's paired t test (scipy), for readers who want one; the verdict uses the rule."""
        if self.n < 2 or self.standard_error == 0:
            return math.nan
        return float(scipy_stats.ttest_1samp(self.differences, 0.0).pvalue)

    def __str__(self) -> str:
        said = f"{self.a} vs {self.b}: {self.amount} points of {self.metric}"
        if self.n < 2:
            return f"{said} ({self.verdict})"
        return f"{said} (paired over {self.n}, {self.a} ahead in {self.wins} of {self.n}), {self.verdict}"


def paired(a: dict, b: dict, name_a: str = "a", name_b: str = "b", metric: str = "accuracy") -> Paired:
    """Compare two runs by the seeds or draws they share: a and b map a seed (or draw) to a score on a 0-1 scale."""
    keys = tuple(sorted(set(a) & set(b)))
    if not keys:
        raise ValueError(f"{name_a} and {name_b} share no seed or draw to pair: run them with the same seeds")
    return Paired(name_a, name_b, keys, tuple(100 * (float(a[k]) - float(b[k])) for k in keys), metric)


def by_seed(records, metric: str = "accuracy") -> dict:
    """{seed: metric} of a run's records (one per seed or draw)."""
    return {record["meta"]["seed"]: record["metrics"][metric] for record in records}
