"""MlflowLogger on its own: params once, metrics with steps (asynchronous), checkpoint uploads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from mlflow import MlflowClient

from mlproject.tracking.logger import MlflowLogger
from mlproject.tracking.client import end_run, start_run
from mlproject.training.trainer import TrainResult


def _logger(experiment_name: str) -> tuple[MlflowLogger, str]:
    run = start_run(experiment_name=experiment_name)
    logger = MlflowLogger(run.run_id, {"model.n_layer": 2, "train.max_steps": 10})
    return logger, run.run_id


def test_start_logs_the_config_and_runtime_params_and_the_device_tag(experiment_name):
    logger, run_id = _logger(experiment_name)
    logger.on_train_start({"device": "cpu", "world_size": 1, "start_step": 0, "model_config": object()})
    end_run("FINISHED")
    data = MlflowClient().get_run(run_id).data
    assert data.params["model.n_layer"] == "2"
    assert data.params["runtime.world_size"] == "1"
    assert "runtime.model_config" not in data.params
    assert data.tags["device"] == "cpu"


def test_metrics_are_logged_with_their_step_and_non_finite_values_dropped(experiment_name):
    logger, run_id = _logger(experiment_name)
    for step in (2, 4, 6):
        logger.on_log(step, {"train_loss": 10.0 / step, "lr": 1e-3, "grad_norm": float("nan")})
    logger.on_eval(6, {"val_loss": 1.5, "val_ppl": 4.48})
    logger.finish()
    end_run("FINISHED")
    client = MlflowClient()
    history = client.get_metric_history(run_id, "train_loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [2, 4, 6]
    assert client.get_metric_history(run_id, "val_loss")[0].step == 6
    assert client.get_metric_history(run_id, "grad_norm") == []


def test_steps_logged_within_the_flush_interval_go_out_as_one_batch(experiment_name, monkeypatch):
    logger, run_id = _logger(experiment_name)
    calls = []
    send = logger.client.log_batch
    monkeypatch.setattr(logger.client, "log_batch",
                        lambda *a, **k: calls.append((threading.current_thread(), k)) or send(*a, **k))
    for step in range(1, 6):
        logger.on_log(step, {"train_loss": 1.0 / step, "lr": 1e-3})
    logger.finish()
    end_run("FINISHED")
    assert len(calls) == 1 and len(calls[0][1]["metrics"]) == 10
    assert calls[0][0] is not threading.main_thread()  # written by the logger's writer thread
    assert len(MlflowClient().get_metric_history(run_id, "train_loss")) == 5


def test_logging_a_step_does_not_wait_for_the_store(experiment_name, monkeypatch):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from mlproject.tracking import logger as logger_module

    slow_write = SqlAlchemyStore.log_batch

    def log_batch(self, *args, **kwargs):
        time.sleep(0.2)  # a slow tracking server
        return slow_write(self, *args, **kwargs)

    logger, run_id = _logger(experiment_name)
    monkeypatch.setattr(SqlAlchemyStore, "log_batch", log_batch)
    monkeypatch.setattr(logger_module, "FLUSH_EVERY_SEC", 0.0)  # every step goes to the store
    t = time.perf_counter()
    for step in range(1, 6):
        logger.on_log(step, {"train_loss": 1.0 / step, "lr": 1e-3})
    elapsed = time.perf_counter() - t
    logger.finish()
    end_run("FINISHED")
    assert elapsed < 0.2, f"{elapsed * 1e3:.0f} ms for 5 steps: logging waited for the store"
    assert len(MlflowClient().get_metric_history(run_id, "train_loss")) == 5


def test_checkpoints_are_uploaded_under_checkpoints_with_their_kind(experiment_name, tmp_path):
    logger, run_id = _logger(experiment_name)
    last, best = tmp_path / "last.pt", tmp_path / "weights-best.bin"
    last.write_bytes(b"last")
    best.write_bytes(b"best")
    logger.on_checkpoint(last, "last", 4)
    logger.on_checkpoint(best, "best", 4)
    uris = logger.finish()
    end_run("FINISHED")
    names = sorted(f.path for f in MlflowClient().list_artifacts(run_id, "checkpoints"))
    assert names == ["checkpoints/best.pt", "checkpoints/last.pt"]
    assert uris == {"last": f"runs:/{run_id}/checkpoints/last.pt", "best": f"runs:/{run_id}/checkpoints/best.pt"}


def test_train_end_logs_the_summary_at_the_final_step_with_the_overhead_share(experiment_name):
    logger, run_id = _logger(experiment_name)
    logger.on_train_start({"start_step": 0})
    logger.on_train_end(TrainResult("finished", 12, {"val_loss_best": 2.5, "params_total": 1000.0},
                                    Path("last.pt"), None))
    logger.finish()
    end_run("FINISHED")
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert metrics["val_loss_best"] == 2.5
    assert 0.0 <= metrics["logging_overhead_share"] < 1.0
    assert MlflowClient().get_metric_history(run_id, "val_loss_best")[0].step == 12


def test_finish_returns_once_every_batch_is_written_and_reports_a_failed_one(experiment_name, monkeypatch, capsys):
    logger, run_id = _logger(experiment_name)
    send = logger.client.log_batch

    def flaky(*args, **kwargs):  # the store refuses the first batch, then works again
        monkeypatch.setattr(logger.client, "log_batch", send)
        raise OSError("store unreachable")

    monkeypatch.setattr(logger.client, "log_batch", flaky)
    logger.on_log(1, {"train_loss": 1.0})
    logger._flush()
    logger.on_log(2, {"train_loss": 0.5})
    logger.finish()
    # written before the run ends: nothing is left for MLflow's queue to flush
    assert [m.step for m in MlflowClient().get_metric_history(run_id, "train_loss")] == [2]
    assert "tracking: a metric batch was not logged: store unreachable" in capsys.readouterr().err
    end_run("FINISHED")
