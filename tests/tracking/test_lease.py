"""The lease on a training run: one process trains a run at a time; a dead holder's lease goes
stale after its timeout and the next process takes the run over."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import pytest
from mlflow import MlflowClient

from helpers import VENV_BIN
from mlproject.cli import main
from mlproject.errors import ConfigError
from mlproject.schema import Tag

# A short lease, so a killed holder's lease times out within the test.
SHORT_LEASE = {"lease_heartbeat": 0.5, "lease_timeout": 2}
LONG_TRAIN = {"max_steps": 100_000, "eval_interval": 4, "save_every": 4}


def _start_training(config, tmp_path) -> tuple[subprocess.Popen, str]:
    """`mlproject train` in a subprocess; (process, run id) once its first checkpoint is uploaded."""
    proc = subprocess.Popen([str(VENV_BIN / "mlproject"), "train", "--config", str(config)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(_experiment(config))
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "the training process made no checkpoint"
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if runs and "checkpoints/last.pt" in [f.path for f in client.list_artifacts(runs[0].info.run_id,
                                                                                  "checkpoints")]:
            return proc, runs[0].info.run_id
        experiment = experiment or client.get_experiment_by_name(_experiment(config))
        time.sleep(0.3)


def _experiment(config) -> str:
    import yaml

    return yaml.safe_load(config.read_text())["tracking"]["experiment_name"]


def _steps(run_id: str, key: str) -> list[int]:
    return [m.step for m in MlflowClient().get_metric_history(run_id, key)]


@pytest.mark.e2e
def test_resume_from_a_run_that_another_process_trains_is_refused_naming_the_holder(tiny_yaml, tmp_path, capsys):
    config = tiny_yaml(train=LONG_TRAIN, tracking=SHORT_LEASE)
    proc, run_id = _start_training(config, tmp_path)
    try:
        assert main(["train", "--config", str(config), "--resume-from", run_id, "--max-steps", "8"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert f"run {run_id} is being trained by another process (host {socket.gethostname()} pid {proc.pid}" \
            in err[0]
        run = MlflowClient().get_run(run_id)
        assert run.info.status == "RUNNING"
        assert json.loads(run.data.tags[Tag.LEASE_HOLDER])["pid"] == proc.pid  # the holder keeps its lease
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    steps = _steps(run_id, "train_loss")
    assert len(steps) == len(set(steps))  # only the holder logged
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags[Tag.LEASE_HEARTBEAT] == "released"


@pytest.mark.e2e
def test_a_holder_killed_hard_loses_its_lease_after_the_timeout_and_the_next_process_resumes(
        tiny_yaml, tmp_path, capsys):
    config = tiny_yaml(train=LONG_TRAIN, tracking=SHORT_LEASE)
    proc, run_id = _start_training(config, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # a checkpoint upload in flight has landed or never will
    assert MlflowClient().get_run(run_id).info.status == "RUNNING"  # nobody closed it
    step = max(_steps(run_id, "train_loss"))
    time.sleep(SHORT_LEASE["lease_timeout"] + 0.5)

    assert main(["train", "--config", str(config), "--resume-from", run_id, "--max-steps", str(step + 8)]) == 0
    captured = capsys.readouterr()
    assert f"taking over the lease of run {run_id} from host {socket.gethostname()} pid {proc.pid}" in captured.err
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert json.loads(run.data.tags[Tag.LEASE_HOLDER])["pid"] != proc.pid and run.data.tags[Tag.LEASE_HEARTBEAT] == "released"
    assert max(_steps(run_id, "train_loss")) == step + 8


def test_a_finished_run_releases_its_lease(tiny_config):
    from mlproject.tracking.train_tracker import train_tracked

    outcome = train_tracked(tiny_config(tracking=SHORT_LEASE))
    tags = MlflowClient().get_run(outcome.run_id).data.tags
    assert json.loads(tags[Tag.LEASE_HOLDER])["host"] == socket.gethostname()
    assert tags[Tag.LEASE_HEARTBEAT] == "released"


@pytest.mark.parametrize("flags, message", [
    (["--lease-heartbeat", "0"], "lease_heartbeat=0.0 must be a finite number > 0"),
    (["--lease-heartbeat", "10", "--lease-timeout", "5"], "lease_timeout=5.0 must be finite and longer than"),
    (["--lease-timeout", "inf"], "lease_timeout='inf' is not a valid value; expected finite float"),
])
def test_lease_settings_are_checked_before_anything_runs(flags, message):
    from mlproject.app.config import RunConfig
    from mlproject.cli import build_parser

    with pytest.raises(ConfigError, match=message):
        RunConfig.load(None, build_parser().parse_args(["train", *flags]))
