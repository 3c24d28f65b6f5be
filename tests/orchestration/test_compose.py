"""docker/compose.yaml: valid for the compose CLI, and its services wired to each other.

The stack cannot be started here (no registry to pull postgres from), so it is validated by
`docker compose config` (or Debian's `docker-compose config`) and by reading its structure;
the end-to-end test runs the same settings (host network instead of the stack's network).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
ENV = {"POSTGRES_PASSWORD": "test-only", "DOCKER_GID": "999"}


@pytest.fixture(scope="module")
def stack() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_cli_accepts_the_file(skip_or_fail):
    cli = compose_cli()
    if cli is None:
        skip_or_fail("no compose CLI (docker compose plugin or Debian's docker-compose)")
    done = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                          env={**os.environ, **ENV})
    assert done.returncode == 0, done.stderr


def test_compose_cli_requires_the_secrets(skip_or_fail):
    cli = compose_cli()
    if cli is None:
        skip_or_fail("no compose CLI (docker compose plugin or Debian's docker-compose)")
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    done = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr


def test_stack_has_database_server_and_airflow(stack):
    assert set(stack["services"]) == {"postgres", "mlflow", "airflow"}


def test_tracking_server_uses_postgres_and_accepts_its_service_name(stack):
    from mlproject.cli import build_parser
    from mlproject.config import from_dict, section_overrides
    from mlproject.app.config import ServerConfig
    from mlproject.app.server import server_command

    command = stack["services"]["mlflow"]["command"]
    assert command[:2] == ["mlproject", "server"]
    cfg = from_dict(ServerConfig, section_overrides(build_parser().parse_args(command[1:]), ServerConfig))
    assert cfg.backend_store_uri.startswith("postgresql://mlflow@postgres:")  # password via PGPASSWORD
    assert cfg.host == "0.0.0.0"
    assert "mlflow" in server_command(cfg)[server_command(cfg).index("--allowed-hosts") + 1].split(",")


def test_airflow_reaches_the_server_and_the_docker_socket(stack):
    airflow = stack["services"]["airflow"]
    env = airflow["environment"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["MLPROJECT_DOCKER_NETWORK"] == stack["networks"]["default"]["name"]
    assert env["MLPROJECT_CACHE_VOLUME"] == stack["volumes"]["mlproject-cache"]["name"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in airflow["volumes"]
    assert airflow["command"][:2] == ["bash", "-c"]
    script = airflow["command"][2]
    assert script.endswith("exec airflow standalone")
    # the training pool exists before the scheduler starts, sized by MLPROJECT_POOL_SLOTS
    assert 'airflow pools set "$$MLPROJECT_POOL" "$$MLPROJECT_POOL_SLOTS"' in script  # $$: compose's literal $
    assert script.index("db migrate") < script.index("pools set") < script.index("standalone")
    assert env["MLPROJECT_POOL"] == "${MLPROJECT_POOL:-mlproject_train}"
    assert env["MLPROJECT_POOL_SLOTS"] == "${MLPROJECT_POOL_SLOTS:-1}"


def test_published_ports_are_loopback_only(stack):
    ports = [p for service in stack["services"].values() for p in service.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)


def test_no_secret_is_written_in_the_file():
    text = COMPOSE.read_text()
    assert "test-only" not in text
    assert "${POSTGRES_PASSWORD" in text
