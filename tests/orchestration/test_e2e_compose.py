"""The team stack for real: docker/compose.yaml built from local images and brought up, the DAG
run by Airflow's scheduler (once triggered through its REST API, once by its schedule), the runs
found in the PostgreSQL-backed tracking server, which only lets its users in.

It runs the air-gapped sequence of docs/orchestration.md "Deployment" word for word (compose.yaml
+ compose.offline.yaml: PostgreSQL built from Debian's package on the local base image, the app
image from ./wheelhouse), with compose.hostnet.yaml because the CI machines have no bridge
network: every service on 127.0.0.1, on free ports. Needs the Docker engine, the base image
(`bash docker/setup_engine.sh base`), the wheelhouse with the stack's extras
(`make wheelhouse EXTRAS="airflow auth"`) and a compose CLI; skipped without them, failed in CI.

`compose_stack` is the place where the stack is up and both DAG runs have succeeded: tests of
the UIs take its URLs and credentials.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from helpers import REPO, compose_cli, free_port, tiny, unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

DAG_ID = "gpt_research_pipeline"
EXPERIMENT = "e2e-compose"
MODEL = "e2e-compose-best"
BASE_IMAGE = os.environ.get("BASE_IMAGE", "mlproject-base:bookworm")
# The compose files of the air-gapped deployment on a host without bridge networking.
FILES = ("docker/compose.yaml", "docker/compose.offline.yaml", "docker/compose.hostnet.yaml")
# How long each wait may take on a busy 2-core machine.
BUILD_TIMEOUT, HEALTH_TIMEOUT, RUNS_TIMEOUT = 1800, 600, 1800


@dataclass
class ComposeStack:
    """The stack, up, with both DAG runs succeeded: where it answers and who may log in."""

    mlflow_url: str
    airflow_url: str
    mlflow_user: str
    mlflow_password: str
    airflow_user: str
    airflow_password: str
    postgres_uri: str
    dag_runs: dict[str, str] = field(default_factory=dict)  # "api" | "scheduled" -> DAG run id
    secrets: tuple[str, ...] = ()

    def airflow(self, method: str, path: str, body: dict | None = None) -> dict:
        """A call of Airflow's REST API (/api/v2/...) with a token from its auth endpoint."""
        return api(f"{self.airflow_url}/api/v2/{path}", method, body,
                   {"Authorization": f"Bearer {airflow_token(self.airflow_url, self.airflow_user, self.airflow_password)}"})

    def mlflow_client(self, monkeypatch: pytest.MonkeyPatch):
        from mlflow import MlflowClient

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", self.mlflow_user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", self.mlflow_password)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", self.mlflow_url)
        return MlflowClient(tracking_uri=self.mlflow_url)


def api(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read() or b"{}")


def airflow_token(url: str, user: str, password: str) -> str:
    return api(f"{url}/auth/token", "POST", {"username": user, "password": password})["access_token"]


def status_of(url: str, user: str | None = None, password: str | None = None) -> int:
    """The HTTP status of GET `url`, with basic auth when a user is given."""
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def write_pipeline(root: Path) -> Path:
    """The tiny pipeline: a 2x2 compare (GPT-2/GPT-3, 2 seeds, a few steps each) that registers
    its best child, and its charts."""
    compare = tiny(tracking={"experiment_name": EXPERIMENT},
                   extra={"compare": {"models": ["gpt2", "gpt3"], "seeds": [42, 43],
                                      "register_best": MODEL, "register_best_ungated": True}})
    compare["train"].update(max_steps=8)
    (root / "compare.yaml").write_text(yaml.safe_dump(compare))
    (root / "plot.yaml").write_text(yaml.safe_dump({"plot": {"experiment_name": EXPERIMENT, "kind": "auto",
                                                             "metric": "val_loss_best"}}))
    pipeline = root / "stack.yaml"
    pipeline.write_text(yaml.safe_dump({
        "pipeline": {"name": "e2e_compose", "experiment_name": EXPERIMENT},
        "steps": [{"id": "compare", "entry_point": "compare", "parameters": {"config": str(root / "compare.yaml")}},
                  {"id": "plot_compare", "entry_point": "plot", "needs": ["compare"],
                   "parameters": {"config": str(root / "plot.yaml"),
                                  "parent_run_id": "{{ steps.compare.run_id }}"}}],
    }, sort_keys=False))
    return pipeline


