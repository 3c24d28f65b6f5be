"""`mlproject server --auth`: MLflow's basic-auth app in front of the tracking server.

Strangers and wrong passwords get 401; a training run with the right user logs as usual, and
the password appears nowhere in what it logged.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import unique, write_tiny
from mlproject.app.config import ServerConfig
from mlproject.app.server import server_command, validate_server_config, write_auth_config
from mlproject.cli import main
from mlproject.errors import ConfigError

PASSWORD = "team-Secret-pw-2026"


def status(url: str, user: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(user).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_auth_runs_mlflows_basic_auth_app(monkeypatch):
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", PASSWORD)
    assert server_command(ServerConfig(auth=True))[-2:] == ["--app-name", "basic-auth"]
    assert "--app-name" not in server_command(ServerConfig())


def test_auth_without_an_admin_password_is_one_line_and_names_the_variable(monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_AUTH_ADMIN_PASSWORD"):
        validate_server_config(ServerConfig(auth=True))
    assert main(["server", "--auth", "--port", "5999"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "MLFLOW_AUTH_ADMIN_PASSWORD" in err


def test_an_auth_database_without_auth_is_refused(monkeypatch):
    with pytest.raises(ConfigError, match="add --auth"):
        validate_server_config(ServerConfig(auth_database_uri="sqlite:///users.db"))


def test_the_auth_settings_file_is_private_and_keeps_a_percent_in_a_database_password(tmp_path):
    import configparser

    cfg = ServerConfig(auth=True, backend_store_uri="postgresql://mlflow:p%40ss@db/mlflow")
    path = write_auth_config(cfg, tmp_path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    parsed = configparser.ConfigParser()  # MLflow's reader: % interpolation on
    parsed.read(path)
    assert parsed["mlflow"]["database_uri"] == "postgresql://mlflow:p%40ss@db/mlflow"
    assert "admin_password" not in parsed["mlflow"], "the password stays in the environment"


@pytest.mark.e2e
def test_strangers_get_401_and_a_user_logs_a_training_run_without_the_password_in_it(tmp_path, start_server,
                                                                                     cache_dir):
    from mlflow import MlflowClient

    with start_server(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "artifacts", args=["--auth"],
                      env={"MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD}, timeout=180) as server:
        api = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert status(f"{server.url}/health") == 200  # the health check needs no login
        assert status(api) == 401
        assert status(api, ("admin", "not-the-password")) == 401
        assert status(api, ("nobody", PASSWORD)) == 401
        assert status(api, ("admin", PASSWORD)) == 200

        experiment = unique("auth")
        config = write_tiny(tmp_path / "train.yaml", experiment, data={"cache_dir": str(cache_dir)},
                            train={"max_steps": 4, "eval_interval": 2, "log_interval": 2})
        env = {**os.environ, "MLFLOW_TRACKING_URI": server.url,
               "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": PASSWORD}
        done = subprocess.run([sys.executable, "-m", "mlproject", "train", "--config", str(config)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert PASSWORD not in done.stdout + done.stderr

        os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=PASSWORD)
        try:
            client = MlflowClient(tracking_uri=server.url)
            found = client.get_experiment_by_name(experiment)
            (run,) = client.search_runs([found.experiment_id])
            assert run.info.status == "FINISHED" and "val_loss" in run.data.metrics
            recorded = " ".join(f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items())
            assert PASSWORD not in recorded
            local = client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl"))
            for path in (p for p in Path(local).rglob("*") if p.is_file()):
                assert PASSWORD.encode() not in path.read_bytes(), f"the password is in the artifact {path.name}"
        finally:
            os.environ.pop("MLFLOW_TRACKING_USERNAME"), os.environ.pop("MLFLOW_TRACKING_PASSWORD")
