"""Fixtures of the research tests: one SQLite store and one token cache per session, a shared sweep.

The store is created once, before any subprocess starts (concurrent schema migrations of a
fresh SQLite file fail); tests log into their own experiments, so they stay independent.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sweep_helpers import VENV_BIN, unique, write_yaml


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    # Created here, in this process: the store keeps its default artifact root (./mlruns,
    # resolved now) for the session, so artifacts land in the temp folder, not the checkout.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        MlflowClient(tracking_uri=uri).search_experiments()
    return uri


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _set_env(mp: pytest.MonkeyPatch, store_uri: str, cache_dir: Path, workdir: Path) -> None:
    import mlflow

    mp.setenv("MLFLOW_TRACKING_URI", store_uri)
    mp.setenv("MLPROJECT_CACHE_DIR", str(cache_dir))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.delenv("MLFLOW_RUN_ID", raising=False)
    mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mp.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    mp.chdir(workdir)
    mlflow.set_tracking_uri(store_uri)


@pytest.fixture
def research_env(store_uri: str, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The session store and cache, offline, the test's own working directory."""
    import mlflow

    _set_env(monkeypatch, store_uri, cache_dir, tmp_path)
    yield store_uri
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def session_env(store_uri: str, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The same environment for session fixtures (a sweep shared by several tests)."""
    import mlflow

    workdir = tmp_path_factory.mktemp("work")
    with pytest.MonkeyPatch.context() as mp:
        _set_env(mp, store_uri, cache_dir, workdir)
        yield workdir
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def compare_sweep(session_env):
    """gpt2 vs gpt3 over seeds 1 and 2, trained in this process: (outcome, printed output).

    The attention window is below the context length, so GPT-3's banded layers really differ.
    """
    from mlproject.research.compare import CompareJob, run_compare

    path = write_yaml(session_env / "compare.yaml", unique("compare"), model={"attention_window": 8},
                      extra={"compare": {"models": ["gpt2", "gpt3"], "seeds": [1, 2]}})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        outcome = run_compare(CompareJob.load(path))
    return outcome, out.getvalue()
