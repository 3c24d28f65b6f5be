"""Run setup: which MLflow run a step logs into, its tags and params, and how it ends.

One training step is exactly one MLflow run. Which one is decided here, in this order:

1. an explicit `run_id` (a child run created by compare/ablation): join it;
2. a `parent_run_id`: create a nested child of it;
3. `MLFLOW_RUN_ID` in the environment (set by `mlflow run`): join that run;
4. `tracking.resume_from` naming a run id: join that run (resume continues the same run);
5. otherwise a new run in `tracking.experiment_name` (default `gpt-<dataset>`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Param, RunTag

from mlproject.errors import MlprojectError
from mlproject.tracking.secrets import scrub
from mlproject.tracking.store import ensure_store

# Trainer status -> MLflow run status. An interrupted run (SIGTERM, Ctrl-C) wrote a final
# checkpoint and can be resumed, so it is KILLED, never FAILED.
RUN_STATUS = {"finished": "FINISHED", "early_stopped": "FINISHED", "interrupted": "KILLED"}

ERROR_TAG = "mlproject.error"
TRAIN_STATUS_TAG = "mlproject.train_status"

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_MAX_TAG_VALUE = 5000
_PARAMS_PER_BATCH = 100  # MLflow's limit on params in one log_batch call


def redact(text: str) -> str:
    """`text` without credentials: URI user-info (`user:password@`) and credential env values."""
    return scrub(text)


def is_run_id(text: str) -> bool:
    """True for a 32-hex-digit MLflow run id (and not an existing local file of that name)."""
    return bool(_RUN_ID.match(text)) and not Path(text).exists()


def default_experiment_name(dataset: str) -> str:
    return f"gpt-{dataset}"


# ----------------------------------------------------------------------------- tags

def git_info(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """`git_commit` and `git_dirty` of the checkout holding `path` ({} outside a checkout)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    info = {"git_commit": commit}
    if status is not None:
        info["git_dirty"] = str(bool(status)).lower()
    return info


def environment_tags(device: str | None = None) -> dict[str, str]:
    """Versions and host of this process: torch, CUDA, Python, hostname (and device if known)."""
    import torch

    tags = {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "none",
        "python_version": platform.python_version(),
        "hostname": socket.gethostname(),
    }
    if device is not None:
        tags["device"] = device
    return tags


# ----------------------------------------------------------------------------- params

def _param_value(value: Any) -> str:
    text = "None" if value is None else str(value)
    return redact(text)[:6000]


def log_params_once(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Log the params the run does not have yet; return {key: (logged, new)} for changed ones.

    MLflow params are immutable: a resumed run keeps the values it started with, and a value
    that changed (a longer `train.max_steps`, say) is reported instead of failing the run.
    """
    existing = client.get_run(run_id).data.params
    new = {k: _param_value(v) for k, v in params.items()}
    changed = {k: (existing[k], v) for k, v in new.items() if k in existing and existing[k] != v}
    todo = [Param(k, v) for k, v in new.items() if k not in existing]
    for i in range(0, len(todo), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=todo[i:i + _PARAMS_PER_BATCH])
    return changed


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set tags in one call (values redacted and clipped to MLflow's tag length)."""
    items = [RunTag(k, redact(str(v))[:_MAX_TAG_VALUE]) for k, v in tags.items() if v is not None]
    if items:
        client.log_batch(run_id, tags=items)


# ----------------------------------------------------------------------------- the run

@dataclass
class ActiveRun:
    """The run a step logs into."""

    run_id: str
    experiment_id: str
    previous_status: str | None = None  # of a joined run, before this step started it again
    previous_end_time: int | None = None


def get_or_create_experiment(name: str) -> str:
    """The id of experiment `name`, created if missing (safe against a concurrent creator)."""
    ensure_store()
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise MlprojectError(f"experiment {name!r} is deleted; restore it or pick another experiment_name")
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except mlflow.exceptions.MlflowException:
        # Another process created it between the lookup and the create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _check_run(run_id: str, what: str) -> Any:
    try:
        run = MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise MlprojectError(f"{what} {run_id!r} does not exist in the tracking store {tracking_uri()}") from None
    if run.info.lifecycle_stage == "deleted":
        raise MlprojectError(f"{what} {run_id!r} is deleted; restore it first")
    return run


def tracking_uri() -> str:
    """The tracking URI in use, with any credentials redacted (safe to print)."""
    return redact(mlflow.get_tracking_uri())


def start_run(*, experiment_name: str, run_name: str | None = None, run_id: str | None = None,
              parent_run_id: str | None = None, resume_run_id: str | None = None,
              tags: Mapping[str, str] | None = None, log_system_metrics: bool | None = None) -> ActiveRun:
    """Start or join the step's run (see the module docstring for the order) as the active run."""
    from mlproject.tracking.run_context import add_standard_tags

    ensure_store()
    join = run_id or (None if parent_run_id else os.environ.get("MLFLOW_RUN_ID") or resume_run_id)
    nested = mlflow.active_run() is not None
    if join:
        before = _check_run(join, "run").info
        run = mlflow.start_run(run_id=join, nested=nested, run_name=run_name, log_system_metrics=log_system_metrics)
        set_tags(MlflowClient(), join, tags or {})
        add_standard_tags(join)
        return ActiveRun(join, run.info.experiment_id, before.status, before.end_time)
    if parent_run_id:
        _check_run(parent_run_id, "parent run")
        experiment_id = MlflowClient().get_run(parent_run_id).info.experiment_id
    else:
        experiment_id = get_or_create_experiment(experiment_name)
    # A child of `parent_run_id` must not join the run named by MLFLOW_RUN_ID: start_run reads
    # the variable when given no run id (and drops it when it joins, as end_run does).
    os.environ.pop("MLFLOW_RUN_ID", None)
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, parent_run_id=parent_run_id,
                           nested=nested or bool(parent_run_id), log_system_metrics=log_system_metrics)
    set_tags(MlflowClient(), run.info.run_id, tags or {})
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
            MlflowClient().set_tag(run.info.run_id, ERROR_TAG, redact(message)[:_MAX_TAG_VALUE])
        elif status == "FINISHED" and ERROR_TAG in MlflowClient().get_run(run.info.run_id).data.tags:
            # an earlier session's error (a failed or killed attempt) no longer describes the run
            MlflowClient().delete_tag(run.info.run_id, ERROR_TAG)
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
        mlflow.end_run(status="FINISHED")
        MlflowClient().set_terminated(run.run_id, "FINISHED", end_time=run.previous_end_time)


# ----------------------------------------------------------------------------- signals

class Terminated(KeyboardInterrupt):
    """SIGTERM outside the trainer's own handler (data preparation, uploads): end as KILLED."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` while the block runs (main thread only).

    The trainer installs its own handler while it trains (finish the step, write a checkpoint,
    return "interrupted"); this one covers the rest of the step, so a run terminated while it
    prepares data or uploads ends KILLED instead of staying RUNNING forever.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
