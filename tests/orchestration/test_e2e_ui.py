"""Both UIs as users see them, in headless Chromium (tests/orchestration/ui_browser.py):

- a tiny compare with a registered model, logged to a real `mlproject server`: MLflow's
  experiment page lists the parent and its nested children by name, a child's page shows its
  metrics and the registered model, and a first-time visitor of the experiment is offered its
  "Training runs" (the experiment's `mlflow.experimentKind` tag);
- a tiny DAG run under `airflow standalone` with a login: Airflow's UI shows the run and its
  mapped child tasks as successful.

Screenshots land in outputs/ui/. Needs selenium, Debian's chromium and chromium-driver; the
Airflow test also the Docker engine and the step image. Skipped without them, except in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

import ui_browser
from airflow_standalone import AIRFLOW, DAG_ID, password_of, standalone, ui_url, wait_for_run
from helpers import tiny

pytestmark = pytest.mark.e2e

MODELS, SEEDS = ["gpt2", "gpt3"], [42, 43]
CHILDREN = [f"{model}-s{seed}" for model in MODELS for seed in SEEDS]
PARENT = "compare-gpt2-vs-gpt3"
REGISTERED = "e2e-ui-gpt"
METRICS = ["train_loss", "val_loss", "val_loss_best"]


@pytest.fixture
def chromium(skip_or_fail) -> None:
    reason = ui_browser.missing()
    if reason:
        skip_or_fail(reason)


def compare_config(path, experiment: str, **tracking) -> str:
    data = tiny(train={"max_steps": 8}, tracking={"experiment_name": experiment, **tracking},
                extra={"compare": {"models": MODELS, "seeds": SEEDS}})
    path.write_text(yaml.safe_dump(data))
    return str(path)


def run_compare(config: str, server_url: str, cache) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": server_url, "MLPROJECT_CACHE_DIR": str(cache),
           "HF_HUB_OFFLINE": "1"}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "mlproject", "compare", "--config", config,
                           "--register-best", REGISTERED, "--register-best-ungated"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("MLPROJECT_RESULT "))
    return json.loads(line.removeprefix("MLPROJECT_RESULT "))


def test_mlflow_ui_shows_the_compare_its_children_their_metrics_and_the_registered_model(
        tmp_path, start_server, chromium):
    from mlflow import MlflowClient

    config = compare_config(tmp_path / "compare.yaml", "e2e-ui-compare", log_model=True,
                            output_dir=str(tmp_path / "runs"))
    with start_server(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "mlartifacts", timeout=300) as server:
        result = run_compare(config, server.url, tmp_path / "cache")
        assert result["status"] == "FINISHED" and result["finished"] == 4
        (version,) = MlflowClient(tracking_uri=server.url).search_model_versions(f"name = '{REGISTERED}'")

        with ui_browser.browser() as driver:
            landing = ui_browser.mlflow_landing(driver, server.url, "e2e-ui-compare")
            print(f"a first visit of the experiment lands on {landing}")
            ui_browser.check_mlflow_experiment(driver, server.url, "e2e-ui-compare", PARENT, CHILDREN)
            ui_browser.check_mlflow_child(driver, server.url, version.run_id, METRICS, REGISTERED)
    for shot in ("mlflow-landing", "mlflow-experiment", "mlflow-child"):
        assert (ui_browser.SCREENSHOTS / f"{shot}.png").stat().st_size > 10_000, shot


def test_airflow_ui_shows_the_dag_run_and_its_mapped_children_succeeded(
        tmp_path, start_server, step_image, chromium):
    configs = tmp_path / "configs"
    configs.mkdir()
    # the step containers mount configs/ read-only: their outputs stay in the containers
    compare = compare_config(configs / "compare.yaml", "e2e-ui-dag")
    pipeline = configs / "ui.yaml"
    pipeline.write_text(yaml.safe_dump({
        "pipeline": {"name": "e2e_ui", "experiment_name": "e2e-ui-dag"},
        "steps": [{"id": "compare", "entry_point": "compare", "parameters": {"config": compare}}]}, sort_keys=False))
    with start_server(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "mlartifacts", timeout=300) as server:
        with standalone(tmp_path, server.url, pipeline, step_image, pool_slots=2, users="admin:admin") as env:
            subprocess.run([AIRFLOW, "dags", "trigger", DAG_ID, "--run-id", "ui-1"], env=env, check=True,
                           capture_output=True, timeout=120)
            state = wait_for_run(env, "ui-1", timeout=1200)
            assert state == "success", (tmp_path / "standalone.log").read_text()[-4000:]
            with ui_browser.browser() as driver:
                totals = ui_browser.check_airflow_dag_run(driver, ui_url(env), DAG_ID, "ui-1", "admin",
                                                          password_of(env, "admin"), expected_mapped=4)
    assert totals == {"Success": 4}
    for shot in ("airflow-dag-run", "airflow-dag-run-mapped"):
        assert (ui_browser.SCREENSHOTS / f"{shot}.png").stat().st_size > 10_000, shot
