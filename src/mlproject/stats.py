"""Small-sample statistics, the suite's one statistics module: t intervals, seed summaries, paired comparisons.

A handful of values (seeds, evaluation batches) is a small sample, so intervals use Student's t
distribution with n - 1 degrees of freedom rather than the normal approximation (with n = 3 the
95% t quantile is 4.30, not 1.96). It sits on the ground floor so that `inference.evaluate`
(per-batch intervals) and `research` (seed summaries, paired comparisons) share one copy.

Model comparisons are paired by seed: the same seed gives every model the same data order, so
the per-seed difference removes the shared data-order noise and a paired t-test (Student, 1908)
is more sensitive than comparing two independent means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from scipy import stats


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Two-sided t interval of the mean: mean +- t_{(1+c)/2, n-1} * s / sqrt(n); None if n < 2."""
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    sem = sample_std(values) / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
    return mean - half, mean + half


def sample_std(values: Sequence[float]) -> float:
    """Standard deviation with Bessel's correction (ddof = 1)."""
    n = len(values)
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class Summary:
    """Mean of `n` values with sample std and a two-sided t confidence interval (None if n < 2)."""

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


@dataclass(frozen=True)
class PairedComparison:
    """`candidate - baseline` over the seeds both finished: mean difference, its CI and p-value."""

    n: int
    mean_diff: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Summary of one group's values (e.g. val_loss_best of one model over its seeds)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summarize needs at least one value")
    n = len(values)
    mean = math.fsum(values) / n
    interval = t_interval(values, confidence)
    return Summary(n=n, mean=mean, std=sample_std(values) if n > 1 else None,
                   ci_low=interval[0] if interval else None, ci_high=interval[1] if interval else None)


def paired_comparison(baseline: Mapping[int, float], candidate: Mapping[int, float],
                      confidence: float = 0.95) -> PairedComparison | None:
    """Compare two groups on the seeds both have; None when they share no seed."""
    seeds = sorted(set(baseline) & set(candidate))
    if not seeds:
        return None
    diffs = [float(candidate[s]) - float(baseline[s]) for s in seeds]
    n = len(diffs)
    mean_diff = math.fsum(diffs) / n
    interval = t_interval(diffs, confidence)
    p_value = None
    if n > 1:
        sd = sample_std(diffs)
        if sd > 0:
            t_stat = mean_diff / (sd / math.sqrt(n))
            p_value = float(2 * stats.t.sf(abs(t_stat), df=n - 1))
        else:  # identical differences: no spread, the test is degenerate
            p_value = 1.0 if mean_diff == 0 else 0.0
    return PairedComparison(n=n, mean_diff=mean_diff, ci_low=interval[0] if interval else None,
                            ci_high=interval[1] if interval else None, p_value=p_value)
