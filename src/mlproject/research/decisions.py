"""Decisions from several comparisons against one baseline: Holm-adjusted p-values and the
gated `best` alias.

An ablation over four values makes three comparisons against the baseline; at alpha = 0.05
each, the chance that at least one noise difference looks significant is up to 14%. Holm's
step-down procedure (Holm, 1979, "A simple sequentially rejective multiple test procedure",
Scand. J. Statist. 6: 65-70) keeps that family-wise error at alpha, is uniformly more powerful
than Bonferroni and needs no assumption on how the comparisons depend on each other (they
share the baseline, so they are correlated). "Significant" follows the adjusted p-value.

The `best` alias then moves to a candidate only when the evidence says it beats the baseline
at the adjusted alpha in the metric's direction; otherwise it stays on the baseline's best
child. Pure functions: no MLflow, dataclasses in and out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from statsmodels.stats.multitest import multipletests

from mlproject.errors import ConfigError
from mlproject.research.power import check_alpha, fmt

Direction = Literal["minimize", "maximize"]
DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class AdjustedP:
    """One comparison's raw and Holm-adjusted p-value; `significant` follows the adjusted one."""

    name: str
    p_raw: float | None
    p_holm: float | None
    significant: bool


def is_significant(p_adjusted: float | None, alpha: float) -> bool:
    """The one rule for the word "significant": the adjusted p-value is at most alpha
    (statsmodels' Holm rejects exactly then)."""
    return p_adjusted is not None and p_adjusted <= alpha


def holm(p_values: Mapping[str, float | None], alpha: float = 0.05) -> dict[str, AdjustedP]:
    """Holm-adjusted p-values of a family of comparisons, keyed as `p_values`.

    A comparison without a p-value (fewer than 2 paired seeds) is not part of the family:
    it keeps None and is never significant. One comparison alone is its own family (unchanged).
    """
    alpha = check_alpha(alpha)
    tested = [(name, float(p)) for name, p in p_values.items() if p is not None]
    adjusted: dict[str, float] = {}
    if tested:
        _, p_adj, _, _ = multipletests([p for _, p in tested], alpha=alpha, method="holm")
        adjusted = {name: float(p) for (name, _), p in zip(tested, p_adj)}
    return {name: AdjustedP(name=name, p_raw=None if p is None else float(p), p_holm=adjusted.get(name),
                            significant=is_significant(adjusted.get(name), alpha))
            for name, p in p_values.items()}


class PairedDifference(Protocol):
    """`candidate - baseline` over the paired seeds (mlproject.stats' PairedComparison fits)."""

    n: int
    mean_diff: float
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class GroupResult:
    """One group of a sweep as the alias gate sees it: its mean, its best child, and (for a
    candidate) its paired difference against the baseline."""

    group: str
    mean: float
    best_run_id: str | None  # the group's best finished child (None: none finished)
    vs_baseline: PairedDifference | None = None  # None for the baseline itself


@dataclass(frozen=True)
class AliasDecision:
    """Which group's best child gets `best`, why (one line), and the evidence as tag values."""

    group: str
    run_id: str | None
    moved: bool  # True when a candidate won on evidence, False when the alias stays on the baseline
    reason: str
    evidence: dict[str, str] = field(default_factory=dict)


def better(diff: float, direction: str) -> bool:
    """Whether `candidate - baseline = diff` is an improvement in the metric's direction."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    return diff < 0 if direction == "minimize" else diff > 0


def gate_best(groups: Sequence[GroupResult], direction: str, p_holm: Mapping[str, float | None],
              alpha: float = 0.05, metric: str = "", correction: str = "Holm") -> AliasDecision:
    """The gated `best` alias: the best group among the candidates that beat the baseline (first
    in `groups`) at the adjusted alpha in the metric's direction; else the baseline.

    Only a candidate with evidence can take the alias: a better mean without a significant
    adjusted p-value is noise as far as the registry is concerned. Among the candidates that
    have evidence, the one with the best mean wins.
    """
    alpha = check_alpha(alpha)
    if not groups:
        raise ConfigError("gate_best needs at least the baseline group")
    baseline, candidates = groups[0], groups[1:]
    winners = [g for g in candidates if g.vs_baseline is not None and g.best_run_id is not None
               and better(g.vs_baseline.mean_diff, direction) and is_significant(p_holm.get(g.group), alpha)]
    if not winners:
        reason = f"no candidate beat {baseline.group} at α = {alpha:g} ({correction})"
        evidence = {"metric": metric, "baseline": baseline.group, "group": baseline.group,
                    "decision": "stayed", "alpha": f"{alpha:g}", "correction": correction}
        return AliasDecision(baseline.group, baseline.best_run_id, False, reason, evidence)
    sign = 1.0 if direction == "maximize" else -1.0
    win = max(winners, key=lambda g: sign * g.mean)
    d = win.vs_baseline
    assert d is not None
    ci = f" [{fmt(d.ci_low)}, {fmt(d.ci_high)}]" if d.ci_low is not None else ""
    unit = f" {metric}" if metric else ""
    p = p_holm[win.group]
    reason = (f"{win.group} beat {baseline.group}: {fmt(d.mean_diff)}{unit}{ci}, "
              f"p_{correction.lower()} = {p:.2g}, n = {d.n}")
    evidence = {"metric": metric, "baseline": baseline.group, "group": win.group, "decision": "moved",
                "difference": repr(float(d.mean_diff)), "ci_low": _tag(d.ci_low), "ci_high": _tag(d.ci_high),
                "p_adjusted": repr(float(p)), "correction": correction, "alpha": f"{alpha:g}", "n": str(d.n)}
    return AliasDecision(win.group, win.best_run_id, True, reason, evidence)


def _tag(x: float | None) -> str:
    return "" if x is None else repr(float(x))
