"""Time-to-target of a finished sweep (`--target val_loss=5.3`): the eval curves of its children
read back from the store, the pure figures of `research.time_to_target`, and the parent's metrics.

A child's tokens at an evaluation are its step times the tokens per step it recorded
(`runtime.tokens_per_step`), its FLOPs those tokens times `runtime.flops_per_token`, and its
seconds the time from the run's start to the evaluation's logging (wall time, evaluations
included: what a researcher waits for).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mlproject.research.config import parse_target
from mlproject.research.describe import lower_is_better
from mlproject.research.power import fmt
from mlproject.research.results import Row, finished, metric_key
from mlproject.research.time_to_target import (NOT_REACHED, Crossing, CurvePoint, final_below_target,
                                               speedup, summarize_reach, time_to_target)


def child_curve(run_id: str, metric: str) -> list[CurvePoint]:
    """The child's evaluations of `metric` as curve points (empty when it logged none)."""
    from mlproject.tracking.queries import get_run, metric_points

    run = get_run(run_id)
    per_step = float(run.params.get("runtime.tokens_per_step", "nan"))
    per_token = float(run.params.get("runtime.flops_per_token", "nan"))
    return [CurvePoint(tokens=step * per_step, seconds=(ts - run.start_time) / 1000.0,
                       flops=step * per_step * per_token, value=value)
            for step, ts, value in metric_points(run_id, metric)]


def target_figures(rows: Sequence[Row], groups: Sequence[str], metric: str, target: float,
                   alpha: float, curves: dict[str, list[CurvePoint]]) -> tuple[dict[str, float], list[str]]:
    """Parent metrics and summary lines of one target over the FINISHED children, from their
    `curves` (by run id). Metric keys: `ttt/<metric>_<target>/<group>/...`."""
    direction = "minimize" if lower_is_better(metric) else "maximize"
    name = metric_key(f"{metric}_{target:g}")
    crossings: dict[str, dict[int, Crossing]] = {g: {} for g in groups}
    finals: dict[str, list[float]] = {g: [] for g in groups}
    for row in finished(rows):
        curve = curves.get(row["run_id"], [])
        if row.get("group") in crossings:
            crossings[row["group"]][int(row["seed"])] = time_to_target(curve, target, direction) if curve else NOT_REACHED
            if curve:
                finals[row["group"]].append(curve[-1].value)
    metrics: dict[str, float] = {}
    lines = [f"time to {metric} = {target:g} (tokens; not reached is counted apart, never averaged; "
             f"final {metric} beyond the target: one-sided t, α = {alpha:g})"]
    base = crossings[groups[0]] if groups else {}
    for group in groups:
        prefix = f"ttt/{name}/{metric_key(group)}"
        reach = {q: summarize_reach(list(crossings[group].values()), q) for q in ("tokens", "flops", "seconds")}
        tokens = reach["tokens"]
        metrics[f"{prefix}/fraction_reached"] = tokens.fraction_reached
        for q, r in reach.items():
            metrics.update({f"{prefix}/{q}_{k}": v for k, v in (("mean", r.mean), ("ci95_low", r.ci_low),
                                                                  ("ci95_high", r.ci_high)) if v is not None})
        test = final_below_target(finals[group], target, direction, alpha)
        if test.p_value is not None:
            metrics[f"{prefix}/final_p_value"] = test.p_value
        line = (f"  {group}: reached by {tokens.n_reached}/{tokens.n} seeds"
                + (f", {fmt(tokens.mean)} tokens" if tokens.mean is not None else "")
                + (f" [{fmt(tokens.ci_low)}, {fmt(tokens.ci_high)}]" if tokens.ci_low is not None else "")
                + (f"; final mean beyond target p = {test.p_value:.2g} ({'passes' if test.passed else 'fails'})"
                   if test.p_value is not None else ""))
        if group != groups[0]:
            s = speedup(base, crossings[group], "tokens")
            if s.ratio is not None:
                metrics[f"{prefix}/speedup"] = s.ratio
                metrics.update({f"{prefix}/speedup_ci95_{k}": v for k, v in (("low", s.ci_low), ("high", s.ci_high))
                                if v is not None})
                ci = f" [{fmt(s.ci_low)}, {fmt(s.ci_high)}]" if s.ci_low is not None else ""
                line += f"; speedup vs {groups[0]} {fmt(s.ratio)}x{ci} over {s.n} seeds"
        lines.append(line)
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}, lines


def record_targets(plan: Any, rows: Sequence[Row]) -> list[str]:
    """Every `--target` of the plan on its parent as metrics; the summary lines."""
    from mlproject.tracking import client

    lines: list[str] = []
    metrics: dict[str, float] = {}
    for text in plan.targets:
        metric, target = parse_target(text, plan.kind)
        curves = {r["run_id"]: child_curve(r["run_id"], metric) for r in finished(rows)}
        more, more_lines = target_figures(rows, plan.groups, metric, target, plan.target_alpha, curves)
        metrics.update(more)
        lines += more_lines
    if metrics:
        client.log_metrics(plan.parent_run_id, metrics)
    return lines
