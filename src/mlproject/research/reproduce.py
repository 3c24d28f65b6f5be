"""Verdicts of a reproduction: did the re-made run's numbers come back?

- One metric history (a list of (step, value)) against its reproduction: `identical` when the
  same steps hold bitwise-equal float64 values; `within tolerance` when the largest relative
  difference stays at or under `rtol`; `differs` otherwise, with the first step and size of
  the divergence. Equality is on the bits (`struct`), so a one-ulp change is never
  `identical`, and NaN matches only itself.
- All histories: the worst verdict wins.
- A sweep: the group means of a metric (one value per seed) with a TOST equivalence test
  (Schuirmann, 1987: two one-sided t-tests; equivalent when both reject at alpha), paired by
  seed when the seeds pair up (`statsmodels.stats.weightstats.ttost_paired`), else Welch's
  unpaired form (`ttost_ind`, usevar="unequal"). A failed test is "not shown equivalent", never
  "not reproduced": absence of evidence is not evidence of a difference.
- An overlay plot of original and reproduced curves.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from mlproject.errors import ConfigError
from mlproject.io import atomic_path
from mlproject.research.power import check_alpha

DEFAULT_RTOL = 1e-4
DEFAULT_ALPHA = 0.05
# Timings and memory (training/throughput.py, the run summary) change from run to run by nature: never judged.
TIMING_METRICS = frozenset({"tokens_per_sec", "tokens_per_sec_mean", "ms_per_step", "data_time_share", "mfu",
                            "peak_mem_mb", "elapsed_sec", "logging_overhead_share"})
History = Sequence[tuple[int, float]]


class Verdict(StrEnum):
    """Ordered best to worst: an overall verdict is the worst of its parts."""

    IDENTICAL = "identical"
    WITHIN_TOLERANCE = "within tolerance"
    DIFFERS = "differs"

    @property
    def rank(self) -> int:
        return list(Verdict).index(self)


@dataclass(frozen=True)
class MetricVerdict:
    """The verdict on one metric; for `differs`, where it first diverged and by how much."""

    metric: str
    verdict: Verdict
    steps: int  # steps compared
    max_rel_diff: float = 0.0
    step: int | None = None  # first step out of tolerance (or logged by one side only)
    original: float | None = None
    reproduced: float | None = None
    note: str = ""

    def describe(self) -> str:
        if self.verdict is Verdict.IDENTICAL:
            return f"{self.metric}: identical (bitwise, {self.steps} steps)"
        if self.verdict is Verdict.WITHIN_TOLERANCE:
            return (f"{self.metric}: within tolerance (max relative difference {self.max_rel_diff:.3g}, "
                    f"{self.steps} steps)")
        if self.note:
            return f"{self.metric}: differs: {self.note}"
        return (f"{self.metric}: differs from step {self.step} ({self.original!r} vs {self.reproduced!r}, relative "
                f"difference {_rel(self.original, self.reproduced):.3g}; max {self.max_rel_diff:.3g})")


def _bits(value: float) -> bytes:
    return struct.pack("<d", float(value))


def _rel(a: float | None, b: float | None) -> float:
    """|a - b| relative to the larger magnitude; 0 for equal values (both NaN or same infinity too)."""
    if a is None or b is None:
        return math.inf
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))


def judge_history(metric: str, original: History, reproduced: History, *, rtol: float = DEFAULT_RTOL,
                  max_step: int | None = None) -> MetricVerdict:
    """The verdict on one metric. `max_step`: the reproduction ran only that far, so the original
    is compared up to it (a `--max-steps` re-run); a step logged by one side only is `differs`."""
    if not rtol >= 0:
        raise ConfigError(f"rtol must be a non-negative number, got {rtol!r}")
    orig = sorted((int(s), float(v)) for s, v in original if max_step is None or s <= max_step)
    repro = sorted((int(s), float(v)) for s, v in reproduced if max_step is None or s <= max_step)
    if max_step is not None:  # stopping there adds an end-of-run evaluation the original never made there
        logged = {s for s, _ in orig}
        repro = [(s, v) for s, v in repro if s != max_step or s in logged]
    if not orig and not repro:
        return MetricVerdict(metric, Verdict.DIFFERS, 0, math.inf, note="no values to compare")
    aligned = 0  # leading pairs logged at the same step
    while aligned < min(len(orig), len(repro)) and orig[aligned][0] == repro[aligned][0]:
        aligned += 1
    rels = [_rel(a, b) for (_, a), (_, b) in zip(orig[:aligned], repro[:aligned])]
    max_rel = max(rels, default=0.0)
    for (step, a), (_, b), rel in zip(orig, repro, rels):
        if rel > rtol:
            return MetricVerdict(metric, Verdict.DIFFERS, aligned, max_rel, step, a, b)
    if aligned < min(len(orig), len(repro)):
        step_o, step_r = orig[aligned][0], repro[aligned][0]
        first, side = (step_o, "original") if step_o < step_r else (step_r, "reproduction")
        return MetricVerdict(metric, Verdict.DIFFERS, aligned, max_rel, first,
                             note=f"step {first} logged only by the {side}")
    if len(orig) != len(repro):
        longer, side = (orig, "original") if len(orig) > len(repro) else (repro, "reproduction")
        step = longer[len(rels)][0]
        return MetricVerdict(metric, Verdict.DIFFERS, len(rels), max_rel, step,
                             note=f"step {step} logged only by the {side}")
    if all(_bits(a) == _bits(b) for (_, a), (_, b) in zip(orig, repro)):
        return MetricVerdict(metric, Verdict.IDENTICAL, len(rels))
    return MetricVerdict(metric, Verdict.WITHIN_TOLERANCE, len(rels), max_rel)


def judge_histories(original: Mapping[str, History], reproduced: Mapping[str, History], *,
                    rtol: float = DEFAULT_RTOL, max_step: int | None = None,
                    skip: frozenset[str] = TIMING_METRICS) -> list[MetricVerdict]:
    """A verdict per metric of the original but those in `skip` (timings, and MLflow's
    `system/` metrics) and, with `max_step`, those it first logged after that step; a metric
    the reproduction never logged `differs`."""
    verdicts = []
    for metric in sorted(m for m in original if m not in skip and not m.startswith("system/")):
        if max_step is not None and not any(s <= max_step for s, _ in original[metric]):
            continue  # logged only after the shortened reproduction stopped (end-of-run summaries)
        if metric not in reproduced:
            verdicts.append(MetricVerdict(metric, Verdict.DIFFERS, 0, math.inf, note="not logged by the reproduction"))
        else:
            verdicts.append(judge_history(metric, original[metric], reproduced[metric], rtol=rtol, max_step=max_step))
    return verdicts


def overall_verdict(verdicts: Sequence[MetricVerdict]) -> Verdict:
    """The worst verdict of all metrics; no metric at all is `differs` (nothing came back)."""
    if not verdicts:
        return Verdict.DIFFERS
    return max((v.verdict for v in verdicts), key=lambda verdict: verdict.rank)


@dataclass(frozen=True)
class EquivalenceVerdict:
    """TOST of the reproduced group mean against the original's, at +-margin."""

    equivalent: bool
    p_value: float | None  # the larger of the two one-sided p-values
    margin: float
    mean_difference: float | None  # reproduced - original
    paired: bool
    n_original: int
    n_reproduced: int
    reason: str = ""
    unit: str = ""

    def describe(self) -> str:
        within = f"±{self.margin:.3g}{' ' + self.unit if self.unit else ''}"
        if self.equivalent:
            return f"reproduced (equivalent within {within}, {_p(self.p_value)})"
        return f"not shown equivalent within {within}: {self.reason}"


