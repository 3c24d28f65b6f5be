"""MLflow's own run context on every run: source tags (user, entry point, git commit) and system metrics.

`mlflow.start_run` adds `mlflow.user`, `mlflow.source.name`, `mlflow.source.type` (and, run
from a git checkout, `mlflow.source.git.commit`) only to runs it creates itself. Sweep parents,
children and the pipeline run are created with `MlflowClient.create_run`, which adds none, so
the UI showed "Created by -" and "Source -". `standard_tags` asks MLflow's context providers for
the same tags; the commit falls back to the checkout holding this package, because the console
script `mlproject` (MLflow's main file) lives in the venv, outside any checkout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import (MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER)

from mlproject.tracking import runs

SOURCE_TAGS = (MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_GIT_COMMIT, MLFLOW_USER)
_cached: dict[str, str] | None = None


def standard_tags() -> dict[str, str]:
    """MLflow's source and user tags for runs this process creates (computed once per process)."""
    global _cached
    if _cached is None:
        from mlflow.tracking.context.registry import resolve_tags

        tags = {k: str(v) for k, v in resolve_tags().items() if k.startswith("mlflow.source.") or k == MLFLOW_USER}
        commit = runs.git_info().get("git_commit")
        if commit:
            tags.setdefault(MLFLOW_GIT_COMMIT, commit)
        _cached = tags
    return dict(_cached)


def add_standard_tags(run_id: str, existing: Mapping[str, str] | None = None) -> None:
    """Set the standard tags the run lacks (those `mlflow run` set, e.g. source type PROJECT, stay)."""
    client = MlflowClient()
    have = client.get_run(run_id).data.tags if existing is None else existing
    runs.set_tags(client, run_id, {k: v for k, v in standard_tags().items() if k not in have})


def configure_system_metrics(tracking: Any) -> bool | None:
    """Apply `tracking.system_metrics_interval`; the value for `start_run(log_system_metrics=...)`.

    MLflow's monitor samples CPU, memory, disk and network with psutil, and GPUs through
    nvidia-ml-py when it is installed (the `gpu` extra).
    """
    if not tracking.system_metrics:
        return False
    mlflow.set_system_metrics_sampling_interval(tracking.system_metrics_interval)
    # Its start/stop INFO lines would land in every child's log; warnings still show.
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    return True


def describe_run(run_id: str, *, name: str | None = None, note: str | None = None) -> None:
    """Give a run a readable name and a Markdown description (`mlflow.note.content`, the UI's
    Description box)."""
    client = MlflowClient()
    if name:
        client.update_run(run_id, name=name)
    if note is not None:
        runs.set_tags(client, run_id, {"mlflow.note.content": note})
