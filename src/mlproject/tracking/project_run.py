"""The run `mlflow run` makes before an entry point's command starts (the outer run).

`mlflow run` creates its run before any of our code runs: in the experiment of its
`--experiment-name` (or MLFLOW_EXPERIMENT_NAME / _ID), else in Default, and hands it to the
command as MLFLOW_RUN_ID. MLflow has no API that moves a run to another experiment, so
`cli.main` decides at the start (`adopt`) and at the end (`finish`):

- an outer run in Default (no experiment was chosen) is released: the command runs exactly as
  `mlproject <command> --config` does, so its runs land in the config's experiment. At the end
  the outer run is tagged with the run the step reported (`Tag.STEP_RUN`), closed and deleted:
  nothing is left in Default (`mlflow runs restore` brings it back). `generate` keeps it: the
  CLI records no run, and under `mlflow run` the outer run holds the generations table.
- an outer run in a chosen experiment is the step's run (the training run, the sweep's parent,
  the evaluation's run), except that it is deleted when
  - the step wrote only to another run (`evaluate` of a run id: `mark_unused`), so no empty
    run is left; the evaluated run holds the metrics, the deleted one a link to it;
  - the step failed before anything was logged to it (a bad value, a missing run id): a FAILED
    run holding only `mlflow run`'s parameters would say nothing the error line did not.

The outer run is labelled at once (`Tag.STEP_RUN` or the evaluated run, and a note) and deleted
by a small detached process once `mlflow run` has closed it: `mlflow run` sets the status of its
run after the command exits whatever the status already is (MLflow 3.17 compares the status
string with integer codes), and setting the status of a deleted run fails, so deleting it from
the command itself would end `mlflow run` in a traceback. That process holds the command's
stdout open until it is done, so whoever reads `mlflow run`'s output to its end (the pipeline
runner, the step image's entry point, `| tee`, a test) finds the run deleted when it ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException

from mlproject.protocol import (EXPERIMENT_ID_ENV, RUN_ID_ENV, forget_result, last_result, process_run_id,
                                release_process_run)
from mlproject.schema import RunStatus, TERMINAL_STATUSES, Tag
from mlproject.tracking import client
from mlproject.tracking.queries import experiment_name

DEFAULT_EXPERIMENT_ID = "0"  # MLflow's Default experiment, where `mlflow run` goes unless told
KEEPS_ITS_RUN = frozenset({"generate"})
# How long the deleter waits for `mlflow run` to close its run (it does so the moment the
# command exits; a killed `mlflow run` never does, and its reader should not wait long).
_CLOSE_WAIT_S = 30.0


@dataclass
class OuterRun:
    """The run `mlflow run` handed this process."""

    run_id: str
    command: str | None
    released: bool                      # the step logs where the CLI does; this run is deleted
    unused: dict[str, str] | None = None  # the step wrote only elsewhere: the tags that link there


_current: OuterRun | None = None


def adopt(command: str | None) -> OuterRun | None:
    """The outer run of this process (None when it was handed none, or a run `mlflow run` did
    not create: a sweep's child, a pipeline's step); released when it is in Default."""
    global _current
    _current = None
    forget_result()  # a link names this command's run, never an earlier one of the same process
    run_id = process_run_id()
    if not run_id:
        return None
    try:
        run = client.client().get_run(run_id)
    except (MlflowException, OSError):
        return None  # the command itself reports a missing run or an unreachable store
    tags = run.data.tags
    if Tag.PROJECT_ENTRY_POINT not in tags or Tag.ROLE in tags or run.info.status != RunStatus.RUNNING:
        return None
    released = (run.info.experiment_id == DEFAULT_EXPERIMENT_ID and command is not None
                and command not in KEEPS_ITS_RUN)
    if released:
        release_process_run()
        os.environ.pop(EXPERIMENT_ID_ENV, None)  # MLflow's fluent API would create runs there
    _current = OuterRun(run_id, command, released)
    return _current


def mark_unused(run_id: str, link: Mapping[str, str]) -> None:
    """The step wrote only to another run: the outer run `run_id` is deleted at the end, with `link`."""
    if _current is not None and _current.run_id == run_id:
        _current.unused = dict(link)


def finish(outer: OuterRun | None, code: int) -> None:
    """Delete the outer run where the step did not use it (see the module docstring), with one line."""
    if outer is None:
        return
    try:
        line = _retire(outer, code)
    except (MlflowException, OSError) as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        line = f"could not delete run {outer.run_id} that `mlflow run` made: {type(exc).__name__}: {first}"
    if line:
        print(f"note: {line}", file=sys.stderr, flush=True)


def _retire(outer: OuterRun, code: int) -> str | None:
    """Delete the outer run if nothing of the step is in it; the note line, or None if kept."""
    result = last_result()
    step_run = result.get("run_id")
    step_run = step_run if isinstance(step_run, str) and step_run != outer.run_id else None
    if outer.released:
        if step_run:
            name = experiment_name(client.client().get_run(step_run).info.experiment_id)
            # an evaluation of a run id writes to that run whatever experiment `mlflow run` used
            hint = ("" if result.get("evaluated_run") == step_run
                    else " (pass --experiment-name to mlflow run to log into its run)")
            why = (f"it was in experiment Default, and this step logged to run {step_run} in experiment {name!r}, "
                   f"as `mlproject {outer.command}` does{hint}")
        else:
            what = "logged no run" if code == 0 else "failed before logging"
            why = f"it was in experiment Default, and this step {what}"
        tags = {Tag.STEP_RUN: step_run} if step_run else {}
    elif outer.unused is not None:
        why, tags = f"the step logged to run {step_run or 'another run'}, not to it", outer.unused
    elif code not in (0, 130) and _is_empty(outer.run_id):
        why, tags = "the step failed before logging to it", {}
    else:
        return None
    client.set_tags(outer.run_id, {**tags, Tag.NOTE: f"Deleted: {why}."})
    _delete_once_closed(outer.run_id)
    return f"run {outer.run_id} that `mlflow run` made is deleted once it ends: {why}"


def _is_empty(run_id: str) -> bool:
    """No metric and no artifact (`mlflow run` logs its -P parameters to every run it makes)."""
    run = client.client().get_run(run_id)
    return not run.data.metrics and not client.client().list_artifacts(run_id)


def _delete_once_closed(run_id: str) -> None:
    """Start the detached process that deletes `run_id` once `mlflow run` has closed it."""
    env = {k: v for k, v in os.environ.items() if k not in (RUN_ID_ENV, EXPERIMENT_ID_ENV)}
    env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    sys.stdout.flush()
    # stdout is inherited on purpose: a reader of `mlflow run`'s output sees its end after the deletion
    subprocess.Popen([sys.executable, "-m", __name__, run_id], env=env, start_new_session=True,
                     stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def delete_when_closed(run_id: str, timeout_s: float = _CLOSE_WAIT_S) -> bool:
    """Delete `run_id` as soon as its status is terminal; False if it stayed open `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.client().get_run(run_id)
        if run.info.status in TERMINAL_STATUSES:
            if run.info.lifecycle_stage != "deleted":
                client.client().delete_run(run_id)
            return True
        time.sleep(0.2)
    return False


if __name__ == "__main__":
    sys.exit(0 if delete_when_closed(sys.argv[1]) else 1)
