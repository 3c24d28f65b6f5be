"""A training step as one MLflow run: params, tags, metric histories, artifacts, LoggedModel,
resume, interruption, failure, and training with tracking off."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from mlproject.config import replace
from mlproject.app.config import RunConfig
from mlproject.protocol import RESULT_PREFIX
from mlproject.schema import Tag
from mlproject.tracking.train_tracker import train_tracked


def test_a_finished_run_reports_finished_with_summary_and_checkpoint_uris(trained):
    assert trained.status == "FINISHED"
    assert trained.checkpoint_uris == {"last": f"runs:/{trained.run_id}/checkpoints/last.pt",
                                       "best": f"runs:/{trained.run_id}/checkpoints/best.pt"}
    assert {"val_loss_best", "val_ppl_best", "train_loss_last", "tokens_seen"} <= set(trained.summary)


def test_the_resolved_config_is_logged_as_prefixed_params(trained):
    params = MlflowClient().get_run(trained.run_id).data.params
    assert params["model.n_layer"] == "2"
    assert params["model.attention_pattern"] == "dense"  # resolved, not the None the user left
    assert params["train.learning_rate"] == "0.0006"
    assert params["train.beta2"] != "None"  # filled from the gpt2 recipe
    assert params["data.dataset"] == "pydocs"
    assert params["runtime.world_size"] == "1"
    assert int(params["dataset.train_tokens"]) > 0


def test_tags_record_model_dataset_code_and_environment(trained):
    tags = MlflowClient().get_run(trained.run_id).data.tags
    assert tags["model_version"] == "gpt2" and tags["dataset"] == "pydocs"
    assert tags["torch_version"] == torch.__version__
    assert tags["device"] == "cpu"
    assert {"hostname", "cuda_version", "git_commit", "git_dirty"} <= set(tags)
    assert not any("MLFLOW_TRACKING_URI" in value or "sqlite:" in value for value in tags.values())


def test_metric_histories_carry_the_training_steps(trained):
    client = MlflowClient()

    def steps(key: str) -> list[int]:
        return sorted(m.step for m in client.get_metric_history(trained.run_id, key))

    for key in ("train_loss", "lr", "grad_norm", "tokens_per_sec", "mfu", "ms_per_step", "data_time_share",
                "tokens_seen"):
        assert steps(key) == [2, 4, 6, 8, 10, 12], key
    assert set(steps("peak_mem_mb")) == {2, 4, 6, 8, 10, 12}  # the summary adds the final peak if it grew
    for key in ("val_loss", "val_ppl", "val_token_acc"):
        assert steps(key) == [4, 8, 12], key


def test_summary_metrics_are_logged_at_the_end(trained):
    metrics = MlflowClient().get_run(trained.run_id).data.metrics
    for key in ("val_loss_best", "val_ppl_best", "train_loss_last", "tokens_seen", "elapsed_sec", "params_total",
                "tokens_per_sec_mean"):
        assert key in metrics, key
    assert metrics["val_loss_best"] == pytest.approx(trained.summary["val_loss_best"])
    assert metrics["logging_overhead_share"] < 0.5


def test_checkpoints_tokenizer_and_resolved_config_are_artifacts(trained, tmp_path):
    client = MlflowClient()
    files = {f.path for folder in ("checkpoints", "tokenizer", "config")
             for f in client.list_artifacts(trained.run_id, folder)}
    assert files == {"checkpoints/last.pt", "checkpoints/best.pt", "tokenizer/tokenizer.json", "config/resolved.yaml"}
    resolved = mlflow.artifacts.download_artifacts(run_id=trained.run_id, artifact_path="config/resolved.yaml",
                                                   dst_path=str(tmp_path))
    again = RunConfig.load(resolved)
    assert again.model.n_layer == 2 and again.train.max_steps == 12 and again.tracking.experiment_name == "test-trained"


def test_the_dataset_is_logged_as_an_input_with_token_counts(trained):
    inputs = MlflowClient().get_run(trained.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    assert inputs[0].dataset.name == "pydocs"
    tags = {t.key: t.value for t in inputs[0].tags}
    assert int(tags["train_tokens"]) > 0 and int(tags["val_tokens"]) > 0
    assert tags["mlflow.data.context"] == "training"


def test_the_logged_model_loads_and_generates_with_any_batch_size(trained, monkeypatch):
    model_uri = MlflowClient().get_registered_model("tiny-gpt").latest_versions[0].source
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    model = mlflow.pyfunc.load_model(model_uri)
    for batch in (1, 3):
        out = model.predict(["The"] * batch, params={"max_new_tokens": 5, "temperature": 0.0})
        assert len(out) == batch and all(text.startswith("The") for text in out)


def test_the_best_model_is_registered_under_register_as(trained):
    versions = MlflowClient().search_model_versions("name='tiny-gpt'")
    assert [v.run_id for v in versions] == [trained.run_id]


def test_a_run_resumed_by_id_continues_the_same_run(tiny_config, monkeypatch):
    """SIGTERM at step 6 (the trainer stops with a checkpoint), then --resume-from RUN_ID."""
    from mlproject.tracking import train_tracker
    from mlproject.tracking.logger import MlflowLogger

    class InterruptAtStep6(MlflowLogger):
        def on_log(self, step, metrics):
            super().on_log(step, metrics)
            if step == 6:
                os.kill(os.getpid(), signal.SIGTERM)

    cfg = tiny_config()
    monkeypatch.setattr(train_tracker, "MlflowLogger", InterruptAtStep6)
    first = train_tracked(cfg)
    monkeypatch.setattr(train_tracker, "MlflowLogger", MlflowLogger)
    assert first.status == "KILLED"

    resumed_cfg = replace(cfg, tracking=replace(cfg.tracking, resume_from=first.run_id))
    second = train_tracked(resumed_cfg)
    client = MlflowClient()
    assert second.run_id == first.run_id and second.status == "FINISHED"
    assert len(client.search_runs([first.experiment_id])) == 1
    steps = [m.step for m in client.get_metric_history(first.run_id, "train_loss")]
    assert sorted(steps) == [2, 4, 6, 8, 10, 12]
    tags = client.get_run(first.run_id).data.tags
    assert json.loads(tags[Tag.CHANGED_PARAMS]) == {"tracking.resume_from": first.run_id}


def test_an_exception_ends_the_run_failed_with_the_error_and_earlier_metrics(tiny_config, experiment_name,
                                                                            monkeypatch):
    from mlproject.training import trainer

    real_train = trainer.train

    class Boom(trainer.TrainerCallback):
        def on_log(self, step, metrics):
            if step == 6:
                raise RuntimeError("disk on fire")

    def failing_train(*args, callbacks=(), **kwargs):
        return real_train(*args, callbacks=[*callbacks, Boom()], **kwargs)

    monkeypatch.setattr(trainer, "train", failing_train)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train_tracked(tiny_config())
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name(experiment_name).experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags[Tag.ERROR] == "RuntimeError: disk on fire"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss")) == [2, 4, 6]


def test_tracking_off_trains_without_any_mlflow_run(tiny_config, experiment_name, capsys):
    outcome = train_tracked(tiny_config(tracking={"log_to_mlflow": False, "run_name": "offline"}))
    assert outcome.run_id == "" and outcome.status == "FINISHED"
    assert Path(outcome.checkpoint_uris["last"]).is_file()
    assert MlflowClient().get_experiment_by_name(experiment_name) is None
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f'{RESULT_PREFIX} {{"step": "train", "run_id": null, "status": "FINISHED"}}'


def test_logging_the_dataset_retries_when_a_parallel_sibling_wins_the_insert(monkeypatch):
    """Parallel sweep children race in the store's dataset insert; the loser must not fail."""
    from mlflow.exceptions import MlflowException

    from mlproject.tracking import train_tracker

    calls = []
    real = mlflow.log_input

    def racing_log_input(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest")
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", racing_log_input)
    info = {"dataset": "pydocs", "source": "python-stdlib", "digest": "abc123", "train_tokens": 10}
    with mlflow.start_run() as run:
        train_tracker.log_dataset(info)
    assert len(calls) == 2
    inputs = MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == ["pydocs"]


def test_a_train_run_has_mlflow_source_tags_and_system_metrics(tiny_config):
    """MLflow's own run context: who and what started the run, and its CPU/memory samples."""
    cfg = tiny_config(tracking={"system_metrics_interval": 0.2}, train={"max_steps": 40})
    outcome = train_tracked(cfg)
    run = MlflowClient().get_run(outcome.run_id)
    tags = run.data.tags
    assert tags["mlflow.user"] and tags["mlflow.source.name"] and tags["mlflow.source.type"] == "LOCAL"
    assert len(tags["mlflow.source.git.commit"]) == 40
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)


def test_system_metrics_can_be_switched_off(tiny_config):
    outcome = train_tracked(tiny_config(tracking={"system_metrics": False, "system_metrics_interval": 0.2}))
    assert not [k for k in MlflowClient().get_run(outcome.run_id).data.metrics if k.startswith("system/")]
