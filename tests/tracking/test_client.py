"""Run setup: which run a step joins, params that are logged once, how a run ends, redaction."""

from __future__ import annotations

import os
import signal

import mlflow
import pytest
from mlflow import MlflowClient

from mlproject.app.signals import Terminated, sigterm_as_interrupt
from mlproject.schema import Tag
from mlproject.secrets import scrub as redact
from mlproject.protocol import is_run_id
from mlproject.tracking.client import end_run, log_params_once, start_run
from mlproject.tracking.run_context import git_info


def test_redact_hides_user_and_password_of_a_uri():
    text = redact("postgresql://alice:s3cret@db:5432/mlflow and https://token@host/x")
    assert "s3cret" not in text and "alice" not in text and "token" not in text
    assert "postgresql://***@db:5432/mlflow" in text


def test_is_run_id_accepts_32_hex_digits_only():
    assert is_run_id("0123456789abcdef0123456789abcdef")
    assert not is_run_id("runs/last.pt")
    assert not is_run_id("0123456789ABCDEF")


def test_git_info_is_empty_outside_a_checkout(tmp_path):
    assert git_info(tmp_path) == {}


def test_a_new_run_goes_to_the_named_experiment(experiment_name):
    run = start_run(experiment_name=experiment_name, tags={"dataset": "pydocs"})
    end_run("FINISHED")
    stored = MlflowClient().get_run(run.run_id)
    assert MlflowClient().get_experiment(stored.info.experiment_id).name == experiment_name
    assert stored.data.tags["dataset"] == "pydocs"
    assert stored.info.status == "FINISHED"


def test_mlflow_run_id_in_the_environment_is_joined(experiment_name, monkeypatch):
    existing = MlflowClient().create_run(MlflowClient().create_experiment(experiment_name)).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", existing)
    run = start_run(experiment_name="ignored")
    end_run("FINISHED")
    assert run.run_id == existing
    assert MlflowClient().get_experiment_by_name("ignored") is None


def test_a_parent_run_id_creates_a_nested_child_even_under_mlflow_run(experiment_name, monkeypatch):
    client = MlflowClient()
    parent = client.create_run(client.create_experiment(experiment_name)).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", parent)
    child = start_run(experiment_name="ignored", parent_run_id=parent)
    end_run("FINISHED")
    assert child.run_id != parent
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent


def test_an_unknown_run_id_is_a_one_line_error(experiment_name):
    from mlproject.errors import MlprojectError

    with pytest.raises(MlprojectError, match="does not exist"):
        start_run(experiment_name=experiment_name, run_id="0" * 32)


def test_params_already_logged_are_kept_and_changes_reported(experiment_name):
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment(experiment_name)).info.run_id
    log_params_once(run_id, {"train.max_steps": 10, "model.n_layer": 2})
    changed = log_params_once(run_id, {"train.max_steps": 20, "train.seed": 1})
    params = client.get_run(run_id).data.params
    assert params == {"train.max_steps": "10", "model.n_layer": "2", "train.seed": "1"}
    assert changed == {"train.max_steps": ("10", "20")}


def test_params_with_credentials_are_redacted(experiment_name):
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment(experiment_name)).info.run_id
    log_params_once(run_id, {"data.local_path": "https://bob:pw@example.org/corpus.jsonl"})
    assert client.get_run(run_id).data.params["data.local_path"] == "https://***@example.org/corpus.jsonl"


def test_end_run_with_an_error_tags_it_and_keeps_queued_metrics(experiment_name):
    run = start_run(experiment_name=experiment_name)
    for step in range(5):
        mlflow.log_metrics({"train_loss": 5.0 - step}, step=step, synchronous=False)
    end_run("FAILED", error=RuntimeError("boom\nsecond line"))
    stored = MlflowClient().get_run(run.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.tags[Tag.ERROR] == "RuntimeError: boom"
    assert len(MlflowClient().get_metric_history(run.run_id, "train_loss")) == 5


def test_sigterm_inside_the_block_raises_terminated_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


# MLflow's UI reads this experiment tag (its kind selector writes the same key) to open an
# experiment on its training runs rather than its GenAI view.
TRAINING_KIND = ("mlflow.experimentKind", "custom_model_development")


def _kind(experiment_id: str) -> str | None:
    return MlflowClient().get_experiment(experiment_id).tags.get(TRAINING_KIND[0])


def test_an_experiment_the_suite_creates_is_tagged_as_model_training(experiment_name):
    from mlproject.tracking.client import ensure_experiment

    assert _kind(ensure_experiment(experiment_name)) == TRAINING_KIND[1]


def test_an_existing_experiment_without_a_kind_gets_it_when_the_suite_uses_it(experiment_name):
    from mlproject.tracking.client import ensure_experiment

    created = MlflowClient().create_experiment(experiment_name)
    assert _kind(created) is None
    run = start_run(experiment_name=experiment_name)
    end_run("FINISHED")
    assert run.experiment_id == created and _kind(created) == TRAINING_KIND[1]
    assert ensure_experiment(experiment_name) == created


def test_an_experiment_kind_the_user_chose_is_kept(experiment_name):
    from mlproject.tracking.client import ensure_experiment

    created = MlflowClient().create_experiment(experiment_name, tags={TRAINING_KIND[0]: "genai_development"})
    ensure_experiment(experiment_name)
    assert _kind(created) == "genai_development"


def test_the_experiment_of_a_run_mlflow_run_handed_over_is_tagged_too(experiment_name, monkeypatch):
    created = MlflowClient().create_experiment(experiment_name)
    existing = MlflowClient().create_run(created).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", existing)
    start_run(experiment_name="ignored")
    end_run("FINISHED")
    assert _kind(created) == TRAINING_KIND[1]
