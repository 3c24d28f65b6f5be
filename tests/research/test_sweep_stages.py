"""The three stages of a sweep as commands: `compare --plan-only`, `train --child-run-id CHILD`,
`compare --aggregate PARENT` (what the Airflow DAG's plan, mapped child and aggregate tasks run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from helpers import unique, write_sweep
from mlproject.cli import main
from mlproject.protocol import parse_step_result
from mlproject.model.checkpoint import load_checkpoint


def _plan(tmp_path, capsys, tracking=None, **train) -> dict:
    path = write_sweep(tmp_path / "c.yaml", unique("stages"), train=train, tracking=tracking or {},
                       extra={"compare": {"models": ["gpt2", "gpt3"], "seeds": [1]}})
    assert main(["compare", "--config", str(path), "--plan-only"]) == 0
    result = parse_step_result(capsys.readouterr().out)
    assert result is not None and result["stage"] == "plan"
    return result


def test_plan_only_creates_the_parent_and_scheduled_children_and_prints_their_ids(research_env, tmp_path, capsys):
    plan = _plan(tmp_path, capsys)
    client = MlflowClient()
    children = [client.get_run(run_id) for run_id in plan["children"]]
    assert [c.info.status for c in children] == ["SCHEDULED", "SCHEDULED"]
    assert [c.data.tags["mlproject.model_version"] for c in children] == ["gpt2", "gpt3"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {plan["run_id"]}
    assert client.get_run(plan["run_id"]).info.status == "RUNNING"  # until the aggregate stage
    assert plan["todo"] == plan["children"]
    assert "plan/config.yaml" in [f.path for f in client.list_artifacts(children[0].info.run_id, "plan")]


@pytest.mark.e2e
def test_children_train_from_their_run_id_and_aggregate_gives_the_parent_statistics(
        research_env, tmp_path, capsys):
    plan = _plan(tmp_path, capsys)
    for run_id in plan["children"]:
        assert main(["train", "--child-run-id", run_id]) == 0
    capsys.readouterr()
    assert main(["compare", "--aggregate", plan["run_id"]]) == 0
    result = parse_step_result(capsys.readouterr().out)
    assert result.pop("model_uri").startswith("models:/")  # the best child's logged model
    assert result.pop("power") == ["gpt3 vs gpt2: 1 seed: the test has no power to speak of; run at least 3 seeds "
                                   "before reading its p-value"]
    assert result == {"step": "compare", "run_id": plan["run_id"], "experiment_id": plan["experiment_id"],
                      "experiment_name": plan["experiment_name"], "status": "FINISHED", "children": 2,
                      "finished": 2}
    client = MlflowClient()
    parent = client.get_run(plan["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["children_finished"] == 2
    assert {"val_loss_best/gpt2/mean", "val_loss_best/gpt3/mean"} <= set(parent.data.metrics)
    files = {f.path for f in client.list_artifacts(plan["run_id"])}
    assert {"results.jsonl", "results.csv", "summary.json", "sweep.yaml"} <= files
    assert any(f.path.endswith(".png") for f in client.list_artifacts(plan["run_id"], "plots"))
    # A retried child task of a finished child trains nothing.
    assert main(["train", "--child-run-id", plan["children"][0]]) == 0
    assert "already FINISHED" in capsys.readouterr().out


def test_aggregate_before_the_children_finish_fails_the_parent_naming_them(research_env, tmp_path, capsys):
    plan = _plan(tmp_path, capsys)
    assert main(["train", "--child-run-id", plan["children"][0]]) == 0
    capsys.readouterr()
    assert main(["compare", "--aggregate", plan["run_id"]]) == 2
    captured = capsys.readouterr()
    assert "1 of 2 child runs did not finish: gpt3-s1 (SCHEDULED)" in captured.err
    assert MlflowClient().get_run(plan["run_id"]).info.status == "FAILED"


@pytest.mark.e2e
def test_a_killed_child_process_resumes_from_the_checkpoint_in_its_artifacts(research_env, tmp_path, capsys):
    """SIGKILL (a killed container) leaves the run RUNNING with its uploaded last.pt; the retry
    downloads it and continues the same run. The retry caps max_steps a few steps past the
    checkpoint so the test does not depend on when the kill lands. The dead process's lease
    goes stale after its 2 s timeout; the retry takes it over."""
    plan = _plan(tmp_path, capsys, tracking={"lease_heartbeat": 0.5, "lease_timeout": 2},
                 max_steps=100_000, save_every=4, eval_interval=4)
    child = plan["children"][0]
    client = MlflowClient()
    proc = subprocess.Popen([sys.executable, "-m", "mlproject", "train", "--child-run-id", child],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 300
        while "checkpoints/last.pt" not in [f.path for f in client.list_artifacts(child, "checkpoints")]:
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint was uploaded"
            time.sleep(0.2)
        time.sleep(1.0)  # let an upload in flight land: the retry must find a complete file
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert client.get_run(child).info.status == "RUNNING"
    step = load_checkpoint(client.download_artifacts(child, "checkpoints/last.pt", str(tmp_path)))["step"]
    time.sleep(2.5)  # the lease of the killed process times out

    assert main(["train", "--child-run-id", child, "--max-steps", str(step + 4)]) == 0
    assert f"({'resume'}) run {child}" in capsys.readouterr().out
    run = client.get_run(child)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(child, "train_loss")]
    assert min(steps) < step and max(steps) == step + 4  # the first attempt's curve is kept


def test_train_run_id_of_a_run_that_was_not_planned_is_a_one_line_error(research_env, capsys):
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment(unique("plain"))).info.run_id
    assert main(["train", "--child-run-id", run_id]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlproject: error: run ") and "plan/config.yaml" in err and "\n" not in err


def test_aggregate_of_a_run_that_is_not_a_planned_parent_is_a_one_line_error(research_env, capsys):
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment(unique("plain"))).info.run_id
    assert main(["compare", "--aggregate", run_id]) == 2
    err = capsys.readouterr().err.strip()
    assert run_id in err and "--plan-only" in err and "\n" not in err


@pytest.mark.parametrize("argv", [["--plan-only", "--aggregate", "0" * 32]])
def test_plan_only_and_aggregate_together_are_refused(research_env, capsys, argv):
    assert main(["compare", *argv]) == 2
    assert "give one of them" in capsys.readouterr().err
