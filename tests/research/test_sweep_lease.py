"""A sweep's runs belong to the sweep: two processes resuming one sweep share its children
(each trained once), and a standalone `train --resume-from` a sweep's parent or child is refused
before anything changes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow import MlflowClient

from helpers import unique, write_sweep, write_tiny
from mlproject.cli import main
from mlproject.protocol import parse_step_result

SHORT_LEASE = {"lease_heartbeat": 0.5, "lease_timeout": 3}


def _plan(tmp_path, capsys) -> tuple[dict, str]:
    path = write_sweep(tmp_path / "c.yaml", unique("lease"), tracking=SHORT_LEASE,
                       extra={"compare": {"models": ["gpt2", "gpt3"], "seeds": [1]}})
    assert main(["compare", "--config", str(path), "--plan-only"]) == 0
    return parse_step_result(capsys.readouterr().out), str(path)


def _train_yaml(tmp_path, plan) -> str:
    return str(write_tiny(tmp_path / "t.yaml", plan["experiment_name"]))


def _state(run_ids) -> list[tuple[str, dict]]:
    client = MlflowClient()
    return [(client.get_run(r).info.status, client.get_run(r).data.tags) for r in run_ids]


@pytest.mark.e2e
def test_two_concurrent_resumes_train_every_child_once_and_report_the_same_best(research_env, tmp_path, capsys):
    plan, config = _plan(tmp_path, capsys)
    procs = [subprocess.Popen([sys.executable, "-m", "mlproject", "compare", "--config", config, "--resume"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    client = MlflowClient()
    for child in plan["children"]:
        run = client.get_run(child)
        assert run.info.status == "FINISHED"
        # trained by exactly one of the two processes, once: its end line without "trained by another process"
        ends = [line for o in outputs for line in o.splitlines() if line.startswith(f"finished {run.info.run_name}: ")]
        assert sum("FINISHED" in e and "another process" not in e for e in ends) == 1, outputs
        for key in ("train_loss", "val_loss"):
            steps = [m.step for m in client.get_metric_history(child, key)]
            assert steps and len(steps) == len(set(steps)), (key, steps)
    results = [parse_step_result(o) for o in outputs]
    assert results[0] == results[1]
    assert results[0]["status"] == "FINISHED" and results[0]["finished"] == 2
    assert results[0]["run_id"] == plan["run_id"]


def test_train_resume_from_a_planned_parent_is_refused_naming_compare_resume(research_env, tmp_path, capsys):
    plan, _ = _plan(tmp_path, capsys)
    runs = [plan["run_id"], *plan["children"]]
    before = _state(runs)
    assert main(["train", "--config", _train_yaml(tmp_path, plan), "--resume-from", plan["run_id"]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the parent run of a compare sweep" in err
    assert "`mlproject compare --resume`" in err
    assert _state(runs) == before


@pytest.mark.parametrize("flags", [[], ["--run-name", "mine"]])
def test_train_resume_from_a_planned_child_is_refused_naming_train_run_id(research_env, tmp_path, capsys, flags):
    plan, _ = _plan(tmp_path, capsys)
    runs = [plan["run_id"], *plan["children"]]
    before = _state(runs)
    child = plan["children"][1]
    assert main(["train", "--config", _train_yaml(tmp_path, plan), "--resume-from", child, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"`mlproject train --child-run-id {child}`" in err
    assert _state(runs) == before
    assert before[2][0] == "SCHEDULED"
    experiment_id = MlflowClient().get_run(child).info.experiment_id
    assert len(MlflowClient().search_runs([experiment_id])) == 3  # no run was created either


@pytest.mark.e2e
def test_a_retried_child_waits_for_a_dead_holder_s_lease_to_lapse_then_trains_it(research_env, tmp_path, capsys):
    import json
    import socket
    import time

    from mlproject.schema import Tag

    plan, _ = _plan(tmp_path, capsys)
    child = plan["children"][0]
    # what a killed container leaves: a holder that will never beat again, its last heartbeat just now
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = {"host": socket.gethostname(), "pid": dead.pid, "start": time.time() - 5, "timeout": 3}
    MlflowClient().set_tag(child, Tag.LEASE_HOLDER, json.dumps(holder))
    MlflowClient().set_tag(child, Tag.LEASE_HEARTBEAT, f"{time.time():.3f}")

    assert main(["train", "--child-run-id", child]) == 0

    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert f"waiting for the lease of run {child}" in out and "taking over the lease" in out
    assert MlflowClient().get_run(child).info.status == "FINISHED"
