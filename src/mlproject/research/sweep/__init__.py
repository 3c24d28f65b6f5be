"""The sweep engine behind compare, ablation and ladder: one parent run, one child run per group x seed.

A job (research/compare.py, research/ablation.py) turns its config into a `SweepSpec`: the
groups (model versions or axis values, baseline first), one fully resolved `RunConfig` per
child, and a sweep key. Everything else is shared and lives here:

- every child config is validated before the parent or any child run exists;
- the parent is the run `mlflow run` created (`MLFLOW_RUN_ID`) or a new one; each child run is
  created (nested) as its training starts, so its start time is that, and trained one by one in this process
  (`train_tracked(..., run_id=child)`) or `parallel` at a time as `mlproject train`
  subprocesses, after the data cache is prepared once;
- `resume` picks up the newest parent with the same sweep key: FINISHED children are kept,
  unfinished ones continue from their last checkpoint, missing ones are added;
- the parent gets per-group statistics (mean, std, 95% t CI, n), paired comparisons against
  the baseline, `results.jsonl`/`results.csv`, and a final `MLPROJECT_RESULT` line.

A sweep is three stages, and every way of running one uses these same three functions:

    plan_sweep(spec)        parent + SCHEDULED children, each child's config logged on it
    train_child(run_id)     train (or resume) one planned child from its own run
    aggregate_sweep(plan)   statistics, results files and final status of the parent

`run_sweep` chains them in one process (children in-process or as `mlproject train --child-run-id`
subprocesses); the CLI exposes them as `compare --plan-only`, `train --child-run-id CHILD` and
`compare --aggregate PARENT`; the Airflow DAG runs those commands as a plan task, one mapped
task per child and an aggregate task. A child needs nothing but its run id and the tracking
server: its config is the artifact `Artifact.PLAN_CONFIG` of its run, and its checkpoints live in the
run's artifacts, so it can train (and resume) on any worker.

The package, one module per part:

    spec.py       what a sweep runs: groups, child configs, the sweep key
    plan.py       stage 1: the parent, the planned children (`PlannedChild`), the stored plan
    child.py      stage 2: train one planned child (leases, already-finished check)
    pool.py       the local worker pool: children in this process or as subprocesses
    aggregate.py  stage 3: evaluations, statistics, results files, status, plots, printing
"""

from __future__ import annotations

from mlproject.research.sweep.aggregate import SweepOutcome, aggregate_sweep, global_steps, row_from_run
from mlproject.research.sweep.child import child_action, child_command, planned_config, train_child
from mlproject.research.sweep.plan import PlannedChild, SweepPlan, load_plan, plan_sweep
from mlproject.research.sweep.pool import train_sweep
from mlproject.research.sweep.spec import (LATER_FIELDS, ChildSpec, SweepSpec, child_config,
                                           experiment_for, load_job, sweep_key, with_context)

__all__ = ["LATER_FIELDS", "ChildSpec", "PlannedChild", "SweepOutcome", "SweepPlan", "SweepSpec", "aggregate_sweep",
           "child_action", "child_command", "child_config", "experiment_for", "global_steps", "load_job",
           "load_plan", "plan_sweep", "planned_config", "row_from_run", "run_sweep", "sweep_key", "train_child",
           "train_sweep", "with_context"]


def run_sweep(spec: SweepSpec) -> SweepOutcome:
    """Run (or resume) the sweep; print the summary table and the MLPROJECT_RESULT line.

    Raises MlprojectError after reporting when some children did not finish, and
    KeyboardInterrupt (parent KILLED) when interrupted.
    """
    return aggregate_sweep(train_sweep(spec))
