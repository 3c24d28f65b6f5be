"""Fixtures of the tracking tests: every test in the session store and token cache
(tests/conftest.py), the tiny config in its own experiment, one trained run to read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from helpers import use_store, write_tiny


@pytest.fixture(autouse=True)
def tracking_env(store_uri: str, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test: the session store, the session cache, offline, its own working directory."""
    use_store(monkeypatch, store_uri, cache_dir, tmp_path)
    yield store_uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def tiny_config(tmp_path: Path, experiment_name: str):
    """`tiny_config(**sections)`: a RunConfig of the tiny model in this test's experiment."""
    from mlproject.app.config import RunConfig

    def make(**sections: dict) -> RunConfig:
        return RunConfig.load(write_tiny(tmp_path / "train.yaml", experiment_name, **sections))

    return make


@pytest.fixture
def tiny_yaml(tmp_path: Path, experiment_name: str):
    """`tiny_yaml(**sections)`: the path of a tiny train YAML in this test's experiment."""
    return lambda **sections: write_tiny(tmp_path / "train.yaml", experiment_name, **sections)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, store_uri: str, cache_dir: Path):
    """One finished run with a LoggedModel registered as `tiny-gpt`, shared by the read-only tests."""
    from mlproject.app.config import RunConfig
    from mlproject.tracking.train_tracker import train_tracked

    tmp = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        use_store(mp, store_uri, cache_dir)
        path = write_tiny(tmp / "train.yaml", "test-trained", tracking={"log_model": True, "register_as": "tiny-gpt"})
        outcome = train_tracked(RunConfig.load(path))
        mlflow.set_tracking_uri(None)
    return outcome
