"""What several test folders share: the tiny run config, unique names, the repository's paths,
a free port, the environment of a session's tracking store, child-run lookup.

Importable as `helpers` from any test module or conftest: pytest puts tests/ on sys.path
(`pythonpath` in pyproject.toml), so no test depends on which conftest was imported last.
Fixtures built on these live in tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # mlproject, mlflow, torchrun of the interpreter running the tests

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# The nano-nano model: two layers of width 64 on 32-token windows.
TINY_MODEL = {"n_layer": 2, "n_head": 2, "d_model": 64, "block_size": 32}
# pydocs capped at 200 documents with a 512-token BPE: prepared once per session in seconds.
TINY_DATA = {"dataset": "pydocs", "vocab_size": 512, "max_train_docs": 200, "max_val_docs": 20}
# Twelve steps, evaluated and checkpointed every four: a training run takes seconds on 2 CPU cores.
TINY_TRAIN = {"batch_size": 4, "max_steps": 12, "eval_interval": 4, "eval_batches": 2, "log_interval": 2,
              "save_every": 4, "warmup_steps": 2}
# On the CPU, one thread each (two tests share the 2 cores), progress as lines.
TINY_RUNTIME = {"device": "cpu", "num_threads": 1, "progress": "lines"}
# The tiny train YAML (model_version is the default, gpt2; sweeps set their own).
TINY = {"model": TINY_MODEL, "data": TINY_DATA, "train": TINY_TRAIN, "tracking": {"log_model": False},
        "runtime": TINY_RUNTIME}
# A sweep trains several children: eight steps each.
SWEEP_STEPS = 8


def tiny(extra: dict[str, Any] | None = None, **sections: dict[str, Any]) -> dict[str, Any]:
    """TINY with each of `sections` updating (or adding) its section, plus `extra` top-level
    sections as given (compare, ablation, per_model, search_space, ...)."""
    data: dict[str, Any] = {name: dict(values) for name, values in TINY.items()}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    data.update(extra or {})
    return data


def write_tiny(path: Path, experiment: str, extra: dict[str, Any] | None = None, **sections: dict[str, Any]) -> Path:
    """`tiny(extra, **sections)` as a YAML file at `path`, logging into `experiment`, its
    checkpoints under `path`'s folder."""
    data = tiny(extra, **sections)
    data["tracking"]["experiment_name"] = experiment
    data["tracking"].setdefault("output_dir", str(path.parent / "runs"))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_sweep(path: Path, experiment: str, extra: dict[str, Any] | None = None, **sections: dict[str, Any]) -> Path:
    """`write_tiny` with SWEEP_STEPS steps per child (a `train` section given here wins)."""
    train = {"max_steps": SWEEP_STEPS, **sections.pop("train", {})}
    return write_tiny(path, experiment, extra, train=train, **sections)


def unique(prefix: str) -> str:
    """`prefix-` and 8 hex digits: an experiment or model name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def use_store(mp: pytest.MonkeyPatch, store_uri: str, cache_dir: Path, workdir: Path | None = None) -> None:
    """Point this process and its children at `store_uri` and the token cache `cache_dir`,
    offline, in no handed run (and in `workdir`, when given)."""
    import mlflow

    mp.setenv("MLFLOW_TRACKING_URI", store_uri)
    mp.setenv("MLPROJECT_CACHE_DIR", str(cache_dir))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.delenv("MLFLOW_RUN_ID", raising=False)
    mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mp.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if workdir is not None:
        mp.chdir(workdir)
    mlflow.set_tracking_uri(store_uri)


def deleted_soon(run_id: str, timeout_s: float = 30.0) -> Any:
    """The run `run_id` once it is deleted: a run `mlflow run` made and the step did not use is
    deleted by a detached process just after `mlflow run` ends (AssertionError if it stays)."""
    from mlflow import MlflowClient

    deadline = time.monotonic() + timeout_s
    while True:
        run = MlflowClient().get_run(run_id)
        if run.info.lifecycle_stage == "deleted":
            return run
        assert time.monotonic() < deadline, f"run {run_id} is still {run.info.lifecycle_stage}"
        time.sleep(0.2)


def children_of(parent_run_id: str) -> list:
    """The child runs of a sweep's parent run (in the current tracking store)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def unavailable(reason: str) -> None:
    """Skip a test whose component is missing, but fail in CI, where .ci/run provides it."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: .ci/run should have set this up)")
    print(f"SKIPPED: {reason}", file=sys.stderr)
    pytest.skip(reason)


def compose_cli() -> list[str] | None:
    """The compose CLI: the `docker compose` plugin, else Debian's `docker-compose` (1.29)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None
