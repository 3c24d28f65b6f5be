"""End to end: the Airflow DAG runs a tiny offline compare + plot in step containers against a
real tracking server; one container is killed mid-training and the retried task resumes.

Real components only: `mlproject server` (SQLite backend, proxied artifacts) on a free
127.0.0.1 port, `airflow dags test` with the real DockerOperator, the step image on the local
Docker engine, containers on host networking sharing one token cache directory.
Needs the engine and the image (`bash docker/setup_engine.sh`); skipped without them, except
in CI (CI=true), where .ci/run sets them up and a missing piece is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from helpers import REPO, VENV_BIN, tiny

pytestmark = pytest.mark.e2e

DAGS = REPO / "airflow" / "dags"
AIRFLOW = str(VENV_BIN / "airflow")
EXPERIMENT = "e2e-dag"
MODELS, SEEDS = ["gpt2", "gpt3"], [42, 43]

# nano models and 80 steps: a child trains in seconds on 2 CPU cores, checkpointing every 10
# steps, so the watcher has a few seconds to kill a container between a checkpoint and the end.
COMPARE = tiny(train={"max_steps": 80, "eval_interval": 20, "log_interval": 5, "save_every": 10},
               # A killed container never releases its lease: a short one lets the retry (1 s later)
               # take the run over after a few seconds instead of the default minute.
               tracking={"experiment_name": EXPERIMENT, "lease_heartbeat": 1, "lease_timeout": 4}, extra={"compare": {"models": MODELS, "seeds": SEEDS}})


def write_pipeline(root: Path) -> Path:
    """The pipeline YAML and its compare config, in a directory the containers mount read-only."""
    compare = root / "compare.yaml"
    compare.write_text(yaml.safe_dump(COMPARE))
    plot = root / "plot.yaml"
    plot.write_text(yaml.safe_dump({"plot": {"kind": "compare", "metric": "val_loss_best"}}))
    pipeline = root / "e2e_tiny_offline.yaml"
    pipeline.write_text(yaml.safe_dump({
        "pipeline": {"name": "e2e_tiny_offline", "experiment_name": EXPERIMENT},
        "steps": [
            {"id": "compare", "entry_point": "compare", "parameters": {"config": str(compare)}},
            {"id": "plot", "entry_point": "plot", "needs": ["compare"],
             "parameters": {"config": str(plot), "parent_run_id": "{{ steps.compare.run_id }}"}},
        ],
    }, sort_keys=False))
    return pipeline


@pytest.fixture
def airflow_env(tmp_path: Path) -> dict[str, str]:
    """Airflow's own settings: a fresh SQLite metadata database in a temp AIRFLOW_HOME."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS), "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"}
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return env


def kill_mid_training(docker: str, client, stop: threading.Event, killed: dict) -> None:
    """Kill the compare container once one child finished and another has a checkpoint."""
    from mlproject.tracking.queries import artifact_files

    while not stop.is_set():
        time.sleep(0.25)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            continue
        runs = client.search_runs([experiment.experiment_id], "tags.`mlflow.parentRunId` != ''")
        finished = [r for r in runs if r.info.status == "FINISHED"]
        running = [r for r in runs if r.info.status == "RUNNING"]
        for run in running:
            if finished and "checkpoints/last.pt" in artifact_files(run.info.run_id, "checkpoints"):
                ids = subprocess.run([docker, "ps", "-q", "--filter", "label=mlproject.step=compare"],
                                     capture_output=True, text=True).stdout.split()
                for container in ids:
                    subprocess.run([docker, "kill", container], capture_output=True)
                killed.update(run_id=run.info.run_id, finished=[r.info.run_id for r in finished],
                              containers=ids)
                return


