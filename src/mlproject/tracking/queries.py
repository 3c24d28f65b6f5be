"""Read-only queries of the tracking store for the research steps (sweeps, plots).

Results are plain `RunRecord`s, so `research/` never handles MLflow objects. Tag keys contain
dots, so filter strings quote them with backticks: f"tags.`{Tag.SWEEP_KEY}` = '...'".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import mlflow
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from mlproject.errors import MlprojectError
from mlproject.schema import RunStatus, Tag


@dataclass
class RunRecord:
    """What the research steps need of a run: identity, status, tags, params, latest metrics."""

    run_id: str
    experiment_id: str
    run_name: str
    status: str
    start_time: int
    end_time: int | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def _record(run) -> RunRecord:
    return RunRecord(run_id=run.info.run_id, experiment_id=run.info.experiment_id,
                     run_name=run.info.run_name or "", status=run.info.status,
                     start_time=run.info.start_time or 0, end_time=run.info.end_time,
                     tags=dict(run.data.tags), params=dict(run.data.params), metrics=dict(run.data.metrics))


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def get_run(run_id: str) -> RunRecord:
    """One run by id, or a one-line error if the store has no such run."""
    try:
        return _record(MlflowClient().get_run(run_id))
    except Exception as exc:  # MlflowException (not found) or a bad id
        raise MlprojectError(f"run {run_id!r} not found in the tracking store: {str(exc).splitlines()[0]}") from None


def experiment_id_by_name(name: str) -> str | None:
    experiment = MlflowClient().get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else None


def experiment_name(experiment_id: str) -> str:
    return MlflowClient().get_experiment(experiment_id).name


def search(experiment_ids: Sequence[str], filter_string: str = "") -> list[RunRecord]:
    """Active runs of the experiments matching `filter_string`, newest first (all pages)."""
    client = MlflowClient()
    out: list[RunRecord] = []
    token = None
    while True:
        page = client.search_runs(list(experiment_ids), filter_string=filter_string,
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        out.extend(_record(r) for r in page)
        token = page.token
        if not token:
            return out


def child_runs(parent: RunRecord) -> list[RunRecord]:
    """The nested runs of `parent` (tag `Tag.PARENT`), oldest first."""
    runs = search([parent.experiment_id], f"tags.`{Tag.PARENT}` = {_quote(parent.run_id)}")
    return sorted(runs, key=lambda r: r.start_time)


def sweep_cells(parent: RunRecord, sweep_key: str) -> dict[tuple[str, int], RunRecord]:
    """The sweep's children under `parent` by (group, seed): per cell the FINISHED run, else the
    newest one (a cell can hold several runs after a restart)."""
    cells: dict[tuple[str, int], RunRecord] = {}
    for run in child_runs(parent):  # oldest first
        if run.tags.get(Tag.SWEEP_KEY) != sweep_key or Tag.SEED not in run.tags:
            continue
        cell = (run.tags.get(Tag.GROUP, ""), int(run.tags[Tag.SEED]))
        if cell not in cells or cells[cell].status != RunStatus.FINISHED:
            cells[cell] = run
    return cells


def latest_parent(experiment_id: str, *, role: str, match: Mapping[str, str],
                  exclude: Sequence[str] = ()) -> RunRecord | None:
    """The newest parent run of an experiment with this role (`RunRole`) and the `match` tags
    (a sweep's key, a study's name)."""
    filters = [f"tags.`{Tag.ROLE}` = {_quote(role)}", *[f"tags.`{k}` = {_quote(v)}" for k, v in match.items()]]
    for run in search([experiment_id], " and ".join(filters)):
        if run.run_id not in exclude:
            return run
    return None


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of a metric; a step logged twice (a restarted run) keeps its last value."""
    points = sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return sorted({m.step: m.value for m in points}.items())


def metric_points(run_id: str, key: str) -> list[tuple[int, int, float]]:
    """(step, timestamp in ms, value) of a metric, by step; a step logged twice keeps its last point."""
    points = sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return sorted({m.step: (m.step, m.timestamp, m.value) for m in points}.values())


def artifact_files(run_id: str, folder: str) -> list[str]:
    """Paths of the files directly in a run's artifact `folder` ([] if it has none)."""
    try:
        listing = MlflowClient().list_artifacts(run_id, folder)
    except Exception:  # no such folder (yet)
        return []
    return [f.path for f in listing if not f.is_dir]


def absolute_tracking_uri() -> str:
    """The tracking URI in use (unredacted: for child processes' env), with a relative sqlite path made absolute (so that processes
    started in another working directory log to the same store)."""
    uri = mlflow.get_tracking_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + os.path.abspath(uri[len(prefix):])
    return uri
