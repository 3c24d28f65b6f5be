"""Parent and child runs of a sweep (compare, ablation) and the pipeline's run.

The sweep engine (research/sweep.py) drives these through `MlflowClient`, never the fluent
`mlflow.start_run` stack: the in-process trainer owns that stack while it trains a child, and
a parent held there would turn every `start_run` of the trainer into an error or a grandchild.

Children are created (as their training starts) with status SCHEDULED and the tag
`mlflow.parentRunId`, so the UI nests them under the parent, a parallel fan-out can hand each process its run id
(`MLFLOW_RUN_ID`), and `mlflow.start_run(run_id=...)` in the trainer flips them to RUNNING.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from mlproject.tracking import runs
from mlproject.tracking.queries import (
    KEY_TAG,
    KIND_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SUPERSEDED_TAG,
    TERMINAL,
    RunRecord,
    experiment_name,
    get_run,
    latest_sweep_parent,
)
from mlproject.tracking.run_context import add_standard_tags, standard_tags
from mlproject.tracking.runs import get_or_create_experiment
from mlproject.tracking.store import ensure_store


@dataclass
class ParentRun:
    """The parent of a sweep: where it lives and which earlier parent it continues (if any)."""

    run_id: str
    experiment_id: str
    experiment_name: str
    previous: RunRecord | None  # the parent whose children a --resume adopts (may be this run itself)


def ensure_experiment(name: str) -> str:
    """The id of experiment `name`, creating it (and the store's schema) if needed.

    Called once before any fan-out: many processes creating a fresh SQLite store at once fail
    in its schema migration.
    """
    return get_or_create_experiment(name)


def open_parent(*, experiment: str, run_name: str, kind: str, sweep_key: str, resume: bool,
                tags: Mapping[str, str]) -> ParentRun:
    """The sweep's parent run.

    The run `mlflow run` created (`MLFLOW_RUN_ID`) if there is one, else with `resume` the
    newest parent of the experiment with the same sweep key, else a new run. With `resume`,
    `previous` is the parent whose children are taken over.
    """
    ensure_store()
    client = MlflowClient()
    env_run_id = os.environ.get("MLFLOW_RUN_ID")
    all_tags = {ROLE_TAG: "sweep_parent", KIND_TAG: kind, KEY_TAG: sweep_key, **tags}
    previous = None
    if env_run_id:
        run = get_run(env_run_id)
        experiment_id = run.experiment_id
        name = experiment_name(experiment_id)
        if name != experiment:
            print(f"note: the parent run {env_run_id} was created by `mlflow run` in experiment {name!r}; "
                  f"children go there too (pass --experiment-name {experiment} to mlflow run to use {experiment!r})",
                  file=sys.stderr)
        if resume:
            previous = latest_sweep_parent(experiment_id, sweep_key=sweep_key, exclude=[env_run_id])
        run_id = env_run_id
        if run.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
    else:
        experiment_id = ensure_experiment(experiment)
        name = experiment
        if resume:
            previous = latest_sweep_parent(experiment_id, sweep_key=sweep_key)
        if previous is not None:
            run_id = previous.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            run_id = client.create_run(experiment_id, run_name=run_name).info.run_id
    set_tags(run_id, all_tags)
    add_standard_tags(run_id)
    if previous is not None and previous.run_id != run_id:
        supersede(previous, run_id)
    return ParentRun(run_id=run_id, experiment_id=experiment_id, experiment_name=name, previous=previous)


def supersede(old: RunRecord, new_run_id: str) -> None:
    """Close an interrupted parent whose children `new_run_id` takes over.

    A retried `mlflow run` (an Airflow retry, say) creates a new parent; the old one would
    otherwise stay RUNNING forever, with no children left under it.
    """
    client = MlflowClient()
    client.set_tag(old.run_id, SUPERSEDED_TAG, new_run_id)
    if old.status not in TERMINAL:
        client.set_terminated(old.run_id, "KILLED")


def create_child(parent: ParentRun, *, run_name: str, tags: Mapping[str, str]) -> str:
    """A SCHEDULED child run nested under `parent`; the trainer joins it by id."""
    client = MlflowClient()
    run = client.create_run(parent.experiment_id, run_name=run_name,
                            tags={**standard_tags(), PARENT_TAG: parent.run_id, ROLE_TAG: "sweep_child", **tags})
    client.update_run(run.info.run_id, status="SCHEDULED")
    return run.info.run_id


def adopt_child(run_id: str, parent_run_id: str) -> None:
    """Nest an existing child (of an earlier, interrupted parent) under `parent_run_id`."""
    MlflowClient().set_tag(run_id, PARENT_TAG, parent_run_id)


def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    runs.set_tags(MlflowClient(), run_id, tags)


def set_status(run_id: str, status: str) -> None:
    """Set a run's status; a terminal status also records the end time."""
    client = MlflowClient()
    if status in TERMINAL:
        client.set_terminated(run_id, status)
    else:
        client.update_run(run_id, status=status)


def fail_if_unfinished(run_id: str) -> str:
    """Mark a child FAILED if its process died before the trainer closed it; return its status."""
    status = get_run(run_id).status
    if status not in TERMINAL:
        set_status(run_id, "FAILED")
        return "FAILED"
    return status


def log_params_once(run_id: str, params: Mapping[str, object]) -> None:
    """Log params the run does not have yet (a resumed parent keeps its first values)."""
    runs.log_params_once(MlflowClient(), run_id, params)


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for start in range(0, len(items), 1000):
        MlflowClient().log_batch(run_id, metrics=items[start:start + 1000])


def log_files(run_id: str, paths: Iterable[str | os.PathLike[str]], artifact_path: str | None = None) -> list[str]:
    """Log local files as artifacts; return their `runs:/` URIs."""
    client = MlflowClient()
    uris = []
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)
        inner = f"{artifact_path}/{Path(path).name}" if artifact_path else Path(path).name
        uris.append(f"runs:/{run_id}/{inner}")
    return uris


def start_run(*, experiment: str | None, run_name: str, tags: Mapping[str, str]) -> tuple[str, str]:
    """A plain top-level run (the pipeline's): `MLFLOW_RUN_ID`'s if set, else a new one.

    Returns (run_id, experiment_id).
    """
    ensure_store()
    client = MlflowClient()
    env_run_id = os.environ.get("MLFLOW_RUN_ID")
    if env_run_id:
        run = get_run(env_run_id)
        run_id, experiment_id = env_run_id, run.experiment_id
    else:
        experiment_id = ensure_experiment(experiment or "Default")
        run_id = client.create_run(experiment_id, run_name=run_name).info.run_id
    set_tags(run_id, tags)
    add_standard_tags(run_id)
    return run_id, experiment_id


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    """A small text artifact (a sweep's plan, a child's planned config)."""
    MlflowClient().log_text(run_id, text, artifact_file)


def load_text(run_id: str, artifact_file: str) -> str | None:
    """A run's text artifact, or None when the run has no such file."""
    import tempfile

    from mlproject.tracking.queries import artifact_files

    folder = artifact_file.rsplit("/", 1)[0] if "/" in artifact_file else ""
    if artifact_file not in artifact_files(run_id, folder):
        return None
    with tempfile.TemporaryDirectory(prefix="mlproject-artifact-") as tmp:
        path = MlflowClient().download_artifacts(run_id, artifact_file, tmp)
        return Path(path).read_text(encoding="utf-8")