def test_dag_runs_compare_and_plot_in_containers_and_a_killed_step_resumes(
        tmp_path, monkeypatch, start_server, docker_engine, step_image, airflow_env):
    from mlflow import MlflowClient

    configs = tmp_path / "configs"
    configs.mkdir()
    pipeline = write_pipeline(configs)
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)  # the containers run as the image's non-root user
    downloads = tmp_path / "downloads"

    with start_server(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "mlartifacts") as server:
        url = server.url
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        client = MlflowClient(tracking_uri=url)
        env = {**airflow_env, "MLFLOW_TRACKING_URI": url, "MLPROJECT_PIPELINE_CONFIG": str(pipeline),
               "MLPROJECT_IMAGE": step_image, "MLPROJECT_DOCKER_NETWORK": "host",
               "MLPROJECT_CACHE_VOLUME": str(cache), "MLPROJECT_CONFIG_MOUNT": str(configs),
               "MLPROJECT_RETRIES": "2", "MLPROJECT_RETRY_DELAY_S": "1", "MLPROJECT_SWEEP_TASKS": "single"}

        stop, killed = threading.Event(), {}
        killer = threading.Thread(target=kill_mid_training, args=(docker_engine, client, stop, killed), daemon=True)
        killer.start()
        t0 = time.monotonic()
        done = subprocess.run([AIRFLOW, "dags", "test", "gpt_research_pipeline"], env=env,
                              capture_output=True, text=True, timeout=900)
        stop.set()
        killer.join(timeout=10)
        log = done.stdout + done.stderr
        (tmp_path / "dags-test.log").write_text(log)
        print(f"airflow dags test: {time.monotonic() - t0:.0f} s, exit code {done.returncode}")
        assert done.returncode == 0, log[-4000:]

        # Airflow's task log decorates each container line; the JSON starts after the prefix.
        decoder = json.JSONDecoder()
        results = [decoder.raw_decode(line.split("MLPROJECT_RESULT ", 1)[1])[0] for line in log.splitlines()
                   if "MLPROJECT_RESULT {" in line]
        compare = [r for r in results if r.get("step") == "compare" and r.get("status") == "FINISHED"][-1]
        plot = [r for r in results if r.get("step") == "plot"][-1]

        # The kill happened mid-training, and the compare task was tried again.
        assert killed, "the compare container was never caught mid-training"
        assert "Docker container failed: {'Error': None, 'StatusCode': 137}" in log  # SIGKILL, then a retry
        # the retry resumed the killed child: planned as such, or taken over once its dead holder's lease went stale
        assert "to resume" in log or "(resume) run" in log

        parent = client.get_run(compare["run_id"])
        assert parent.info.status == "FINISHED"
        children = client.search_runs([parent.info.experiment_id],
                                      f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert len(children) == len(MODELS) * len(SEEDS) == 4
        assert {c.info.status for c in children} == {"FINISHED"}
        child_ids = {c.info.run_id for c in children}
        assert killed["run_id"] in child_ids, "the killed child was resumed in its own run"
        assert set(killed["finished"]) <= child_ids, "children finished before the kill were kept"
        all_children = client.search_runs([parent.info.experiment_id], "tags.`mlflow.parentRunId` != ''")
        assert len(all_children) == 4, "a retry never duplicates child runs"

        for child in children:
            history = client.get_metric_history(child.info.run_id, "train_loss")
            assert len(history) >= 2 and history[-1].step > history[0].step
            checkpoint = client.download_artifacts(child.info.run_id, "checkpoints/last.pt", str(downloads))
            assert Path(checkpoint).stat().st_size > 0

        assert plot["plotted_run_id"] == parent.info.run_id  # the plot step plotted the compare step's parent
        plots = [f.path for f in client.list_artifacts(parent.info.run_id, "plots")]
        assert any(p.endswith(".png") for p in plots), plots
        png = client.download_artifacts(parent.info.run_id, next(p for p in plots if p.endswith(".png")),
                                        str(downloads))
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    leftover = subprocess.run([docker_engine, "ps", "-aq", "--filter", "label=mlproject.dag=gpt_research_pipeline",
                               "--filter", "status=running"], capture_output=True, text=True).stdout.split()
    assert leftover == []
