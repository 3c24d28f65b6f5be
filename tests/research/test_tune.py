"""`mlproject tune`: an Optuna study whose trials are nested MLflow runs, pruned on val loss,
shared by several workers through one storage, continued by a re-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow import MlflowClient

from helpers import children_of, unique, write_sweep
from mlproject.cli import main
from mlproject.protocol import parse_step_result

LOW, HIGH = 1.0e-5, 3.0e-1
SPACE = {"train.learning_rate": {"type": "float", "low": LOW, "high": HIGH, "log": True}}
# 12 steps, an evaluation every 3: four val losses per trial for the median pruner.
TRAIN = {"max_steps": 12, "eval_interval": 3, "log_interval": 3, "save_every": 0}


def tune_yaml(tmp_path, n_trials: int, **tune) -> tuple:
    experiment = unique("tune")
    path = write_sweep(tmp_path / "tune.yaml", experiment, train=TRAIN,
                       extra={"tune": {"n_trials": n_trials, **tune}, "search_space": SPACE})
    return path, experiment


def trials(parent_run_id: str) -> list:
    return sorted(children_of(parent_run_id), key=lambda r: int(r.data.tags["mlproject.trial_number"]))


@pytest.mark.e2e
def test_a_six_trial_search_finds_a_best_rate_in_range_prunes_and_nests_its_trials(research_env, tmp_path, capsys):
    path, _ = tune_yaml(tmp_path, 6)
    assert main(["tune", "--config", str(path)]) == 0
    result = parse_step_result(capsys.readouterr().out)
    assert result["step"] == "tune" and result["status"] == "FINISHED"
    assert LOW <= result["best_params"]["train.learning_rate"] <= HIGH
    assert result["trials"]["PRUNED"] >= 1 and result["trials"]["COMPLETE"] >= 1
    assert sum(result["trials"].values()) == 6

    runs = trials(result["run_id"])
    assert [int(r.data.tags["mlproject.trial_number"]) for r in runs] == list(range(6))
    for run in runs:
        state = run.data.tags["mlproject.trial_state"]
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[state]
        assert LOW <= float(run.data.params["train.learning_rate"]) <= HIGH
        assert len(MlflowClient().get_metric_history(run.info.run_id, "val_loss")) >= 1
    pruned = [r for r in runs if r.data.tags["mlproject.trial_state"] == "PRUNED"]
    assert all(len(MlflowClient().get_metric_history(r.info.run_id, "val_loss")) < 4 for r in pruned)

    client = MlflowClient()
    parent = client.get_run(result["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(result["best_value"])
    assert json.loads(parent.data.tags["mlproject.best_params"]) == result["best_params"]
    best = client.get_run(parent.data.tags["mlproject.best_run_id"])
    assert best.data.metrics["val_loss_best"] == pytest.approx(result["best_value"])
    plots = {f.path for f in client.list_artifacts(result["run_id"], "plots")}
    assert plots == {"plots/optimization_history.png", "plots/param_importances.png"}


@pytest.mark.e2e
def test_two_worker_processes_share_one_study_with_no_duplicated_trial_numbers(research_env, tmp_path, capsys):
    path, _ = tune_yaml(tmp_path, 4, parallel=2)
    assert main(["tune", "--config", str(path)]) == 0
    result = parse_step_result(capsys.readouterr().out)
    runs = trials(result["run_id"])
    numbers = [int(r.data.tags["mlproject.trial_number"]) for r in runs]
    assert numbers == [0, 1, 2, 3]
    assert len({r.data.tags["mlproject.tune_worker"] for r in runs}) == 2
    storage = f"{research_env.removesuffix('.db')}-optuna.db"
    study = optuna.load_study(study_name=result["study"], storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert {t.user_attrs["run_id"] for t in study.trials} == {r.info.run_id for r in runs}


@pytest.mark.e2e
def test_an_interrupted_search_continues_in_the_same_study_and_parent(research_env, tmp_path, capsys):
    path, experiment = tune_yaml(tmp_path, 50)
    proc = subprocess.Popen([sys.executable, "-m", "mlproject", "tune", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    client = MlflowClient()
    parents: list = []
    try:
        deadline = time.monotonic() + 300
        while not (parents and len(children_of(parents[0].info.run_id)) >= 2):  # one trial ended, one began
            assert proc.poll() is None and time.monotonic() < deadline, "no trial ended"
            time.sleep(0.5)
            found = client.get_experiment_by_name(experiment)
            parents = client.search_runs([found.experiment_id], "tags.`mlproject.role` = 'tune_parent'") if found else []
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    assert code == 130
    parent_id = parents[0].info.run_id
    assert client.get_run(parent_id).info.status == "KILLED"
    before = len(children_of(parent_id))

    assert main(["tune", "--config", str(path), "--n-trials", "3"]) == 0
    result = parse_step_result(capsys.readouterr().out)
    assert result["run_id"] == parent_id  # the same parent, the same study
    runs = trials(parent_id)
    numbers = [int(r.data.tags["mlproject.trial_number"]) for r in runs]
    assert numbers == list(range(len(runs))) and len(runs) > before
    states = [r.data.tags.get("mlproject.trial_state") for r in runs]
    assert states.count("COMPLETE") + states.count("PRUNED") == 3 and "FAIL" in states  # the interrupted one
    assert client.get_run(parent_id).info.status == "FINISHED"


@pytest.mark.parametrize("space, message", [
    ({"train.learnin_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}, "unknown field 'learnin_rate'"),
    ({"train.learning_rate": {"type": "float", "low": 0, "high": 1e-2, "log": True}}, "log scale needs low > 0"),
    ({"train.learning_rate": {"type": "uniform", "low": 1e-4, "high": 1e-2}}, "type='uniform'"),
    ({"train.batch_size": {"type": "categorical", "choices": [4, -1]}}, "batch_size"),
])
def test_a_bad_search_space_is_a_one_line_error_before_any_run(research_env, tmp_path, capsys, space, message):
    experiment = unique("badspace")
    path = write_sweep(tmp_path / "bad.yaml", experiment, extra={"search_space": space})
    assert main(["tune", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert MlflowClient().get_experiment_by_name(experiment) is None


def test_a_tracking_server_needs_an_explicit_study_storage(monkeypatch):
    import mlflow

    from mlproject.errors import MlprojectError
    from mlproject.tracking.tune_runs import study_storage

    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: "http://127.0.0.1:5000")
    with pytest.raises(MlprojectError, match="pass --storage"):
        study_storage(None)
    assert study_storage("postgresql://db/optuna") == "postgresql://db/optuna"
