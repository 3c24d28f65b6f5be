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
        assert state in ("COMPLETE", "PRUNED") and run.info.status == "FINISHED"  # see TrialOutcome
        assert run.data.metrics["val_loss_best"] == pytest.approx(
            min(m.value for m in MlflowClient().get_metric_history(run.info.run_id, "val_loss")))
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
    from mlproject.tracking.store import study_storage

    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: "http://127.0.0.1:5000")
    with pytest.raises(MlprojectError, match="pass --storage"):
        study_storage(None)
    assert study_storage("postgresql://db/optuna") == "postgresql://db/optuna"


# --- tune tells the truth: effective values, one state vocabulary, pruned trials that keep their metrics

WARMUP_CAP = TRAIN["max_steps"] // 2  # the trainer caps warmup at half the run


@pytest.mark.e2e
def test_a_capped_dimension_records_what_ran_in_mlflow_optuna_and_best_params(research_env, tmp_path, capsys):
    experiment = unique("tune-capped")
    space = {"train.warmup": {"type": "int", "low": 2, "high": 30}}  # most of it above the cap of 6
    path = write_sweep(tmp_path / "tune.yaml", experiment, train=TRAIN, extra={
        "tune": {"n_trials": 2, "pruner": "none", "sampler": "random", "study_name": unique("capped")},
        "search_space": space})
    assert main(["tune", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    result = parse_step_result(out)
    storage = f"{research_env.removesuffix('.db')}-optuna.db"
    study = optuna.load_study(study_name=result["study"], storage=storage)
    sampled = {t.number: t.params["train.warmup"] for t in study.trials}
    assert any(v > WARMUP_CAP for v in sampled.values()), sampled  # the seeded sampler went above the cap
    by_run = {r.info.run_id: r for r in trials(result["run_id"])}
    for trial in study.trials:
        ran = min(sampled[trial.number], WARMUP_CAP)
        assert trial.user_attrs["effective_train.warmup"] == ran
        run = by_run[trial.user_attrs["run_id"]]
        assert float(run.data.params["train.warmup"]) == ran
        assert run.data.params["runtime.warmup_steps"] == str(ran)
    best = study.best_trial
    assert result["best_params"] == {"train.warmup": min(sampled[best.number], WARMUP_CAP)}
    parent = MlflowClient().get_run(result["run_id"])
    assert json.loads(parent.data.tags["mlproject.best_params"]) == result["best_params"]
    assert "sampled values changed" in out

    from mlproject.research.tune_report import effective_study

    view = effective_study(study)
    assert {t.params["train.warmup"] for t in view.trials} <= set(range(2, WARMUP_CAP + 1))


def test_a_dimension_that_collapses_to_one_value_is_an_error_before_any_run(research_env, tmp_path, capsys):
    experiment = unique("tune-collapse")
    path = write_sweep(tmp_path / "tune.yaml", experiment, train=TRAIN, extra={
        "tune": {"n_trials": 2}, "search_space": {"train.warmup": {"type": "int", "low": 8, "high": 30}}})
    assert main(["tune", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "search_space.train.warmup" in err and "[8, 30]" in err and f"runs as {WARMUP_CAP}" in err
    assert f"half of the run's {TRAIN['max_steps']} steps" in err
    assert MlflowClient().get_experiment_by_name(experiment) is None


@pytest.mark.e2e
def test_a_pruned_trial_is_pruned_everywhere_and_keeps_its_metrics(research_env, tmp_path, capsys):
    """Two good rates, then one that barely trains: the median pruner stops the third at its
    first evaluation."""
    experiment, study_name = unique("tune-pruned"), unique("pruned")
    path = write_sweep(tmp_path / "tune.yaml", experiment, train=TRAIN, extra={
        "tune": {"n_trials": 3, "study_name": study_name}, "search_space": SPACE})
    storage = f"{research_env.removesuffix('.db')}-optuna.db"
    study = optuna.create_study(study_name=study_name, storage=storage, direction="minimize")
    for rate in (1.0e-2, 1.0e-2, LOW):
        study.enqueue_trial({"train.learning_rate": rate})
    assert main(["tune", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    result = parse_step_result(out)
    assert result["trials"] == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 0}
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]

    runs = trials(result["run_id"])
    assert [r.data.tags["mlproject.trial_state"] for r in runs] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert [r.info.status for r in runs] == ["FINISHED"] * 3  # TrialOutcome's documented mapping
    pruned = runs[2]
    assert pruned.data.tags["mlproject.train_status"] == "stopped"
    history = MlflowClient().get_metric_history(pruned.info.run_id, "val_loss")
    assert [m.step for m in history] == [TRAIN["eval_interval"]]
    assert pruned.data.metrics["val_loss_best"] == pytest.approx(history[0].value)

    assert f"--- trial-2: PRUNED at step 3 of {TRAIN['max_steps']} (run {pruned.info.run_id})" in out
    trial_results = [json.loads(line.split(" ", 1)[1]) for line in out.splitlines()
                     if line.startswith("MLPROJECT_RESULT") and '"step": "trial"' in line]
    assert [r["status"] for r in trial_results] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert "FAIL" not in "".join(line for line in out.splitlines() if "trial-2" in line)


class _AlwaysPrune:
    """A trial whose study would prune at every step."""

    def __init__(self) -> None:
        self.reported: list[int] = []

    def report(self, value: float, step: int) -> None:
        self.reported.append(step)

    def should_prune(self) -> bool:
        return True


def test_the_pruner_never_prunes_at_the_last_step():
    from mlproject.research.tune import _pruner

    trial = _AlwaysPrune()
    pruner = _pruner(trial)
    pruner.on_train_start({"total_steps": 12})
    pruner.on_eval(12, {"val_loss": 5.0})
    assert trial.reported == [12] and not pruner.should_stop()
    pruner.on_eval(6, {"val_loss": 5.0})
    assert pruner.should_stop() and pruner.pruned_at == 6


def test_a_trial_stopped_before_its_training_began_leaves_no_run_scheduled(research_env):
    # SIGINT can land between the trial's run being created and its training starting
    from mlproject.research.tune import _close_unstarted
    from mlproject.schema import RunRole, Tag
    from mlproject.tracking import client

    parent = client.open_parent(experiment=unique("tune-unstarted"), run_name="search", role=RunRole.TUNE_PARENT,
                                match={Tag.STUDY: "s"}, resume=True, tags={})
    interrupted, failed, trained = (client.create_child(parent, run_name=f"trial-{i}", tags={}) for i in range(3))
    client.set_status(trained, "FINISHED")
    _close_unstarted(interrupted, KeyboardInterrupt())
    _close_unstarted(failed, RuntimeError("boom"))
    _close_unstarted(trained, KeyboardInterrupt())
    status = {r: MlflowClient().get_run(r).info.status for r in (interrupted, failed, trained)}
    assert status == {interrupted: "KILLED", failed: "FAILED", trained: "FINISHED"}
