"""`airflow standalone` running the suite's DAG, for the end-to-end tests that need a real
scheduler (LocalExecutor, parallelism 4) and Airflow's UI: the server, its CLI's environment,
and waiting for a DAG run.

Importable as `airflow_standalone` from the tests of this folder (pytest puts the folder of a
test module without `__init__.py` on sys.path).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from helpers import REPO, VENV_BIN, free_port

DAG_ID = "gpt_research_pipeline"
DAGS = REPO / "airflow" / "dags"
AIRFLOW = str(VENV_BIN / "airflow")
# Where the simple auth manager writes the passwords it generates for AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS.
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


def dag_runs(out: str) -> list[dict]:
    """The JSON list of `airflow dags list-runs -o json` (warnings may print before it)."""
    lines = [line for line in out.splitlines() if line.startswith("[")]
    try:
        return json.loads(lines[-1]) if lines else []
    except ValueError:
        return []


def wait_for_run(env: dict[str, str], run_id: str, timeout: float) -> str:
    """The final state (success or failed) of DAG run `run_id`; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([AIRFLOW, "dags", "list-runs", DAG_ID, "-o", "json"], env=env,
                             capture_output=True, text=True).stdout
        state = next((r["state"] for r in dag_runs(out) if r["run_id"] == run_id), None)
        if state in ("success", "failed"):
            return state
        time.sleep(3)
    raise AssertionError(f"DAG run {run_id} did not end in {timeout} s")


def ui_url(env: dict[str, str]) -> str:
    """The Airflow UI (and API) of the standalone that `env` belongs to."""
    return f"http://{env['AIRFLOW__API__HOST']}:{env['AIRFLOW__API__PORT']}"


def password_of(env: dict[str, str], user: str) -> str:
    """The password the simple auth manager generated for `user` (standalone started with `users`)."""
    return json.loads((Path(env["AIRFLOW_HOME"]) / PASSWORDS_FILE).read_text())[user]


def _environment(home: Path, cache: Path, server_url: str, pipeline: Path, image: str,
                 users: str | None) -> dict[str, str]:
    api_port = free_port()
    # `airflow standalone` starts its scheduler and API server as `airflow ...` from PATH
    env = {**os.environ, "PATH": f"{Path(AIRFLOW).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS), "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
           "AIRFLOW__CORE__PARALLELISM": "4", "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
           "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False" if users else "True",
           "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(api_port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
           "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
           "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
           "MLFLOW_TRACKING_URI": server_url, "MLPROJECT_PIPELINE_CONFIG": str(pipeline),
           "MLPROJECT_IMAGE": image, "MLPROJECT_DOCKER_NETWORK": "host", "MLPROJECT_CACHE_VOLUME": str(cache),
           "MLPROJECT_CONFIG_MOUNT": str(pipeline.parent), "MLPROJECT_RETRIES": "2", "MLPROJECT_RETRY_DELAY_S": "1",
           "MLPROJECT_SWEEP_TASKS": "mapped"}
    if users:
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = users
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLPROJECT_POOL", None)
    return env


@contextlib.contextmanager
def standalone(tmp_path: Path, server_url: str, pipeline: Path, image: str, pool_slots: int,
               users: str | None = None) -> Iterator[dict[str, str]]:
    """`airflow standalone` (LocalExecutor, parallelism 4) running the DAG on `pipeline`, its
    training pool set to `pool_slots`; yields the environment of its CLI. Without `users` every
    visitor of the UI is an admin; with `users` ("name:role,..."), the UI asks them to log in
    (their passwords: `password_of`)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)  # the containers run as the image's non-root user
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = _environment(home, cache, server_url, pipeline, image, users)
    log = open(tmp_path / "standalone.log", "w")
    airflow = subprocess.Popen([AIRFLOW, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:  # the DAG is parsed and serialized
            assert airflow.poll() is None, (tmp_path / "standalone.log").read_text()[-4000:]
            listed = subprocess.run([AIRFLOW, "dags", "list", "-o", "json"], env=env, capture_output=True,
                                    text=True).stdout
            if DAG_ID in listed:
                break
            assert time.monotonic() < deadline, "the DAG was never parsed"
            time.sleep(3)
        # The pool the mapped children take their slots from, as the deployment docs create it.
        subprocess.run([AIRFLOW, "pools", "set", "mlproject_train", str(pool_slots), "mlproject training slots"],
                       env=env, check=True, capture_output=True, timeout=120)
        yield env
    finally:
        os.killpg(airflow.pid, 15)
        try:
            airflow.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(airflow.pid, 9)
        log.close()
