"""Multi-node training: two `torchrun --nnodes 2 --nproc-per-node 1` launchers (two "nodes"
on 127.0.0.1, c10d rendezvous, gloo on CPU) train one MLflow run, logged by global rank 0,
whose losses equal a single `mlproject train` with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import TINY_DATA, TINY_MODEL, VENV_BIN, free_port

TORCHRUN = VENV_BIN / "torchrun"
STEPS = 6


def train_args(experiment: str, output_dir: Path, **train) -> list[str]:
    flags = {**TINY_MODEL, **TINY_DATA, "max_steps": STEPS, "eval_interval": 3, "log_interval": 1, "save_every": 3,
             "warmup": 1, "device": "cpu", "precision": "fp32", "num_threads": 1, "progress": "lines", "seed": 7,
             "experiment_name": experiment, "output_dir": str(output_dir), "log_model": "false", **train}
    return ["train", *[a for k, v in flags.items() for a in (f"--{k.replace('_', '-')}", str(v))]]


def losses(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


@pytest.mark.e2e
def test_two_torchrun_nodes_train_one_run_that_matches_a_single_process(data, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments()  # create the store before two processes open it
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)

    port = free_port()
    # Per node: 1 window x 2 micro-batches; x 2 nodes = the single run's batch of 4.
    node_cmd = [str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "mlproject-test", "-m", "mlproject",
                *train_args("multinode", tmp_path / "nodes", batch_size=1, grad_accum_steps=2, eval_batches=4)]
    nodes = [subprocess.Popen(node_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    single = subprocess.run([sys.executable, "-m", "mlproject",
                             *train_args("single", tmp_path / "single", batch_size=4, eval_batches=2)],
                            env=env, capture_output=True, text=True, timeout=300)
    outputs = [p.communicate(timeout=300)[0] for p in nodes]
    for node, out in zip(nodes, outputs):
        assert node.returncode == 0, out[-3000:]
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]

    (run,) = client.search_runs([client.get_experiment_by_name("multinode").experiment_id])
    (one,) = client.search_runs([client.get_experiment_by_name("single").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["runtime.world_size"] == "2"
    assert sum("MLPROJECT_RESULT" in out for out in outputs) == 1  # only global rank 0 reports
    for key in ("train_loss", "val_loss"):
        expected = losses(client, one.info.run_id, key)
        got = losses(client, run.info.run_id, key)
        assert sorted(got) == sorted(expected) and len(got) >= 2
        for step, value in expected.items():
            assert got[step] == pytest.approx(value, rel=1e-5), (key, step)
    assert run.data.metrics["tokens_seen"] == one.data.metrics["tokens_seen"]
