"""`compare`: one parent run, one nested child per model x seed, statistics, artifacts, resume."""

from __future__ import annotations

import json
import math

import pytest
from mlflow import MlflowClient
from scipy import stats

from helpers import children_of, unique, write_sweep
from mlproject.cli import main
from mlproject.errors import ConfigError
from mlproject.research.compare import CompareJob, run_compare


def test_compare_nests_one_finished_child_per_model_and_seed(compare_sweep, research_env):
    outcome, _ = compare_sweep
    children = children_of(outcome.parent_run_id)
    cells = sorted((r.data.tags["mlproject.model_version"], int(r.data.tags["mlproject.seed"])) for r in children)
    assert cells == [("gpt2", 1), ("gpt2", 2), ("gpt3", 1), ("gpt3", 2)]
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlproject.sweep_key"] for r in children} == \
           {MlflowClient().get_run(outcome.parent_run_id).data.tags["mlproject.sweep_key"]}


def test_children_are_complete_training_runs(compare_sweep, research_env):
    outcome, _ = compare_sweep
    client = MlflowClient()
    for child in children_of(outcome.parent_run_id):
        assert child.data.params["model.model_version"] == child.data.tags["mlproject.model_version"]
        assert len(client.get_metric_history(child.info.run_id, "train_loss")) > 1
        assert "checkpoints/last.pt" in [f.path for f in client.list_artifacts(child.info.run_id, "checkpoints")]


def test_models_share_recipe_data_order_and_token_budget(compare_sweep, research_env):
    outcome, _ = compare_sweep
    children = children_of(outcome.parent_run_id)
    assert {c.data.params["train.recipe"] for c in children} == {"gpt2"}
    assert {c.data.params["model.block_size"] for c in children} == {"32"}
    assert {c.data.metrics["tokens_seen"] for c in children} == {children[0].data.metrics["tokens_seen"]}
    for child in children:
        assert child.data.params["train.data_seed"] == child.data.tags["mlproject.seed"]
    assert len({c.data.metrics["params_total"] for c in children}) == 1  # same sizes, so same counts


def test_parent_statistics_match_a_hand_computation(compare_sweep, research_env):
    outcome, _ = compare_sweep
    loss = {(c.data.tags["mlproject.model_version"], int(c.data.tags["mlproject.seed"])): c.data.metrics["val_loss_best"]
            for c in children_of(outcome.parent_run_id)}
    metrics = MlflowClient().get_run(outcome.parent_run_id).data.metrics
    gpt3 = [loss[("gpt3", 1)], loss[("gpt3", 2)]]
    mean = sum(gpt3) / 2
    std = math.sqrt(sum((v - mean) ** 2 for v in gpt3))  # n - 1 = 1
    half = stats.t.ppf(0.975, 1) * std / math.sqrt(2)
    assert metrics["val_loss_best/gpt3/mean"] == pytest.approx(mean)
    assert metrics["val_loss_best/gpt3/std"] == pytest.approx(std)
    assert metrics["val_loss_best/gpt3/ci95_high"] == pytest.approx(mean + half)
    assert metrics["val_loss_best/gpt3/n"] == 2
    diffs = [loss[("gpt3", s)] - loss[("gpt2", s)] for s in (1, 2)]
    assert metrics["val_loss_best/gpt3-gpt2/mean_diff"] == pytest.approx(sum(diffs) / 2)
    assert metrics["val_loss_best/gpt3-gpt2/p_value"] == pytest.approx(
        stats.ttest_rel([loss[("gpt3", s)] for s in (1, 2)], [loss[("gpt2", s)] for s in (1, 2)]).pvalue)


def test_parent_logs_results_with_one_row_per_child(compare_sweep, research_env, tmp_path):
    outcome, _ = compare_sweep
    client = MlflowClient()
    local = client.download_artifacts(outcome.parent_run_id, "results.jsonl", str(tmp_path))
    rows = [json.loads(line) for line in open(local)]
    assert sorted(r["run_id"] for r in rows) == sorted(c.info.run_id for c in children_of(outcome.parent_run_id))
    assert all(r["checkpoint_last"].startswith("runs:/") and r["params_total"] > 0 for r in rows)
    assert {"results.csv", "summary.json"} <= {f.path for f in client.list_artifacts(outcome.parent_run_id)}


def test_compare_prints_the_summary_and_ends_with_its_result_line(compare_sweep, research_env):
    outcome, out = compare_sweep
    lines = out.strip().splitlines()
    assert "val_loss_best (95% t CI" in out
    assert lines[-1].startswith("MLPROJECT_RESULT ")
    result = json.loads(lines[-1].split(" ", 1)[1])
    model_uri = result.pop("model_uri")  # the best child's LoggedModel (no --register-best here)
    assert model_uri.startswith("models:/m-")
    power = result.pop("power")  # one line per comparison: gpt3 vs gpt2, 2 seeds
    assert power == outcome.stats.power_lines("val_loss_best") and len(power) == 1
    assert "gpt3 vs gpt2: 2 seeds: the test has no power to speak of" in power[0]
    assert result == {"step": "compare", "run_id": outcome.parent_run_id, "experiment_id": outcome.experiment_id,
                      "experiment_name": outcome.experiment_name, "status": "FINISHED", "children": 4, "finished": 4}


