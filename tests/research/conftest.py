"""Fixtures of the research tests: the session store and token cache (tests/conftest.py) for a
test or a session fixture, and a sweep shared by several tests."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import unique, use_store, write_sweep


@pytest.fixture
def research_env(store_uri: str, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The session store and cache, offline, the test's own working directory."""
    import mlflow

    use_store(monkeypatch, store_uri, cache_dir, tmp_path)
    yield store_uri
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def session_env(store_uri: str, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The same environment for session fixtures (a sweep shared by several tests)."""
    import mlflow

    workdir = tmp_path_factory.mktemp("work")
    with pytest.MonkeyPatch.context() as mp:
        use_store(mp, store_uri, cache_dir, workdir)
        yield workdir
    mlflow.set_tracking_uri(None)


@contextlib.contextmanager
def in_session_store(store_uri: str, cache_dir: Path, workdir: Path) -> Iterator[None]:
    """The session store around a session fixture's work, whatever store the test that first
    asks for the fixture points at (a test with its own store would otherwise receive the
    sweep, and the tests after it would not find its runs); that test's store comes back after."""
    import mlflow

    before = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        use_store(mp, store_uri, cache_dir, workdir)
        yield
    mlflow.set_tracking_uri(before)


@pytest.fixture(scope="session")
def compare_sweep(session_env, store_uri, cache_dir):
    """gpt2 vs gpt3 over seeds 1 and 2, trained in this process: (outcome, printed output).

    The attention window is below the context length, so GPT-3's banded layers really differ.
    """
    from mlproject.research.compare import CompareJob, run_compare

    path = write_sweep(session_env / "compare.yaml", unique("compare"), model={"attention_window": 8},
                       extra={"compare": {"models": ["gpt2", "gpt3"], "seeds": [1, 2]}})
    out = io.StringIO()
    with in_session_store(store_uri, cache_dir, session_env), contextlib.redirect_stdout(out):
        outcome = run_compare(CompareJob.load(path))
    return outcome, out.getvalue()
