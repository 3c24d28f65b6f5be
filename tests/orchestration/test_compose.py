"""docker/compose.yaml and its override files: valid for the compose CLI, and its services
wired to each other. test_e2e_compose.py brings the stack up; these read its structure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import compose_cli

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
OFFLINE = COMPOSE.parent / "compose.offline.yaml"
HOSTNET = COMPOSE.parent / "compose.hostnet.yaml"
PORTS = COMPOSE.parent / "compose.ports.yaml"
SECRETS = ("POSTGRES_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "AIRFLOW_ADMIN_PASSWORD")
ENV = {**{name: "test-only" for name in SECRETS}, "DOCKER_GID": "999"}


@pytest.fixture(scope="module")
def stack() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.mark.parametrize("files", [(COMPOSE, PORTS), (COMPOSE, OFFLINE, PORTS), (COMPOSE, OFFLINE, HOSTNET)],
                         ids=["registry", "offline", "offline-hostnet"])
def test_compose_cli_accepts_the_files(skip_or_fail, files):
    cli = compose_cli()
    if cli is None:
        skip_or_fail("no compose CLI (docker compose plugin or Debian's docker-compose)")
    done = subprocess.run([*cli, *[a for f in files for a in ("-f", str(f))], "config", "-q"], capture_output=True,
                          text=True, env={**os.environ, **ENV})
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("secret", SECRETS)
def test_compose_cli_requires_every_password(skip_or_fail, secret):
    cli = compose_cli()
    if cli is None:
        skip_or_fail("no compose CLI (docker compose plugin or Debian's docker-compose)")
    env = {**{k: v for k, v in os.environ.items() if k not in ENV}, **ENV}
    del env[secret]
    done = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and secret in done.stderr


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


def test_published_ports_are_loopback_only():
    services = yaml.safe_load(PORTS.read_text())["services"]
    ports = [p for service in services.values() for p in service.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)


def test_no_secret_is_written_in_the_file():
    text = COMPOSE.read_text()
    assert "test-only" not in text
    assert "${POSTGRES_PASSWORD" in text


def test_the_tracking_server_makes_users_log_in_with_a_required_admin_password(stack):
    mlflow = stack["services"]["mlflow"]
    assert "--auth" in mlflow["command"]
    assert mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_AUTH_ADMIN_PASSWORD:?")


def test_airflow_has_the_mlflow_login_as_a_connection(stack):
    env = stack["services"]["airflow"]["environment"]
    connection = env["AIRFLOW_CONN_MLFLOW_DEFAULT"]
    assert '"login": "admin"' in connection and '"password": "${MLFLOW_AUTH_ADMIN_PASSWORD}"' in connection
    assert "MLFLOW_TRACKING_PASSWORD" not in env  # the steps get it from the connection, privately
    assert env["AIRFLOW_ADMIN_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")


def test_images_are_overridable_and_buildable_without_a_registry(stack):
    assert stack["services"]["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:16-bookworm}"
    assert stack["services"]["mlflow"]["build"]["args"]["BASE_IMAGE"] == "${BASE_IMAGE:-python:3.11-slim}"
    assert stack["services"]["airflow"]["image"] == stack["services"]["mlflow"]["image"]
    offline = yaml.safe_load(OFFLINE.read_text())["services"]["postgres"]
    assert (COMPOSE.parent / offline["build"]["context"] / offline["build"]["dockerfile"]).is_file()
    assert offline["build"]["args"]["BASE_IMAGE"] == "${BASE_IMAGE:-mlproject-base:bookworm}"


def test_on_the_host_network_every_service_listens_on_loopback_only():
    services = yaml.safe_load(HOSTNET.read_text())["services"]
    assert {name: s["network_mode"] for name, s in services.items()} == dict.fromkeys(services, "host")
    assert services["postgres"]["environment"]["POSTGRES_LISTEN_ADDRESSES"] == "127.0.0.1"
    assert services["mlflow"]["command"][services["mlflow"]["command"].index("--host") + 1] == "127.0.0.1"
    assert services["airflow"]["environment"]["AIRFLOW__API__HOST"] == "127.0.0.1"
