"""The one paired comparison: its difference, standard error and t agree with scipy's paired t test, and the rule
("beyond the spread": |difference| > 2 standard errors over two or more shared seeds or draws) at its edges."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from lora_ft import stats


@pytest.mark.parametrize("seed", range(5))
def test_paired_matches_scipy_ttest_rel(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    a = rng.uniform(0.5, 0.9, n)
    b = a + rng.normal(0.01 * (seed - 2), 0.02, n)
    p = stats.paired(dict(enumerate(a)), dict(enumerate(b)), "a", "b")
    scipy = scipy_stats.ttest_rel(a, b)
    assert p.n == n and p.difference == pytest.approx(100 * np.mean(a - b))
    assert p.difference / p.standard_error == pytest.approx(scipy.statistic)
    assert p.standard_error == pytest.approx(100 * np.std(a - b, ddof=1) / math.sqrt(n))
    assert p.p_value == pytest.approx(scipy.pvalue)
    assert p.beyond == (abs(scipy.statistic) > stats.THRESHOLD)
    assert p.verdict == ("beyond the spread" if p.beyond else "noise")
    assert p.wins == int(np.sum(a > b))


def test_only_shared_seeds_are_paired_in_order():
    p = stats.paired({42: 0.80, 43: 0.82, 44: 0.81}, {43: 0.80, 44: 0.80, 45: 0.5}, "a", "b")
    assert p.keys == (43, 44) and p.differences == pytest.approx((2.0, 1.0))
    with pytest.raises(ValueError, match="share no seed or draw"):
        stats.paired({42: 0.8}, {43: 0.8})


def test_one_pair_has_no_spread_to_judge_by():
    p = stats.paired({42: 0.9}, {42: 0.5}, "a", "b")
    assert p.n == 1 and not p.beyond and math.isnan(p.standard_error) and math.isnan(p.p_value)
    assert p.verdict == "one pair: no spread to judge by"
    assert str(p) == "a vs b: +40.00 points of accuracy (one pair: no spread to judge by)"


def test_zero_variance_is_beyond_unless_the_difference_is_zero():
    exact = stats.paired({1: 0.5, 2: 0.5}, {1: 0.25, 2: 0.25})  # e.g. two methods that no seed changes
    assert exact.standard_error == 0 and exact.beyond and exact.verdict == "beyond the spread"
    ties = stats.paired({1: 0.5, 2: 0.6}, {1: 0.5, 2: 0.6})
    assert ties.difference == 0 and ties.wins == 0 and not ties.beyond and ties.verdict == "noise"


def test_the_threshold_is_strict_and_standard_errors_print_to_two_decimals():
    # differences 1 and 3 points: mean 2, standard error 1, t = 2: not beyond (the rule asks for more than 2)
    p = stats.paired({1: 0.51, 2: 0.53}, {1: 0.50, 2: 0.50}, "a", "b")
    assert p.difference == pytest.approx(2.0) and p.standard_error == pytest.approx(1.0) and not p.beyond
    assert str(p) == "a vs b: +2.00 ± 1.00 points of accuracy (paired over 2, a ahead in 2 of 2), noise"


def test_spread_and_by_seed():
    summary = stats.spread([0.8, 0.82, 0.84])
    assert summary["mean"] == pytest.approx(0.82) and summary["std"] == pytest.approx(0.02)
    assert (summary["min"], summary["max"], summary["n"]) == (0.8, 0.84, 3)
    assert stats.spread([0.7])["std"] == 0.0 and stats.mean_std(summary) == "0.8200 ± 0.0200"
    records = [{"meta": {"seed": s}, "metrics": {"accuracy": a}} for s, a in ((42, 0.8), (43, 0.7))]
    assert stats.by_seed(records) == {42: 0.8, 43: 0.7}
