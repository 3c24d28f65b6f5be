"""The one MLflow client: which run a process logs into, and every write the suite makes.

Everything above `tracking/` (the application, research, orchestration) talks to MLflow
through these functions or the read-only `queries`; none of it builds an `MlflowClient`.

Which run a step logs into is decided here, in this order (`start_run`):

1. an explicit `run_id` (a child run created by a sweep): join it;
2. a `parent_run_id`: create a nested child of it;
3. the run this process was handed (`protocol.process_run_id`: set by `mlflow run`, or by
   a sweep for its child process): join that run;
4. `tracking.resume_from` naming a run id: join that run (resume continues the same run);
5. otherwise a new run in `tracking.experiment_name` (default `gpt-<dataset>`).

Sweep parents, children and the pipeline's run are created through `MlflowClient`, never the
fluent `mlflow.start_run` stack: the in-process trainer owns that stack while it trains a
child, and a parent held there would turn every `start_run` of the trainer into an error or a
grandchild. Children are created with status SCHEDULED and MLflow's parent tag (`Tag.PARENT`), so
the UI nests them under the parent, a parallel fan-out can hand each process its run id, and
`mlflow.start_run(run_id=...)` in the trainer flips them to RUNNING.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from mlproject.errors import MlprojectError
from mlproject.protocol import process_run_id, release_process_run
from mlproject.schema import ExperimentKind, ExperimentTag, RunRole, RunStatus, TERMINAL_STATUSES, Tag
from mlproject.tracking.queries import RunRecord, artifact_files, experiment_name, get_run, latest_parent
from mlproject.tracking.run_context import standard_tags
from mlproject.secrets import scrub
from mlproject.tracking.store import ensure_store


# MLflow's limits for one log_batch call (mlflow.utils.validation): 100 params or tags, 1000
# metrics, 1000 entities in all.
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
_MAX_TAG_VALUE = 5000
_MAX_PARAM_VALUE = 6000


def client() -> MlflowClient:
    """An MlflowClient for the current tracking URI (cheap: it holds no connection itself)."""
    return MlflowClient()


# ----------------------------------------------------------------------------- the process's run

def tracking_uri() -> str:
    """The tracking URI in use, with any credentials redacted (safe to print)."""
    return scrub(mlflow.get_tracking_uri())


# ----------------------------------------------------------------------------- writes

def _param_value(value: Any) -> str:
    return scrub("None" if value is None else str(value))[:_MAX_PARAM_VALUE]


def log_params_once(run_id: str, params: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Log the params the run does not have yet; return {key: (logged, new)} for changed ones.

    MLflow params are immutable: a resumed run keeps the values it started with, and a value
    that changed (a longer `train.max_steps`, say) is reported instead of failing the run.
    """
    existing = client().get_run(run_id).data.params
    new = {k: _param_value(v) for k, v in params.items()}
    changed = {k: (existing[k], v) for k, v in new.items() if k in existing and existing[k] != v}
    todo = [Param(k, v) for k, v in new.items() if k not in existing]
    for i in range(0, len(todo), PARAMS_PER_BATCH):
        client().log_batch(run_id, params=todo[i:i + PARAMS_PER_BATCH])
    return changed


def set_tags(run_id: str, tags: Mapping[str, Any]) -> None:
    """Set tags (values redacted and clipped to MLflow's tag length); None values are skipped."""
    items = [RunTag(k, scrub(str(v))[:_MAX_TAG_VALUE]) for k, v in tags.items() if v is not None]
    for i in range(0, len(items), PARAMS_PER_BATCH):
        client().log_batch(run_id, tags=items[i:i + PARAMS_PER_BATCH])


