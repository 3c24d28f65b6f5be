"""The tune step's runs and study storage: one parent run per study, one nested run per trial.

Optuna keeps the study in a SQL database. It cannot share MLflow's own database: both
migrate their schema with alembic and both name its version table `alembic_version`, so
each would take the other's schema version for its own. The default is therefore a
sibling of the tracking store: `sqlite:///DIR/mlflow.db` -> `sqlite:///DIR/mlflow-optuna.db`;
with a tracking server, pass a database on the same database server (`--storage
postgresql://.../optuna`) so every worker (process, container, mapped task) reaches it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mlproject.errors import MlprojectError
from mlproject.schema import RunRole, RunStatus, SweepKind, Tag
from mlproject.tracking import client
from mlproject.tracking.queries import absolute_tracking_uri, experiment_name, get_run, search
from mlproject.tracking.client import ParentRun
from mlproject.tracking.record import record_run


def study_storage(explicit: str | None) -> str:
    """The study's storage URL: `explicit`, else a SQLite file beside a SQLite tracking store."""
    if explicit:
        return explicit
    uri = absolute_tracking_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = uri[len(prefix):]
        stem, _ = os.path.splitext(path)
        return f"{prefix}{stem}-optuna.db"
    raise MlprojectError(f"tune: no study storage for tracking URI {uri.split('@')[-1]!r}; pass --storage with a "
                         "SQLAlchemy URL every worker can reach (e.g. postgresql://HOST/optuna beside the "
                         "tracking server's database)")


def open_parent(*, experiment: str, run_name: str, study_name: str, tags: Mapping[str, str],
                fallback_experiment: str | None = None) -> ParentRun:
    """The study's parent run: the process's run (under `mlflow run`), else the newest parent
    of this study in the experiment (or, when only there, in `fallback_experiment`: a re-run
    continues it), else a new run."""
    handed = client.process_run_id()
    all_tags = {Tag.ROLE: RunRole.TUNE_PARENT, Tag.SWEEP_KIND: SweepKind.TUNE, Tag.STUDY: study_name, **tags}
    parents = f"tags.`{Tag.ROLE}` = '{RunRole.TUNE_PARENT}' and tags.`{Tag.STUDY}` = '{study_name}'"
    if handed:
        experiment_id, run_id = get_run(handed).experiment_id, handed
    else:
        experiment = client.experiment_to_resume(experiment, fallback_experiment, lambda e: bool(search([e], parents)))
        experiment_id = client.ensure_experiment(experiment)
        previous = search([experiment_id], parents)
        run_id = previous[0].run_id if previous else client.client().create_run(experiment_id, run_name=run_name).info.run_id
    client.set_status(run_id, RunStatus.RUNNING)
    client.set_tags(run_id, all_tags)
    record_run(run_id, get_run(run_id).tags)
    return ParentRun(run_id=run_id, experiment_id=experiment_id, experiment_name=experiment_name(experiment_id),
                     previous=None)


def join_parent(run_id: str, study_name: str) -> ParentRun:
    """An extra worker's handle on a parent another process opened (`--parent-run-id`)."""
    run = get_run(run_id)
    if run.tags.get(Tag.STUDY) != study_name:
        raise MlprojectError(f"--parent-run-id {run_id} is not the parent of study {study_name!r} "
                             f"(its study tag is {run.tags.get(Tag.STUDY)!r})")
    return ParentRun(run_id=run_id, experiment_id=run.experiment_id,
                     experiment_name=experiment_name(run.experiment_id), previous=None)


def log_figure(run_id: str, figure: Any, artifact_file: str) -> None:
    client.client().log_figure(run_id, figure, artifact_file)
