"""Power of a paired comparison against the baseline: what a sweep of n seeds can detect.

A compare or ablation tests `candidate - baseline` over the seeds both finished with a
two-sided paired t-test. Its p-value alone does not say whether the test could have seen the
effect at all: with 2 seeds the t distribution has one degree of freedom and only a difference
many standard deviations wide reaches significance. This module reports, from the observed
standard deviation of the paired differences:

- the minimum detectable difference at the target power (80%) with the seeds at hand;
- the number of seeds needed to detect the observed difference (or a difference the user cares
  about, `effect`) at that power;
- the paired effect size, Cohen's d_z = mean difference / sd of the differences
  (Cohen, 1988, Statistical Power Analysis for the Behavioral Sciences, ch. 2).

The power figures come from statsmodels' noncentral-t power of the one-sample t-test
(`statsmodels.stats.power.TTestPower`): a paired t-test is a one-sample test on the
differences. For d = 0.5, alpha = 0.05 and 80% power it asks for 34 pairs, as G*Power does
(Faul et al., 2007).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mlproject.errors import ConfigError

DEFAULT_POWER = 0.8
# The t-test needs 2 pairs (1 degree of freedom); below 3 it has no power to speak of.
FEW_SEEDS = 3
_DIRECT_UP_TO = 10  # seeds_for counts pairs up to this before asking the solver


@dataclass(frozen=True)
class PairedPower:
    """What a paired t-test over `n` seed pairs can detect.

    Figures that cannot be computed are None and `reason` says why (one seed pair, or
    differences with no spread); a figure is never NaN.
    """

    n: int
    alpha: float
    power: float  # the target power the figures refer to
    mean_diff: float | None  # observed mean of candidate - baseline
    sd_diff: float | None  # sample standard deviation of the differences (ddof = 1)
    effect_size: float | None  # Cohen's d_z = mean_diff / sd_diff
    min_detectable_diff: float | None  # smallest |difference| detected with probability `power` at n seeds
    effect: float | None  # the difference `seeds_needed` refers to: the user's, else the observed one
    seeds_needed: int | None  # seed pairs for probability `power` of detecting `effect`
    reason: str | None = None  # why a figure is None

    @property
    def computable(self) -> bool:
        return self.reason is None

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """`alpha` as a float in (0, 1), or a ConfigError naming the bad value."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in (0, 1), got {alpha!r}") from None
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must be in (0, 1), got {alpha!r}")
    return value


def paired_power(diffs: Sequence[float], alpha: float = 0.05, power: float = DEFAULT_POWER,
                 effect: float | None = None) -> PairedPower:
    """Power figures of a two-sided paired t-test on the differences `diffs` (candidate - baseline).

    `effect`, when given, is the difference the user cares about (in the metric's units):
    `seeds_needed` then answers "how many seeds to detect it" instead of using the observed
    mean difference.
    """
    from statsmodels.stats.power import TTestPower  # here: the config imports check_alpha, the CLI stays light

    alpha, power = check_alpha(alpha), check_alpha(power, "power")
    values = [float(d) for d in diffs]
    n = len(values)
    mean = math.fsum(values) / n if n else None
    base = dict(n=n, alpha=alpha, power=power, mean_diff=mean)
    if n < 2:
        return PairedPower(**base, sd_diff=None, effect_size=None, min_detectable_diff=None,
                           effect=effect, seeds_needed=None,
                           reason=f"{n} seed pair{'s' if n != 1 else ''}: no spread to estimate power from")
    if len(set(values)) == 1:  # exact test: the mean of equal floats can be off by an ulp
        return PairedPower(**base, sd_diff=0.0, effect_size=None, min_detectable_diff=None, effect=effect,
                           seeds_needed=None, reason="the paired differences are all equal: no spread")
    analysis = TTestPower()
    # The standardized difference detected with probability `power` at n pairs, back in metric units.
    d_min = float(analysis.solve_power(effect_size=None, nobs=n, alpha=alpha, power=power,
                                       alternative="two-sided"))
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    target = mean if effect is None else float(effect)
    return PairedPower(**base, sd_diff=sd, effect_size=mean / sd, min_detectable_diff=d_min * sd,
                       effect=target, seeds_needed=seeds_for(abs(target) / sd, alpha, power))


def seeds_for(effect_size: float, alpha: float = 0.05, power: float = DEFAULT_POWER) -> int | None:
    """Seed pairs a two-sided paired t-test needs to detect standardized `effect_size` with
    probability `power`; None for a zero effect or one too small for the solver (no practical
    number of seeds detects it)."""
    from statsmodels.stats.power import TTestPower

    if effect_size == 0.0 or not math.isfinite(effect_size):
        return None
    analysis = TTestPower()
    # The solver's root finding fails (NaN and a ConvergenceWarning) for large effects that need
    # only a handful of pairs: count those directly, power grows with n.
    for n in range(2, _DIRECT_UP_TO + 1):
        if analysis.power(effect_size=abs(effect_size), nobs=n, alpha=alpha) >= power:
            return n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a failed solve is a None below, not a warning on stderr
        nobs = float(analysis.solve_power(effect_size=abs(effect_size), nobs=None, alpha=alpha, power=power,
                                          alternative="two-sided"))
    return math.ceil(nobs - 1e-9) if math.isfinite(nobs) else None


def power_line(p: PairedPower, metric: str = "") -> str:
    """One plain sentence for the summary; with fewer than 3 seeds it says the test is powerless."""
    unit = f" {metric}" if metric else ""
    pct = f"{p.power:.0%}"
    if p.n < FEW_SEEDS:
        extra = ""
        if p.min_detectable_diff is not None:
            extra = (f"; only a difference of {fmt(p.min_detectable_diff)}{unit} or more "
                     f"({p.min_detectable_diff / p.sd_diff:.1f} standard deviations) is found {pct} of the time")
        need = f"; {p.seeds_needed} seeds would detect {fmt(p.effect)}{unit}" if p.seeds_needed else ""
        return (f"{p.n} seed{'s' if p.n != 1 else ''}: the test has no power to speak of{extra}{need}; "
                f"run at least {FEW_SEEDS} seeds before reading its p-value")
    if not p.computable:
        return f"{p.n} seeds: power not computable ({p.reason})"
    line = (f"{p.n} seeds: differences below {fmt(p.min_detectable_diff)}{unit} go undetected "
            f"more than {1 - p.power:.0%} of the time ({pct} power, α = {p.alpha:g}); d_z = {fmt(p.effect_size, 2)}")
    if p.seeds_needed is None:
        return line + f"; no practical number of seeds detects {fmt(p.effect)}{unit}"
    return line + f"; {p.seeds_needed} seeds would detect {fmt(p.effect)}{unit}"


def fmt(x: float | None, decimals: int | None = None) -> str:
    """A figure with 3 significant digits (or `decimals` decimals) and a typographic minus."""
    if x is None:
        return "n/a"
    return (f"{x:.3g}" if decimals is None else f"{x:.{decimals}f}").replace("-", "−")
