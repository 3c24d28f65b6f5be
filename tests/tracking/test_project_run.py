"""The run `mlflow run` makes before an entry point's command starts, in this process: which run
the command adopts, and when that run is labelled and deleted (the e2e tests run real `mlflow run`)."""

from __future__ import annotations

import os

from mlflow import MlflowClient
import pytest

from helpers import deleted_soon
from mlproject.cli import main
from mlproject.protocol import result_line
from mlproject.tracking.project_run import adopt, finish


def _handed(experiment_id: str, monkeypatch: pytest.MonkeyPatch, entry_point: str = "train") -> str:
    """A run as `mlflow run -e <entry_point>` makes it, handed to this process."""
    run = MlflowClient().create_run(experiment_id, tags={"mlflow.project.entryPoint": entry_point,
                                                         "mlflow.project.backend": "local"})
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    return run.info.run_id


def test_a_run_in_default_is_released_and_deleted_with_a_link_to_the_run_the_step_reported(
        experiment_name, monkeypatch, capsys):
    outer = _handed("0", monkeypatch)
    adopted = adopt("train")
    assert adopted.released  # the step runs as the CLI does: no handed run, no handed experiment
    assert "MLFLOW_RUN_ID" not in os.environ and "MLFLOW_EXPERIMENT_ID" not in os.environ
    step_run = MlflowClient().create_run(MlflowClient().create_experiment(experiment_name)).info.run_id
    result_line({"step": "train", "run_id": step_run})
    finish(adopted, 0)
    assert f"logged to run {step_run} in experiment {experiment_name!r}" in capsys.readouterr().err
    assert MlflowClient().get_run(outer).info.lifecycle_stage == "active"  # `mlflow run` has not closed it yet
    MlflowClient().set_terminated(outer, "FINISHED")  # as `mlflow run` does once the command exits
    assert deleted_soon(outer).data.tags["mlproject.step_run"] == step_run


def test_a_config_error_deletes_the_empty_run_rather_than_leaving_it_failed(experiment_name, monkeypatch, capsys):
    outer = _handed(MlflowClient().create_experiment(experiment_name), monkeypatch, "evaluate")
    assert main(["evaluate"]) == 2  # no --run-id, --model-uri or --checkpoint
    assert "is deleted once it ends: the step failed before logging to it" in capsys.readouterr().err
    MlflowClient().set_terminated(outer, "FAILED")
    assert deleted_soon(outer).info.status == "FAILED"


def test_a_chosen_experiment_a_generate_run_and_a_sweep_child_keep_their_runs(experiment_name, monkeypatch):
    client = MlflowClient()
    chosen = _handed(client.create_experiment(experiment_name), monkeypatch)
    assert not adopt("train").released and os.environ["MLFLOW_RUN_ID"] == chosen
    generate = _handed("0", monkeypatch, "generate")
    assert not adopt("generate").released  # the run holds its table of generations
    child = client.create_run("0", tags={"mlproject.role": "sweep_child"}).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", child)
    assert adopt("train") is None  # a run a sweep made: not `mlflow run`'s to release
    for run_id in (chosen, generate, child):
        client.set_terminated(run_id, "FINISHED")
