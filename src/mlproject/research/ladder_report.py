"""The aggregate stage of a scaling ladder: per-rung statistics, the fits, the held-out check.

`analyze_ladder(design, rows)` is pure (rows of the results table, the design the plan stored):

- per rung, each group's mean over seeds and its paired difference against the baseline (same
  seeds), with Holm-adjusted p-values across the rungs of each group (statsmodels);
- per group, `L(C) = E + A C^-alpha` fitted to the fitted rungs' points (research/scaling_law.py),
  95% intervals by a bootstrap of the seeds within each rung (the same draws for every group),
  the residuals;
- between groups, the compute multiplier at the largest fitted rung and the difference in alpha;
- at each held-out rung, the predicted mean with a 95% prediction interval beside the measured one;
- in iso-FLOP mode, per budget the parabola in log N and its minimising size, and the exponent
  of N_opt ∝ C^a with its interval; the power law is then fitted to each budget's best rung.

The words, metrics and tables made of it, and putting it on the parent run (`record_ladder`),
are research/ladder_summary.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlproject.research.decisions import holm
from mlproject.research.results import Row, finished
from mlproject.research.scaling_law import (BootstrapFit, FitStatus, Interval, Points, PowerLawFit,
                                            alpha_difference, bootstrap_fit, compute_multiplier, iso_flop_optimum,
                                            optimum_exponent, percentile_interval, prediction_interval,
                                            resample_indices, within_rung_variance)
from mlproject.research.config import MIN_FITTED_RUNGS
from mlproject.stats import paired_comparison, summarize


@dataclass
class LadderAnalysis:
    """Everything the ladder's aggregate stage computed (JSON-ready through `as_dict`)."""

    design: dict[str, Any]
    per_rung: list[dict[str, Any]] = field(default_factory=list)
    fits: dict[str, BootstrapFit] = field(default_factory=dict)
    fit_rungs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # group -> fitted points
    between: dict[str, dict[str, Interval]] = field(default_factory=dict)     # candidate -> multiplier, alpha_diff
    held_out: list[dict[str, Any]] = field(default_factory=list)
    iso: dict[str, dict[str, Any]] = field(default_factory=dict)
    at_compute: dict[str, float] = field(default_factory=dict)                # group -> largest fitted compute

    @property
    def baseline(self) -> str:
        return self.design["groups"][0]

    @property
    def metric(self) -> str:
        return self.design["metric"]

    def as_dict(self) -> dict[str, Any]:
        return {"design": self.design, "per_rung": self.per_rung,
                "fits": {g: f.summary() for g, f in self.fits.items()}, "fit_points": self.fit_rungs,
                "between": {g: {k: v.as_dict() for k, v in d.items()} for g, d in self.between.items()},
                "held_out": self.held_out, "iso_flop": self.iso, "at_compute": self.at_compute}


# ----------------------------------------------------------------------------- the analysis

def _cells(design: dict[str, Any], rows: Sequence[Row]) -> dict[tuple[str, str, Any], dict[str, Any]]:
    """(group, rung, budget) -> the cell with its finished seeds' metric and compute."""
    metric = design["metric"]
    by_label = {c["label"]: {**c, "values": {}, "flops": []} for c in design["cells"]}
    for row in finished(rows):
        cell = by_label.get(str(row.get("group")))
        value = row.get(metric)
        if cell is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        cell["values"][int(row["seed"])] = float(value)
        if isinstance(row.get("flops"), (int, float)):
            cell["flops"].append(float(row["flops"]))
    for cell in by_label.values():  # the compute a child logged, else what the plan budgeted
        planned = float(cell["tokens"] * cell["flops_per_token"])
        cell["compute"] = float(np.mean(cell["flops"])) if cell["flops"] else planned
    return {(c["group"], c["rung"], c["budget"]): c for c in by_label.values()}


