"""A scaling ladder's analysis (research/ladder_report.py) in words, as metrics and tables, and
on its parent run.

`record_ladder` puts it on the parent: metrics (`fit/<group>/alpha`, `..._ci_low`, ...),
`ladder.json`, the plots under `plots/`, and returns the description's Markdown and the summary
lines printed at the end.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlproject.research.ladder_report import LadderAnalysis, analyze_ladder
from mlproject.research.results import Row, metric_key
from mlproject.research.scaling_law import FitStatus, Interval
from mlproject.schema import Artifact, Tag


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
