"""Fixtures of the orchestration tests: a real tracking server, Airflow's home, the engine.

Airflow reads its configuration when first imported, so AIRFLOW_HOME (a temp dir) and the
settings below are set here, before any test module imports it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import REPO, free_port, unavailable

DAGS = REPO / "airflow" / "dags"

# Never the user's own Airflow home: a temp dir, removed when the session ends.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="mlproject-airflow-")
atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log: Path

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole server: `mlproject server`'s process group and the group of the
        MLflow server it starts (in a session of its own), so SIGKILL really takes it down."""
        import psutil

        proc = self.process
        if proc.poll() is not None:
            return
        with contextlib.suppress(psutil.Error):
            groups = {os.getpgid(c.pid) for c in psutil.Process(proc.pid).children(recursive=True)}
            for pgid in groups - {proc.pid}:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sig)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def tracking_server(backend_uri: str, artifacts: Path, *, port: int | None = None, log: Path | None = None,
                    env: dict[str, str] | None = None, timeout: float = 90,
                    args: Sequence[str] = ()) -> Iterator[RunningServer]:
    """A real `mlproject server` on loopback (`port`, else a free one), in a session of its own,
    stopped (SIGTERM to its groups) on exit. Its output is appended to `log` (default
    server-PORT.log beside `artifacts`): a server restarted on the same log keeps the first one's."""
    port = port or free_port()
    log = log or artifacts.parent / f"server-{port}.log"
    out = open(log, "a")
    proc = subprocess.Popen([sys.executable, "-m", "mlproject", "server", "--port", str(port),
                             "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts),
                             "--workers", "1", *args],
                            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            start_new_session=True)
    server = RunningServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tracking server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{server.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"tracking server did not answer in {timeout} s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield server
    finally:
        server.kill(signal.SIGTERM)
        out.close()


@pytest.fixture
def skip_or_fail():
    """`unavailable` as a fixture: skip when a component is missing, fail in CI."""
    return unavailable


@pytest.fixture
def start_server():
    """`tracking_server` as a fixture: `with start_server(backend_uri, artifacts_dir) as server:`
    (`server.kill()` SIGKILLs it mid-test)."""
    return tracking_server


@pytest.fixture
def docker_engine() -> str:
    """The docker CLI, when an engine answers (else skip, or fail in CI)."""
    docker = shutil.which("docker")
    if docker is None:
        unavailable("no docker CLI on PATH (bash docker/setup_engine.sh installs and starts one)")
    done = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if done.returncode != 0:
        unavailable(f"the Docker engine does not answer: {done.stderr.strip()[:200]} "
                    f"(bash docker/setup_engine.sh starts one)")
    return docker


@pytest.fixture
def step_image(docker_engine: str) -> str:
    """The step image the DAG runs (MLPROJECT_IMAGE, default mlproject-step:latest), when built."""
    image = os.environ.get("MLPROJECT_IMAGE", "mlproject-step:latest")
    done = subprocess.run([docker_engine, "image", "inspect", image], capture_output=True, text=True)
    if done.returncode != 0:
        unavailable(f"step image {image} is not built (IMAGE={image} bash docker/setup_engine.sh builds it)")
    return image


@pytest.fixture
def postgres_uri() -> str:
    """A PostgreSQL database for a tracking server (MLPROJECT_TEST_PG_URI), when one answers."""
    uri = os.environ.get("MLPROJECT_TEST_PG_URI",
                         "postgresql://mlproject_test:mlproject_test@127.0.0.1:5432/mlproject_test")
    import psycopg

    try:
        psycopg.connect(uri, connect_timeout=5).close()
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL does not answer: {str(exc).strip().splitlines()[0][:200]} "
                    f"(eval \"$(bash docker/setup_postgres.sh)\" starts one)")
    return uri
