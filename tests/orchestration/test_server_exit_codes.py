"""`mlproject server` exits non-zero, with one line saying why, when the server cannot listen or
never becomes healthy (`mlflow server` itself logs the errno and exits 0)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from helpers import free_port
from mlproject.app import server as server_module
from mlproject.cli import main


def _server(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlproject", "server", *args,
                           "--artifacts-destination", str(tmp_path / "art"),
                           "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=os.environ.copy())


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("mlproject: error: ")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return errors[0]


def test_a_port_in_use_exits_non_zero_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _server(["--port", str(port)], tmp_path)
    assert done.returncode != 0
    line = _one_error_line(done)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line
    assert not (tmp_path / "mlflow.db").exists(), "refused before the server (and its store) started"


def test_an_address_of_no_interface_here_exits_non_zero_with_one_line(tmp_path):
    # 203.0.113.0/24 is TEST-NET-3 (RFC 5737): never assigned to a machine
    done = _server(["--host", "203.0.113.7", "--port", str(free_port())], tmp_path)
    assert done.returncode != 0
    assert "cannot listen on 203.0.113.7" in _one_error_line(done)


def test_a_server_that_exits_0_before_it_is_healthy_is_a_failure(monkeypatch, tmp_path, capsys):
    # what `mlflow server` does when its web server cannot bind: log the errno, exit 0
    monkeypatch.setattr(server_module, "server_command", lambda cfg: [sys.executable, "-c", "pass"])
    code = main(["server", "--port", str(free_port()), "--artifacts-destination", str(tmp_path / "art")])
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exited with code 0 before it answered" in err[0]


def test_a_server_that_never_answers_is_stopped_and_reported(monkeypatch, tmp_path, capsys):
    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    monkeypatch.setattr(server_module, "server_command", lambda cfg: [sys.executable, "-c", script])
    started = time.monotonic()
    code = main(["server", "--port", str(free_port()), "--startup-timeout", "2",
                 "--artifacts-destination", str(tmp_path / "art")])
    assert code != 0
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "within startup_timeout=2s" in err[0]
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid), "the server that never answered was stopped"


def test_startup_timeout_must_be_positive(capsys):
    assert main(["server", "--startup-timeout", "0"]) == 2
    assert "startup_timeout=0.0 must be > 0" in capsys.readouterr().err


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by the Popen object) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="process groups")