def check_prerequisites() -> list[str]:
    """The compose CLI, after checking the engine, the base image and the wheelhouse."""
    cli = compose_cli()
    if cli is None:
        unavailable("no compose CLI (docker compose plugin or Debian's docker-compose)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        unavailable("the Docker engine does not answer (bash docker/setup_engine.sh starts one)")
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        unavailable(f"base image {BASE_IMAGE} is not built (bash docker/setup_engine.sh base)")
    if not (REPO / "wheelhouse" / ".complete-airflow-auth").exists():
        unavailable('the wheelhouse has no wheels of the stack\'s extras (make wheelhouse EXTRAS="airflow auth")')
    return cli


def phase(name: str, times: dict[str, float], start: float) -> None:
    times[name] = time.monotonic() - start
    print(f"compose stack: {name} took {times[name]:.0f} s", flush=True)


def wait_until(what: str, timeout: float, probe, interval: float = 3) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def dag_runs(stack: ComposeStack) -> list[dict]:
    return stack.airflow("GET", f"dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]


def both_runs_ended(stack: ComposeStack) -> bool:
    """True once the API run and a scheduled run ended (recorded in stack.dag_runs); a failed
    one fails the test at once."""
    for run in dag_runs(stack):
        kind = "api" if run["dag_run_id"] == stack.dag_runs["api"] else run["run_type"]
        if kind not in ("api", "scheduled") or run["state"] not in ("success", "failed"):
            continue
        assert run["state"] == "success", f"DAG run {run['dag_run_id']} ({kind}) failed"
        stack.dag_runs.setdefault(kind, run["dag_run_id"])
    return "scheduled" in stack.dag_runs and any(
        r["dag_run_id"] == stack.dag_runs["api"] and r["state"] == "success" for r in dag_runs(stack))


def stack_environment(configs: Path, pipeline: Path, stack: ComposeStack, ports: dict[str, int]) -> dict[str, str]:
    """The variables the deployment sequence exports, for this run's ports and passwords."""
    return {**os.environ,
            "BASE_IMAGE": BASE_IMAGE,
            "POSTGRES_PASSWORD": stack.secrets[0],
            "MLFLOW_AUTH_ADMIN_PASSWORD": stack.mlflow_password,
            "AIRFLOW_ADMIN_PASSWORD": stack.airflow_password,
            "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
            **{name: str(port) for name, port in ports.items()},
            "MLPROJECT_PIPELINE_CONFIG": str(pipeline),
            "MLPROJECT_CONFIG_MOUNT": str(configs),
            "MLPROJECT_DAG_SCHEDULE": "* * * * *",     # fires within a minute of unpausing
            "MLPROJECT_POOL_SLOTS": "2",
            "MLPROJECT_CACHE_VOLUME": f"mlproject-cache-{configs.name.lower()}"}


def bring_up(compose: list[str], env: dict[str, str], stack: ComposeStack, times: dict[str, float]) -> None:
    """build, up, wait for health and the parsed DAG, then unpause it and trigger one run."""
    start = time.monotonic()
    subprocess.run([*compose, "build"], env=env, check=True, timeout=BUILD_TIMEOUT)
    phase("build", times, start)
    start = time.monotonic()
    subprocess.run([*compose, "up", "-d"], env=env, check=True, timeout=HEALTH_TIMEOUT)
    wait_until("the tracking server's /health", HEALTH_TIMEOUT, lambda: answers(f"{stack.mlflow_url}/health"))
    wait_until("Airflow's health endpoint", HEALTH_TIMEOUT,
               lambda: answers(f"{stack.airflow_url}/api/v2/monitor/health"))

    def dag_parsed() -> bool:
        try:
            return stack.airflow("GET", f"dags/{DAG_ID}")["dag_id"] == DAG_ID
        except (urllib.error.HTTPError, OSError):
            return False

    wait_until("the DAG parsed by Airflow", HEALTH_TIMEOUT, dag_parsed)
    phase("up and healthy", times, start)
    start = time.monotonic()
    stack.airflow("PATCH", f"dags/{DAG_ID}", {"is_paused": False})    # the schedule starts a run
    stack.dag_runs["api"] = stack.airflow("POST", f"dags/{DAG_ID}/dagRuns",
                                          {"dag_run_id": "api-1", "logical_date": None})["dag_run_id"]
    wait_until("the API run and a scheduled run", RUNS_TIMEOUT, lambda: both_runs_ended(stack), interval=10)
    stack.airflow("PATCH", f"dags/{DAG_ID}", {"is_paused": True})     # no further scheduled runs
    phase("DAG runs by API and schedule", times, start)


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    """The stack up, with one API-triggered and one scheduled DAG run succeeded; `down -v` after."""
    cli = check_prerequisites()
    # A folder every container user can read, mounted at the same path in Airflow and the steps.
    configs = Path(tempfile.mkdtemp(prefix="mlproject-stack-"))
    configs.chmod(0o755)
    pipeline = write_pipeline(configs)
    ports = {name: free_port() for name in ("POSTGRES_PORT", "MLFLOW_PORT", "AIRFLOW_PORT", "AIRFLOW_LOG_PORT",
                                            "AIRFLOW_TRIGGER_LOG_PORT")}
    postgres_password = secrets.token_urlsafe(16)
    stack = ComposeStack(
        mlflow_url=f"http://127.0.0.1:{ports['MLFLOW_PORT']}", airflow_url=f"http://127.0.0.1:{ports['AIRFLOW_PORT']}",
        mlflow_user="admin", mlflow_password=secrets.token_urlsafe(16),
        airflow_user="admin", airflow_password=secrets.token_urlsafe(16),
        postgres_uri=f"postgresql://mlflow:{postgres_password}@127.0.0.1:{ports['POSTGRES_PORT']}/mlflow")
    stack.secrets = (postgres_password, stack.mlflow_password, stack.airflow_password)
    env = stack_environment(configs, pipeline, stack, ports)
    compose = [*cli, "-p", f"mlproject-e2e-{os.getpid()}", *[a for f in FILES for a in ("-f", str(REPO / f))]]
    print(f"compose stack: {' '.join(compose)} (MLflow {stack.mlflow_url}, Airflow {stack.airflow_url})")
    times: dict[str, float] = {}
    log = tmp_path_factory.mktemp("compose") / "compose.log"
    try:
        bring_up(compose, env, stack, times)
        yield stack
    finally:
        with open(log, "w") as out:
            subprocess.run([*compose, "logs", "--no-color"], env=env, stdout=out, stderr=subprocess.STDOUT,
                           timeout=300)
        start = time.monotonic()
        subprocess.run([*compose, "down", "-v"], env=env, timeout=600, capture_output=True)
        phase("down -v", times, start)
        print(f"compose stack: phase times {json.dumps({k: round(v) for k, v in times.items()})}; logs in {log}")


def step_result(stack: ComposeStack, dag_run_id: str, task_id: str) -> dict:
    """The MLPROJECT_RESULT of a task (its XCom), as the DAG's downstream tasks read it."""
    from mlproject.protocol import parse_step_result

    entry = stack.airflow("GET", f"dags/{DAG_ID}/dagRuns/{dag_run_id}/taskInstances/{task_id}"
                                 f"/xcomEntries/return_value")
    return parse_step_result(entry["value"] if isinstance(entry["value"], str) else json.dumps(entry["value"]))


def test_the_dag_ran_once_by_the_rest_api_and_once_by_its_schedule(compose_stack):
    runs = {r["dag_run_id"]: r for r in dag_runs(compose_stack)}
    api_run, scheduled = runs[compose_stack.dag_runs["api"]], runs[compose_stack.dag_runs["scheduled"]]
    assert api_run["run_type"] == "manual" and api_run["state"] == "success"
    assert scheduled["run_type"] == "scheduled" and scheduled["state"] == "success"
    tasks = compose_stack.airflow("GET", f"dags/{DAG_ID}/dagRuns/{api_run['dag_run_id']}/taskInstances")
    trained = [t for t in tasks["task_instances"] if t["task_id"] == "compare__train"]
    assert sorted(t["map_index"] for t in trained) == [0, 1, 2, 3]
    assert {t["state"] for t in tasks["task_instances"]} == {"success"}


def test_each_dag_run_left_a_sweep_with_plots_and_a_registered_model_in_postgres(compose_stack, monkeypatch):
    import psycopg

    from mlproject.schema import Artifact

    client = compose_stack.mlflow_client(monkeypatch)
    parents = [step_result(compose_stack, run_id, "compare")["run_id"] for run_id in compose_stack.dag_runs.values()]
    assert len(set(parents)) == 2
    for parent_id in parents:
        parent = client.get_run(parent_id)
        assert parent.info.status == "FINISHED" and parent.data.metrics["children_finished"] == 4
        assert {"val_loss_best/gpt2/mean", "val_loss_best/gpt3/mean"} <= set(parent.data.metrics)
        children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
        assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
        assert all("val_loss_best" in c.data.metrics for c in children)
        plots = [f.path for f in client.list_artifacts(parent_id, str(Artifact.PLOTS))]
        assert any(p.endswith(".png") for p in plots), plots
    version = client.get_model_version_by_alias(MODEL, "best")
    assert client.get_run(version.run_id).data.tags["mlflow.parentRunId"] in parents
    # The tracking store is the stack's PostgreSQL: the runs are rows of its tables.
    with psycopg.connect(compose_stack.postgres_uri, connect_timeout=10) as db:
        rows = db.execute("select run_uuid, status from runs where run_uuid = any(%s)", (parents,)).fetchall()
    assert sorted(rows) == sorted((p, "FINISHED") for p in parents)


def test_the_tracking_server_lets_in_only_its_users(compose_stack):
    url = f"{compose_stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status_of(url) == 401
    assert status_of(url, compose_stack.mlflow_user, "not-" + compose_stack.mlflow_password) == 401
    assert status_of(url, compose_stack.mlflow_user, compose_stack.mlflow_password) == 200


def task_texts(stack: ComposeStack) -> Iterator[tuple[str, str]]:
    """(where, text) of every task of both DAG runs: its rendered template fields and its log."""
    for dag_run_id in stack.dag_runs.values():
        tasks = stack.airflow("GET", f"dags/{DAG_ID}/dagRuns/{dag_run_id}/taskInstances")["task_instances"]
        for ti in tasks:
            where = f"{dag_run_id}/{ti['task_id']}[{ti['map_index']}]"
            yield f"{where} rendered fields", json.dumps(ti["rendered_fields"])
            for try_number in range(1, ti["try_number"] + 1):
                log = stack.airflow("GET", f"dags/{DAG_ID}/dagRuns/{dag_run_id}/taskInstances/{ti['task_id']}"
                                           f"/logs/{try_number}?map_index={ti['map_index']}&full_content=true")
                yield f"{where} log of try {try_number}", json.dumps(log)


def run_texts(client, experiment_id: str, folder: Path) -> Iterator[tuple[str, str]]:
    """(where, text) of every run of the experiment: its params and tags, and each artifact."""
    for run in client.search_runs([experiment_id]):
        run_id = run.info.run_id
        yield f"run {run_id} params and tags", json.dumps([run.data.params, run.data.tags])
        local = Path(client.download_artifacts(run_id, "", str(folder / run_id)))
        for path in local.rglob("*"):
            if path.is_file():
                yield f"run {run_id} artifact {path.relative_to(local)}", path.read_bytes().decode("latin-1")


def test_no_password_in_a_rendered_template_a_task_log_a_run_or_an_artifact(compose_stack, monkeypatch, tmp_path):
    client = compose_stack.mlflow_client(monkeypatch)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    checked = 0
    for where, text in [*task_texts(compose_stack), *run_texts(client, experiment.experiment_id, tmp_path)]:
        checked += 1
        for secret in compose_stack.secrets:
            assert secret not in text, f"a password appears in {where}"
    # the logs were read: both runs' tasks (plan, children, 4 trainings, aggregate, plot) and runs
    assert checked > 2 * 8 + 2 * 5, checked


def test_the_docs_deployment_sequence_is_the_one_this_test_runs():
    """docs/orchestration.md shows the air-gapped sequence with the compose files and commands
    that `compose_stack` runs, and the settings it exports."""
    docs = (REPO / "docs" / "orchestration.md").read_text()
    compose = "docker-compose " + " ".join(f"-f {f}" for f in FILES)
    for command in ("build", "up -d", "down -v"):
        assert f"{compose} {command}\n" in docs, command
    for setting in ("BASE_IMAGE=mlproject-base:bookworm", 'MLPROJECT_DAG_SCHEDULE="* * * * *"', "MLPROJECT_POOL_SLOTS=2",
                    'make wheelhouse EXTRAS="airflow auth"', f"/api/v2/dags/{DAG_ID}/dagRuns", "/auth/token",
                    '{"is_paused": false}', '{"is_paused": true}', '"logical_date": null'):
        assert setting in docs, setting


def test_both_uis_show_the_scheduled_run_in_a_browser(compose_stack, monkeypatch, skip_or_fail):
    """The stack's UIs in headless Chromium after the scheduled run: MLflow's experiment page lists
    the parent and its nested children, a child's page its metrics and the registered model (as
    the stack's admin), and Airflow's UI the run's mapped tasks as successful."""
    import ui_browser

    reason = ui_browser.missing()
    if reason:
        skip_or_fail(reason)
    client = compose_stack.mlflow_client(monkeypatch)
    scheduled = compose_stack.dag_runs["scheduled"]
    parent = client.get_run(step_result(compose_stack, scheduled, "compare")["run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    version = client.get_model_version_by_alias(MODEL, "best")
    with ui_browser.browser() as driver:
        ui_browser.basic_auth(driver, compose_stack.mlflow_user, compose_stack.mlflow_password)
        ui_browser.check_mlflow_experiment(driver, compose_stack.mlflow_url, EXPERIMENT, parent.info.run_name,
                                           [c.info.run_name for c in children], shot="stack-mlflow-experiment")
        ui_browser.check_mlflow_child(driver, compose_stack.mlflow_url, version.run_id, ["val_loss_best"], MODEL,
                                      shot="stack-mlflow-child")
    with ui_browser.browser() as driver:
        totals = ui_browser.check_airflow_dag_run(driver, compose_stack.airflow_url, DAG_ID, scheduled,
                                                  compose_stack.airflow_user, compose_stack.airflow_password,
                                                  expected_mapped=4, shot="stack-airflow-dag-run")
    assert totals == {"Success": 4}
