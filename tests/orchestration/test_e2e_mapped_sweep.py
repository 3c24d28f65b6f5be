"""End to end with a real scheduler: `airflow standalone` (LocalExecutor, parallelism 4) runs a
compare step as a plan task, 4 mapped child containers and an aggregate task, against a real
tracking server with proxied artifacts; one child container is killed mid-training and only
that child's task is retried, resuming from the checkpoint in its run's artifacts.

Needs the Docker engine and a step image with this source (MLPROJECT_IMAGE, e.g.
`IMAGE=mlproject-step:i14 bash docker/build_image.sh`); skipped without them, except in CI.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from airflow_standalone import AIRFLOW, DAG_ID, standalone, wait_for_run
from helpers import tiny

pytestmark = pytest.mark.e2e

EXPERIMENT = "e2e-mapped"

# nano-sized children, 120 steps with a checkpoint every 10: long enough to be caught mid-run.
COMPARE = tiny(train={"max_steps": 120, "eval_interval": 40, "log_interval": 5, "save_every": 10},
               # A killed container never releases its lease: a short one lets the retry (1 s later)
               # take the run over after a few seconds instead of the default minute.
               tracking={"experiment_name": EXPERIMENT, "lease_heartbeat": 1, "lease_timeout": 4},
               extra={"compare": {"models": ["gpt2", "gpt3"], "seeds": [42, 43]}})


def write_pipeline(root: Path) -> Path:
    compare = root / "compare.yaml"
    compare.write_text(yaml.safe_dump(COMPARE))
    pipeline = root / "mapped.yaml"
    pipeline.write_text(yaml.safe_dump({
        "pipeline": {"name": "e2e_mapped", "experiment_name": EXPERIMENT},
        "steps": [{"id": "compare", "entry_point": "compare", "parameters": {"config": str(compare)}}],
    }, sort_keys=False))
    return pipeline


def kill_one_child(docker: str, client, stop: threading.Event, killed: dict) -> None:
    """SIGKILL one child container once its run has a checkpoint in the artifact store."""
    from mlproject.tracking.queries import artifact_files

    while not stop.is_set():
        time.sleep(0.25)
        ids = subprocess.run([docker, "ps", "-q", "--filter", "label=mlproject.stage=train"],
                             capture_output=True, text=True).stdout.split()
        for container in ids:
            cmd = json.loads(subprocess.run([docker, "inspect", "--format", "{{json .Config.Cmd}}", container],
                                            capture_output=True, text=True).stdout or "[]")
            run_id = cmd[-1] if cmd else ""
            if len(run_id) == 32 and "checkpoints/last.pt" in artifact_files(run_id, "checkpoints"):
                subprocess.run([docker, "kill", container], capture_output=True)
                killed.update(run_id=run_id, container=container)
                return


def task_spans(home: Path, run_id: str) -> list[tuple[datetime, datetime]]:
    """When each try of a mapped child task ran (what a pool slot is held for), from Airflow's
    metadata: the last tries in task_instance, the earlier ones (a retried child's first) in
    task_instance_history. Training spans would not do: a few-second child can finish before the
    next container has started, whatever the pool allows."""
    query = "select start_date, end_date from {} where task_id = 'compare__train' and run_id = ?"
    with sqlite3.connect(home / "airflow.db") as db:
        rows = [row for table in ("task_instance", "task_instance_history")
                for row in db.execute(query.format(table), (run_id,)).fetchall()]
    return sorted((datetime.fromisoformat(start), datetime.fromisoformat(end)) for start, end in rows)


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_mapped_children_run_in_parallel_containers_and_a_killed_child_alone_resumes(
        tmp_path, monkeypatch, start_server, docker_engine, step_image):
    from mlflow import MlflowClient

    configs = tmp_path / "configs"
    configs.mkdir()
    pipeline = write_pipeline(configs)
    home = tmp_path / "airflow-home"

    # a generous start-up limit: on a busy shared machine the server takes a while to import
    with start_server(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "mlartifacts", timeout=300) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        client = MlflowClient(tracking_uri=server.url)
        stop, killed = threading.Event(), {}
        with standalone(tmp_path, server.url, pipeline, step_image, pool_slots=2) as env:
            killer = threading.Thread(target=kill_one_child, args=(docker_engine, client, stop, killed), daemon=True)
            killer.start()
            run_id = "e2e-mapped-1"
            try:
                subprocess.run([AIRFLOW, "dags", "trigger", DAG_ID, "--run-id", run_id], env=env, check=True,
                               capture_output=True, timeout=120)
                state = wait_for_run(env, run_id, timeout=1200)
            finally:
                stop.set()
        assert state == "success", (tmp_path / "standalone.log").read_text()[-4000:]

        experiment = client.get_experiment_by_name(EXPERIMENT)
        (parent,) = client.search_runs([experiment.experiment_id], "tags.`mlproject.role` = 'sweep_parent'")
        children = client.search_runs([experiment.experiment_id], "tags.`mlflow.parentRunId` != ''")
        assert parent.info.status == "FINISHED"
        assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
        assert parent.data.metrics["children_finished"] == 4
        assert {"val_loss_best/gpt2/mean", "val_loss_best/gpt3/mean"} <= set(parent.data.metrics)

        # Two children ran at once, never more: parallelism 4, but the pool has 2 slots.
        spans = task_spans(home, run_id)
        assert len(spans) == 5 and most_at_once(spans) == 2, spans  # 4 children, one of them retried

        # The killed child was retried alone and resumed in its own run; no other child ran twice.
        assert killed, "no child container was caught mid-training"
        with sqlite3.connect(home / "airflow.db") as db:
            tries = dict(db.execute("select map_index, try_number from task_instance "
                                    "where task_id = 'compare__train' and run_id = ?", (run_id,)).fetchall())
        assert sorted(tries.values()) == [1, 1, 1, 2], tries
        history = client.get_metric_history(killed["run_id"], "train_loss")
        assert killed["run_id"] in {c.info.run_id for c in children}
        assert max(m.step for m in history) == COMPARE["train"]["max_steps"]


def test_with_one_pool_slot_mapped_children_train_one_at_a_time(tmp_path, start_server, docker_engine, step_image):
    """The pool bounds the children whatever the executor's parallelism (4 here): with one slot,
    four mapped children never overlap."""
    from mlflow import MlflowClient

    configs = tmp_path / "configs"
    configs.mkdir()
    compare = tiny(train={"max_steps": 30, "eval_interval": 30, "log_interval": 5},
                   tracking={"experiment_name": EXPERIMENT + "-one-slot"},
                   extra={"compare": {"models": ["gpt2", "gpt3"], "seeds": [42, 43]}})
    (configs / "compare.yaml").write_text(yaml.safe_dump(compare))
    pipeline = configs / "one_slot.yaml"
    pipeline.write_text(yaml.safe_dump({
        "pipeline": {"name": "e2e_one_slot", "experiment_name": EXPERIMENT + "-one-slot"},
        "steps": [{"id": "compare", "entry_point": "compare",
                   "parameters": {"config": str(configs / "compare.yaml")}}]}, sort_keys=False))
    with start_server(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "mlartifacts", timeout=300) as server:
        client = MlflowClient(tracking_uri=server.url)
        with standalone(tmp_path, server.url, pipeline, step_image, pool_slots=1) as env:
            subprocess.run([AIRFLOW, "dags", "trigger", DAG_ID, "--run-id", "one-slot"], env=env, check=True,
                           capture_output=True, timeout=120)
            state = wait_for_run(env, "one-slot", timeout=1200)
        assert state == "success", (tmp_path / "standalone.log").read_text()[-4000:]
        experiment = client.get_experiment_by_name(EXPERIMENT + "-one-slot")
        children = client.search_runs([experiment.experiment_id], "tags.`mlflow.parentRunId` != ''")
        assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
        spans = task_spans(tmp_path / "airflow-home", "one-slot")
        assert len(spans) == 4 and most_at_once(spans) == 1, spans
