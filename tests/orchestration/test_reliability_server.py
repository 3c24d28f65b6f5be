"""Reliability against a real tracking server: no credential in the store or its artifacts; a
soak of concurrent writers on PostgreSQL; a server killed and restarted in the middle of a
parallel sweep.

The figures (wall time, metric points, points per second, outage length) are printed; run
with `pytest -s` to see them. PostgreSQL comes from MLPROJECT_TEST_PG_URI
(`eval "$(bash docker/setup_postgres.sh)"`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import REPO, VENV_BIN, free_port, write_tiny

pytestmark = pytest.mark.e2e

STEP_METRICS = ("train_loss", "lr", "grad_norm", "tokens_per_sec", "ms_per_step", "tokens_seen")


def env_for(uri: str, cache: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLPROJECT_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    return env


def run_ok(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 900) -> str:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def assert_complete(client: MlflowClient, run_id: str, steps: int, keys=STEP_METRICS) -> int:
    """Every key has exactly one point per step 1..steps; returns the points checked."""
    points = 0
    for key in keys:
        counts = Counter(m.step for m in client.get_metric_history(run_id, key))
        missing = sorted(set(range(1, steps + 1)) - set(counts))
        repeated = sorted(s for s, n in counts.items() if n > 1)
        assert not missing and not repeated, f"{run_id} {key}: missing {missing[:10]}, repeated {repeated[:10]}"
        assert set(counts) == set(range(1, steps + 1)), key
        points += len(counts)
    return points


# ----------------------------------------------------------------------------- credentials

def test_no_credential_reaches_the_store_or_its_artifacts(tmp_path, start_server):
    """A password in the tracking URI and a token in the environment, through a train, a parallel
    compare and an `mlflow run`; then the whole database and artifact root are searched for them."""
    password, token = f"pw{uuid.uuid4().hex[:10]}", f"tok{uuid.uuid4().hex[:12]}"
    db = tmp_path / "store.db"
    artifacts = tmp_path / "artifacts"
    experiment = f"secrets-{uuid.uuid4().hex[:6]}"
    cache = tmp_path / "cache"
    with start_server(f"sqlite:///{db}", artifacts, log=tmp_path / "server.log", timeout=120) as server:
        port = server.url.rsplit(":", 1)[1]
        uri = f"http://alice:{password}@127.0.0.1:{port}"
        env = env_for(uri, cache, MLFLOW_TRACKING_TOKEN=token)
        config = write_tiny(tmp_path / "train.yaml", experiment)
        out = run_ok([str(VENV_BIN / "mlproject"), "train", "--config", str(config)], env, tmp_path)
        compare = write_tiny(tmp_path / "compare.yaml", experiment, compare={"models": ["gpt2", "gpt3"],
                                                                            "seeds": [1], "parallel": 2})
        out += run_ok([str(VENV_BIN / "mlproject"), "compare", "--config", str(compare)], env, tmp_path)
        # `mlflow run` itself prints MLflow's run links with the URI as given; only its artifacts count here
        run_ok([str(VENV_BIN / "mlflow"), "run", str(REPO), "-e", "train", "--env-manager", "local",
                       "--experiment-name", experiment, "-P", f"config={config}", "-P", "max_steps=4"], env, REPO)
        client = MlflowClient(tracking_uri=server.url)
        runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
        logs = [client.download_artifacts(c.info.run_id, "logs/train.log", str(tmp_path / c.info.run_id))
                for c in children]
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    assert len(logs) == 2 and all("step 12/12" in Path(p).read_text() for p in logs)  # the children's stdout
    files = [db, *(p for p in artifacts.rglob("*") if p.is_file())]
    assert len(files) > 10
    leaks = [str(p) for p in files for secret in (password, token) if secret.encode() in p.read_bytes()]
    assert leaks == []
    assert password not in out and token not in out  # nor on our console, which the logs copy


# ----------------------------------------------------------------------------- soak

WRITERS, SOAK_STEPS = 8, 500


def test_soak_eight_writers_every_step_logged_once_on_postgresql(tmp_path, postgres_uri, start_server):
    experiment = f"soak-{uuid.uuid4().hex[:6]}"
    cache = tmp_path / "cache"
    config = write_tiny(tmp_path / "soak.yaml", experiment,
                        train={"max_steps": SOAK_STEPS, "log_interval": 1, "eval_interval": SOAK_STEPS,
                               "save_every": 250})
    with start_server(postgres_uri, tmp_path / "artifacts", log=tmp_path / "server.log", timeout=120) as server:
        uri = server.url
        env = env_for(uri, cache)
        run_ok([str(VENV_BIN / "mlproject"), "dataloaders", "--dataset", "pydocs", "--vocab-size", "512",
                "--max-train-docs", "200", "--max-val-docs", "20", "--preview-batches", "0"], env, tmp_path)
        start = time.monotonic()
        procs = [subprocess.Popen([str(VENV_BIN / "mlproject"), "train", "--config", str(config),
                                   "--run-name", f"writer-{i}"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for i in range(WRITERS)]
        outputs = [p.communicate(timeout=1500)[0] for p in procs]
        wall = time.monotonic() - start
        assert [p.returncode for p in procs] == [0] * WRITERS, "\n".join(o[-1500:] for o in outputs)
        client = MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        assert len(runs) == WRITERS and {r.info.status for r in runs} == {"FINISHED"}
        points = sum(assert_complete(client, r.info.run_id, SOAK_STEPS) for r in runs)
        all_points = sum(len(client.get_metric_history(r.info.run_id, k)) for r in runs for k in r.data.metrics)
    print(f"\nsoak: {WRITERS} writers x {SOAK_STEPS} steps (log_interval 1) on PostgreSQL in {wall:.1f} s; "
          f"{all_points} metric points stored ({all_points / wall:.0f}/s), {points} per-step points checked: "
          "none missing, none repeated")


# ----------------------------------------------------------------------------- restart

RESTART_STEPS, OUTAGE_SEC = 300, 30


def test_a_server_killed_mid_sweep_and_restarted_30s_later_loses_nothing(tmp_path, postgres_uri, start_server):
    experiment = f"restart-{uuid.uuid4().hex[:6]}"
    cache, artifacts, log = tmp_path / "cache", tmp_path / "artifacts", tmp_path / "server.log"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    config = write_tiny(tmp_path / "compare.yaml", experiment,
                        train={"max_steps": RESTART_STEPS, "log_interval": 1, "eval_interval": 100, "save_every": 25},
                        compare={"models": ["gpt2", "gpt3"], "seeds": [1, 2], "parallel": 2})
    env = env_for(uri, cache)
    with start_server(postgres_uri, artifacts, port=port, log=log, timeout=120) as first:
        sweep = subprocess.Popen([str(VENV_BIN / "mlproject"), "compare", "--config", str(config)], env=env, cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert sweep.stdout is not None
        seen = []
        for line in sweep.stdout:
            seen.append(line)
            if "] step 60/" in line:  # the first children are a fifth of the way through
                break
        first.kill(signal.SIGKILL)
        killed_at = time.monotonic()
    # While the server is down the children keep training; their metrics and uploads wait in retries.
    drain = subprocess.Popen(["cat"], stdin=sweep.stdout, stdout=open(tmp_path / "sweep.log", "w"))
    time.sleep(OUTAGE_SEC)
    with start_server(postgres_uri, artifacts, port=port, log=log, timeout=120):
        outage = time.monotonic() - killed_at
        sweep.wait(timeout=1500)
        drain.wait(timeout=60)
        output = "".join(seen) + (tmp_path / "sweep.log").read_text()
        assert sweep.returncode == 0, output[-4000:]
        from mlproject.model.checkpoint import load_checkpoint

        client = MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
        (parent,) = [r for r in runs if not r.data.tags.get("mlflow.parentRunId")]
        assert parent.info.status == "FINISHED"
        assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
        points = 0
        for child in children:
            points += assert_complete(client, child.info.run_id, RESTART_STEPS)
            local = client.download_artifacts(child.info.run_id, "checkpoints/last.pt", str(tmp_path / child.info.run_id))
            assert load_checkpoint(local)["step"] == RESTART_STEPS
            assert [a.path for a in client.list_artifacts(child.info.run_id, "logs")] == ["logs/train.log"]
    print(f"\nrestart: server SIGKILLed at a child's step 60 of {RESTART_STEPS}, back after {outage:.1f} s; "
          f"4 children FINISHED, {points} per-step points checked (none missing or repeated), "
          "every checkpoints/last.pt at the final step")
