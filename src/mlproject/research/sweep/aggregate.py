"""Stage 3 of a sweep: the parent's statistics, results files and final status from its children.

`aggregate_sweep(plan or parent run id)` evaluates the finished children (held-out datasets),
aggregates their summary metrics per group (mean, std, 95% t CI, n) with paired comparisons
against the baseline, writes and logs the results files, adds the job's own figures (targets,
a ladder's fits), ends the parent, and prints the summary and the `MLPROJECT_RESULT` line.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlproject.errors import MlprojectError
from mlproject.outdir import kept_or_temporary
from mlproject.protocol import result_line
from mlproject.research.results import (
    SUMMARY_COLUMNS,
    Row,
    SweepStats,
    aggregate,
    format_summary,
    make_row,
    metric_key,
    stats_to_metrics,
    write_results,
)
from mlproject.research.sweep.plan import SweepPlan, load_plan
from mlproject.schema import Artifact, RunStatus, Tag

if TYPE_CHECKING:
    from mlproject.tracking.queries import RunRecord


@dataclass
class SweepOutcome:
    parent_run_id: str
    experiment_id: str
    experiment_name: str
    status: str                 # FINISHED | FAILED | KILLED
    rows: list[Row]
    stats: SweepStats
    results_dir: Path | None    # the results files kept locally (an --output-dir), else None: logged only


# ----------------------------------------------------------------------------- rows

def row_from_run(record: RunRecord, metrics: Sequence[str] = ()) -> Row:
    """A results row from a child run in the tracking store (tags say its group and seed)."""
    from mlproject.tracking.artifacts import checkpoint_uri
    from mlproject.tracking.queries import artifact_files

    tags = record.tags
    present = {p.rsplit("/", 1)[-1] for p in artifact_files(record.run_id, Artifact.CHECKPOINTS)}
    uris = {kind: checkpoint_uri(record.run_id, kind) for kind in ("last", "best") if f"{kind}.pt" in present}
    names = list(dict.fromkeys([*SUMMARY_COLUMNS, *metrics]))
    return make_row(run_id=record.run_id, status=record.status, group=tags.get(Tag.GROUP, ""),
                    model_version=tags.get(Tag.MODEL_VERSION, ""), seed=int(tags.get(Tag.SEED, -1)),
                    summary={k: record.metrics[k] for k in names if k in record.metrics},
                    checkpoint_uris=uris, axis=tags.get(Tag.ABLATION_AXIS, ""), value=tags.get(Tag.ABLATION_VALUE, ""))


def global_steps(record: RunRecord) -> int | None:
    """The optimizer steps a child trained (the original's `global_steps`): tokens seen / tokens per step."""
    per_step = record.params.get("runtime.tokens_per_step")
    seen = record.metrics.get("tokens_seen")
    return round(seen / float(per_step)) if per_step and seen is not None else None


def _export_local(plan: SweepPlan, records: Sequence[RunRecord], rows: list[Row]) -> None:
    """The results copy under research_runs/<kind>/<experiment>/ when asked (--local-copies); in the
    original profile (the parent's tag) with the original's columns, its step counts among them."""
    from mlproject.research.results import export_sweep_results
    from mlproject.tracking.queries import get_run

    if not plan.local_copies:
        return

    original = get_run(plan.parent_run_id).tags.get(Tag.PROFILE) == "original"
    steps = {record.run_id: global_steps(record) for record in records} if original else None
    export_sweep_results(plan.kind, plan.experiment_name, rows, original_steps=steps)


def aggregate_sweep(plan: SweepPlan | str, output_dir: str | None = None, plots: bool = False) -> SweepOutcome:
    """Stage 3: the parent's statistics, results files and final status from its children's
    runs; print the summary table and the MLPROJECT_RESULT line.

    `plan` is a SweepPlan or a parent run id (its stored plan); `plots` also draws the
    parent's charts (as `mlproject plot` does) into the results folder and logs them. Raises
    MlprojectError after reporting when some children did not finish.
    """
    from mlproject.tracking.lease import waiting_hold

    if isinstance(plan, str):
        plan = load_plan(plan)
    # One aggregator at a time: two processes that shared a sweep's children both aggregate it,
    # and the second must find the best child's model the first logged, not log another.
    kept = output_dir or plan.output_dir  # else the files are written in a temporary folder, logged, removed
    with (waiting_hold(plan.parent_run_id, heartbeat_sec=plan.lease_heartbeat, timeout_sec=plan.lease_timeout),
          kept_or_temporary(kept and Path(kept) / "sweeps" / plan.parent_run_id, "mlproject-results-") as folder):
        return _aggregate(plan, folder, plots, kept=bool(kept))


def _aggregate(plan: SweepPlan, results_dir: Path, plots: bool, kept: bool) -> SweepOutcome:
    from mlproject.research.describe import finish_parent
    from mlproject.tracking import client
    from mlproject.tracking.queries import get_run

    missing = [c.name for c in plan.children if not c.run_id]
    if missing:
        raise MlprojectError(f"{plan.kind}: {len(missing)} planned child runs were never started "
                             f"({', '.join(missing)}); re-run the sweep with --resume to train them")
    if plan.eval_datasets:  # held-out evaluations of the finished children (skips those already done)
        from mlproject.research.eval_metrics import evaluate_children

        evaluate_children(plan.child_run_ids, plan.eval_datasets, cache_dir=plan.cache_dir, device=plan.device)
    records = [get_run(run_id) for run_id in plan.child_run_ids]
    rows = [row_from_run(record, plan.metrics) for record in records]
    # a ladder's cells are not compared with its first cell: its own statistics pair groups per rung
    stats = aggregate(rows, plan.groups, plan.metrics, alpha=plan.alpha, effect=plan.effect,
                      paired=plan.ladder is None)
    status = RunStatus.FINISHED if all(r["status"] == RunStatus.FINISHED for r in rows) else RunStatus.FAILED
    _record_results(plan, rows, stats, results_dir)
    notes, job_lines = _job_notes(plan, rows, results_dir)
    _export_local(plan, records, rows)  # research_runs/<kind>/<experiment>/
    try:
        best = finish_parent(plan, plan.parent_run_id, rows, stats, notes=notes)
    except BaseException:
        client.set_status(plan.parent_run_id, RunStatus.FAILED)
        raise
    client.set_status(plan.parent_run_id, status)
    if plots and any(r["status"] == RunStatus.FINISHED for r in rows):
        from mlproject.research.config import PlotConfig
        from mlproject.research.plots import run_plot

        run_plot(PlotConfig(parent_run_id=plan.parent_run_id, output_dir=str(results_dir / Artifact.PLOTS)))

    # a ladder's cells: the fitted metric's table only (its words follow)
    print(format_summary(stats if plan.ladder is None else dataclasses.replace(stats, metrics=plan.metrics[:1]), rows))
    if job_lines:
        print("\n".join(job_lines))
    print(f"results: {results_dir / Artifact.RESULTS_JSONL if kept else Artifact.RESULTS_JSONL} "
          f"(logged to run {plan.parent_run_id})")
    print(result_line({"step": plan.kind, "run_id": plan.parent_run_id, "experiment_id": plan.experiment_id,
                       "experiment_name": plan.experiment_name, "status": status, "children": len(rows),
                       "finished": sum(r["status"] == RunStatus.FINISHED for r in rows),
                       "power": stats.power_lines(plan.metrics[0]) if plan.metrics else [], **best}), flush=True)
    if status != RunStatus.FINISHED:
        failed = [f"{c.name} ({r['status']})" for c, r in zip(plan.children, rows)
                  if r["status"] != RunStatus.FINISHED]
        raise MlprojectError(f"{plan.kind}: {len(failed)} of {len(rows)} child runs did not finish: "
                             f"{', '.join(failed)}; re-run with --resume to complete them")
    return SweepOutcome(plan.parent_run_id, plan.experiment_id, plan.experiment_name, status, rows, stats,
                        results_dir if kept else None)


def _job_notes(plan: SweepPlan, rows: list[Row], results_dir: Path) -> tuple[list[str], list[str]]:
    """What the job adds to the parent after the statistics: time-to-target lines, a ladder's fits
    (research.ladder_summary: metrics, ladder.json, plots). Returns the parent description's
    paragraphs and the lines printed after the summary table."""
    notes: list[str] = []
    printed: list[str] = []
    if plan.targets:  # the same finished children, their eval curves
        from mlproject.research.targets import record_targets

        notes += record_targets(plan, rows)
        printed += notes
    if plan.ladder is not None:
        from mlproject.research.ladder_summary import record_ladder

        markdown, words = record_ladder(plan, rows, results_dir)
        notes.append(markdown)
        printed += ["scaling ladder:", *[f"  {line}" for line in words]]
    return notes, printed


def _record_results(plan: SweepPlan, rows: list[Row], stats: SweepStats, results_dir: Path) -> None:
    """Statistics as parent metrics; results, summary and the job config as parent artifacts."""
    from mlproject.io import atomic_write_text
    from mlproject.tracking import client

    metrics = stats_to_metrics(stats)
    for row in rows:  # parameter counts per group: the size side of the comparison
        if row.get("params_total") is not None:
            metrics[f"params_total/{metric_key(row['group'])}"] = float(row["params_total"])
    finished = sum(r["status"] == RunStatus.FINISHED for r in rows)
    client.log_metrics(plan.parent_run_id, {**metrics, "children_finished": finished,
                                            "children_total": len(rows)}, step=finished)
    files = list(write_results(rows, results_dir))
    files.append(atomic_write_text(results_dir / Artifact.SWEEP_SUMMARY, json.dumps(stats.as_dict(), indent=2)))
    files.append(atomic_write_text(results_dir / Artifact.SWEEP_CONFIG, plan.config_text))
    client.log_files(plan.parent_run_id, files)
