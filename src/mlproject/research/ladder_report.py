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

`record_ladder` puts it on the parent run: metrics (`fit/<group>/alpha`, `..._ci_low`, ...),
`ladder.json`, the plots under `plots/`, and returns the description's Markdown and the summary
lines printed at the end.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlproject.research.decisions import holm
from mlproject.research.results import Row, finished, metric_key
from mlproject.research.scaling_law import (BootstrapFit, FitStatus, Interval, Points, PowerLawFit,
                                            alpha_difference, bootstrap_fit, compute_multiplier, iso_flop_optimum,
                                            optimum_exponent, percentile_interval, prediction_interval,
                                            resample_indices, within_rung_variance)
from mlproject.research.config import MIN_FITTED_RUNGS
from mlproject.schema import Artifact, Tag
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


# ----------------------------------------------------------------------------- words and metrics

def _unit(metric: str) -> str:
    return "bpb" if "bpb" in metric else "nats" if "loss" in metric else metric


def _iv(interval: Interval | dict[str, float], digits: int = 3) -> str:
    low, high = (interval.low, interval.high) if isinstance(interval, Interval) else (interval["low"], interval["high"])
    return f"[{low:.{digits}g}, {high:.{digits}g}]"


def summary_lines(analysis: LadderAnalysis) -> list[str]:
    """What held, in words: the difference at the largest fitted rung, the exponents, the compute
    multiplier, and each held-out rung's prediction beside its measurement."""
    base, unit, lines = analysis.baseline, _unit(analysis.metric), []
    if len(analysis.design["groups"]) == 1:  # nothing to compare: the fit alone
        f = analysis.fits[base]
        lines.append(f"{base}: α {f.alpha.estimate:.3f} {_iv(f.alpha)}, E {f.E.estimate:.3f} {_iv(f.E)}"
                     if f.fit.converged else f"fit did not converge: {base} {f.fit.status}")
    for group in analysis.design["groups"][1:]:
        last = _largest_fitted(analysis, group)
        if last is not None:
            d = last["diff"][group]
            p = d.get("p_holm")
            lines.append(f"{group} − {base} = {d['mean_diff']:+.3f} {unit} at {last['compute'][group]:.2g} FLOPs "
                         f"(rung {last['rung']}, p_holm = {'n/a' if p is None else f'{p:.3g}'})")
        lines.append(_fit_words(analysis, group))
    for entry in analysis.held_out:
        if "predicted" not in entry:
            lines.append(f"held-out rung {entry['rung']} ({entry['group']}): no prediction (fit "
                         f"{analysis.fits[entry['group']].fit.status}), measured "
                         + ("–" if entry["measured"] is None else f"{entry['measured']:.3f}"))
            continue
        lines.append(f"held-out rung {entry['rung']} ({entry['group']}): predicted {entry['predicted']:.3f} "
                     f"[{entry['pi_low']:.3f}, {entry['pi_high']:.3f}], measured {entry['measured']:.3f}: "
                     f"{'inside' if entry['inside'] else 'outside'}")
    for group, iso in analysis.iso.items():
        exponent = iso["exponent"]
        if math.isfinite(exponent["estimate"]):
            lines.append(f"iso-FLOP {group}: N_opt ∝ C^a with a = {exponent['estimate']:.3g} {_iv(exponent)}")
            continue
        flat = [f"{p['compute']:.3g} ({p['status']})" for p in iso["profiles"] if p["status"] != FitStatus.OK]
        lines.append(f"iso-FLOP {group}: no exponent; budgets without a minimum in log N: {', '.join(flat)}")
    return lines


def _largest_fitted(analysis: LadderAnalysis, group: str) -> dict[str, Any] | None:
    """The per-rung entry of the group's largest fitted point, when it has a paired difference."""
    if not analysis.fit_rungs.get(group):
        return None
    point = analysis.fit_rungs[group][-1]
    return next((e for e in analysis.per_rung if (e["rung"], e["budget"]) == (point["rung"], point["budget"])
                 and group in e["diff"]), None)


def _fit_words(analysis: LadderAnalysis, group: str) -> str:
    base = analysis.baseline
    fits = analysis.fits
    if not (fits[base].fit.converged and fits[group].fit.converged):
        bad = {g: fits[g].fit.status for g in (base, group) if not fits[g].fit.converged}
        return "fit did not converge: " + ", ".join(f"{g} {s}" for g, s in bad.items())
    text = (f"α {fits[group].alpha.estimate:.3f} {_iv(fits[group].alpha)} ({group}) vs "
            f"{fits[base].alpha.estimate:.3f} {_iv(fits[base].alpha)} ({base})")
    m = analysis.between.get(group, {}).get("compute_multiplier")
    if m is not None and math.isfinite(m.estimate):
        text += (f"; {base} reaches {group}'s loss with {m.estimate:.2f}× {_iv(m)} the compute "
                 f"(at {analysis.at_compute[group]:.2g} FLOPs)")
    return text


