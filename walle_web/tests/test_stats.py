"""The significance tests behind new-vs-control, checked against independent computations."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from statistics import NormalDist

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walle_web import stats


def fisher_by_enumeration(x1: int, n1: int, x2: int, n2: int) -> float:
    """Exact arithmetic: every table with the same margins, as likely or less than this one."""
    k = x1 + x2

    def prob(x: int) -> Fraction:
        return Fraction(math.comb(n1, x) * math.comb(n2, k - x), math.comb(n1 + n2, k))

    observed = prob(x1)
    return float(sum(prob(x) for x in range(max(0, k - n2), min(k, n1) + 1) if prob(x) <= observed))


def test_fisher_matches_the_lady_tasting_tea():
    # Fisher (1935): 3 of 4 cups right each way; two-sided p = 34/70.
    assert stats.fisher_exact(3, 4, 1, 4) == pytest.approx(34 / 70)


@given(
    n1=st.integers(1, 30),
    n2=st.integers(1, 30),
    data=st.data(),
)
@settings(max_examples=80, deadline=None)
def test_fisher_matches_exact_enumeration(n1, n2, data):
    x1 = data.draw(st.integers(0, n1))
    x2 = data.draw(st.integers(0, n2))
    assert stats.fisher_exact(x1, n1, x2, n2) == pytest.approx(
        fisher_by_enumeration(x1, n1, x2, n2), rel=1e-6, abs=1e-12
    )


def test_the_z_test_matches_the_normal_distribution():
    # 30 of 100 against 20 of 100: pooled 0.25.
    z = (0.3 - 0.2) / math.sqrt(0.25 * 0.75 * (1 / 100 + 1 / 100))
    expected = 2 * (1 - NormalDist().cdf(z))
    p, test = stats.two_proportion(30, 100, 20, 100)
    assert test == "two-proportion z-test" and p == pytest.approx(expected, rel=1e-9)


def test_error_rate_verdicts_read_as_sentences():
    assert stats.compare_error_rates(3, 10, 0, 100).outcome == "not_enough_data"
    assert "3 runs on the new version" not in stats.compare_error_rates(3, 10, 0, 100).text
    assert "10 runs on the new version" in stats.compare_error_rates(3, 10, 0, 100).text
    worse = stats.compare_error_rates(20, 40, 1, 200)
    assert worse.outcome == "worse" and worse.text == "worse, p < 0.001"
    better = stats.compare_error_rates(1, 200, 20, 40)
    assert better.outcome == "better"
    same = stats.compare_error_rates(5, 100, 9, 100)
    assert same.outcome == "same" and same.text.startswith("no significant difference (p = ")
    assert stats.compare_error_rates(0, 50, 0, 50).text == "no errors in either group"


def u_by_pairs(a, b) -> float:
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b)


def permutation_p(a, b) -> float:
    """Exact two-sided permutation p-value of U (every split of the pooled sample)."""
    pooled = [*a, *b]
    mean = len(a) * len(b) / 2
    observed = abs(u_by_pairs(a, b) - mean)
    hits = total = 0
    for idx in itertools.combinations(range(len(pooled)), len(a)):
        chosen = set(idx)
        left = [pooled[i] for i in idx]
        right = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        total += 1
        hits += abs(u_by_pairs(left, right) - mean) >= observed - 1e-9
    return hits / total


@given(
    pooled=st.lists(st.floats(0, 1000, allow_nan=False), min_size=12, max_size=14, unique=True),
    split=st.integers(6, 7),
)
@settings(max_examples=25, deadline=None)
def test_mann_whitney_agrees_with_pair_counts_and_the_permutation_test(pooled, split):
    # Latencies are continuous, so ties are rare; with ties the approximation is coarser.
    a, b = pooled[:split], pooled[split:]
    u, p = stats.mann_whitney(a, b)
    assert u == pytest.approx(u_by_pairs(a, b))
    # The normal approximation is close to the exact distribution already at n = 6..7.
    assert p == pytest.approx(permutation_p(a, b), abs=0.05)


def test_mann_whitney_handles_ties_and_identical_samples():
    u, p = stats.mann_whitney([1.0] * 12, [1.0] * 12)
    assert (u, p) == (72.0, 1.0)
    assert stats.mann_whitney([1, 1, 2, 2, 3], [2, 2, 3, 3, 4])[0] == u_by_pairs(
        [1, 1, 2, 2, 3], [2, 2, 3, 3, 4]
    )


def test_latency_verdict_says_which_way():
    slow = [10.0 + i for i in range(30)]
    fast = [1.0 + i / 10 for i in range(30)]
    assert stats.compare_latency(slow, fast).outcome == "worse"
    assert stats.compare_latency(fast, slow).outcome == "better"
    assert stats.compare_latency(fast[:5], slow).outcome == "not_enough_data"


def test_weighted_percentiles():
    assert stats.weighted_percentile([(1, 1), (2, 1), (3, 1), (4, 1)], 0.5) == 2
    assert stats.weighted_percentile([(1, 1), (100, 99)], 0.5) == 100
    assert stats.weighted_percentile([(v, 1) for v in range(1, 101)], 0.95) == 95
    assert stats.weighted_percentile([], 0.5) is None
