"""The tracked steps as users start them: `mlflow run`, `mlproject train` (and SIGTERM), torchrun,
`mlproject generate`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from mlflow import MlflowClient

import pytest

from helpers import REPO, VENV_BIN, free_port
from mlproject.cli import main
from mlproject.protocol import RESULT_PREFIX


def _result(stdout: str) -> dict:
    """The JSON of the last MLPROJECT_RESULT line."""
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX + " ")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len(RESULT_PREFIX) + 1:])


def _runs(experiment_name: str) -> list:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _run(cmd: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.e2e
def test_mlflow_run_train_logs_into_the_run_it_created(tiny_yaml, experiment_name, tmp_path):
    config = tiny_yaml()
    # Created here so its artifacts go to tmp_path, not to ./mlruns of the repository mlflow runs in.
    MlflowClient().create_experiment(experiment_name, artifact_location=(tmp_path / "artifacts").as_uri())
    done = _run([str(VENV_BIN / "mlflow"), "run", str(REPO), "-e", "train", "--env-manager", "local",
                 "--experiment-name", experiment_name, "-P", f"config={config}", "-P", "max_steps=6"], cwd=REPO)
    (run,) = _runs(experiment_name)
    assert run.info.status == "FINISHED"
    assert run.data.params["config"] == str(config)  # the parameter mlflow run logged: same run
    assert run.data.params["train.max_steps"] == "6"
    assert len(MlflowClient().get_metric_history(run.info.run_id, "train_loss")) == 3
    assert _result(done.stdout) == {"step": "train", "run_id": run.info.run_id, "status": "FINISHED"}


@pytest.mark.e2e
def test_sigterm_ends_the_run_killed_with_last_checkpoint_uploaded(tiny_yaml, experiment_name, tmp_path):
    config = tiny_yaml(train={"max_steps": None, "epochs": 50, "eval_interval": 1000, "save_every": 1000})
    proc = subprocess.Popen([str(VENV_BIN / "mlproject"), "train", "--config", str(config)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        runs = _runs(experiment_name)
        if runs and MlflowClient().get_metric_history(runs[0].info.run_id, "train_loss"):
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    (run,) = _runs(experiment_name)
    assert proc.returncode == 130, stdout[-3000:]
    assert run.info.status == "KILLED"
    assert run.data.tags["mlproject.train_status"] == "interrupted"
    names = {f.path for f in MlflowClient().list_artifacts(run.info.run_id, "checkpoints")}
    assert "checkpoints/last.pt" in names
    assert _result(stdout)["status"] == "KILLED"


@pytest.mark.e2e
def test_torchrun_with_two_processes_makes_exactly_one_run(tiny_yaml, experiment_name, tmp_path):
    config = tiny_yaml(train={"max_steps": 4, "eval_interval": 2})
    done = _run([str(VENV_BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                 "--master_port", str(free_port()), "-m", "mlproject", "train", "--config", str(config)],
                cwd=tmp_path, timeout=300)
    (run,) = _runs(experiment_name)
    assert run.info.status == "FINISHED"
    assert run.data.params["runtime.world_size"] == "2"
    assert sorted(m.step for m in MlflowClient().get_metric_history(run.info.run_id, "train_loss")) == [2, 4]
    assert done.stdout.count(RESULT_PREFIX) == 1


def test_generate_from_a_run_id(trained, capsys):
    assert main(["generate", "--run-id", trained.run_id, "--prompts", "def", "class", "--max-new-tokens", "4",
                 "--seed", "0", "--stream", "false"]) == 0
    out = capsys.readouterr().out
    assert "--- sample 1/2" in out and "--- sample 2/2" in out


def test_generate_from_a_checkpoint_and_tokenizer_offline(trained, tmp_path, capsys, monkeypatch):
    import mlflow

    checkpoint = mlflow.artifacts.download_artifacts(trained.checkpoint_uris["best"], dst_path=str(tmp_path))
    tokenizer = mlflow.artifacts.download_artifacts(run_id=trained.run_id, artifact_path="tokenizer/tokenizer.json",
                                                    dst_path=str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens: no store is used
    assert main(["generate", "--checkpoint", checkpoint, "--tokenizer-path", tokenizer, "--prompts", "import",
                 "--max-new-tokens", "4", "--stream", "false"]) == 0
    assert capsys.readouterr().out.startswith("---\nimport")


def test_generate_from_a_models_uri(trained, capsys):
    assert main(["generate", "--model-uri", trained.model_uri, "--prompts", "def", "--max-new-tokens", "3",
                 "--stream", "false"]) == 0
    assert capsys.readouterr().out.startswith("---\ndef")


def test_generate_size_flags_that_disagree_with_the_checkpoint_are_a_one_line_error(trained, capsys):
    assert main(["generate", "--run-id", trained.run_id, "--n-layer", "3", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("mlproject: error: generate: n_layer=3 does not match the checkpoint's n_layer=2; "
                   "the model config always comes from the checkpoint (drop the flag)")
