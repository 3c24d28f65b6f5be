"""Time-to-target: when a run's validation metric first reaches a target, and what a group's
runs say about it.

Speed claims ("reaches the target loss 20% sooner") compare the tokens, FLOPs or seconds a run
needs to reach a fixed metric value. The crossing is interpolated linearly between the two
evaluations that bracket it (evaluations are sparse; the curve between them is unknown, and a
straight line is the least assuming estimate). A run that never reaches the target is "not
reached", a value of its own: group means are taken over the runs that reached it, beside the
fraction that did, never with a NaN inside.

The speedup of a candidate over the baseline is the ratio of their tokens-to-target on the same
seed; ratios are averaged on the log scale (a 2x speedup and a 2x slowdown cancel) and the t
interval of the mean log ratio is exponentiated, a paired CI over the seeds where both reached
the target.

The record rule of modded-nanogpt (a speedrun must show p < 0.01 that its mean final loss is
below the target over many runs) is the one-sided one-sample t-test `final_below_target`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from mlproject.errors import ConfigError
from mlproject.research.decisions import DIRECTIONS
from mlproject.research.power import check_alpha
from mlproject.stats import t_interval

QUANTITIES = ("tokens", "flops", "seconds")
DEFAULT_TARGET_ALPHA = 0.01  # modded-nanogpt's rule for a new record


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation of a run: how far it had trained and the metric's value there."""

    tokens: float
    seconds: float
    flops: float
    value: float


@dataclass(frozen=True)
class Crossing:
    """Where a run first reached the target; `reached` False is "not reached" (no figures)."""

    reached: bool
    tokens: float | None = None
    seconds: float | None = None
    flops: float | None = None

    def get(self, quantity: str) -> float | None:
        return getattr(self, quantity)

    def __str__(self) -> str:
        return f"{self.tokens:.4g} tokens" if self.reached else "not reached"


NOT_REACHED = Crossing(reached=False)


def meets(value: float, target: float, direction: str) -> bool:
    """Whether `value` is at the target or beyond it in the metric's direction."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    return value <= target if direction == "minimize" else value >= target


def time_to_target(points: Sequence[CurvePoint], target: float, direction: str = "minimize") -> Crossing:
    """The first crossing of `target` along the curve (ordered by tokens), interpolated linearly
    between the evaluation before it and the first one that meets it. An evaluation that meets
    the target exactly is the crossing itself; a curve that starts beyond the target crosses at
    its first evaluation. NaN evaluations (a diverged run) are skipped."""
    curve = sorted((p for p in points if math.isfinite(p.value)), key=lambda p: p.tokens)
    for i, point in enumerate(curve):
        if not meets(point.value, target, direction):
            continue
        if i == 0 or point.value == target:
            return Crossing(True, point.tokens, point.seconds, point.flops)
        before = curve[i - 1]
        frac = (target - before.value) / (point.value - before.value)  # in (0, 1]: before missed, point meets
        return Crossing(True, *(getattr(before, q) + frac * (getattr(point, q) - getattr(before, q))
                                for q in ("tokens", "seconds", "flops")))
    return NOT_REACHED


@dataclass(frozen=True)
class ReachSummary:
    """One group's time-to-target in one quantity: mean and t CI over the seeds that reached it."""

    quantity: str
    n: int  # seeds in the group
    n_reached: int
    fraction_reached: float
    mean: float | None  # None when no seed reached the target
    ci_low: float | None  # None with fewer than 2 seeds reached
    ci_high: float | None

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def summarize_reach(crossings: Sequence[Crossing], quantity: str = "tokens",
                    confidence: float = 0.95) -> ReachSummary:
    """Mean time-to-target of a group with its t interval, over the seeds that reached it."""
    if quantity not in QUANTITIES:
        raise ConfigError(f"quantity must be one of {', '.join(QUANTITIES)}, got {quantity!r}")
    n = len(crossings)
    values = [c.get(quantity) for c in crossings if c.reached]
    mean, low, high = _mean_ci(values, confidence)
    return ReachSummary(quantity, n, len(values), len(values) / n if n else 0.0, mean, low, high)


@dataclass(frozen=True)
class Speedup:
    """Baseline tokens-to-target / candidate's, geometric mean over seeds both reached, with CI.

    Above 1: the candidate reaches the target sooner."""

    n: int  # seeds where both reached the target
    ratio: float | None
    ci_low: float | None
    ci_high: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def speedup(baseline: Mapping[int, Crossing], candidate: Mapping[int, Crossing], quantity: str = "tokens",
            confidence: float = 0.95) -> Speedup:
    """Paired speedup of `candidate` over `baseline` (both keyed by seed) on the log ratio."""
    seeds = sorted(s for s in set(baseline) & set(candidate) if baseline[s].reached and candidate[s].reached)
    logs = [math.log(baseline[s].get(quantity) / candidate[s].get(quantity)) for s in seeds]
    mean, low, high = _mean_ci(logs, confidence)
    exp = (lambda x: None if x is None else math.exp(x))
    return Speedup(len(seeds), exp(mean), exp(low), exp(high))


@dataclass(frozen=True)
class TargetTest:
    """One-sided one-sample t-test that the group's mean final metric is beyond the target."""

    n: int
    mean: float | None
    p_value: float | None  # None with fewer than 2 runs
    alpha: float
    passed: bool  # p_value < alpha


def final_below_target(finals: Sequence[float], target: float, direction: str = "minimize",
                        alpha: float = DEFAULT_TARGET_ALPHA) -> TargetTest:
    """H1: the mean final metric is below the target (above it when maximizing), at `alpha`."""
    alpha = check_alpha(alpha, "target alpha")
    meets(target, target, direction)  # validates the direction
    values = np.asarray([float(v) for v in finals if math.isfinite(v)])
    n = int(values.size)
    mean = float(values.mean()) if n else None
    if n < 2:
        return TargetTest(n, mean, None, alpha, False)
    alternative = "less" if direction == "minimize" else "greater"
    p = float(stats.ttest_1samp(values, target, alternative=alternative).pvalue)
    if math.isnan(p):  # no spread: the mean is certainly on one side (or exactly at the target)
        p = 0.0 if (mean < target if direction == "minimize" else mean > target) else 1.0
    return TargetTest(n, mean, p, alpha, p < alpha)


def _mean_ci(values: Sequence[float], confidence: float) -> tuple[float | None, float | None, float | None]:
    """Mean and two-sided t interval (None where not computable: no value, or one)."""
    if not values:
        return None, None, None
    mean = math.fsum(values) / len(values)
    interval = t_interval(values, confidence)
    return (mean, *interval) if interval else (mean, None, None)
