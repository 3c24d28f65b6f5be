"""Signals: a training interrupted (SIGINT, SIGTERM) or killed (SIGKILL) in the middle. An
interrupt ends the run KILLED (resumable, never FAILED) with exit code 130 and no traceback; a
killed holder's lease lapses after its timeout; either way the next `--resume-from` finishes
the run, and no credential reaches any output."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from adversary import PASSWORD, TOKEN, ok, run_case
from helpers import VENV_BIN

# A run that would train for hours: it is stopped by the signal, and resumed to 12 steps.
LONG = {"max_steps": 100_000, "eval_interval": 4, "save_every": 4}
SHORT_LEASE = {"lease_heartbeat": 0.5, "lease_timeout": 2}


def _long_yaml(world: dict[str, str], path: Path) -> Path:
    data = yaml.safe_load(Path(world["yaml"]).read_text())
    data["train"].update(LONG)
    data["tracking"].update(SHORT_LEASE)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _start(config: Path, cwd: Path, experiment: str) -> tuple[subprocess.Popen, str]:
    """`mlproject train` in a subprocess; (process, run id) once its first checkpoint is uploaded."""
    env = {**os.environ, "MLFLOW_TRACKING_TOKEN": TOKEN}
    proc = subprocess.Popen([str(VENV_BIN / "mlproject"), "train", "--config", str(config)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client, deadline = MlflowClient(), time.monotonic() + 120
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    known = {run.info.run_id for run in client.search_runs([experiment_id], run_view_type=3)}
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "the training made no checkpoint"
        runs = [r for r in client.search_runs([experiment_id], run_view_type=3) if r.info.run_id not in known]
        if runs and "checkpoints/last.pt" in [f.path for f in client.list_artifacts(runs[0].info.run_id,
                                                                                  "checkpoints")]:
            return proc, runs[0].info.run_id
        time.sleep(0.2)


# Each case starts a training process (torch and MLflow imported afresh) and resumes it: about
# half a minute on 2 cores, so the fast tier leaves them out.
@pytest.mark.e2e
@pytest.mark.parametrize("sig, code, status", [
    (signal.SIGINT, 130, "KILLED"),
    (signal.SIGTERM, 130, "KILLED"),
    (signal.SIGKILL, -signal.SIGKILL, "RUNNING"),
], ids=["sigint", "sigterm", "sigkill"])
def test_a_signalled_training_ends_resumable_and_resumes(world, store_uri, capfd, tmp_path, sig, code, status):
    config = _long_yaml(world, tmp_path / "long.yaml")
    proc, run_id = _start(config, tmp_path, world["experiment"])
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in out + err and PASSWORD not in out + err and TOKEN not in out + err, err[-2000:]
    assert MlflowClient().get_run(run_id).info.status == status  # KILLED: resumable, never FAILED
    if sig == signal.SIGKILL:
        time.sleep(SHORT_LEASE["lease_timeout"] + 0.5)  # nobody beats the dead holder's lease any more
    resume = ok(f"resume-after-{sig.name}", "train", "--config", str(config), "--resume-from", run_id,
                "--max-steps", "12", changes=(run_id,))
    run_case(resume, world, user=Path(world["user"]), store_uri=store_uri, capfd=capfd)
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"
    steps = [m.step for m in MlflowClient().get_metric_history(run_id, "train_loss")]
    assert len(steps) == len(set(steps))  # no step logged twice across the two processes