def test_per_version_recipes_without_fair_recipe(tmp_path):
    path = write_sweep(tmp_path / "c.yaml", "x", model={"block_size": None},
                       extra={"compare": {"seeds": [1], "fair_recipe": False}})
    children = CompareJob.load(path).children()
    assert [(c.cfg.train.recipe, c.cfg.model.block_size) for c in children] == [(None, None), (None, None)]
    fair = CompareJob.load(write_sweep(tmp_path / "f.yaml", "x", model={"block_size": None},
                                       extra={"compare": {"seeds": [1]}})).children()
    assert [(c.cfg.train.recipe, c.cfg.model.block_size) for c in fair] == [("gpt2", 1024), ("gpt2", 1024)]


def test_per_model_override_applies_to_that_model_and_is_recorded(tmp_path):
    path = write_sweep(tmp_path / "c.yaml", "x", extra={"compare": {"seeds": [1]},
                                                        "per_model": {"gpt3": {"train": {"learning_rate": 1e-3}}}})
    gpt2, gpt3 = CompareJob.load(path).children()
    assert (gpt2.cfg.train.learning_rate, gpt3.cfg.train.learning_rate) == (6e-4, 1e-3)
    assert json.loads(gpt3.tags["mlproject.per_model_override"]) == {"train": {"learning_rate": 1e-3}}
    assert "mlproject.per_model_override" not in gpt2.tags


def test_per_model_override_of_an_unknown_model_is_an_error(tmp_path):
    path = write_sweep(tmp_path / "c.yaml", "x", extra={"per_model": {"gpt4": {"train": {"learning_rate": 1e-3}}}})
    with pytest.raises(ConfigError, match="per_model.gpt4"):
        CompareJob.load(path)


def test_bad_compare_file_is_one_line_naming_file_key_and_type(tmp_path, capsys):
    path = write_sweep(tmp_path / "bad.yaml", "x", train={"max_steps": "many"})
    assert main(["compare", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(path) in err and "max_steps='many'" in err and "expected int" in err


@pytest.mark.e2e
def test_resume_keeps_finished_children_resumes_killed_and_adds_missing(research_env, tmp_path, capsys):
    """An interrupted sweep: one child KILLED, one never recorded; --resume --parallel 2 completes it."""
    experiment = unique("resume")
    path = write_sweep(tmp_path / "c.yaml", experiment, extra={"compare": {"models": ["gpt2"], "seeds": [1, 2, 3]}})
    first = run_compare(CompareJob.load(path))
    client = MlflowClient()
    by_seed = {int(c.data.tags["mlproject.seed"]): c for c in children_of(first.parent_run_id)}
    client.set_terminated(by_seed[2].info.run_id, "KILLED")
    client.delete_run(by_seed[3].info.run_id)

    assert main(["compare", "--config", str(path), "--resume", "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "1 finished, 1 to resume, 1 new" in out and "2 at a time" in out
    after = {int(c.data.tags["mlproject.seed"]): c for c in children_of(first.parent_run_id)}
    assert sorted(after) == [1, 2, 3] and {c.info.status for c in after.values()} == {"FINISHED"}
    assert after[1].info.end_time == by_seed[1].info.end_time  # untouched
    assert after[2].info.run_id == by_seed[2].info.run_id  # continued in the same run
    assert after[3].info.run_id != by_seed[3].info.run_id
    assert "logs/train.log" in [f.path for f in client.list_artifacts(after[3].info.run_id, "logs")]


@pytest.mark.e2e
def test_a_retry_under_a_new_mlflow_run_adopts_the_children_and_closes_the_old_parent(
        research_env, tmp_path, monkeypatch):
    """An Airflow retry: `mlflow run` creates a new parent; the killed one must not stay RUNNING."""
    experiment = unique("retry")
    path = write_sweep(tmp_path / "c.yaml", experiment, extra={"compare": {"models": ["gpt2"], "seeds": [1, 2]}})
    first = run_compare(CompareJob.load(path))
    client = MlflowClient()
    client.update_run(first.parent_run_id, status="RUNNING")  # its process was killed mid-sweep
    old_children = {c.info.run_id for c in children_of(first.parent_run_id)}

    retry_run = client.create_run(client.get_experiment_by_name(experiment).experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", retry_run)
    second = run_compare(_resumed(path))

    assert second.parent_run_id == retry_run
    assert {c.info.run_id for c in children_of(retry_run)} == old_children
    old = client.get_run(first.parent_run_id)
    assert old.info.status == "KILLED"
    assert old.data.tags["mlproject.superseded_by"] == retry_run
    assert children_of(first.parent_run_id) == []


def _resumed(path):
    from mlproject.cli import build_parser

    return CompareJob.load(path, build_parser().parse_args(["compare", "--config", str(path), "--resume"]))
