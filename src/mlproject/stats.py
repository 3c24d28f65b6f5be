"""Small-sample statistics every stage may use: the sample standard deviation and the t interval.

A handful of values (seeds, evaluation batches) is a small sample, so intervals use Student's t
distribution with n - 1 degrees of freedom rather than the normal approximation (with n = 3 the
95% t quantile is 4.30, not 1.96). `research.stats` builds its seed summaries and paired
comparisons on these; `inference.evaluate` its per-batch intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