def _points(design: dict[str, Any], cells: dict, group: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A group's (fitted, held-out) points: per rung, or per budget's best rung in iso-FLOP mode."""
    if design["mode"] == "iso_flop":
        steps = []
        for budget in design["budgets"]:
            options = [cells[(group, r, budget)] for r in design["rungs"] if cells[(group, r, budget)]["values"]]
            best = min(options, key=lambda c: np.mean(list(c["values"].values())), default=None)
            steps.append(best or {"values": {}, "compute": float(budget), "rung": "", "budget": budget})
    else:
        steps = [cells[(group, r, None)] for r in design["rungs"]]
    cut = len(steps) - design["holdout"]
    return steps[:cut], steps[cut:]


def _shared_indices(design: dict[str, Any], fitted: dict[str, list[dict[str, Any]]],
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The bootstrap's resamples of seeds within each rung: one draw shared by every group whose
    seed counts match the baseline's (paired seeds stay paired), else a draw of its own."""
    counts = {g: [len(p["values"]) for p in pts] for g, pts in fitted.items()}
    shared = resample_indices(counts[design["groups"][0]], design["bootstrap"], rng)
    return {g: shared if c == counts[design["groups"][0]] else resample_indices(c, design["bootstrap"], rng)
            for g, c in counts.items()}


def _fit_groups(analysis: LadderAnalysis, cells: dict, rng: np.random.Generator) -> dict[str, Points]:
    design = analysis.design
    fitted = {}
    for group in design["groups"]:
        pts, _ = _points(design, cells, group)
        fitted[group] = [p for p in pts if p["values"]]
        analysis.fit_rungs[group] = [{"rung": p["rung"], "budget": p["budget"], "compute": p["compute"],
                                      "values": {str(s): v for s, v in sorted(p["values"].items())}}
                                     for p in fitted[group]]
    indices = _shared_indices(design, fitted, rng)
    points = {}
    for group, pts in fitted.items():
        points[group] = Points([p["compute"] for p in pts], [p["values"] for p in pts])
        if len(pts) < MIN_FITTED_RUNGS:
            nan = Interval(math.nan, math.nan, math.nan)
            analysis.fits[group] = BootstrapFit(PowerLawFit(FitStatus.TOO_FEW_POINTS, math.nan, math.nan, math.nan),
                                                nan, nan, nan, 0, 0, {k: np.array([]) for k in ("E", "A", "alpha")})
        else:
            analysis.fits[group] = bootstrap_fit(points[group], indices[group])
        analysis.at_compute[group] = pts[-1]["compute"] if pts else math.nan
    return points


def _between(analysis: LadderAnalysis) -> None:
    base = analysis.fits[analysis.baseline]
    for group in analysis.design["groups"][1:]:
        other = analysis.fits[group]
        if not (base.fit.converged and other.fit.converged):
            continue
        analysis.between[group] = {
            "compute_multiplier": compute_multiplier(base, other, analysis.at_compute[group]),
            "alpha_diff": alpha_difference(base, other)}


def _held_out(analysis: LadderAnalysis, cells: dict, points: dict[str, Points], rng: np.random.Generator) -> None:
    for group in analysis.design["groups"]:
        bfit = analysis.fits[group]
        _, held = _points(analysis.design, cells, group)
        for cell in held:
            values = list(cell["values"].values())
            entry = {"group": group, "rung": cell["rung"], "budget": cell["budget"], "compute": cell["compute"],
                     "measured": float(np.mean(values)) if values else None, "n": len(values)}
            if bfit.fit.converged and values:
                interval = prediction_interval(bfit, cell["compute"], len(values),
                                               within_rung_variance(points[group]), rng)
                entry.update(predicted=interval.estimate, pi_low=interval.low, pi_high=interval.high,
                             inside=bool(interval.contains(entry["measured"])))
            analysis.held_out.append(entry)


def _per_rung(analysis: LadderAnalysis, cells: dict) -> None:
    """Per cell: each group's summary and its paired difference with the baseline, Holm over rungs."""
    design, base = analysis.design, analysis.baseline
    keys = [(r, b) for b in (design["budgets"] or [None]) for r in design["rungs"]]
    for rung, budget in keys:
        entry = {"rung": rung, "budget": budget, "params": cells[(base, rung, budget)]["params"],
                 "compute": {g: cells[(g, rung, budget)]["compute"] for g in design["groups"]},
                 "summary": {}, "diff": {}}
        for group in design["groups"]:
            values = cells[(group, rung, budget)]["values"]
            if values:
                entry["summary"][group] = summarize(list(values.values())).as_dict()
            if group != base:
                comparison = paired_comparison(cells[(base, rung, budget)]["values"], values)
                if comparison is not None:
                    entry["diff"][group] = comparison.as_dict()
        analysis.per_rung.append(entry)
    for group in design["groups"][1:]:
        family = {str(i): e["diff"][group]["p_value"] for i, e in enumerate(analysis.per_rung) if group in e["diff"]}
        for key, adjusted in holm(family, design["alpha"]).items():
            analysis.per_rung[int(key)]["diff"][group]["p_holm"] = adjusted.p_holm


def _iso_flop(analysis: LadderAnalysis, cells: dict, rng: np.random.Generator) -> None:
    """Per group: the parabola of each budget, and the exponent of N_opt ∝ C^a over the fitted budgets."""
    design = analysis.design
    budgets = design["budgets"][:len(design["budgets"]) - design["holdout"]]
    for group in design["groups"]:
        profiles, boot = [], []
        for budget in design["budgets"]:
            sizes, values, counts = [], [], []
            for rung in design["rungs"]:
                cell = cells[(group, rung, budget)]
                seeds = [cell["values"][s] for s in sorted(cell["values"])]
                sizes += [cell["params"]] * len(seeds)
                values += seeds
                counts.append(len(seeds))
            profiles.append(iso_flop_optimum(sizes, values, budget).as_dict())
            if budget in budgets and all(counts):
                idx = resample_indices(counts, design["bootstrap"], rng)
                boot.append(_boot_optima(np.asarray(sizes, float), np.asarray(values, float)[idx]))
        n_opts = [p["n_opt"] for p in profiles[:len(budgets)]]
        estimate = optimum_exponent(budgets, n_opts)
        draws = (np.array([optimum_exponent(budgets, col) for col in np.stack(boot, axis=1)])
                 if len(boot) == len(budgets) and boot else np.array([]))
        analysis.iso[group] = {"profiles": profiles, "exponent": percentile_interval(estimate, draws).as_dict()}


def _boot_optima(sizes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """N_opt of the parabola in log N of each resample (rows of `values`); NaN where it has no minimum."""
    a, b, _ = np.polyfit(np.log(sizes), values.T, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, np.exp(-b / (2 * a)), np.nan)


def analyze_ladder(design: dict[str, Any], rows: Sequence[Row]) -> LadderAnalysis:
    """The ladder's statistics and fits from its results rows (see the module docstring)."""
    rng = np.random.default_rng(design["bootstrap_seed"])
    analysis = LadderAnalysis(design)
    cells = _cells(design, rows)
    _per_rung(analysis, cells)
    points = _fit_groups(analysis, cells, rng)
    _between(analysis)
    _held_out(analysis, cells, points, rng)
    if design["mode"] == "iso_flop":
        _iso_flop(analysis, cells, rng)
    return analysis
