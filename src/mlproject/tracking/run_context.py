"""The context of a run: MLflow's source tags (user, entry point, git commit), versions and host, system metrics.

`mlflow.start_run` adds `mlflow.user`, `mlflow.source.name`, `mlflow.source.type` (and, run
from a git checkout, `mlflow.source.git.commit`) only to runs it creates itself. Sweep parents,
children and the pipeline run are created with `MlflowClient.create_run`, which adds none, so
the UI showed "Created by -" and "Source -". `standard_tags` asks MLflow's context providers for
the same tags; the commit falls back to the checkout holding this package, because the console
script `mlproject` (MLflow's main file) lives in the venv, outside any checkout.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
from mlflow.utils.mlflow_tags import (MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER)


SOURCE_TAGS = (MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_GIT_COMMIT, MLFLOW_USER)
_cached: dict[str, str] | None = None


def standard_tags() -> dict[str, str]:
    """MLflow's source and user tags for runs this process creates (computed once per process)."""
    global _cached
    if _cached is None:
        from mlflow.tracking.context.registry import resolve_tags

        tags = {k: str(v) for k, v in resolve_tags().items() if k.startswith("mlflow.source.") or k == MLFLOW_USER}
        commit = git_info().get("git_commit")
        if commit:
            tags.setdefault(MLFLOW_GIT_COMMIT, commit)
        _cached = tags
    return dict(_cached)


def configure_system_metrics(tracking: Any) -> bool | None:
    """Apply `tracking.system_metrics_interval`; the value for `start_run(log_system_metrics=...)`.

    MLflow's monitor samples CPU, memory, disk and network with psutil, and GPUs through
    nvidia-ml-py when it is installed (the `gpu` extra).
    """
    if not tracking.system_metrics:
        return False
    note = gpu_metrics_note()
    if note and note not in _NOTED:  # once per process, not once per in-process sweep child
        _NOTED.add(note)
        print(note, file=sys.stderr, flush=True)
    mlflow.set_system_metrics_sampling_interval(tracking.system_metrics_interval)
    # Its start/stop INFO lines would land in every child's log; warnings still show.
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    return True


_NOTED: set[str] = set()


def gpu_metrics_note() -> str | None:
    """One line when a CUDA GPU is there but nvidia-ml-py is not: MLflow then skips GPU metrics
    with only an INFO line, so the run would lack them without a word."""
    import torch

    if not torch.cuda.is_available():
        return None
    try:
        import pynvml  # noqa: F401 (MLflow's GPU monitor imports it the same way)
    except ImportError:
        return ("note: GPU utilisation and memory are not in the system metrics: nvidia-ml-py is not installed; "
                "it comes with the optional extra 'gpu': pip install 'mlproject[gpu]'")
    return None


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