def _p(p: float | None) -> str:
    """`p = 0.02`, or `p < 0.001` for the smallest."""
    return "p n/a" if p is None else f"p = {p:.2g}" if p >= 1e-3 else "p < 0.001"


def tost_verdict(original: Mapping[int, float], reproduced: Mapping[int, float], margin: float, *,
                 alpha: float = DEFAULT_ALPHA, unit: str = "") -> EquivalenceVerdict:
    """Equivalence of the group means of `reproduced` and `original` ({seed: metric value}).

    Paired by seed (`ttost_paired` on reproduced - original) when both hold the same seeds,
    else unpaired (`ttost_ind`, Welch). `margin`: the largest difference that counts as the same
    result (the caller's default: the original's minimum detectable difference,
    `power.paired_power(...).min_detectable_diff`).
    """
    try:
        margin = float(margin)
    except (TypeError, ValueError):
        raise ConfigError(f"margin must be a positive number, got {margin!r}") from None
    if not (math.isfinite(margin) and margin > 0):
        raise ConfigError(f"margin must be a positive number, got {margin!r}")
    alpha = check_alpha(alpha)
    paired = set(original) == set(reproduced)
    seeds = sorted(original) if paired else []
    x_orig = np.array([original[s] for s in seeds] if paired else list(original.values()), dtype=float)
    x_repro = np.array([reproduced[s] for s in seeds] if paired else list(reproduced.values()), dtype=float)
    base = dict(margin=float(margin), paired=paired, n_original=len(x_orig), n_reproduced=len(x_repro), unit=unit)
    if min(len(x_orig), len(x_repro)) < 2:
        return EquivalenceVerdict(False, None, mean_difference=None, **base,
                                  reason="a t-test needs at least 2 values per group")
    mean_diff = float(x_repro.mean() - x_orig.mean())
    if paired and np.ptp(x_repro - x_orig) == 0:
        # constant differences: no spread to test against; the difference itself is exact
        equivalent = abs(mean_diff) < margin
        return EquivalenceVerdict(equivalent, 0.0 if equivalent else 1.0, mean_difference=mean_diff, **base,
                                  reason="" if equivalent else f"every seed differs by {mean_diff:.3g}")
    if paired:
        p = float(ttost_paired(x_repro, x_orig, -margin, margin)[0])
    else:
        p = float(ttost_ind(x_repro, x_orig, -margin, margin, usevar="unequal")[0])
    reason = "" if p < alpha else (f"{_p(p)} >= {alpha:g} (mean difference {mean_diff:.3g} over "
                                   f"{len(x_orig)} and {len(x_repro)} seeds): more seeds or a wider margin")
    return EquivalenceVerdict(p < alpha, p, mean_difference=mean_diff, **base, reason=reason)


def overlay_plot(original: Mapping[str, History], reproduced: Mapping[str, History], path: str | Path, *,
                 title: str = "original vs reproduced") -> Path:
    """One panel per metric of `original`: both curves against step. Written atomically; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in containers
    import matplotlib.pyplot as plt

    metrics = sorted(original)
    if not metrics:
        raise ConfigError("overlay_plot needs at least one metric history")
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for label, history, style in (("original", original[metric], "-"),
                                      ("reproduced", reproduced.get(metric, ()), "--")):
            points = sorted(history)
            ax.plot([s for s, _ in points], [v for _, v in points], style, label=label)
        ax.set_title(metric)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    axes.flat[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(path)
