"""No credential in any output: every way out of `mlproject` prints one scrubbed line, tracebacks
(shown only with MLPROJECT_DEBUG=1) scrubbed too.

Each case is a real failure of a real command run as a subprocess, with a password in the
tracking URI and a token in the environment; stdout and stderr together are searched for both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import free_port, write_tiny

PASSWORD = "Pw5ecret"
TOKEN = "tok-9f8e7d6c5b"


def _mlproject(args: list[str], cwd: Path, uri: str, debug: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1",
           # a server that is not there: fail at once instead of MLflow's minutes of retries
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    env.pop("MLFLOW_RUN_ID", None)
    if debug:
        env["MLPROJECT_DEBUG"] = "1"
    else:
        env.pop("MLPROJECT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "mlproject", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


def _assert_clean_failure(done: subprocess.CompletedProcess, traceback_allowed: bool = False) -> None:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert PASSWORD not in output, output[-2000:]
    assert TOKEN not in output, output[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("mlproject: error: ")]
    assert len(errors) == 1, done.stderr[-2000:]
    if not traceback_allowed:
        assert "Traceback" not in output, output[-2000:]


@pytest.fixture
def ftp_uri() -> str:
    # A scheme MLflow has no store for: train fails deep inside MLflow with the URI in the message.
    return f"ftp://carol:{PASSWORD}@127.0.0.1/x"


@pytest.mark.e2e
def test_train_against_an_unsupported_store_prints_one_scrubbed_line(tmp_path, ftp_uri, cache_dir):
    config = write_tiny(tmp_path / "train.yaml", "secret-output", data={"cache_dir": str(cache_dir)})
    done = _mlproject(["train", "--config", str(config)], tmp_path, ftp_uri)
    _assert_clean_failure(done)
    assert done.returncode == 1
    assert "ftp://***@127.0.0.1/x" in done.stderr


@pytest.mark.e2e
def test_debug_traceback_is_scrubbed_too(tmp_path, ftp_uri):
    done = _mlproject(["generate", "--run-id", "0123456789abcdef"], tmp_path, ftp_uri, debug=True)
    _assert_clean_failure(done, traceback_allowed=True)
    assert "Traceback" in done.stderr  # the debug switch works, and what it shows is scrubbed


def test_a_secret_value_given_as_input_is_masked_in_the_error(tmp_path, ftp_uri):
    # A token pasted where a run id belongs comes back in the error message: masked.
    done = _mlproject(["plot", "--parent-run-id", TOKEN], tmp_path, ftp_uri)
    _assert_clean_failure(done)


@pytest.mark.e2e
def test_an_unreachable_server_with_credentials_prints_one_scrubbed_line(tmp_path):
    uri = f"http://carol:{PASSWORD}@127.0.0.1:{free_port()}"
    done = _mlproject(["generate", "--run-id", "0123456789abcdef"], tmp_path, uri)
    _assert_clean_failure(done)


def test_bad_input_exits_2_with_one_scrubbed_line(tmp_path, ftp_uri):
    done = _mlproject(["train", "--learning-rate", "nan"], tmp_path, ftp_uri)
    _assert_clean_failure(done)
    assert done.returncode == 2
    assert "learning_rate='nan'" in done.stderr
