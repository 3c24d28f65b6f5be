"""Fixtures of the tracking tests: one real SQLite store per session, one token cache per session.

The store is created once (before any subprocess starts: concurrent schema migrations of a
fresh SQLite file fail); each test logs into its own experiment, so tests stay independent.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml

VENV_BIN = Path(sys.executable).parent

# The nano-nano model and a few steps: each training run takes a few seconds on 2 CPU cores.
TINY = {
    "model": {"model_version": "gpt2", "n_layer": 2, "n_head": 2, "d_model": 64, "block_size": 32},
    "data": {"dataset": "pydocs", "vocab_size": 512, "max_train_docs": 200, "max_val_docs": 20},
    "train": {"batch_size": 4, "max_steps": 12, "eval_interval": 4, "eval_batches": 2, "log_interval": 2,
              "save_every": 4, "warmup": 2, "device": "cpu", "num_threads": 1, "progress": "lines"},
    "tracking": {"log_model": False},
}


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        # The store (cached per process) puts new experiments' artifacts under ./mlruns of the
        # working directory it was created in: here, not the repository pytest runs in.
        mp.chdir(root)
        mlflow.MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema now, in this process
    return uri


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def tracking_env(store_uri: str, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test: the session store, the session cache, offline, its own working directory."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    monkeypatch.setenv("MLPROJECT_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(store_uri)
    yield store_uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def experiment_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def write_config(path: Path, experiment: str, **sections: dict) -> Path:
    """A tiny train YAML (TINY updated per section) at `path`."""
    data = {name: dict(values) for name, values in TINY.items()}
    for name, values in sections.items():
        data[name].update(values)
    data["tracking"]["experiment_name"] = experiment
    data["tracking"].setdefault("output_dir", str(path.parent / "runs"))
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def tiny_config(tmp_path: Path, experiment_name: str):
    """`tiny_config(**sections)`: a RunConfig of the tiny model in this test's experiment."""
    from mlproject.app.config import RunConfig

    def make(**sections: dict) -> RunConfig:
        return RunConfig.load(write_config(tmp_path / "train.yaml", experiment_name, **sections))

    return make


@pytest.fixture
def tiny_yaml(tmp_path: Path, experiment_name: str):
    """`tiny_yaml(**sections)`: the path of a tiny train YAML in this test's experiment."""
    return lambda **sections: write_config(tmp_path / "train.yaml", experiment_name, **sections)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, store_uri: str, cache_dir: Path):
    """One finished run with a LoggedModel registered as `tiny-gpt`, shared by the read-only tests."""
    from mlproject.app.config import RunConfig
    from mlproject.tracking.train_tracker import train_tracked

    tmp = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store_uri)
        mp.setenv("MLPROJECT_CACHE_DIR", str(cache_dir))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(store_uri)
        path = write_config(tmp / "train.yaml", "test-trained", tracking={"log_model": True, "register_as": "tiny-gpt"})
        outcome = train_tracked(RunConfig.load(path))
        mlflow.set_tracking_uri(None)
    return outcome