def ladder_metrics(analysis: LadderAnalysis) -> dict[str, float]:
    """The parent's metrics: fits with intervals, between-group figures, held-out check, per-rung differences."""
    out: dict[str, float] = {}
    for group, f in analysis.fits.items():
        g = metric_key(group)
        out[f"fit/{g}/converged"] = float(f.fit.converged)
        out[f"fit/{g}/n_boot"] = float(f.n_boot)
        for name in ("E", "A", "alpha"):
            iv = getattr(f, name)
            out.update({f"fit/{g}/{name}": iv.estimate, f"fit/{g}/{name}_ci_low": iv.low,
                        f"fit/{g}/{name}_ci_high": iv.high})
        if f.fit.residuals:
            out[f"fit/{g}/residual_rms"] = float(np.sqrt(np.mean(np.square(f.fit.residuals))))
    base = metric_key(analysis.baseline)
    for group, figures in analysis.between.items():
        for name, iv in figures.items():
            prefix = f"fit/{metric_key(group)}-{base}/{name}"
            out.update({prefix: iv.estimate, f"{prefix}_ci_low": iv.low, f"{prefix}_ci_high": iv.high})
    for e in analysis.held_out:
        if "predicted" in e:
            prefix = f"heldout/{metric_key(e['group'])}/{metric_key(e['rung'])}"
            out.update({f"{prefix}/predicted": e["predicted"], f"{prefix}/pi_low": e["pi_low"],
                        f"{prefix}/pi_high": e["pi_high"], f"{prefix}/measured": e["measured"],
                        f"{prefix}/inside": float(e["inside"])})
    for e in analysis.per_rung:
        rung = metric_key(e["rung"] + (f"@{e['budget']:.3g}" if e["budget"] is not None else ""))
        for group, d in e["diff"].items():
            prefix = f"rung/{rung}/{metric_key(group)}-{base}"
            out.update({f"{prefix}/mean_diff": d["mean_diff"],
                        **{f"{prefix}/{k}": d[k] for k in ("p_value", "p_holm") if d.get(k) is not None}})
    for group, iso in analysis.iso.items():
        iv = iso["exponent"]
        out.update({f"iso/{metric_key(group)}/exponent": iv["estimate"],
                    f"iso/{metric_key(group)}/exponent_ci_low": iv["low"],
                    f"iso/{metric_key(group)}/exponent_ci_high": iv["high"]})
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def per_rung_rows(analysis: LadderAnalysis) -> list[dict[str, Any]]:
    """The per-rung table, one row per rung (x budget) and group: mean, n and the difference against the baseline."""
    rows = []
    for e in analysis.per_rung:
        for group, s in e["summary"].items():
            d = e["diff"].get(group, {})
            rows.append({"rung": e["rung"], "budget": e["budget"], "params": e["params"], "group": group,
                         "flops": e["compute"][group], "mean": s["mean"], "n": s["n"],
                         "ci95_low": s["ci_low"], "ci95_high": s["ci_high"], "diff": d.get("mean_diff"),
                         "diff_ci95_low": d.get("ci_low"), "diff_ci95_high": d.get("ci_high"),
                         "p_value": d.get("p_value"), "p_holm": d.get("p_holm")})
    return rows


def ladder_markdown(analysis: LadderAnalysis) -> str:
    """The description's ladder section: a table per rung, then the fits and the held-out check in words."""
    design, base, metric = analysis.design, analysis.baseline, analysis.metric
    groups = design["groups"]
    head = ["rung", "non-emb params", *[f"{g} {metric}" for g in groups], *[f"{g} − {base} [95% CI], p_holm"
                                                                            for g in groups[1:]]]
    lines = [f"### Scaling ladder ({design['mode']}, holdout {design['holdout']}, {design['bootstrap']} bootstrap "
             "resamples of the seeds)", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for e in analysis.per_rung:
        cells = [e["rung"] + (f" @ {e['budget']:.3g}" if e["budget"] is not None else ""), f"{e['params']:,}"]
        cells += [f"{e['summary'][g]['mean']:.4f} (n={e['summary'][g]['n']})" if g in e["summary"] else "–"
                  for g in groups]
        for g in groups[1:]:
            d = e["diff"].get(g)
            cells.append("–" if d is None else f"{d['mean_diff']:+.4f} "
                         + (f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]" if d.get("ci_low") is not None else "")
                         + (f", {d['p_holm']:.3g}" if d.get("p_holm") is not None else ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for group, f in analysis.fits.items():
        lines.append(f"- {group}: L(C) = {f.E.estimate:.4g} + {f.A.estimate:.4g}·C^−{f.alpha.estimate:.4g} "
                     f"({f.fit.status}); α 95% CI {_iv(f.alpha)}, E {_iv(f.E)}; {f.n_failed} of {f.n_boot} "
                     "resamples did not converge")
    lines += [""] + [f"- {line}" for line in summary_lines(analysis)]
    return "\n".join(lines)


def record_ladder(plan: Any, rows: Sequence[Row], results_dir: Path) -> tuple[str, list[str]]:
    """The ladder's analysis on the parent run: metrics, ladder.json, plots and tags; returns its
    description's Markdown and the summary in words."""
    from mlproject.io import atomic_write_text
    from mlproject.research.ladder_plots import ladder_charts
    from mlproject.tracking import client

    analysis = analyze_ladder(plan.ladder, rows)
    client.log_metrics(plan.parent_run_id, ladder_metrics(analysis), step=0)
    client.set_tags(plan.parent_run_id, {Tag.LADDER_FIT_STATUS: json.dumps(
        {g: f.fit.status for g, f in analysis.fits.items()})})
    files = [atomic_write_text(results_dir / Artifact.LADDER_JSON, json.dumps(analysis.as_dict(), indent=2,
                                                                               default=_json_default))]
    client.log_files(plan.parent_run_id, files)
    plots = ladder_charts(analysis, results_dir / Artifact.PLOTS, title=plan.run_name or plan.parent_run_id)
    client.log_files(plan.parent_run_id, plots, Artifact.PLOTS)
    return ladder_markdown(analysis), summary_lines(analysis)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
