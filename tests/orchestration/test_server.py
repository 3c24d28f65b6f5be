"""`mlproject server`: the mlflow server command line, what it prints, and a real server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from mlproject.cli import main
from helpers import free_port
from mlproject.errors import ConfigError, MlprojectError
from mlproject.app.config import ServerConfig
from mlproject.app.server import allowed_hosts, owned_by_this_process, run_server, server_command, server_environment, training_view_url

SECRET_URI = "postgresql://mlflow:s3cret-pw@db:5432/mlflow"


def flag(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def test_server_binds_loopback_by_default():
    cmd = server_command(ServerConfig())
    assert cmd[1:4] == ["-m", "mlflow", "server"]
    assert flag(cmd, "--host") == "127.0.0.1"
    assert flag(cmd, "--port") == "5000"


def test_server_proxies_artifacts_to_the_destination():
    cmd = server_command(ServerConfig(artifacts_destination="/srv/mlartifacts", workers=3))
    assert flag(cmd, "--artifacts-destination") == "/srv/mlartifacts"
    assert flag(cmd, "--workers") == "3"


def test_no_allowed_hosts_flag_keeps_mlflows_loopback_default():
    assert "--allowed-hosts" not in server_command(ServerConfig())


def test_allowed_hosts_keep_loopback_and_accept_any_port():
    hosts = allowed_hosts(ServerConfig(host="0.0.0.0", allowed_hosts=["mlflow", "10.0.0.5:5000"]))
    assert hosts == ["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*", "mlflow", "mlflow:*", "10.0.0.5:5000"]
    cmd = server_command(ServerConfig(host="0.0.0.0", allowed_hosts=["mlflow"]))
    assert flag(cmd, "--allowed-hosts") == "localhost,localhost:*,127.0.0.1,127.0.0.1:*,mlflow,mlflow:*"


def test_backend_uri_goes_through_the_environment_not_the_command_line():
    cfg = ServerConfig(backend_store_uri=SECRET_URI)
    assert not any("s3cret" in part for part in server_command(cfg))
    assert server_environment(cfg, base={})["MLFLOW_BACKEND_STORE_URI"] == SECRET_URI


def test_the_database_pool_fits_a_team_of_writers_unless_the_user_sized_it():
    env = server_environment(ServerConfig(), base={})
    # MLflow reads these into SQLAlchemy's pool: 5 + 10 (its default) timed out with 8 writers
    assert int(env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]) + int(env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"]) >= 40
    mine = server_environment(ServerConfig(), base={"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "3"})
    assert mine["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"] == "3"


class FakeServer:
    """Stands in for the `mlflow server` process: records how it was started, exits at once."""

    started: list[dict] = []
    pid = 2**22 + 12345  # no such process group: stopping it is a no-op

    def __init__(self, cmd, env, start_new_session):
        FakeServer.started.append({"cmd": cmd, "env": env, "new_session": start_new_session})

    def wait(self):
        return 3

    def poll(self):
        return 3


def test_run_server_prints_no_password(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(subprocess, "Popen", FakeServer)
    with pytest.raises(MlprojectError, match="exited with code 3 before it answered"):
        run_server(ServerConfig(backend_store_uri=SECRET_URI, artifacts_destination=str(tmp_path / "art"),
                                port=free_port()))
    out = capsys.readouterr().out
    assert "s3cret" not in out and "postgresql://***@db:5432/mlflow" in out
    assert (tmp_path / "art").is_dir()
    started = FakeServer.started[-1]
    assert started["env"]["MLFLOW_BACKEND_STORE_URI"] == SECRET_URI
    assert started["new_session"], "the server gets its own process group, so a stop reaches its workers"


def test_a_non_sql_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="file:///tmp/mlruns.*not a SQL database URI"):
        run_server(ServerConfig(backend_store_uri="file:///tmp/mlruns"))


def test_cli_reports_a_bad_port_in_one_line(capsys):
    assert main(["server", "--port", "70000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "mlproject: error: server: port=70000 is out of range; expected 1-65535"


@pytest.mark.e2e
def test_real_server_logs_and_serves_an_artifact(tmp_path, start_server):
    from mlflow import MlflowClient

    import psutil

    (tmp_path / "note.txt").write_text("hello")
    with start_server(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "artifacts") as server:
        server_processes = psutil.Process(server.process.pid).children(recursive=True)
        client = MlflowClient(tracking_uri=server.url)
        run = client.create_run(client.create_experiment("server-test"))
        client.log_metric(run.info.run_id, "loss", 1.5)
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        local = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "dl"))
    with open(local) as f:
        assert f.read() == "hello"
    gone, alive = psutil.wait_procs(server_processes, timeout=10)
    assert alive == [], "stopping `mlproject server` stops mlflow's web server process too"
    assert list((tmp_path / "artifacts").rglob("note.txt")), "the artifact is stored under the destination"


def test_the_printed_ui_link_opens_the_model_training_view():
    # MLflow 3.17's UI opens in its GenAI view unless the URL asks for model training
    assert training_view_url(ServerConfig(port=5001)) == \
        "http://127.0.0.1:5001/#/experiments?workflowType=machine_learning"
    assert training_view_url(ServerConfig(host="::1", port=5001)).startswith("http://[::1]:5001/#/")


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_mlproject_server_leaves_no_server_behind(tmp_path, start_server, sig):
    """SIGKILL gives `mlproject server` no chance to stop its MLflow server: the parent-death
    signal does. Only `mlproject server` itself is signalled, not its groups."""
    import psutil

    port = free_port()
    with start_server(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "artifacts", port=port) as server:
        descendants = psutil.Process(server.process.pid).children(recursive=True)
        assert any("uvicorn" in " ".join(p.cmdline()) for p in descendants), "the web server runs"
        os.kill(server.process.pid, sig)
        server.process.wait(timeout=30)
        gone, alive = psutil.wait_procs(descendants, timeout=15)
        assert alive == [], f"left running: {[' '.join(p.cmdline())[:80] for p in alive]}"
        with socket.socket() as s:  # the port is free again: a new server can start on it
            s.bind(("127.0.0.1", port))


def test_the_server_is_started_so_that_it_ends_with_mlproject_server():
    cmd = owned_by_this_process(["/bin/true", "x"])
    assert cmd[-2:] == ["/bin/true", "x"] and str(os.getpid()) in cmd
    out = subprocess.run([*owned_by_this_process([sys.executable, "-c", "import ctypes; l = ctypes.c_int();"
                                                  "ctypes.CDLL(None).prctl(2, ctypes.byref(l)); print(l.value)"])],
                         capture_output=True, text=True, check=True).stdout
    assert int(out) == signal.SIGTERM, "the command runs with a parent-death signal armed (PR_GET_PDEATHSIG)"
