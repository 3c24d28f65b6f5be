"""Fixtures every test folder may use: one SQLite tracking store and one token cache per
session, a fresh experiment name per test.

The store is created once, in this process, before any test starts a subprocess (concurrent
schema migrations of a fresh SQLite file fail); tests log into experiments of their own, so
they stay independent. The token cache is shared too: the tiny corpus is prepared once.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from helpers import unique

# Ctrl-C is part of what the tests specify (a sweep, a search, a run stop on it), so every test
# process handles it the way an interactive one does. A shell starts background jobs with SIGINT
# ignored (`make test &`, `nohup ... &`), the workers and every process they start would inherit
# that, and the Ctrl-C tests would then test an ignored signal: the trainer leaves an ignored
# SIGINT ignored, as a background job's should be.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# A test that asks for one of these fixtures starts a container, PostgreSQL or a tracking server:
# it is end-to-end whether or not its module says so, so `make test` (-m "not e2e") never waits on
# one, and it runs alone (marker serial) in `make test-all`: its timeouts assume an idle machine.
E2E_FIXTURES = frozenset({"docker_engine", "step_image", "postgres_uri", "start_server", "skip_or_fail"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    # The store (cached per process) puts new experiments' artifacts under ./mlruns of the
    # working directory it was created in: here, in the temp folder, not the checkout.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema now
    return uri


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def experiment_name() -> str:
    return unique("test")


@pytest.fixture(autouse=True)
def _not_handed_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test process starts as one that `mlflow run` did not start: a run an earlier test in the
    same worker released (`protocol.release_process_run`) does not make it one."""
    from mlproject import protocol

    monkeypatch.setattr(protocol, "_released", [])
