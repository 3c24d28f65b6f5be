"""The ladder's charts, drawn from a `LadderAnalysis` (research/ladder_report.py):

- `ladder_<metric>.png`: the metric against compute (log-log), each seed a point, each group's
  fitted law with its 95% bootstrap band, held-out rungs as open markers with their prediction
  intervals;
- `ladder_diff.png`: each group's difference against the baseline per rung, with 95% CIs;
- `ladder_isoflop.png` (iso-FLOP mode): the metric against size per budget, with the parabolas.

`mlproject plot --kind ladder --parent-run-id ID` draws the same files from the tracking store.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mlproject.research.ladder_report import LadderAnalysis
from mlproject.research.plots import _pyplot, _save


def _colors(groups: list[str]) -> dict[str, Any]:
    cycle = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    return {g: cycle[i % len(cycle)] for i, g in enumerate(groups)}


def law_chart(analysis: LadderAnalysis, path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = _colors(analysis.design["groups"])
    for group in analysis.design["groups"]:
        color = colors[group]
        points = analysis.fit_rungs.get(group, [])
        for p in points:
            ax.scatter([p["compute"]] * len(p["values"]), list(p["values"].values()), color=color, s=14, alpha=0.7)
        f = analysis.fits[group]
        label = group
        if points and f.fit.converged:
            grid = np.geomspace(min(p["compute"] for p in points), _right_edge(analysis, group), 100)
            draws = np.stack([f.predict_draws(c) for c in grid], axis=1)
            ok = np.all(np.isfinite(draws), axis=1)
            low, high = np.percentile(draws[ok], [2.5, 97.5], axis=0) if ok.any() else (None, None)
            ax.plot(grid, f.fit.predict(grid), color=color, lw=1.5)
            if low is not None:
                ax.fill_between(grid, low, high, color=color, alpha=0.15, lw=0)
            label = f"{group}: α {f.alpha.estimate:.3f} [{f.alpha.low:.3f}, {f.alpha.high:.3f}]"
        ax.plot([], [], color=color, marker="o", label=label)
    for e in analysis.held_out:
        if e["measured"] is None:
            continue
        color = colors[e["group"]]
        ax.scatter([e["compute"]], [e["measured"]], facecolors="none", edgecolors=color, s=70, marker="D", lw=1.5)
        if "predicted" in e:
            ax.errorbar([e["compute"]], [e["predicted"]], yerr=[[e["predicted"] - e["pi_low"]],
                                                                [e["pi_high"] - e["predicted"]]],
                        color=color, capsize=4, lw=1, ls="none")
    ax.scatter([], [], facecolors="none", edgecolors="gray", marker="D", label="held out (measured mean; bar: 95% PI)")
    ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs)")
    ax.set_ylabel(analysis.metric)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def _right_edge(analysis: LadderAnalysis, group: str) -> float:
    """The curve runs to the largest held-out compute (the extrapolation is what is checked)."""
    computes = [p["compute"] for p in analysis.fit_rungs[group]]
    computes += [e["compute"] for e in analysis.held_out if e["group"] == group]
    return max(computes)


def diff_chart(analysis: LadderAnalysis, path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors, base = _colors(analysis.design["groups"]), analysis.baseline
    for group in analysis.design["groups"][1:]:
        xs, ys, lows, highs = [], [], [], []
        for e in analysis.per_rung:
            d = e["diff"].get(group)
            if d is None:
                continue
            xs.append(e["compute"][group])
            ys.append(d["mean_diff"])
            lows.append(d["mean_diff"] - d["ci_low"] if d.get("ci_low") is not None else 0.0)
            highs.append(d["ci_high"] - d["mean_diff"] if d.get("ci_high") is not None else 0.0)
        ax.errorbar(xs, ys, yerr=[lows, highs], color=colors[group], marker="o", capsize=4, label=f"{group} − {base}")
    ax.axhline(0.0, color="gray", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs)")
    ax.set_ylabel(f"Δ {analysis.metric} (paired over seeds, 95% CI)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if len(analysis.design["groups"]) > 1:
        ax.legend(fontsize=8)
    return _save(fig, plt, path)


def iso_chart(analysis: LadderAnalysis, path: Path, title: str) -> Path:
    plt = _pyplot()
    groups = analysis.design["groups"]
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False)
    cmap = plt.get_cmap("viridis")
    budgets = analysis.design["budgets"]
    for ax, group in zip(axes[0], groups):
        for i, profile in enumerate(analysis.iso[group]["profiles"]):
            color = cmap(i / max(1, len(budgets) - 1))
            entries = [e for e in analysis.per_rung if e["budget"] == profile["compute"] and group in e["summary"]]
            sizes = [e["params"] for e in entries]
            ax.scatter(sizes, [e["summary"][group]["mean"] for e in entries], color=color,
                       label=f"C = {profile['compute']:.2g}")
            a, b, c = profile["coefficients"]
            if sizes and all(map(math.isfinite, (a, b, c))):
                grid = np.geomspace(min(sizes), max(sizes), 60)
                ax.plot(grid, a * np.log(grid) ** 2 + b * np.log(grid) + c, color=color, lw=1)
            if math.isfinite(profile["n_opt"]):
                ax.axvline(profile["n_opt"], color=color, ls=":", lw=1)
        exponent = analysis.iso[group]["exponent"]
        ax.set_xscale("log")
        ax.set_xlabel("non-embedding parameters N")
        ax.set_ylabel(analysis.metric)
        ax.set_title(f"{group}: N_opt ∝ C^{exponent['estimate']:.2f} [{exponent['low']:.2f}, {exponent['high']:.2f}]")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, plt, path)


def ladder_charts(analysis: LadderAnalysis, out: Path, title: str) -> list[Path]:
    """Every chart of the ladder into folder `out`; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = [law_chart(analysis, out / f"ladder_{analysis.metric}.png", f"scaling ladder: {title}"),
             diff_chart(analysis, out / "ladder_diff.png", f"difference against {analysis.baseline}: {title}")]
    if analysis.iso:
        files.append(iso_chart(analysis, out / "ladder_isoflop.png", f"iso-FLOP profiles: {title}"))
    return files


def ladder_files(parent_run_id: str, children: list[Any], name: str, out: Path) -> list[Path]:
    """A ladder's charts, its fits recomputed from the children's runs and the design stored with
    its plan, and its per-rung table as CSV (last): what `plot` writes for a ladder parent."""
    from mlproject.errors import MlprojectError
    from mlproject.io import atomic_write_text
    from mlproject.research.ladder_report import analyze_ladder
    from mlproject.research.ladder_summary import per_rung_rows
    from mlproject.research.results import to_csv
    from mlproject.research.sweep import load_plan, row_from_run

    plan = load_plan(parent_run_id)
    if plan.ladder is None:
        raise MlprojectError(f"run {parent_run_id} is tagged a ladder but its plan has no ladder design")
    analysis = analyze_ladder(plan.ladder, [row_from_run(c, plan.metrics) for c in children])
    written = ladder_charts(analysis, out, title=f"{plan.run_name or 'ladder'} ({name})")
    written.append(atomic_write_text(out / "ladder_summary.csv", to_csv(per_rung_rows(analysis))))
    return written