def metric_batches(metrics: Iterable[Metric]) -> Iterable[list[Metric]]:
    """`metrics` cut into lists that one log_batch call accepts."""
    batch: list[Metric] = []
    for metric in metrics:
        batch.append(metric)
        if len(batch) == METRICS_PER_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log `metrics` at `step` now (synchronously)."""
    now = int(time.time() * 1000)
    for batch in metric_batches(Metric(k, float(v), now, step) for k, v in metrics.items()):
        client().log_batch(run_id, metrics=batch)


def log_files(run_id: str, paths: Iterable[str | os.PathLike[str]], artifact_path: str | None = None) -> list[str]:
    """Log local files as artifacts; return their `runs:/` URIs."""
    uris = []
    for path in paths:
        client().log_artifact(run_id, str(path), artifact_path)
        inner = f"{artifact_path}/{Path(path).name}" if artifact_path else Path(path).name
        uris.append(f"runs:/{run_id}/{inner}")
    return uris


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    """A small text artifact (a config, a sweep's plan)."""
    client().log_text(run_id, text, artifact_file)


def log_figure(run_id: str, figure: Any, artifact_file: str) -> None:
    """A matplotlib figure as an image artifact."""
    client().log_figure(run_id, figure, artifact_file)


def load_text(run_id: str, artifact_file: str) -> str | None:
    """A run's text artifact, or None when the run has no such file."""
    folder = artifact_file.rsplit("/", 1)[0] if "/" in artifact_file else ""
    if artifact_file not in artifact_files(run_id, folder):
        return None
    with tempfile.TemporaryDirectory(prefix="mlproject-artifact-") as tmp:
        path = client().download_artifacts(run_id, artifact_file, tmp)
        return Path(path).read_text(encoding="utf-8")


def add_standard_tags(run_id: str, existing: Mapping[str, str] | None = None) -> None:
    """Set the standard tags the run lacks (those `mlflow run` set, e.g. source type PROJECT, stay)."""
    have = client().get_run(run_id).data.tags if existing is None else existing
    set_tags(run_id, {k: v for k, v in standard_tags().items() if k not in have})


def describe_run(run_id: str, *, name: str | None = None, note: str | None = None) -> None:
    """Give a run a readable name and a Markdown description (`mlflow.note.content`, the UI's
    Description box)."""
    if name:
        client().update_run(run_id, name=name)
    if note is not None:
        set_tags(run_id, {Tag.NOTE: note})


def set_status(run_id: str, status: str) -> None:
    """Set a run's status; a terminal status also records the end time."""
    if status in TERMINAL_STATUSES:
        client().set_terminated(run_id, status)
    else:
        client().update_run(run_id, status=status)


def fail_if_unfinished(run_id: str) -> str:
    """Mark a run FAILED if its process died before closing it; return its status."""
    status = get_run(run_id).status
    if status not in TERMINAL_STATUSES:
        set_status(run_id, RunStatus.FAILED)
        return RunStatus.FAILED
    return status


# ----------------------------------------------------------------------------- experiments and runs

def ensure_experiment(name: str) -> str:
    """The id of experiment `name`, created (with the store's schema) if missing, tagged as a
    model-training experiment (`mark_training_experiment`).

    Safe against a concurrent creator; called once before any fan-out, because many processes
    creating a fresh SQLite store at once fail in its schema migration.
    """
    ensure_store()
    experiment = client().get_experiment_by_name(name)
    if experiment is None:
        try:
            experiment_id = client().create_experiment(name, artifact_location=_artifact_location(),
                                                       tags=_TRAINING_KIND)
        except MlflowException:
            # Another process created it between the lookup and the create.
            experiment = client().get_experiment_by_name(name)
            if experiment is None:
                raise
        else:
            return experiment_id
    if experiment.lifecycle_stage == "deleted":
        raise MlprojectError(f"experiment {name!r} is deleted; restore it or pick another experiment_name")
    _tag_kind_if_missing(experiment)
    return experiment.experiment_id


def _artifact_location() -> str | None:
    """Where a new experiment of a local SQLite store keeps its artifacts: `mlruns/` beside the
    database file. MLflow's default is `./mlruns` of the working directory the store was opened in,
    which put a store's artifacts into the project under `mlflow run .` however far away its
    database was. None (MLflow decides) for any other store."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    import uuid

    return (Path(path).expanduser().resolve().parent / "mlruns" / uuid.uuid4().hex).as_uri()


# MLflow 3's UI shows an experiment without this tag as a GenAI one (traces, "evaluation runs");
# the suite's experiments hold training runs.
_TRAINING_KIND = {ExperimentTag.KIND: ExperimentKind.CUSTOM_MODEL_DEVELOPMENT}


def _tag_kind_if_missing(experiment: Any) -> None:
    """Tag an experiment the suite uses as model training, unless it has a kind (a user's choice stays)."""
    if ExperimentTag.KIND not in experiment.tags:
        client().set_experiment_tag(experiment.experiment_id, ExperimentTag.KIND,
                                    ExperimentKind.CUSTOM_MODEL_DEVELOPMENT)


def mark_training_experiment(experiment_id: str) -> None:
    """Tag experiment `experiment_id` as model training if it has no kind yet (one that `mlflow run`
    or a user created: the suite logs its runs there too)."""
    _tag_kind_if_missing(client().get_experiment(experiment_id))


def check_run(run_id: str, what: str = "run") -> Any:
    """The MLflow run `run_id`, or a one-line error if it does not exist or is deleted."""
    try:
        run = client().get_run(run_id)
    except MlflowException:
        raise MlprojectError(f"{what} {run_id!r} does not exist in the tracking store {tracking_uri()}") from None
    if run.info.lifecycle_stage == "deleted":
        raise MlprojectError(f"{what} {run_id!r} is deleted; restore it first")
    return run


def open_run(*, experiment: str | None, run_name: str, tags: Mapping[str, str]) -> tuple[str, str]:
    """A plain top-level run (the pipeline's, a standalone evaluation's): the process's run if
    it was handed one, else a new one. Returns (run_id, experiment_id)."""
    ensure_store()
    handed = process_run_id()
    if handed:
        run_id, experiment_id = handed, get_run(handed).experiment_id
        mark_training_experiment(experiment_id)
    else:
        experiment_id = ensure_experiment(experiment or "Default")
        run_id = client().create_run(experiment_id, run_name=run_name).info.run_id
    set_tags(run_id, tags)
    add_standard_tags(run_id)
    return run_id, experiment_id


# ----------------------------------------------------------------------------- a training run (fluent)

@dataclass
class ActiveRun:
    """The run a training step logs into."""

    run_id: str
    experiment_id: str
    previous_status: str | None = None  # of a joined run, before this step started it again
    previous_end_time: int | None = None


def join_target(*, run_id: str | None = None, parent_run_id: str | None = None,
                resume_run_id: str | None = None) -> str | None:
    """The existing run `start_run` joins with these arguments (None: it creates a new run)."""
    return run_id or (None if parent_run_id else process_run_id() or resume_run_id)


def start_run(*, experiment_name: str, run_name: str | None = None, run_id: str | None = None,
              parent_run_id: str | None = None, resume_run_id: str | None = None,
              tags: Mapping[str, str] | None = None, log_system_metrics: bool | None = None) -> ActiveRun:
    """Start or join a training step's run (see the module docstring for the order) as the active run."""
    ensure_store()
    join = join_target(run_id=run_id, parent_run_id=parent_run_id, resume_run_id=resume_run_id)
    nested = mlflow.active_run() is not None
    if join:
        before = check_run(join, "run").info
        if join != run_id:  # a run the suite may not have created (`mlflow run`'s, a user's): its experiment too
            mark_training_experiment(before.experiment_id)
        run = mlflow.start_run(run_id=join, nested=nested, run_name=run_name, log_system_metrics=log_system_metrics)
        set_tags(join, tags or {})
        add_standard_tags(join)
        return ActiveRun(join, run.info.experiment_id, before.status, before.end_time)
    if parent_run_id:
        experiment_id = check_run(parent_run_id, "parent run").info.experiment_id
    else:
        experiment_id = ensure_experiment(experiment_name)
    # A child of `parent_run_id` must not join the handed run: start_run reads the variable
    # when given no run id (and drops it when it joins, as end_run does).
    release_process_run()
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, parent_run_id=parent_run_id,
                           nested=nested or bool(parent_run_id), log_system_metrics=log_system_metrics)
    set_tags(run.info.run_id, tags or {})
    add_standard_tags(run.info.run_id)
    return ActiveRun(run.info.run_id, run.info.experiment_id)


def end_run(status: str, *, error: BaseException | None = None) -> None:
    """Flush queued metrics, record the error (if any) as a tag, end the active run with `status`."""
    run = mlflow.active_run()
    if run is None:
        return
    try:
        mlflow.flush_async_logging()
    finally:
        if error is not None:
            message = f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
            client().set_tag(run.info.run_id, Tag.ERROR, scrub(message)[:_MAX_TAG_VALUE])
        elif status == RunStatus.FINISHED and Tag.ERROR in client().get_run(run.info.run_id).data.tags:
            # an earlier session's error (a failed or killed attempt) no longer describes the run
            client().delete_tag(run.info.run_id, Tag.ERROR)
        mlflow.end_run(status=status)


def restore_finished(run: ActiveRun) -> None:
    """End the active run as the FINISHED run it was before this step joined it (end time too).

    A resume of a finished run that fails before training starts (a corrupt checkpoint, a
    contradicting model flag) must not turn its result into a failure.
    """
    if mlflow.active_run() is None:
        return
    try:
        mlflow.flush_async_logging()
    finally:
        mlflow.end_run(status=RunStatus.FINISHED)
        client().set_terminated(run.run_id, RunStatus.FINISHED, end_time=run.previous_end_time)


# ----------------------------------------------------------------------------- sweeps

@dataclass
class ParentRun:
    """The parent of a sweep: where it lives and which earlier parent it continues (if any)."""

    run_id: str
    experiment_id: str
    experiment_name: str
    previous: RunRecord | None  # the parent whose children a --resume adopts (may be this run itself)


def experiment_to_resume(experiment: str, fallback: str | None, holds_job: Callable[[str], bool]) -> str:
    """The experiment a re-run job continues in: `experiment`, unless the job is found only in
    `fallback`, the default it had before jobs got experiments of their own (`gpt-<dataset>`).
    `holds_job(experiment_id)` says whether an experiment holds the job (its sweep key, its study)."""
    if not fallback or fallback == experiment:
        return experiment
    new = client().get_experiment_by_name(experiment)
    if new is not None and holds_job(new.experiment_id):
        return experiment
    old = client().get_experiment_by_name(fallback)
    if old is None or old.lifecycle_stage == "deleted" or not holds_job(old.experiment_id):
        return experiment
    print(f"note: continuing in experiment {fallback!r}, where this job ran before its default became "
          f"{experiment!r}", file=sys.stderr)
    return fallback


def open_parent(*, experiment: str, run_name: str, role: str, match: Mapping[str, str], resume: bool,
                tags: Mapping[str, str], fallback_experiment: str | None = None) -> ParentRun:
    """The parent run of a sweep (`RunRole.SWEEP_PARENT`, matched by its sweep key) or of a
    study (`RunRole.TUNE_PARENT`, matched by its study name), RUNNING, with its tags and record.

    The process's run (`mlflow run` created it) if there is one, else with `resume` the newest
    parent of the experiment with this role and the `match` tags (found in `fallback_experiment`
    when only there: `experiment_to_resume`), else a new run. With `resume`, `previous` is that
    earlier parent; one the process's run takes over is superseded.
    """
    from mlproject.tracking.record import record_run  # it logs through this module

    ensure_store()
    handed = process_run_id()
    if handed:
        run_id, experiment_id, name, previous = _handed_parent(handed, experiment, role, match, resume)
    else:
        if resume:
            experiment = experiment_to_resume(experiment, fallback_experiment,
                                              lambda e: latest_parent(e, role=role, match=match) is not None)
        experiment_id = ensure_experiment(experiment)
        name = experiment
        previous = latest_parent(experiment_id, role=role, match=match) if resume else None
        if previous is not None:
            run_id = previous.run_id
            client().update_run(run_id, status=RunStatus.RUNNING)
        else:
            run_id = client().create_run(experiment_id, run_name=run_name).info.run_id
    set_tags(run_id, {Tag.ROLE: role, **match, **tags})
    add_standard_tags(run_id)
    record_run(run_id, get_run(run_id).tags)  # the children record the data they trained on
    if previous is not None and previous.run_id != run_id:
        supersede(previous, run_id)
    return ParentRun(run_id=run_id, experiment_id=experiment_id, experiment_name=name, previous=previous)


def _handed_parent(handed: str, experiment: str, role: str, match: Mapping[str, str],
                   resume: bool) -> tuple[str, str, str, RunRecord | None]:
    """The process's run as the parent, RUNNING: (run id, experiment id and name, the earlier
    parent it takes over with `resume`)."""
    run = get_run(handed)
    experiment_id = run.experiment_id
    mark_training_experiment(experiment_id)
    name = experiment_name(experiment_id)
    if name != experiment:
        print(f"note: the parent run {handed} was created by `mlflow run` in experiment {name!r}; "
              f"children go there too (pass --experiment-name {experiment} to mlflow run to use {experiment!r})",
              file=sys.stderr)
    previous = latest_parent(experiment_id, role=role, match=match, exclude=[handed]) if resume else None
    if run.status != RunStatus.RUNNING:
        client().update_run(handed, status=RunStatus.RUNNING)
    return handed, experiment_id, name, previous


def join_parent(run_id: str, match: Mapping[str, str], what: str) -> ParentRun:
    """An extra worker's handle on a parent another process opened (`--parent-run-id`); it
    must carry the `match` tags (`what` names them in the error)."""
    run = check_run(run_id, "--parent-run-id")
    wrong = {k: run.data.tags.get(k) for k, v in match.items() if run.data.tags.get(k) != v}
    if wrong:
        raise MlprojectError(f"--parent-run-id {run_id} is not the parent of {what} (its "
                             + ", ".join(f"{k} tag is {v!r}" for k, v in wrong.items()) + ")")
    return ParentRun(run_id=run_id, experiment_id=run.info.experiment_id,
                     experiment_name=experiment_name(run.info.experiment_id), previous=None)


def supersede(old: RunRecord, new_run_id: str) -> None:
    """Close an interrupted parent whose children `new_run_id` takes over.

    A retried `mlflow run` (an Airflow retry, say) creates a new parent; the old one would
    otherwise stay RUNNING forever, with no children left under it.
    """
    client().set_tag(old.run_id, Tag.SUPERSEDED_BY, new_run_id)
    if old.status not in TERMINAL_STATUSES:
        client().set_terminated(old.run_id, RunStatus.KILLED)


def create_child(parent: ParentRun, *, run_name: str, tags: Mapping[str, str]) -> str:
    """A SCHEDULED child run nested under `parent`; the trainer joins it by id."""
    run = client().create_run(parent.experiment_id, run_name=run_name,
                              tags={**standard_tags(), Tag.PARENT: parent.run_id, Tag.ROLE: RunRole.SWEEP_CHILD,
                                    **tags})
    client().update_run(run.info.run_id, status=RunStatus.SCHEDULED)
    return run.info.run_id


def adopt_child(run_id: str, parent_run_id: str) -> None:
    """Nest an existing child (of an earlier, interrupted parent) under `parent_run_id`."""
    client().set_tag(run_id, Tag.PARENT, parent_run_id)
