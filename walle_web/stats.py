"""Significance tests for new-vs-control, in plain Python (no I/O, no Django).

- Error rate: a two-sided two-proportion z-test (pooled), or Fisher's exact test when an
  expected cell count is below 5 and the normal approximation would lie.
- Latency: the Mann-Whitney U test (normal approximation with tie and continuity
  corrections): it compares whole distributions by rank, so a few slow outliers do not decide.

Each returns a `Verdict`: the p-value, the direction, and a sentence a product team reads
("worse, p < 0.01"; "not enough data yet: 4 runs on the new version, need 20").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

ALPHA = 0.05  # a difference is called "significant" below this p-value
MIN_RUNS = 20  # runs per group before the error rates are compared
MIN_SAMPLES = 10  # latency samples per group before their distributions are compared


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "worse" | "better" | "same" | "not_enough_data"
    p_value: float | None
    test: str
    text: str

    def as_dict(self) -> dict:
        return asdict(self)


def format_p(p: float) -> str:
    if p < 0.001:
        return "p < 0.001"
    if p < 0.01:
        return "p < 0.01"
    return f"p = {p:.2f}" if p < 0.995 else "p ≈ 1"


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test on [[x1, n1-x1], [x2, n2-x2]]: the total
    probability of every table with these margins that is no more likely than this one."""
    k, n = x1 + x2, n1 + n2
    lo, hi = max(0, k - n2), min(k, n1)

    def log_p(x: int) -> float:
        return _log_comb(n1, x) + _log_comb(n2, k - x) - _log_comb(n, k)

    observed = log_p(x1)
    total = sum(math.exp(lp) for x in range(lo, hi + 1) if (lp := log_p(x)) <= observed + 1e-9)
    return min(1.0, total)


def two_proportion(x1: int, n1: int, x2: int, n2: int) -> tuple[float, str]:
    """Two-sided p-value that the rates x1/n1 and x2/n2 differ, and the test used."""
    pooled = (x1 + x2) / (n1 + n2)
    expected = min(n1 * pooled, n1 * (1 - pooled), n2 * pooled, n2 * (1 - pooled))
    if expected < 5:
        return fisher_exact(x1, n1, x2, n2), "Fisher's exact test"
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (x1 / n1 - x2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2)), "two-proportion z-test"


def compare_error_rates(
    errors_new: int, runs_new: int, errors_control: int, runs_control: int, alpha: float = ALPHA
) -> Verdict:
    """Is the new version's run error rate different from the control group's?"""
    if runs_new < MIN_RUNS or runs_control < MIN_RUNS:
        missing = []
        if runs_new < MIN_RUNS:
            missing.append(f"{runs_new} run{'s' * (runs_new != 1)} on the new version")
        if runs_control < MIN_RUNS:
            missing.append(f"{runs_control} in the control group")
        return Verdict(
            "not_enough_data",
            None,
            "two-proportion test",
            f"not enough data yet: {' and '.join(missing)}, need {MIN_RUNS} each",
        )
    if errors_new == errors_control == 0:
        return Verdict("same", 1.0, "two-proportion test", "no errors in either group")
    p, test = two_proportion(errors_new, runs_new, errors_control, runs_control)
    rate_new, rate_control = errors_new / runs_new, errors_control / runs_control
    if p < alpha:
        outcome = "worse" if rate_new > rate_control else "better"
        return Verdict(outcome, p, test, f"{outcome}, {format_p(p)}")
    return Verdict("same", p, test, f"no significant difference ({format_p(p)})")


def _ranks(values: Sequence[float]) -> tuple[list[float], float]:
    """Average ranks (1-based) of `values`, and the tie term sum(t^3 - t)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    return ranks, ties


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """U statistic of `a` and the two-sided p-value (normal approximation, tie-corrected)."""
    n1, n2 = len(a), len(b)
    ranks, ties = _ranks([*a, *b])
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return u1, 1.0  # every value equal
    z = (abs(u1 - mean) - 0.5) / math.sqrt(var)
    return u1, min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def compare_latency(
    new: Sequence[float], control: Sequence[float], alpha: float = ALPHA
) -> Verdict:
    """Is the new version's latency distribution shifted from the control group's?"""
    if len(new) < MIN_SAMPLES or len(control) < MIN_SAMPLES:
        return Verdict(
            "not_enough_data",
            None,
            "Mann-Whitney U test",
            f"not enough data yet: {len(new)} latency samples on the new version and "
            f"{len(control)} in the control group, need {MIN_SAMPLES} each",
        )
    u_new, p = mann_whitney(new, control)
    if p < alpha:
        # U above its mean: new runs tend to take longer than control runs.
        outcome = "worse" if u_new > len(new) * len(control) / 2 else "better"
        return Verdict(outcome, p, "Mann-Whitney U test", f"{outcome}, {format_p(p)}")
    return Verdict("same", p, "Mann-Whitney U test", f"no significant difference ({format_p(p)})")


def weighted_percentile(pairs: Sequence[tuple[float, float]], q: float) -> float | None:
    """The q-quantile (0..1) of values weighted by counts: [(value, weight), ...]."""
    pairs = sorted((v, w) for v, w in pairs if w > 0)
    total = sum(w for _, w in pairs)
    if not total:
        return None
    threshold = q * total
    seen = 0.0
    for value, weight in pairs:
        seen += weight
        if seen >= threshold - 1e-12:
            return value
    return pairs[-1][0]
